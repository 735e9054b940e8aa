"""The split state pass (long sequences, few heads): fwd_h and bwd_dh run per segment from a zero state, then a scan
over the segments and a fold into every chunk's state. On the GPU the planner's rule turns it on below half the SMs'
worth of programs; here it is forced, for every decay form, and must agree with the unsplit pass and the reference.
Gates decay slowly (about -0.02 per step): at the usual -0.8 a segment's state would have decayed to nothing by the
next segment, and the scan and fold would go untested."""

SLOW = 0.03  # gate_scale: logsigmoid(normal) * SLOW

import types

import pytest
import torch
from helpers import SHIPPED_SPECS, spec_path

from linattn_gen.check import bounds_checked, check_grouped_heads, check_op, random_inputs, relative_error
from linattn_gen.lower import lower


def _skip_without_split_pass(module):
    if not hasattr(module.ops, "_state_pass_segments"):
        pytest.skip("the planner gives this spec no split state pass (the 2-D gate, whose chunks' total decay would "
                    "be [K, V], which the scan and fold do not carry: StatePassSplit.exists)")


@pytest.fixture
def split_into(monkeypatch):
    def force(module, segments):
        monkeypatch.setattr(module.ops, "_state_pass_segments", lambda *args: segments)

    return force


def _run(module, inputs, h0):
    leaves = [x.clone().requires_grad_() for x in inputs]
    h0 = h0.clone().requires_grad_()
    o, final = module.chunk(*leaves, initial_state=h0, output_final_state=True)
    gen = torch.Generator().manual_seed(5)
    do, dfinal = torch.randn(o.shape, generator=gen), torch.randn(final.shape, generator=gen)
    torch.autograd.backward([o, final], [do, dfinal])
    return [o, final, h0.grad] + [x.grad for x in leaves]


@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_split_matches_reference(modules, split_into, name):
    _skip_without_split_pass(modules[name])
    split_into(modules[name], 3)  # T = 300: five chunks in segments of 2, 2 and 1 (the last one partial)
    with bounds_checked():
        result = check_op(modules[name], spec_path(name), 2, 300, 2, 16, 32, seed=31, gate_scale=SLOW)
    assert max(result.errors.values()) < 1e-3, result.errors


@pytest.mark.parametrize("name", ["gla", "retnet", "mamba2", "linear_attn"])
@pytest.mark.parametrize("segments", [2, 4])
def test_split_matches_unsplit(modules, split_into, name, segments):
    module = modules[name]
    inputs, h0 = random_inputs(spec_path(name), 2, 64 * 7 + 5, 2, 16, 16, seed=32, gate_scale=SLOW)
    unsplit = _run(module, inputs, h0)
    split_into(module, segments)
    split = _run(module, inputs, h0)
    for a, b in zip(split, unsplit):
        assert relative_error(a, b) < 1e-5


@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_the_split_pass_is_generated_where_the_plan_has_it(modules, name):
    """StatePassSplit.exists decides whether the ops and kernels carry the split pass at all: not for the 2-D gate
    (its chunk decay would be [K, V]), for every other shipped spec."""
    ops = modules[name].ops
    exists = lower(spec_path(name)).plan.state_pass_split.exists
    assert exists == (name != "gla2d")
    for attr in ("_state_pass_segments", "_split_fwd_h", "_split_bwd_dh", "_scan_and_fold", "STATE_PASS_SPLIT",
                 "segment_scan_kernel", "fold_segment_states_kernel"):
        assert hasattr(ops, attr) == exists, attr


def test_rule_splits_only_long_few_head_dense_batches(modules, monkeypatch):
    ops = modules["gla"].ops
    assert ops._state_pass_segments(1, 16, 128, 128, 256, "fwd_h", torch.device("cpu")) == 1  # not on the CPU
    below, target, min_chunks, min_sequence_chunks = ops.STATE_PASS_SPLIT
    assert 0 < below < target and min_chunks >= 1 and min_sequence_chunks == 2 * min_chunks
    # on an H200 (132 SMs): one 16-head sequence of 256 chunks has 32 fwd_h programs (two K blocks of 64), cut into
    # as many segments as keep them in one wave of two blocks per SM: 8 (256 programs), not 9 (288: a second wave)
    cuda = types.SimpleNamespace(type="cuda")
    monkeypatch.setattr(ops, "_multiprocessors", lambda device: 132)
    assert ops._launch("fwd_h", 128, 128)[:2] == (64, 128)
    assert ops._state_pass_segments(1, 16, 128, 128, 256, "fwd_h", cuda) == 8
    assert ops._state_pass_segments(1, 16, 128, 128, 512, "fwd_h", cuda) == 8
    assert ops._state_pass_segments(1, 16, 128, 128, 24, "fwd_h", cuda) == 3  # at least 8 chunks per segment
    assert ops._state_pass_segments(1, 16, 128, 128, 15, "fwd_h", cuda) == 1  # too short to cut
    assert ops._state_pass_segments(2, 16, 128, 128, 128, "fwd_h", cuda) == 1  # 64 programs: 0.48 per SM
    assert ops._state_pass_segments(1, 8, 128, 128, 1024, "fwd_h", cuda) == 16  # 16 programs: 256 again
    # Mamba-2's gate per step: from 512 chunks (T = 32K), below half the SMs' worth of programs (run 14); its fwd_h
    # and bwd_dh launches have 32 and 64 programs for one 16-head sequence
    mamba2 = modules["mamba2"].ops
    monkeypatch.setattr(mamba2, "_multiprocessors", lambda device: 132)
    assert mamba2.STATE_PASS_SPLIT == (0.5, 2.0, 8, 512)
    assert [mamba2._state_pass_segments(1, 16, 128, 128, 512, kernel, cuda) for kernel in ("fwd_h", "bwd_dh")] == [8, 4]
    assert mamba2._state_pass_segments(1, 16, 128, 128, 256, "fwd_h", cuda) == 1  # T = 16K: not measured to pay
    assert mamba2._state_pass_segments(2, 16, 128, 128, 512, "fwd_h", cuda) == 4  # 64 programs
    assert mamba2._state_pass_segments(3, 16, 128, 128, 512, "fwd_h", cuda) == 1  # 96 programs
    # a scalar decay's state passes are cheap: the split measured slower there, so the planner never splits them
    assert modules["retnet"].ops.STATE_PASS_SPLIT[0] == 0
    assert modules["linear_attn"].ops.STATE_PASS_SPLIT[0] == 0


@pytest.mark.parametrize("name", ["gla", "retnet"])
def test_split_with_grouped_heads(modules, split_into, name):
    """Grouped heads (4 value heads on 2 key heads): the chunk decays and folds follow the value heads."""
    split_into(modules[name], 3)
    errors = check_grouped_heads(modules[name], spec_path(name), "chunk", 1, 300, 2, 2, 16, 32, seed=33,
                                 gate_scale=SLOW)
    assert max(errors.values()) < 1e-4
