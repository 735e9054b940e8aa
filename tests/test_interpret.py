"""The oracle checked against recurrences written out by hand here, without any of the spec machinery.

`interpret` is what every kernel is judged by, so it is itself judged by two independent float64 formulations:
the token-by-token recurrence and the parallel (attention-like) form with an explicit decay mask.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import spec_path

from linattn_gen import interpret

B, T, H, K, V = 2, 13, 3, 4, 5


def random_inputs(seed: int, gate: str | None, *, B=B, T=T, H=H, K=K, V=V):
    gen = torch.Generator().manual_seed(seed)

    def normal(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    q, k, v = normal(B, T, H, K), normal(B, T, H, K), normal(B, T, H, V)
    gates = [torch.nn.functional.logsigmoid(normal(B, T, H, K))] if gate == "key" else []
    return q, k, v, gates, normal(B, H, K, V)


def retnet_gamma(heads: int) -> torch.Tensor:
    return torch.tensor([1 - 2.0 ** (-5 - h) for h in range(heads)], dtype=torch.float64)


def decay_factors(name: str, q: torch.Tensor, gates: list) -> torch.Tensor:
    """The per-step multiplicative decay of the state, [B, T, H, K], for each shipped recurrence."""
    if name == "gla":
        return torch.exp(gates[0])
    if name == "retnet":
        return retnet_gamma(q.shape[2])[None, None, :, None].expand(q.shape)
    return torch.ones_like(q)


def recurrent(q, k, v, decay, scale, initial_state):
    """S_t = decay_t[:, None] * S_{t-1} + k_t^T v_t;  o_t = scale * q_t S_t."""
    Bq, Tq, Hq, Kq = q.shape
    state = torch.zeros(Bq, Hq, Kq, v.shape[-1], dtype=q.dtype) if initial_state is None else initial_state
    outputs = []
    for t in range(Tq):
        state = decay[:, t, :, :, None] * state + k[:, t, :, :, None] * v[:, t, :, None, :]
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], state))
    return torch.stack(outputs, dim=1), state


def parallel(q, k, v, decay, scale, initial_state):
    """o_t = scale * (sum_{s <= t} (q_t * prod_{s < r <= t} decay_r) . k_s v_s + (q_t * prod_{r <= t} decay_r) S_0)."""
    cum = torch.cumsum(torch.log(decay), dim=1)  # [B, T, H, K]
    diff = cum[:, :, None] - cum[:, None, :]  # [B, t, s, H, K]
    causal = torch.tril(torch.ones(q.shape[1], q.shape[1], dtype=torch.bool))[None, :, :, None, None]
    mask = torch.where(causal, torch.exp(torch.where(causal, diff, 0.0)), 0.0)
    scores = torch.einsum("bthk,bshk,btshk->bhts", q, k, mask)
    o = torch.einsum("bhts,bshv->bthv", scores, v)
    o = o + torch.einsum("bthk,bhkv->bthv", q * torch.exp(cum), initial_state)
    final = torch.einsum("bshk,bshv->bhkv", k * torch.exp(cum[:, -1:] - cum), v)
    final = final + torch.exp(cum[:, -1])[..., None] * initial_state
    return scale * o, final


@pytest.mark.parametrize("name, gate", [("gla", "key"), ("retnet", None), ("linear_attn", None)])
@pytest.mark.parametrize("with_initial_state", [True, False], ids=["h0", "no-h0"])
def test_interpret_matches_hand_written_recurrence(name, gate, with_initial_state):
    q, k, v, gates, h0 = random_inputs(0, gate)
    h0 = h0 if with_initial_state else None
    o, final = interpret(spec_path(name), q, k, v, *gates, initial_state=h0, output_final_state=True)
    o_ref, final_ref = recurrent(q, k, v, decay_factors(name, q, gates), K**-0.5, h0)
    torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, final_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, gate", [("gla", "key"), ("retnet", None), ("linear_attn", None)])
def test_interpret_matches_parallel_form(name, gate):
    q, k, v, gates, h0 = random_inputs(1, gate)
    o, final = interpret(spec_path(name), q, k, v, *gates, scale=0.7, initial_state=h0, output_final_state=True)
    o_ref, final_ref = parallel(q, k, v, decay_factors(name, q, gates), 0.7, h0)
    torch.testing.assert_close(o, o_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final, final_ref, rtol=1e-10, atol=1e-10)


def test_retnet_decay_per_head():
    # one token of k = e_0, v = e_0 on top of S_0 = 0, then a zero token: S_2 = gamma_h * e_0 e_0^T
    q = torch.zeros(1, 2, 4, 16, dtype=torch.float64)
    k, v = torch.zeros_like(q), torch.zeros_like(q)
    k[0, 0, :, 0] = v[0, 0, :, 0] = 1.0
    _, final = interpret(spec_path("retnet"), q, k, v, output_final_state=True)
    expected = [1 - 2.0 ** (-5 - h) for h in range(4)]
    assert final[0, :, 0, 0].tolist() == pytest.approx(expected, rel=1e-15)


def test_default_scale_and_no_final_state():
    q, k, v, _, _ = random_inputs(2, None)
    o, final = interpret(spec_path("linear_attn"), q, k, v)
    assert final is None
    o_ref, _ = recurrent(q, k, v, torch.ones_like(q), 1 / math.sqrt(K), None)
    torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)


def test_wrong_number_of_inputs():
    q, k, v, gates, _ = random_inputs(3, "key")
    with pytest.raises(TypeError, match=r"gla takes 4 inputs \(q, k, v, g\), got 3"):
        interpret(spec_path("gla"), q, k, v)
    with pytest.raises(TypeError, match=r"linear_attn takes 3 inputs \(q, k, v\), got 4"):
        interpret(spec_path("linear_attn"), q, k, v, *gates)


@pytest.mark.parametrize("name, gate", [("gla", "key"), ("retnet", None), ("linear_attn", None)])
def test_interpret_gradients_match_hand_written(name, gate):
    """Autograd through interpret gives the gradients of the hand-written recurrence (inputs, gate, initial state)."""
    q, k, v, gates, h0 = random_inputs(4, gate, T=7)
    xs = [x.clone().requires_grad_() for x in (q, k, v, *gates, h0)]
    ys = [x.clone().requires_grad_() for x in (q, k, v, *gates, h0)]
    gen = torch.Generator().manual_seed(5)
    do = torch.randn(q.shape[:3] + (V,), generator=gen, dtype=torch.float64)
    dht = torch.randn(h0.shape, generator=gen, dtype=torch.float64)

    o, final = interpret(spec_path(name), *xs[:-1], initial_state=xs[-1], output_final_state=True)
    ((o * do).sum() + (final * dht).sum()).backward()
    o_ref, final_ref = recurrent(*ys[:3], decay_factors(name, ys[0], ys[3:-1]), K**-0.5, ys[-1])
    ((o_ref * do).sum() + (final_ref * dht).sum()).backward()
    for x, y in zip(xs, ys, strict=True):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, gate", [("gla", "key"), ("retnet", None)])
def test_interpret_gradcheck(name, gate):
    """Finite differences agree with autograd through interpret, including the gate and the initial state."""
    q, k, v, gates, h0 = random_inputs(6, gate, B=1, T=3, H=2, K=2, V=3)
    inputs = tuple(x.requires_grad_() for x in (q, k, v, *gates, h0))

    def run(*xs):
        return interpret(spec_path(name), *xs[:-1], initial_state=xs[-1], output_final_state=True)

    assert torch.autograd.gradcheck(run, inputs)


def test_derived_key_is_the_expression():
    """HGRN2 writes its key as 1 - exp(g) inside outer(...): the same as GLA with that key passed in."""
    torch.manual_seed(3)
    q, v = torch.randn(2, 9, 2, 4, dtype=torch.float64), torch.randn(2, 9, 2, 5, dtype=torch.float64)
    g = torch.nn.functional.logsigmoid(torch.randn(2, 9, 2, 4, dtype=torch.float64))
    h0 = torch.randn(2, 2, 4, 5, dtype=torch.float64)
    o, final = interpret(spec_path("hgrn2"), q, v, g, scale=1.0, initial_state=h0, output_final_state=True)
    o_ref, final_ref = interpret(spec_path("gla"), q, 1 - g.exp(), v, g, scale=1.0, initial_state=h0,
                                 output_final_state=True)
    torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, final_ref, rtol=1e-12, atol=1e-12)


def test_first_heads_of_a_wider_model():
    """Lightning's slopes depend on H: a reference run on the first heads only (what check_op does at benchmark
    shapes) must be told the model's H, and then equals those heads of the full run. Without num_heads it does not."""
    q, k, v, _, h0 = random_inputs(9, None, H=4)
    o, final = interpret(spec_path("lightning"), q, k, v, initial_state=h0, output_final_state=True)
    o2, final2 = interpret(spec_path("lightning"), q[:, :, :2], k[:, :, :2], v[:, :, :2], initial_state=h0[:, :2],
                           output_final_state=True, num_heads=4)
    torch.testing.assert_close(o2, o[:, :, :2], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final2, final[:, :2], rtol=1e-12, atol=1e-12)
    wrong, _ = interpret(spec_path("lightning"), q[:, :, :2], k[:, :, :2], v[:, :, :2], initial_state=h0[:, :2])
    assert not torch.allclose(wrong, o[:, :, :2])
    with pytest.raises(ValueError, match="num_heads"):
        interpret(spec_path("lightning"), q, k, v, num_heads=2)


def test_rwkv6_reads_the_previous_state():
    """o_t = scale q_t (S_{t-1} + diag(u) k_t^T v_t), S_t = diag(exp(w_t)) S_{t-1} + k_t^T v_t, written out by hand."""
    q, k, v, (w,), h0 = random_inputs(10, "key")
    u = torch.randn(H, K, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    o, final = interpret(spec_path("rwkv6"), q, k, v, w, u, scale=0.6, initial_state=h0, output_final_state=True)
    state, outputs = h0.clone(), []
    for t in range(T):
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]
        outputs.append(0.6 * torch.einsum("bhk,bhkv->bhv", q[:, t], state + u[None, :, :, None] * kv))
        state = w[:, t].exp()[..., None] * state + kv
    torch.testing.assert_close(o, torch.stack(outputs, 1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, state, rtol=1e-12, atol=1e-12)
