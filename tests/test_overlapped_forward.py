"""The overlapped forward: the state pass and the output pass in one launch, the output programs waiting on per-chunk
counts that the state programs release. On the GPU the planner's rule (OVERLAPPED_FORWARD) decides, and it is off
until timed; here it is forced. The interpreter runs the programs one after another in index order, so the state
programs finish before any output program waits: these tests check the arithmetic and the bookkeeping (program
numbering, counts, clipping of the blocks), not the concurrency."""

import pytest
import torch
from helpers import SHIPPED_SPECS, spec_path

from linattn_gen.check import bounds_checked, check_op, random_inputs, relative_error
from linattn_gen.interpret import interpret


@pytest.fixture
def overlapped(monkeypatch):
    def force(module, on=True):
        monkeypatch.setattr(module.ops, "_overlaps_passes", lambda *args: on)

    return force


def _skip_without_kernel(module):
    if not hasattr(module.ops, "chunk_fwd_overlapped_kernel"):
        pytest.skip("the planner gives this spec no overlapped kernel (the 2-D gate: OverlappedForward.exists)")


@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_overlapped_matches_the_two_launches_and_the_reference(modules, overlapped, launches, name):
    module = modules[name]
    _skip_without_kernel(module)
    # K = 16 < the state programs' 64-row blocks and V = 32 < both roles' 128 columns: the blocks clip
    inputs, h0 = random_inputs(spec_path(name), 2, 64 * 2 + 37, 2, 16, 32, seed=51)
    grids = launches(module, "chunk_fwd_overlapped_kernel")
    with torch.no_grad():
        apart = module.chunk(*inputs, initial_state=h0, output_final_state=True)
    assert grids == []  # off on the CPU unless forced
    overlapped(module)
    with torch.no_grad(), bounds_checked():
        o, final = module.chunk(*inputs, initial_state=h0, output_final_state=True)
    assert grids  # every spec's forward reaches the kernel, through its derived inputs and normaliser
    assert relative_error(o, apart[0]) < 1e-5 and relative_error(final, apart[1]) < 1e-5
    ref_o, ref_final = interpret(spec_path(name), *[x.double() for x in inputs], initial_state=h0.double(),
                                 output_final_state=True)
    assert relative_error(o, ref_o) < 1e-3 and relative_error(final, ref_final) < 1e-3


@pytest.mark.parametrize("name", ["gla", "retnet", "linear_attn"])
def test_overlapped_training_forward_feeds_the_backward(modules, overlapped, launches, name):
    """The overlapped pass stores the state entering every chunk, which the backward reads: output, final state and
    every gradient against the float64 reference, with grouped heads (two value heads per key head) and K != V."""
    module = modules[name]
    overlapped(module)
    grids = launches(module, "chunk_fwd_overlapped_kernel")
    with bounds_checked():
        result = check_op(module, spec_path(name), 2, 64 * 3 + 5, 2, 32, 64, seed=52)
    assert grids
    assert max(result.errors.values()) < 1e-3, result.errors


def test_overlapped_grouped_heads_and_a_packed_batch(modules, overlapped, launches):
    """Value heads sharing query/key heads take the overlapped path; a packed batch (cu_seqlens) does not."""
    module = modules["gla"]
    inputs, _ = random_inputs(spec_path("gla"), 1, 150, 4, 16, 32, seed=53)
    inputs = [x if x.shape[-1] == 32 else x[:, :, :2] for x in inputs]  # two key heads for four value heads
    with torch.no_grad():
        apart, _ = module.chunk(*inputs)
    overlapped(module)
    grids = launches(module, "chunk_fwd_overlapped_kernel")
    with torch.no_grad(), bounds_checked():
        o, _ = module.chunk(*inputs)
        assert len(grids) == 1 and relative_error(o, apart) < 1e-5
        module.chunk(*inputs, cu_seqlens=torch.tensor([0, 70, 150]))
    assert len(grids) == 1  # the packed batch ran the two launches
