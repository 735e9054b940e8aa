"""Variable-length batches (`cu_seqlens`): a packed batch equals separate runs, forward and every gradient."""

import pytest
import torch
from helpers import SHIPPED_SPECS, spec_path

from linattn_gen.check import check_packed_batch, random_inputs, relative_error

TOL = 1e-4  # both sides are the same kernels in float32; only summation order differs
LENGTHS = [37, 64, 1, 90]


@pytest.mark.parametrize("op", ["chunk", "recurrent"])
@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_packed_batch_matches_separate_runs(modules, name, op):
    errors = check_packed_batch(modules[name], spec_path(name), op, LENGTHS, 2, 32, 16)
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("op", ["chunk", "recurrent"])
def test_empty_sequences_and_int64_offsets(modules, op):
    """Zero-length sequences pass their state through; int64 offsets work like int32; no initial state."""
    for with_initial_state in (True, False):
        errors = check_packed_batch(modules["gla"], spec_path("gla"), op, [0, 65, 0, 3, 0], 2, 32, 16,
                                    with_initial_state=with_initial_state, cu_dtype=torch.int64, seed=4)
        assert max(errors.values()) <= TOL, errors


def test_chunk_and_recurrent_agree_on_a_packed_batch(modules):
    module, path = modules["mamba2"], spec_path("mamba2")
    inputs, _ = random_inputs(path, 1, 204, 2, 32, 16, seed=2)
    h0 = torch.randn(3, 2, 32, 16)
    cu_seqlens = torch.tensor([0, 70, 75, 204])
    results = []
    for op in (module.chunk, module.recurrent):
        leaves = [x.clone().requires_grad_() for x in inputs]
        o, ht = op(*leaves, initial_state=h0, output_final_state=True, cu_seqlens=cu_seqlens)
        (o.square().sum() + ht.sum()).backward()
        results.append([o, ht] + [x.grad for x in leaves])
    errors = [relative_error(a, b) for a, b in zip(*results)]
    assert max(errors) <= 1e-3, errors


def _call(module, T=10, N=2, **overrides):
    q = torch.randn(1, T, 1, 16)
    g = torch.nn.functional.logsigmoid(torch.randn(1, T, 1, 16))
    kwargs = {"cu_seqlens": torch.tensor([0, 4, T], dtype=torch.int32)}
    kwargs.update(overrides)
    return module.chunk(q, q, q, g, **kwargs)


@pytest.mark.parametrize("cu_seqlens, message", [
    (torch.tensor([0, 4, 10], dtype=torch.float32), "cu_seqlens must be int32 or int64"),
    (torch.tensor([[0, 10]], dtype=torch.int32), r"cu_seqlens must be 1-D \[N \+ 1\]"),
    (torch.tensor([0], dtype=torch.int32), r"cu_seqlens must be 1-D \[N \+ 1\]"),
    (torch.tensor([1, 4, 10], dtype=torch.int32), "must start at 0"),
    (torch.tensor([0, 4, 9], dtype=torch.int32), "must end at T = 10"),
    (torch.tensor([0, 6, 4, 10], dtype=torch.int32), "non-decreasing"),
])
def test_bad_cu_seqlens_is_a_clear_error(modules, cu_seqlens, message):
    with pytest.raises(ValueError, match=message):
        _call(modules["gla"], cu_seqlens=cu_seqlens)


def test_varlen_batch_and_state_shapes_are_checked(modules):
    q = torch.randn(2, 10, 1, 16)
    with pytest.raises(ValueError, match=r"with cu_seqlens, the batch size must be 1"):
        modules["gla"].chunk(q, q, q, q, cu_seqlens=torch.tensor([0, 4, 10]))
    with pytest.raises(ValueError, match=r"initial_state must be \[N, H, K, V\] = \[2, 1, 16, 16\]"):
        _call(modules["gla"], initial_state=torch.zeros(1, 1, 16, 16))
    with pytest.raises(TypeError, match="cu_seqlens must be a torch.Tensor"):
        _call(modules["gla"], cu_seqlens=[0, 4, 10])
