"""Test setup: Triton kernels run in the CPU interpreter, and `load()` compiles into a cache made for this session.

Both variables are set when pytest imports this file, before any test imports a generated package: `@triton.jit`
reads TRITON_INTERPRET when it decorates a kernel, and the loader reads LINATTN_GEN_CACHE on every call.
"""

import os
import shutil
import tempfile

import pytest
from helpers import ROOT, SHIPPED_SPECS, spec_path
from hypothesis import HealthCheck, settings

os.environ["TRITON_INTERPRET"] = "1"
_CACHE = tempfile.mkdtemp(prefix="linattn-gen-test-cache-")
os.environ["LINATTN_GEN_CACHE"] = _CACHE

# interpreter launches take up to seconds: no per-example deadline; "thorough" is for a long hunt, not for CI
settings.register_profile("ci", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", parent=settings.get_profile("ci"), max_examples=500)
settings.load_profile(os.environ.get("LINATTN_GEN_HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    # Triton 3.6's interpreter converts size-1 numpy arrays to ints, which numpy 1.25+ deprecates (once per launch)
    config.addinivalue_line("filterwarnings", "ignore:Conversion of an array with ndim > 0:DeprecationWarning")


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def modules():
    """name -> the generated module of each shipped spec, compiled once per session through `load()`."""
    from linattn_gen import load

    return {name: load(spec_path(name)) for name in SHIPPED_SPECS}


@pytest.fixture
def in_repo_root(monkeypatch):
    """Run the test from the repository root, where spec paths read as they do in generated headers."""
    monkeypatch.chdir(ROOT)
    return ROOT


@pytest.fixture
def launches(monkeypatch):
    """spy(module, kernel): the launches of `module.ops.<kernel>` from then on (linattn_gen.bench.Launch: grid,
    arguments; the launches still run)."""
    from linattn_gen.bench import record_launches

    return lambda module, kernel_name: record_launches(module, [kernel_name], assign=monkeypatch.setattr)
