"""The carried forward: one program per (sequence, head, V block) walks the chunks with the state in registers, in
place of fwd_h then fwd_o; for inference it writes no chunk states, for training it writes them on the way. On the
GPU the planner's rule (CARRIED_FORWARD) decides; here it is forced, for every spec and decay form, and must agree
with the materialized forward and with the float64 reference."""

import pytest
import torch
from helpers import SHIPPED_SPECS, spec_path

from linattn_gen.check import bounds_checked, check_op, random_inputs, relative_error
from linattn_gen.interpret import interpret


@pytest.fixture
def carried(monkeypatch):
    def force(module, on=True):
        monkeypatch.setattr(module.ops, "_carries_states", lambda *args: on)

    return force


def _skip_without_carried_kernel(module):
    if not hasattr(module.ops, "chunk_fwd_carried_kernel"):
        pytest.skip("the planner gives this spec no carried kernel (the 2-D gate: CarriedForward.exists)")


def _forward(module, inputs, h0, **kwargs):
    with torch.no_grad():
        return module.chunk(*inputs, initial_state=h0, output_final_state=True, **kwargs)


@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_carried_matches_materialized_and_reference(modules, carried, launches, name):
    module = modules[name]
    _skip_without_carried_kernel(module)
    inputs, h0 = random_inputs(spec_path(name), 2, 64 * 2 + 37, 2, 16, 32, seed=41)
    grids = launches(module, "chunk_fwd_carried_kernel")
    materialized = _forward(module, inputs, h0)
    assert grids == []  # off on the CPU unless forced
    carried(module)
    with bounds_checked():
        o, final = _forward(module, inputs, h0)
    assert grids  # every spec's inference forward reaches the kernel, through its derived inputs and normaliser
    assert relative_error(o, materialized[0]) < 1e-5 and relative_error(final, materialized[1]) < 1e-5
    ref_o, ref_final = interpret(spec_path(name), *[x.double() for x in inputs], initial_state=h0.double(),
                                 output_final_state=True)
    assert relative_error(o, ref_o) < 1e-3 and relative_error(final, ref_final) < 1e-3


@pytest.mark.parametrize("name", ["gla", "retnet", "mamba2"])
def test_carried_packed_batch_and_grouped_heads(modules, carried, name):
    """A packed batch (a sequence shorter than a chunk, an empty one) with per-sequence initial states, and value
    heads sharing query/key heads, against separate unforced runs."""
    module = modules[name]
    lengths = [37, 64, 1, 0, 90]
    inputs, _ = random_inputs(spec_path(name), 1, sum(lengths), 4, 16, 32, seed=42)
    # two query/key heads (and their gates) shared by pairs of the four value heads
    inputs = [x if x.dim() == 4 and x.shape[-1] == 32 else x[:, :, :2] for x in inputs]
    h0 = torch.randn(len(lengths), 4, 16, 32) * 0.1
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    carried(module)
    with bounds_checked():
        o, final = _forward(module, inputs, h0, cu_seqlens=cu)
    carried(module, on=False)
    for i in range(len(lengths)):
        start, end = int(cu[i]), int(cu[i + 1])
        if start == end:
            assert torch.equal(final[i], h0[i])
            continue
        part = [x[:, start:end] for x in inputs]
        o_i, final_i = _forward(module, part, h0[i:i + 1])
        assert relative_error(o[:, start:end], o_i) < 1e-5
        assert relative_error(final[i], final_i[0]) < 1e-5


@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_carried_training_forward_stores_the_states(modules, carried, launches, name):
    """With autograd the carried pass also writes the state entering every chunk, which the backward reads: output,
    final state and every gradient against the float64 reference."""
    module = modules[name]
    _skip_without_carried_kernel(module)
    carried(module)
    grids = launches(module, "chunk_fwd_carried_kernel")
    with bounds_checked():
        result = check_op(module, spec_path(name), 2, 64 * 2 + 21, 2, 16, 32, seed=44)
    assert grids
    assert max(result.errors.values()) < 1e-3, result.errors
