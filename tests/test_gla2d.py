"""GLA with a 2-D (key x value) gate, `specs/gla2d.yaml`: S_t = (exp(g_t)^T exp(f_t)) * S_{t-1} + k_t^T v_t,
o_t = scale * q_t S_t, with g [B, T, H, K] and f [B, T, H, V] in log space.

Checked against a float64 recurrence written here (not the spec interpreter, which the shared tests use), for
odd lengths, K != V and gates from near 0 to several units per step: output, final state and the gradient of
every input and of the initial state, for `chunk` and `recurrent`; a state hand-off between them; and the
call errors (a gate of the wrong shape, sequence parallelism, which the planner refuses for this decay).
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import spec_path

from linattn_gen.check import relative_error
from linattn_gen.interpret import interpret

TOL = 2e-3


def reference(q, k, v, g, f, scale, initial_state):
    """The recurrence step by step, in the inputs' dtype (float64 here)."""
    B, T, H, K = q.shape
    state = initial_state
    outputs = []
    for t in range(T):
        decay = g[:, t].exp()[..., :, None] * f[:, t].exp()[..., None, :]  # [B, H, K, V]
        state = decay * state + k[:, t][..., :, None] * v[:, t][..., None, :]
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], state))
    return torch.stack(outputs, 1), state


# gates: "near 0" is logsigmoid(normal + 4) (about -0.02 per step), "strong" logsigmoid(2 normal) (down to about
# -5 per step), "hard" logsigmoid(20 normal) (down to about -50 per step: tests the rebasing's exponents)
GATES = {"near_zero": lambda x: F.logsigmoid(x + 4.0), "strong": lambda x: F.logsigmoid(2.0 * x),
         "hard": lambda x: F.logsigmoid(20.0 * x)}


def make_inputs(B, T, H, K, V, gates, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(B, T, H, K, generator=gen), torch.randn(B, T, H, K, generator=gen)
    v = torch.randn(B, T, H, V, generator=gen)
    g = GATES[gates](torch.randn(B, T, H, K, generator=gen))
    f = GATES[gates](torch.randn(B, T, H, V, generator=gen))
    h0 = torch.randn(B, H, K, V, generator=gen)
    return [q, k, v, g, f], h0


def run_with_grads(fn, inputs, h0, do, dfinal, **kwargs):
    leaves = [x.clone().requires_grad_() for x in inputs]
    h0 = h0.clone().requires_grad_()
    o, final = fn(*leaves, initial_state=h0, output_final_state=True, **kwargs)
    torch.autograd.backward([o, final], [do.to(o.dtype), dfinal.to(final.dtype)])
    return {"o": o, "final_state": final, **{f"d{n}": x.grad for n, x in zip("qkvgf", leaves)}, "dh0": h0.grad}


def reference_with_grads(inputs, h0, do, dfinal):
    K = inputs[0].shape[-1]
    return run_with_grads(lambda *x, initial_state, output_final_state: reference(*x, K**-0.5, initial_state),
                          [x.double() for x in inputs], h0.double(), do.double(), dfinal.double())


CASES = [  # (B, T, H, K, V, gates)
    (1, 45, 2, 32, 16, "strong"),
    (2, 130, 1, 16, 32, "near_zero"),
    (1, 130, 2, 32, 16, "strong"),
    (1, 70, 1, 16, 16, "hard"),
]


@pytest.mark.parametrize("op", ["chunk", "recurrent"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_matches_float64_recurrence(modules, op, case):
    *shape, gates = case
    inputs, h0 = make_inputs(*shape, gates, seed=sum(shape))
    gen = torch.Generator().manual_seed(1)
    B, T, H, K, V = shape
    do, dfinal = torch.randn(B, T, H, V, generator=gen), torch.randn(B, H, K, V, generator=gen)
    got = run_with_grads(getattr(modules["gla2d"], op), inputs, h0, do, dfinal)
    want = reference_with_grads(inputs, h0, do, dfinal)
    errors = {name: relative_error(got[name], want[name]) for name in want}
    assert all(torch.isfinite(x).all() for x in got.values())
    assert max(errors.values()) <= TOL, errors


def test_interpreter_agrees_with_the_recurrence():
    inputs, h0 = make_inputs(1, 9, 2, 4, 3, "strong", seed=3)
    inputs, h0 = [x.double() for x in inputs], h0.double()
    o, final = interpret(spec_path("gla2d"), *inputs, initial_state=h0, output_final_state=True)
    o_ref, final_ref = reference(*inputs, 4**-0.5, h0)
    torch.testing.assert_close(o, o_ref)
    torch.testing.assert_close(final, final_ref)


@pytest.mark.parametrize("first,second", [("chunk", "recurrent"), ("recurrent", "chunk")])
def test_prefix_then_suffix_equals_the_whole(modules, first, second):
    module = modules["gla2d"]
    inputs, h0 = make_inputs(1, 113, 2, 16, 32, "strong", seed=5)
    split = 77
    o1, state = getattr(module, first)(*[x[:, :split] for x in inputs], initial_state=h0, output_final_state=True)
    o2, final = getattr(module, second)(*[x[:, split:] for x in inputs], initial_state=state,
                                        output_final_state=True)
    o_ref, final_ref = reference(*[x.double() for x in inputs], 16**-0.5, h0.double())
    assert relative_error(torch.cat([o1, o2], 1), o_ref) <= TOL
    assert relative_error(final, final_ref) <= TOL


@pytest.mark.parametrize("op", ["chunk", "recurrent"])
def test_value_gate_of_the_wrong_shape(modules, op):
    inputs, _ = make_inputs(1, 8, 2, 32, 16, "strong", seed=6)
    inputs[4] = inputs[3]  # a key-sized gate where the value-sized f belongs
    with pytest.raises(ValueError, match=r"gate f must be \[B, T, H, V\] .* = \[1, 8, 2, 16\], got shape \(1, 8, 2, 32\)"):
        getattr(modules["gla2d"], op)(*inputs)


def test_key_gate_of_the_wrong_shape(modules):
    inputs, _ = make_inputs(1, 8, 2, 32, 16, "strong", seed=6)
    inputs[3] = inputs[4]
    with pytest.raises(ValueError, match=r"gate g must be \[B, T, HK, K\]"):
        modules["gla2d"].chunk(*inputs)


def test_sequence_parallelism_is_refused(modules):
    inputs, _ = make_inputs(1, 8, 2, 16, 16, "strong", seed=6)
    with pytest.raises(ValueError, match="sp_group .* not supported yet for gla2d"):
        modules["gla2d"].chunk(*inputs, sp_group=object())


def test_the_plan(modules):
    ops = modules["gla2d"].ops
    assert ops.GATES == ("g", "f")
    # no split state pass: its scan and fold carry no 2-D chunk decay (StatePassSplit.exists False)
    assert not hasattr(ops, "_state_pass_segments") and not hasattr(ops, "STATE_PASS_SPLIT")
    assert not hasattr(ops, "segment_scan_kernel") and not hasattr(ops, "fold_segment_states_kernel")
    assert not hasattr(ops, "chunk_fwd_carried_kernel")
