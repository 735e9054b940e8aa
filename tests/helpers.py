"""Small helpers shared by the tests (imported by name: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_SPECS = ("gla", "retnet", "linear_attn", "mamba2", "lightning", "hgrn2", "katharopoulos", "rwkv6", "gla2d")


def along_t(x, index):
    """x[:, index] for an input with a time axis; a per-head [H, K] input (RWKV's u) is the same at every step."""
    return x if x.dim() == 2 else x[:, index]


def spec_path(name: str) -> Path:
    return ROOT / "specs" / f"{name}.yaml"


def import_package(package_dir: Path, prefix: str = "linattn_gen_test_pkg"):
    """Import a generated package folder under a fresh, unique module name."""
    name = f"{prefix}_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(
        name, package_dir / "__init__.py", submodule_search_locations=[str(package_dir)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def write_package(files: dict, package_dir: Path) -> Path:
    package_dir.mkdir(parents=True)
    for filename, text in files.items():
        (package_dir / filename).write_text(text)
    return package_dir


_GLUON_COMPILED: dict = {}


def gluon_compiled(spec: str) -> dict:
    """{kernel variant: {"shared": bytes, "wgmma": count, "tma": count}} of the spec's generated Gluon kernels,
    compiled for sm_90a in a process of their own (tests/gluon_compile.py says why); one process per test session."""
    if not _GLUON_COMPILED:
        import json
        import os
        import subprocess

        env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
        specs = ["gla", "hgrn2", "rwkv6"]
        result = subprocess.run([sys.executable, str(ROOT / "tests" / "gluon_compile.py"), *specs], env=env,
                                capture_output=True, text=True, timeout=600, cwd=ROOT)
        if result.returncode != 0:
            raise RuntimeError(f"tests/gluon_compile.py failed:\n{result.stderr[-4000:]}")
        _GLUON_COMPILED.update(json.loads(result.stdout.strip().splitlines()[-1]))
    return _GLUON_COMPILED[spec]
