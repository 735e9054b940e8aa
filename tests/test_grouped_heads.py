"""Grouped heads (GQA): H value heads share each of H / HK query/key heads and their gates.

A grouped call must equal the ungrouped call on q, k and gates repeated over each group (which the other tests check
against the float64 reference), with dq, dk and dg the sums of the repeated copies' gradients.
"""

import pytest
import torch
from helpers import SHIPPED_SPECS, spec_path

from linattn_gen.check import check_grouped_heads

TOL = 1e-4  # both sides are the same kernels in float32; only summation order differs


@pytest.mark.parametrize("op", ["chunk", "recurrent"])
@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_grouped_heads_equal_repeated_heads(modules, name, op):
    errors = check_grouped_heads(modules[name], spec_path(name), op, 2, 70, 2, 3, 32, 16)
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("op", ["chunk", "recurrent"])
def test_grouped_heads_in_a_packed_batch(modules, op):
    cu_seqlens = torch.tensor([0, 37, 101, 102, 192], dtype=torch.int32)
    errors = check_grouped_heads(modules["gla"], spec_path("gla"), op, 1, 192, 1, 2, 32, 16, cu_seqlens=cu_seqlens,
                                 seed=3)
    assert max(errors.values()) <= TOL, errors


def test_value_heads_must_be_a_multiple_of_key_heads(modules):
    q = torch.randn(1, 8, 2, 16)
    with pytest.raises(ValueError, match=r"v must be \[B, T, H, V\] with H a multiple of q's 2 heads"):
        modules["retnet"].chunk(q, q, torch.randn(1, 8, 3, 16))
