"""The Gluon carried forward (GluonCarriedForward in plan.py, chunk_fwd_carried_gluon_kernel in the generated
packages' gluon_kernels.py).

As for the Gluon output pass, the kernel itself is only compiled here (for sm_90a, through ptxas) and its numbers
are checked on the GPU (`bash bench/gpu_run.sh gluon-carried`). What runs on the CPU is checked here: the planner's
choice, the op's rule and segment count, and the states entering the segments (the split state pass's fwd_h without
chunk states, then its scan), which the kernel starts from, against the states the two-pass forward stores."""

from __future__ import annotations

import pytest
import torch
from helpers import ROOT, gluon_compiled

from linattn_gen import load
from linattn_gen.check import random_inputs, relative_error
from linattn_gen.lower import lower

WITH_GLUON = ["gla", "hgrn2", "rwkv6"]


def test_the_planner_gives_the_carried_forward_where_the_gluon_output_pass_is():
    for spec in (ROOT / "specs").glob("*.yaml"):
        plan = lower(spec).plan
        assert plan.gluon_carried_forward.exists == (spec.stem in WITH_GLUON), spec.stem
    plan = lower(ROOT / "specs" / "gla.yaml").plan
    assert set(plan.gluon_carried_forward.configs) == {(128, 128)}
    assert plan.gluon_carried_forward.in_inference


def test_when_the_carried_forward_applies():
    ops = load(ROOT / "specs" / "gla.yaml").ops
    bf16 = (torch.bfloat16,) * 4
    applies = dict(on_sm90=True, dtypes=bf16, contiguous=True, T=2048, K=128, V=128, packed=False,
                   need_states=False, sequence_parallel=False)
    assert ops._gluon_carried_forward_rule(**applies) == (8, 2)  # (num_warps, num_stages), the planner's
    for change in (dict(on_sm90=False), dict(T=200), dict(V=256), dict(K=64), dict(packed=True),
                   dict(contiguous=False), dict(sequence_parallel=True), dict(dtypes=(torch.float32,) * 4),
                   dict(dtypes=(torch.bfloat16,) * 3 + (torch.float32,))):
        assert ops._gluon_carried_forward_rule(**{**applies, **change}) is None, change
    # training forwards take it only where the planner says so
    assert (ops._gluon_carried_forward_rule(**{**applies, "need_states": True}) is not None) == \
        ops.GLUON_CARRIED_FORWARD_IN["training"]


def test_the_carried_forward_stays_off_the_cpu():
    ops = load(ROOT / "specs" / "gla.yaml").ops
    x = torch.zeros(1, 64, 1, 128, dtype=torch.bfloat16)
    assert ops._gluon_carried_forward(x, x, x, x, 64, 128, 128, None, False, None) is None


@pytest.mark.parametrize("N, H, NT, segments", [
    (16, 16, 16, 1),  # T = 1K at B*T = 16K: 256 programs already
    (8, 16, 32, 1),  # T = 2K: 128 programs, most of one wave on 132 SMs
    (4, 16, 64, 2),
    (2, 16, 128, 4),
    (1, 16, 256, 8),
    (1, 16, 512, 8),
    (1, 2, 32, 4),  # segments of no fewer than 8 chunks
    (1, 2, 7, 1),
])
def test_segments_fill_one_wave(N, H, NT, segments):
    ops = load(ROOT / "specs" / "gla.yaml").ops
    assert ops._carried_segments(N, H, NT, 132) == segments


@pytest.mark.parametrize("N, H, NT, layout", [
    (8, 16, 32, (32, 1, 1)),  # one segment: no state pass before it
    (4, 16, 64, (32, 2, 2)),  # 128 state-pass programs: on segments of 16 chunks, 256
    (2, 16, 128, (32, 4, 2)),  # 192 -> 384
    (1, 16, 256, (32, 8, 1)),  # 224 programs: enough
    (1, 16, 512, (64, 8, 1)),
    (2, 16, 64, (16, 4, 2)),  # segments of the state pass no shorter than 8 chunks
    (1, 2, 21, (11, 2, 1)),
])
def test_carried_layout_with_the_triton_state_pass(N, H, NT, layout, monkeypatch):
    ops = load(ROOT / "specs" / "gla.yaml").ops
    monkeypatch.setattr(ops, "GLUON_CARRIED_STATE_PASS", None)
    monkeypatch.setattr(ops, "GLUON_CARRIED_SEGMENTS", (*ops.GLUON_CARRIED_SEGMENTS[:2], 1.5))
    SEG, NS, step = ops._carried_layout(N, H, NT, 128, 128, 132)
    assert (SEG, NS, step) == layout
    assert SEG % step == 0 and (NS - 1) * SEG < NT <= NS * SEG
    assert NS == 1 or SEG // step >= ops.GLUON_CARRIED_SEGMENTS[1]


def test_the_gluon_state_pass_runs_unsplit():
    ops = load(ROOT / "specs" / "gla.yaml").ops
    assert ops.GLUON_CARRIED_STATE_PASS is not None
    for N, H, NT in ((4, 16, 64), (2, 16, 128), (1, 16, 256), (1, 16, 512)):
        assert ops._carried_layout(N, H, NT, 128, 128, 132)[2] == 1


@pytest.mark.parametrize("with_initial_state", [False, True])
@pytest.mark.parametrize("spec", ["gla", "rwkv6"])
def test_segment_entering_states_are_the_chunk_states_at_segment_starts(spec, with_initial_state):
    module = load(ROOT / "specs" / f"{spec}.yaml")
    ops = module.ops
    B, T, H, K, V = 2, 5 * 64, 2, 32, 32
    NT = T // 64
    inputs, h0 = random_inputs(ROOT / "specs" / f"{spec}.yaml", B, T, H, K, V, seed=11,
                               with_initial_state=with_initial_state)
    inputs = inputs[:4]  # q (r), k, v and the gate: the kernels' arguments (RWKV-6's bonus is added on the host)
    decay = ops._decay_input(inputs[0], inputs[2], inputs[3])
    SEG, NS, _, _ = ops._segment_layout(B, T, NT, 3, inputs[0].device)
    assert (SEG, NS) == (2, 3)  # an uneven split: 2, 2, then 1 chunk
    entering = ops._segment_entering_states(inputs[1], inputs[2], decay, h0, T, NT, SEG, NS, NS - 1, "float32")
    _, h, _ = ops.chunk_fwd(*inputs, K ** -0.5, h0, False, None, None, None)
    entering = entering.view(B, NS, H, K, V)
    for s in range(NS):
        assert relative_error(entering[:, s], h[:, s * SEG]) < 1e-5, s
    if h0 is None:
        assert entering[:, 0].abs().max() == 0
    else:
        assert relative_error(entering[:, 0], h0) < 1e-6
    # only the first two wanted: the state pass skips the rest
    entering = ops._segment_entering_states(inputs[1], inputs[2], decay, h0, T, NT, SEG, NS, 1, "float32")
    entering = entering.view(B, NS, H, K, V)
    for s in range(2):
        assert relative_error(entering[:, s], h[:, s * SEG]) < 1e-5, s


@pytest.mark.parametrize("spec", WITH_GLUON)
def test_generated_carried_kernel_compiles_for_hopper(spec):
    compiled = gluon_compiled(spec)
    plan = lower(ROOT / "specs" / f"{spec}.yaml").plan
    for K, V in plan.gluon_carried_forward.configs:
        for store_states in (False, True):
            kernel = compiled[f"carried {K}x{V} store_states={store_states}"]
            assert kernel["shared"] <= 227 * 1024, kernel  # one block per SM must fit
            assert kernel["wgmma"] > 0
            assert kernel["tma"] > 0  # the tiles arrive by TMA
        if plan.gluon_carried_forward.gluon_state_pass is not None:
            kernel = compiled[f"segment ends {K}x{V}"]
            assert kernel["shared"] <= 227 * 1024 and kernel["wgmma"] > 0 and kernel["tma"] > 0, kernel
