"""Test setup: Triton kernels run in the CPU interpreter, and `load()` compiles into a cache made for this session.

Both variables must be set before anything imports a generated package: `@triton.jit` reads TRITON_INTERPRET when it
decorates a kernel, and the loader reads LINATTN_GEN_CACHE on every call.
"""

import os
import shutil
import tempfile

os.environ["TRITON_INTERPRET"] = "1"
_CACHE = tempfile.mkdtemp(prefix="linattn-gen-test-cache-")
os.environ["LINATTN_GEN_CACHE"] = _CACHE

import pytest  # noqa: E402
from helpers import ROOT, SHIPPED_SPECS, spec_path  # noqa: E402


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
