"""Small helpers shared by the tests (imported by name: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_SPECS = ("gla", "retnet", "linear_attn", "mamba2", "lightning", "hgrn2", "katharopoulos")


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


class OutOfBounds(AssertionError):
    pass


@contextlib.contextmanager
def bounds_checked():
    """Make the Triton interpreter refuse any load or store outside the storages of the launch's tensor arguments.

    The interpreter reads plain host memory, so an unmasked out-of-bounds access silently reads a neighbour (or
    garbage) where the GPU faults with "illegal memory access". Under this context every unmasked address of every
    load and store must fall inside one of the tensors passed to that launch; otherwise OutOfBounds names the kernel.
    """
    from triton.runtime import interpreter

    ranges = []  # (kernel name, starts, ends) of the launch in flight
    init_args, load, store = (interpreter.GridExecutor._init_args_hst, interpreter.InterpreterBuilder.create_masked_load,
                              interpreter.InterpreterBuilder.create_masked_store)

    def init_args_checked(self, args_dev, kwargs):
        args_hst, kwargs_hst = init_args(self, args_dev, kwargs)
        storages = [x.untyped_storage() for x in (*args_hst, *kwargs_hst.values()) if hasattr(x, "untyped_storage")]
        ranges[:] = [(self.fn.__name__, np.array([s.data_ptr() for s in storages], dtype=np.uint64),
                      np.array([s.data_ptr() + s.nbytes() for s in storages], dtype=np.uint64))]
        return args_hst, kwargs_hst

    def check(ptrs, mask, access):
        name, starts, ends = ranges[0]
        width = max(1, ptrs.get_element_ty().primitive_bitwidth // 8)
        addresses = ptrs.data[np.broadcast_to(mask.data, ptrs.data.shape)].astype(np.uint64).ravel()
        inside = ((addresses[:, None] >= starts) & (addresses[:, None] + np.uint64(width) <= ends)).any(axis=1)
        if not inside.all():
            raise OutOfBounds(f"{name}: {access} of {int((~inside).sum())} element(s) outside every tensor argument")

    def load_checked(self, ptrs, mask, *args):
        check(ptrs, mask, "load")
        return load(self, ptrs, mask, *args)

    def store_checked(self, ptrs, value, mask, *args):
        check(ptrs, mask, "store")
        return store(self, ptrs, value, mask, *args)

    interpreter.GridExecutor._init_args_hst = init_args_checked
    interpreter.InterpreterBuilder.create_masked_load = load_checked
    interpreter.InterpreterBuilder.create_masked_store = store_checked
    try:
        yield
    finally:
        interpreter.GridExecutor._init_args_hst = init_args
        interpreter.InterpreterBuilder.create_masked_load = load
        interpreter.InterpreterBuilder.create_masked_store = store
