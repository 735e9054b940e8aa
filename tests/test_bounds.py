"""Every kernel stays inside its tensors: the interpreter is made to refuse any load or store outside the storages
of the launch's arguments (tests/helpers.py: bounds_checked). On the GPU such an access is an illegal-address fault
or silent corruption; in the plain interpreter it reads a neighbour and can pass unnoticed."""

import pytest
import torch
from helpers import SHIPPED_SPECS, spec_path

from linattn_gen.check import OutOfBounds, as_chunk, bounds_checked, check_grouped_heads, check_op, check_packed_batch


@pytest.mark.parametrize("op", ["chunk", "recurrent"])
@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_kernels_stay_in_bounds(modules, name, op):
    target = as_chunk(modules[name], op)
    with bounds_checked():  # odd T (a partial last chunk), K != V, an initial state, every gradient
        result = check_op(target, spec_path(name), 2, 70, 2, 16, 32, seed=21)
    assert max(result.errors.values()) < 1e-3


@pytest.mark.parametrize("name", ["gla", "retnet"])
def test_packed_and_grouped_stay_in_bounds(modules, name):
    with bounds_checked():
        packed = check_packed_batch(modules[name], spec_path(name), "chunk", [37, 64, 1, 0, 90], 2, 16, 32, seed=22)
        grouped = check_grouped_heads(modules[name], spec_path(name), "chunk", 1, 70, 2, 2, 32, 16, seed=23)
    assert max(packed.values()) < 1e-4 and max(grouped.values()) < 1e-4


def test_the_check_catches_an_overrun():
    import triton
    import triton.language as tl

    @triton.jit
    def copy_block(x, y, N: tl.constexpr):
        offsets = tl.arange(0, N)
        tl.store(y + offsets, tl.load(x + offsets))

    x, y = torch.randn(10), torch.empty(16)
    with bounds_checked():
        copy_block[(1,)](y, y, N=16)  # in bounds
        with pytest.raises(Exception, match="copy_block: load of 6 element"):
            copy_block[(1,)](x, y, N=16)
    assert issubclass(OutOfBounds, AssertionError)
