"""`load(spec)`: compile a spec into an on-disk cache when stale and import the generated module.

The cache key is the spec's content hash plus a fingerprint of the generator (its version and the text of its
sources and templates), so an edited spec or a different generator never reuses old code. A package is rendered
into a temporary folder and renamed into place, so concurrent compilers never leave a torn package.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

from . import __version__
from .codegen import templates_dir
from .lower import lower, write_package


def cache_root() -> Path:
    root = os.environ.get("LINATTN_GEN_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "linattn_gen"


@functools.cache
def generator_fingerprint() -> str:
    digest = hashlib.sha256(__version__.encode())
    package = Path(__file__).parent
    sources = sorted(package.rglob("*.py")) + sorted(package.rglob("*.lark")) + sorted(templates_dir().glob("*.jinja"))
    for path in sources:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load(spec_path: str | Path):
    """Compile `spec_path` if needed and return the generated module (with `chunk`)."""
    compiled = lower(spec_path)
    key = f"{compiled.plan.name}-{compiled.spec.sha256[:16]}-{generator_fingerprint()}"
    target = cache_root() / key
    if not (target / compiled.plan.name / "ops.py").is_file():
        cache_root().mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_root()))
        write_package(compiled, staging)
        try:
            os.rename(staging, target)
        except OSError:  # another process won the race; its package is identical
            shutil.rmtree(staging, ignore_errors=True)
    return _import(target / compiled.plan.name, f"linattn_gen_generated.{key.replace('-', '_')}")


def _import(package_dir: Path, module_name: str):
    if module_name in sys.modules:
        return sys.modules[module_name]
    # the parent of every generated package, so that their relative imports resolve (ops.py imports gluon_kernels
    # only on Hopper, after loading): without it Python cannot find "linattn_gen_generated" (H200 run 16)
    parent = module_name.rpartition(".")[0]
    if parent and parent not in sys.modules:
        namespace = types.ModuleType(parent, "The packages that linattn_gen.load generates, imported by name.")
        namespace.__path__ = []
        sys.modules[parent] = namespace
    spec = importlib.util.spec_from_file_location(
        module_name, package_dir / "__init__.py", submodule_search_locations=[str(package_dir)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
