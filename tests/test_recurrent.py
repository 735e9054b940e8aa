"""`recurrent` (token-by-token kernels) against the float64 reference, and state hand-off between chunk and recurrent."""

import pytest
import torch
from helpers import SHIPPED_SPECS, along_t, spec_path

from linattn_gen.check import as_chunk, check_op, random_inputs, relative_error
from linattn_gen.interpret import interpret

TOL = 1e-3


@pytest.mark.parametrize("name", SHIPPED_SPECS)
@pytest.mark.parametrize("shape", [(2, 37, 2, 32, 64), (1, 1, 1, 16, 16), (1, 20, 2, 64, 16)], ids=str)
def test_recurrent_matches_interpret(modules, name, shape):
    result = check_op(as_chunk(modules[name], "recurrent"), spec_path(name), *shape, seed=sum(shape))
    assert result.max_error <= TOL, result.errors


@pytest.mark.parametrize("name", ["gla", "mamba2", "gla2d"])
@pytest.mark.parametrize("op", ["chunk", "recurrent"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 16, 32), (2, 3, 2, 32, 16), (1, 70, 1, 16, 16)], ids=str)
@pytest.mark.parametrize("with_initial_state", [True, False])
def test_gate_gradient_under_hard_decay(modules, name, op, shape, with_initial_state):
    """Gates near exp(-15) per step: the gate gradient is tiny and must not be the rounding of a cancellation.

    The closed form q * dq - k * dk once carried the diagonal pairs and the final-state pairs on both sides; at one
    token its float32 relative error was up to 2e-2 (mamba2, fp32), varying with the cotangent.
    """
    module = as_chunk(modules[name], op)
    for seed in range(3):
        result = check_op(module, spec_path(name), *shape, gate_scale=20.0, seed=seed,
                          with_initial_state=with_initial_state)
        assert result.max_error <= TOL, (seed, result.errors)


@pytest.mark.parametrize("name", SHIPPED_SPECS)
@pytest.mark.parametrize("first,second", [("chunk", "recurrent"), ("recurrent", "chunk")])
def test_state_hand_off(modules, name, first, second):
    """Prefill with one op, continue with the other from its final state: equals the whole sequence, gradients too."""
    module, path = modules[name], spec_path(name)
    B, T, H, K, V, split = 2, 90, 2, 32, 16, 67
    inputs, h0 = random_inputs(path, B, T, H, K, V, seed=7)
    leaves = [x.clone().requires_grad_() for x in inputs]
    head = [along_t(x, slice(None, split)) for x in leaves]
    tail = [along_t(x, slice(split, None)) for x in leaves]
    o1, state = getattr(module, first)(*head, initial_state=h0, output_final_state=True)
    o2, final = getattr(module, second)(*tail, initial_state=state, output_final_state=True)
    o = torch.cat([o1, o2], dim=1)
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(8))
    (o * do).sum().backward()

    refs = [x.detach().double().requires_grad_() for x in inputs]
    o_ref, final_ref = interpret(path, *refs, initial_state=h0.double(), output_final_state=True)
    (o_ref * do.double()).sum().backward()
    assert relative_error(o, o_ref) <= TOL
    assert relative_error(final, final_ref) <= TOL
    for leaf, ref in zip(leaves, refs):
        assert relative_error(leaf.grad, ref.grad) <= TOL
