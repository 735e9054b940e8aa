"""Variable-length batches (`cu_seqlens`): a packed batch equals separate runs, forward and every gradient."""

import pytest
import torch
from helpers import SHIPPED_SPECS, spec_path

from linattn_gen.check import random_inputs, relative_error

TOL = 1e-4  # both sides are the same kernels in float32; only summation order differs
LENGTHS = [37, 64, 1, 90]


def _packed_and_separate(module, name, op, lengths, *, with_initial_state=True, cu_dtype=torch.int32, seed=0):
    """Run `op` once on the packed batch and once per sequence; return (packed grads, separate grads) by name."""
    H, K, V = 2, 32, 16
    N, T = len(lengths), sum(lengths)
    inputs, _ = random_inputs(spec_path(name), 1, T, H, K, V, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    h0 = torch.randn(N, H, K, V, generator=gen) if with_initial_state else None
    do = torch.randn(1, T, H, V, generator=gen)
    dht = torch.randn(N, H, K, V, generator=gen)
    cu_seqlens = torch.tensor([0] + lengths, dtype=torch.int64).cumsum(0).to(cu_dtype)

    leaves = [x.clone().requires_grad_() for x in inputs]
    h0_leaf = None if h0 is None else h0.clone().requires_grad_()
    o, ht = getattr(module, op)(*leaves, initial_state=h0_leaf, output_final_state=True, cu_seqlens=cu_seqlens)
    ((o * do).sum() + (ht * dht).sum()).backward()
    packed = {"o": o, "final_state": ht, **{f"d{i}": x.grad for i, x in enumerate(leaves)}}
    if h0 is not None:
        packed["dinitial_state"] = h0_leaf.grad

    separate = {key: [] for key in packed}
    for n in range(N):
        bos, eos = int(cu_seqlens[n]), int(cu_seqlens[n + 1])
        if bos == eos:  # an empty sequence: no tokens, its state passes through
            separate["final_state"].append(h0[n:n + 1] if h0 is not None else torch.zeros(1, H, K, V))
            if h0 is not None:
                separate["dinitial_state"].append(dht[n:n + 1])
            continue
        xs = [x[:, bos:eos].detach().clone().requires_grad_() for x in inputs]
        s0 = None if h0 is None else h0[n:n + 1].clone().requires_grad_()
        o_n, ht_n = getattr(module, op)(*xs, initial_state=s0, output_final_state=True)
        ((o_n * do[:, bos:eos]).sum() + (ht_n * dht[n:n + 1]).sum()).backward()
        separate["o"].append(o_n)
        separate["final_state"].append(ht_n)
        for i, x in enumerate(xs):
            separate[f"d{i}"].append(x.grad)
        if h0 is not None:
            separate["dinitial_state"].append(s0.grad)
    joined = {key: torch.cat(parts, dim=0 if key in ("final_state", "dinitial_state") else 1)
              for key, parts in separate.items()}
    return packed, joined


@pytest.mark.parametrize("op", ["chunk", "recurrent"])
@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_packed_batch_matches_separate_runs(modules, name, op):
    packed, separate = _packed_and_separate(modules[name], name, op, LENGTHS)
    errors = {key: relative_error(packed[key], separate[key]) for key in packed}
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("op", ["chunk", "recurrent"])
def test_empty_sequences_and_int64_offsets(modules, op):
    """Zero-length sequences pass their state through; int64 offsets work like int32; no initial state."""
    for with_initial_state in (True, False):
        packed, separate = _packed_and_separate(modules["gla"], "gla", op, [0, 65, 0, 3, 0],
                                                with_initial_state=with_initial_state, cu_dtype=torch.int64, seed=4)
        errors = {key: relative_error(packed[key], separate[key]) for key in packed}
        assert max(errors.values()) <= TOL, errors


def test_chunk_and_recurrent_agree_on_a_packed_batch(modules):
    packed_chunk, _ = _packed_and_separate(modules["mamba2"], "mamba2", "chunk", [70, 5, 129], seed=2)
    packed_rec, _ = _packed_and_separate(modules["mamba2"], "mamba2", "recurrent", [70, 5, 129], seed=2)
    errors = {key: relative_error(packed_chunk[key], packed_rec[key]) for key in packed_chunk}
    assert max(errors.values()) <= 1e-3, errors


def _call(module, T=10, N=2, **overrides):
    q = torch.randn(1, T, 1, 16)
    g = torch.nn.functional.logsigmoid(torch.randn(1, T, 1, 16))
    kwargs = dict(cu_seqlens=torch.tensor([0, 4, T], dtype=torch.int32))
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
