"""Based (specs/based.yaml): the taylor2 feature map expanded inside the kernels, with the sum normaliser.

The reference here is written independently of `linattn_gen.interpret`: an explicit 1 + K + K^2 feature expansion
(Based's TaylorExp, x scaled by K^(-1/4) inside the map) and a float64 token-by-token recurrence with the normaliser
z kept as the state's last column. Shapes stay small: the interpreter runs every kernel on the CPU.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from helpers import spec_path

from linattn_gen import interpret
from linattn_gen.check import check_grouped_heads, check_packed_batch, relative_error

TOL = 2e-3
PATH = spec_path("based")


@pytest.fixture(scope="module")
def based():
    from linattn_gen import load

    return load(PATH)


def explicit_features(x: torch.Tensor) -> torch.Tensor:
    """[..., K] -> [..., 1 + K + K^2]: 1, x_i, then x_i x_j / sqrt(2) row-major, of x / K^(1/4), term by term."""
    K = x.shape[-1]
    x = x / K**0.25
    terms = [torch.ones_like(x[..., 0])] + [x[..., i] for i in range(K)]
    terms += [x[..., i] * x[..., j] / math.sqrt(2) for i in range(K) for j in range(K)]
    return torch.stack(terms, -1)


def reference(q, k, v, initial_state):
    """o_t = phi(q_t) S_t / (phi(q_t) . z_t + 1e-6), S_t = S_{t-1} + phi(k_t)^T v_t, z_t = z_{t-1} + phi(k_t)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    fq, fk = explicit_features(q), explicit_features(k)
    S, z = initial_state[..., :V], initial_state[..., V]
    outputs = []
    for t in range(T):
        S = S + fk[:, t, :, :, None] * v[:, t, :, None, :]
        z = z + fk[:, t]
        numerator = torch.einsum("bhf,bhfv->bhv", fq[:, t], S)
        outputs.append(numerator / ((fq[:, t] * z).sum(-1)[..., None] + 1e-6))
    return torch.stack(outputs, 1), torch.cat([S, z[..., None]], -1)


def inputs_and_state(B, T, H, K, V, seed):
    """Random q, k, v and a reachable initial state (the reference run over a random prefix): an arbitrary z could put
    phi(q) . z near zero, where the normaliser amplifies any rounding."""
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, T, H, K, generator=gen) for _ in range(2))
    v = torch.randn(B, T, H, V, generator=gen)
    prefix = [torch.randn(B, 16, H, n, generator=gen, dtype=torch.float64) for n in (K, K, V)]
    _, state = reference(*prefix, torch.zeros(B, H, 1 + K + K * K, V + 1, dtype=torch.float64))
    return [q, k, v], state.float()


def compare(op, B, T, H, K, V, seed=0):
    """Relative errors of o, the final state (z included) and the gradients of q, k, v and the initial state."""
    inputs, h0 = inputs_and_state(B, T, H, K, V, seed)
    xs = [x.clone().requires_grad_() for x in inputs]
    hx = h0.clone().requires_grad_()
    o, ht = op(*xs, initial_state=hx, output_final_state=True)
    gen = torch.Generator().manual_seed(seed + 1)
    do, dht = torch.randn(o.shape, generator=gen), torch.randn(ht.shape, generator=gen)
    ((o * do).sum() + (ht * dht).sum()).backward()
    ys = [x.double().requires_grad_() for x in inputs]
    hy = h0.double().requires_grad_()
    o_ref, ht_ref = reference(*ys, hy)
    ((o_ref * do.double()).sum() + (ht_ref * dht.double()).sum()).backward()
    errors = {"o": relative_error(o, o_ref), "final_state": relative_error(ht, ht_ref),
              "z": relative_error(ht[..., -1], ht_ref[..., -1]), "dinitial_state": relative_error(hx.grad, hy.grad)}
    errors.update({f"d{n}": relative_error(x.grad, y.grad) for n, x, y in zip("qkv", xs, ys)})
    return errors


def test_feature_map_and_interpreter_match_the_explicit_expansion():
    inputs, h0 = inputs_and_state(1, 9, 2, 16, 8, seed=3)
    x = inputs[0].double()
    s = (x[:, :, :, None] * inputs[1].double()[:, :, :, None]).sum(-1) / 4
    phi = explicit_features(x)
    assert phi.shape[-1] == 273
    dots = (phi * explicit_features(inputs[1].double())).sum(-1)
    assert torch.allclose(dots, (1 + s + s * s / 2).squeeze(-1), atol=1e-12)
    o, ht = interpret(PATH, *(t.double() for t in inputs), initial_state=h0.double(), output_final_state=True)
    o_ref, ht_ref = reference(*(t.double() for t in inputs), h0.double())
    assert relative_error(o, o_ref) < 1e-12 and relative_error(ht, ht_ref) < 1e-12


@pytest.mark.parametrize("B, T, H, V", [(1, 45, 2, 32), (2, 130, 1, 16)], ids=["T45-V32", "T130-B2"])
def test_chunk_matches_reference(based, B, T, H, V):
    errors = compare(based.chunk, B, T, H, 16, V)
    assert max(errors.values()) <= TOL, errors


def test_recurrent_matches_reference(based):
    errors = compare(based.recurrent, 1, 21, 1, 16, 32, seed=5)
    assert max(errors.values()) <= TOL, errors


def test_key_size_32(based):
    errors = compare(based.chunk, 1, 20, 1, 32, 16, seed=6)
    assert max(errors.values()) <= TOL, errors


def test_prefix_chunk_then_suffix_recurrent_equals_the_whole(based):
    (q, k, v), h0 = inputs_and_state(1, 50, 2, 16, 16, seed=7)
    whole, whole_state = based.chunk(q, k, v, initial_state=h0, output_final_state=True)
    prefix, state = based.chunk(q[:, :44], k[:, :44], v[:, :44], initial_state=h0, output_final_state=True)
    assert state.shape == (1, 2, 273, 17)  # S, then z as the last column
    suffix, final = based.recurrent(q[:, 44:], k[:, 44:], v[:, 44:], initial_state=state, output_final_state=True)
    assert relative_error(torch.cat([prefix, suffix], 1), whole) < 1e-5
    assert relative_error(final, whole_state) < 1e-5


@pytest.mark.parametrize("op", ["chunk", "recurrent"])
def test_packed_batch_matches_separate_runs(based, op):
    lengths = [30, 1, 0, 41] if op == "chunk" else [9, 1, 0, 6]
    errors = check_packed_batch(based, PATH, op, lengths, 1, 16, 16, seed=8)
    assert max(errors.values()) <= 1e-4, errors


def test_grouped_heads_match_repeated_heads(based):
    errors = check_grouped_heads(based, PATH, "chunk", 1, 40, 1, 2, 16, 16, seed=9)
    assert max(errors.values()) <= 1e-4, errors


def test_unsupported_key_size_and_sequence_parallel_are_refused(based):
    q, k, v = torch.randn(1, 8, 1, 64), torch.randn(1, 8, 1, 64), torch.randn(1, 8, 1, 16)
    with pytest.raises(ValueError, match=r"taylor2 feature maps take K in \(16, 32\)"):
        based.chunk(q, k, v)
    with pytest.raises(ValueError, match=r"taylor2 feature maps take K in \(16, 32\)"):
        based.recurrent(q, k, v)
    q, k = q[..., :16], k[..., :16]
    with pytest.raises(ValueError, match=r"sp_group \(sequence parallelism\) is not supported yet for based"):
        based.chunk(q, k, v, sp_group=object())
    with pytest.raises(ValueError, match=r"initial_state must be \[B, H, F, V\]"):
        based.chunk(q, k, v, initial_state=torch.zeros(1, 1, 16, 17))


def test_plan_refuses_the_paths_it_has_no_kernels_for():
    from linattn_gen.lower import lower

    plan = lower(PATH).plan
    assert plan.features is not None and plan.features.name == "taylor2"
    assert not plan.sequence_parallel
    assert plan.carried_forward.min_programs_per_sm is None  # never carried through registers
    assert plan.state_pass_split.below_programs_per_sm == 0.0  # never split
    assert not plan.state_pass_split.exists  # the expanded-feature kernels walk no segments


def test_gathered_feature_loads_stay_in_bounds(based):
    """The feature tiles gather from the raw q, k by index (padded past F, rows past T): every access stays inside
    the launch's tensors, for odd T, packed batches and both ops."""
    from linattn_gen.check import as_chunk, bounds_checked, check_op

    with bounds_checked():
        chunk = check_op(based, PATH, 1, 45, 1, 16, 16, seed=10)
        recurrent = check_op(as_chunk(based, "recurrent"), PATH, 1, 9, 1, 16, 16, seed=11)
        packed = check_packed_batch(based, PATH, "chunk", [20, 1, 0, 9], 1, 16, 16, seed=12)
    assert max(chunk.errors.values()) <= TOL, chunk.errors
    assert max(recurrent.errors.values()) <= TOL, recurrent.errors
    assert max(packed.values()) <= 1e-4, packed


def test_feature_kernels_launch_through_the_tuner_with_the_feature_tile_kept(based, monkeypatch):
    # Autotuning of these kernels is opt-in (LINATTN_GEN_AUTOTUNE=1): its wider value blocks are untimed on a GPU.
    # Every chunk kernel asks the tuner for its config, and every candidate keeps BK at the feature tile (it tiles
    # the F = 273 features, not the K = 16 inputs).
    ops = based.ops
    if "LINATTN_GEN_AUTOTUNE" not in os.environ:
        assert ops.AUTOTUNE is False
    for kernel, table in ops.AUTOTUNE_CANDIDATES.items():
        for (K, V), configs in table.items():
            assert configs[0] == ops._launch(kernel, K, V), (kernel, K, V)
            assert {BK for BK, _, _, _ in configs} == {64} and all(BV <= V for _, BV, _, _ in configs), (kernel, K, V)
    asked = []

    def table(kernel, K, V, programs_and_chunks, dtype_name, device, run):
        asked.append(kernel)
        return ops._launch(kernel, K, V)

    monkeypatch.setattr(ops, "_tuned", table)
    (q, k, v), _ = inputs_and_state(1, 40, 1, 16, 16, seed=12)
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]
    based.chunk(*leaves)[0].sum().backward()
    assert sorted(set(asked)) == sorted(ops.AUTOTUNE_CANDIDATES)
