"""The launch-config tuner (`_tuned` in every generated ops module): off the GPU and when tuning is off it returns
the launch table's config untouched; on, it times every candidate once per shape bucket, keeps the fastest, and a
later process reads it back from disk without timing again. The GPU, its name and the timer are stood in for."""

import json
import os

import pytest
import torch
import triton.testing
from helpers import spec_path

from linattn_gen.check import random_inputs


class FakeCuda:
    type = "cuda"


@pytest.fixture
def tuner(modules, monkeypatch, tmp_path):
    ops = modules["gla"].ops
    monkeypatch.setenv("LINATTN_GEN_CACHE", str(tmp_path))
    monkeypatch.setattr(ops, "AUTOTUNE", True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    ops._tuning_table.cache_clear()
    timed = []

    def do_bench(fn, **kwargs):  # the run closure records its config; the fake time favours BV = 64, then 8 warps
        fn()
        BK, BV, warps, stages = timed[-1]
        return (BV == 64) * -1.0 + (warps == 8) * -0.5 + 10.0

    monkeypatch.setattr(triton.testing, "do_bench", do_bench)
    yield ops, timed, tmp_path
    ops._tuning_table.cache_clear()


def test_off_the_gpu_and_when_off_the_table_decides(modules, monkeypatch):
    ops = modules["gla"].ops
    if "LINATTN_GEN_AUTOTUNE" not in os.environ:
        assert ops.AUTOTUNE is True  # the planner turns it on (measured on the H200, run 8)
    never = lambda *config: pytest.fail("no config may be timed")  # noqa: E731
    assert ops._tuned("bwd_dv", 128, 128, (16, 32), "bfloat16", torch.device("cpu"), never) == ops._launch(
        "bwd_dv", 128, 128)
    monkeypatch.setattr(ops, "AUTOTUNE", False)  # LINATTN_GEN_AUTOTUNE=0: the table decides on the GPU too
    assert ops._tuned("bwd_dv", 128, 128, (16, 32), "bfloat16", FakeCuda(), never) == ops._launch(
        "bwd_dv", 128, 128)


def test_fastest_candidate_is_kept_on_disk(tuner):
    ops, timed, tmp_path = tuner
    run = lambda *config: timed.append(config)  # noqa: E731
    best = ops._tuned("bwd_dqkg", 128, 128, (16, 30), "bfloat16", FakeCuda(), run)
    candidates = ops.AUTOTUNE_CANDIDATES["bwd_dqkg"][(128, 128)]
    assert sorted(set(timed)) == sorted(candidates)  # every candidate timed, the table's among them
    assert all(timed.count(c) == ops.TUNING_ROUNDS for c in candidates)  # in every round
    assert best == (64, 64, 8, 1)  # BV = 64 and 8 warps: the fake timer's fastest
    (path,) = tmp_path.glob("tuning-gla-*.json")
    (key, config), = json.loads(path.read_text()).items()
    assert "bwd_dqkg" in key and "chunks<=32" in key and "Fake GPU" in key and tuple(config) == best

    timed.clear()  # the same bucket (30 and 27 chunks both round up to 32): no timing
    assert ops._tuned("bwd_dqkg", 128, 128, (16, 27), "bfloat16", FakeCuda(), run) == best and timed == []
    ops._tuning_table.cache_clear()  # a new process reads the file
    assert ops._tuned("bwd_dqkg", 128, 128, (16, 30), "bfloat16", FakeCuda(), run) == best and timed == []
    ops._tuned("bwd_dqkg", 128, 128, (16, 64), "bfloat16", FakeCuda(), run)  # another bucket is timed afresh
    assert timed


@pytest.mark.parametrize("name", ["gla", "retnet", "linear_attn"])
def test_candidates_are_clipped_to_each_head(modules, name):
    # the planner emits each kernel's candidates per head shape, as it does the launch table
    ops = modules[name].ops
    for kernel, table in ops.AUTOTUNE_CANDIDATES.items():
        assert set(table) == set(ops.LAUNCH[kernel])
        for (K, V), configs in table.items():
            assert configs[0] == ops._launch(kernel, K, V), (kernel, K, V)  # the table's comes first
            assert len(set(configs)) == len(configs), (kernel, K, V)  # clipping leaves no repeats to time twice
            assert all(BK <= K and BV <= V for BK, BV, _, _ in configs), (kernel, K, V, configs)
    assert len(ops.AUTOTUNE_CANDIDATES["fwd_h"][(16, 16)]) < len(ops.AUTOTUNE_CANDIDATES["fwd_h"][(128, 128)])


@pytest.mark.parametrize("name", ["gla", "retnet", "linear_attn"])
def test_no_launch_takes_a_32_row_key_block_with_4_warps(modules, name):
    # ptxas miscompiles WGMMA there (Triton issue 11366): the table and the clipped candidates give such blocks 8 warps
    ops = modules[name].ops
    dot_kernels = set(ops.AUTOTUNE_CANDIDATES) | {"fwd_carried"}
    for kernel in dot_kernels:
        for (K, V), (BK, BV, warps, stages) in ops.LAUNCH[kernel].items():
            assert not (BK == 32 and warps == 4), (kernel, K, V)
    for kernel, table in ops.AUTOTUNE_CANDIDATES.items():
        for (K, V), configs in table.items():
            assert not [c for c in configs if c[0] == 32 and c[2] == 4], (kernel, K, V, configs)
    # (64, 128, 4, 2), a candidate of every spec's output pass, clipped to a 32-row key
    assert (32, 128, 8, 2) in ops.AUTOTUNE_CANDIDATES["fwd_o"][(32, 128)]


@pytest.mark.parametrize("name", ["gla", "retnet", "linear_attn", "mamba2", "lightning"])
def test_register_caps_name_launches_the_op_can_make(modules, name):
    # a cap keyed by a config that neither the table nor the tuner can launch at K = V = 128 would never apply
    ops = modules[name].ops
    for kernel, caps in ops.REGISTER_CAPS.items():
        reachable = {ops._launch(kernel, 128, 128), *ops.AUTOTUNE_CANDIDATES[kernel][(128, 128)]}
        for config, registers in caps.items():
            assert config in reachable and 64 <= registers <= 255, (kernel, config, registers)
    # measured there (runs 13 and 14), and only there
    assert bool(ops.REGISTER_CAPS) == (name in ("retnet", "lightning", "mamba2"))


def test_the_launches_pass_the_planners_register_caps(modules, monkeypatch):
    # RetNet at K = V = 128 runs its output and dv passes capped (the table's configs); GLA and a narrow head do not
    from linattn_gen.bench import record_launches

    for name, K, expected in (("retnet", 128, {"chunk_fwd_o_kernel": 168, "chunk_bwd_dv_kernel": 128}),
                              ("retnet", 32, {}), ("gla", 128, {})):
        module = modules[name]
        launches = record_launches(module, assign=monkeypatch.setattr)
        inputs, _ = random_inputs(spec_path(name), 1, 64, 1, K, K, seed=3)
        leaves = [x.clone().requires_grad_() for x in inputs]
        module.chunk(*leaves)[0].sum().backward()
        capped = {launch.kernel: launch.kwargs["maxnreg"] for launch in launches
                  if launch.kwargs.get("maxnreg") is not None}
        assert capped == expected, (name, K, capped)
        assert all("maxnreg" in launch.kwargs for launch in launches if launch.kernel.startswith("chunk_"))


def test_a_candidate_that_fails_is_skipped_but_the_table_must_run(tuner):
    ops, timed, tmp_path = tuner
    favourite = (64, 64, 4, 3)  # BV = 64: the fake timer's fastest bwd_dv candidate, not the table's
    assert favourite != ops._launch("bwd_dv", 128, 128) and favourite in ops.AUTOTUNE_CANDIDATES["bwd_dv"][(128, 128)]

    failures = []

    def run(*config):  # ... and it cannot compile on this "GPU"
        if config == favourite:
            failures.append(config)
            raise RuntimeError("out of resources: shared memory")
        timed.append(config)

    with pytest.warns(UserWarning, match=r"bwd_dv: launch config \(64, 64, 4, 3\) skipped"):
        best = ops._tuned("bwd_dv", 128, 128, (16, 30), "bfloat16", FakeCuda(), run)
    assert best != favourite and best in timed
    assert failures == [favourite]  # tried once, not again in the later rounds

    default = ops._launch("bwd_dqkg", 128, 128)

    def broken_table(*config):
        if config == default:
            raise RuntimeError("the launch table's config does not compile")
        timed.append(config)

    with pytest.raises(RuntimeError, match="launch table"):
        ops._tuned("bwd_dqkg", 128, 128, (16, 30), "bfloat16", FakeCuda(), broken_table)


def test_a_config_too_big_for_shared_memory_runs_with_fewer_stages(modules, monkeypatch):
    from triton.runtime.errors import OutOfResources

    ops = modules["gla"].ops
    monkeypatch.setattr(ops, "_FITTED_STAGES", {})
    monkeypatch.setattr(ops, "LAST_LAUNCH", {})
    tried = []

    def run(BK, BV, warps, stages):  # this "GPU" holds two pipeline stages of the config, not three
        tried.append(stages)
        if stages > 2:
            raise OutOfResources(294912, 232448, "shared memory")
        return "ran"

    assert ops._fitted("fwd_h", (64, 128, 4, 3), "float32", run) == "ran" and tried == [3, 2]
    assert ops.LAST_LAUNCH == {"fwd_h": (64, 128, 4, 2)}  # what ran, for the bench's rows
    tried.clear()  # remembered: the next call goes straight to two stages
    assert ops._fitted("fwd_h", (64, 128, 4, 3), "float32", run) == "ran" and tried == [2]
    tried.clear()  # another dtype is its own question
    assert ops._fitted("fwd_h", (64, 128, 4, 3), "bfloat16", run) == "ran" and tried == [3, 2]

    def never_fits(BK, BV, warps, stages):
        raise OutOfResources(1 << 20, 232448, "shared memory")

    with pytest.raises(OutOfResources):  # one stage that still does not fit is the caller's error, not a loop
        ops._fitted("fwd_o", (128, 128, 4, 2), "float32", never_fits)
    assert "fwd_o" not in ops.LAST_LAUNCH  # nothing launched


def test_the_tuner_fits_the_table_config_too(tuner, monkeypatch):
    from triton.runtime.errors import OutOfResources

    ops, timed, _ = tuner
    monkeypatch.setattr(ops, "_FITTED_STAGES", {})
    default = ops._launch("fwd_h", 128, 128)

    def run(*config):
        if config == default:  # the table's config needs one stage less here; it is timed that way, not dropped
            raise OutOfResources(294912, 232448, "shared memory")
        timed.append(config)

    ops._tuned("fwd_h", 128, 128, (16, 30), "float32", FakeCuda(), run)
    assert (*default[:3], default[3] - 1) in timed


def test_each_candidate_keeps_its_best_round(tuner, monkeypatch):
    ops, timed, tmp_path = tuner
    assert ops.TUNING_ROUNDS == 2
    default = ops._launch("bwd_dqkg", 128, 128)
    other = next(c for c in ops.AUTOTUNE_CANDIDATES["bwd_dqkg"][(128, 128)] if c != default)
    # round 1 favours `other` (the table's config looks slow, as on a GPU still raising its clocks); round 2 shows the
    # table's config faster than `other` ever was: one round would have kept `other`
    times = {(default, 1): 9.0, (default, 2): 5.0, (other, 1): 6.0, (other, 2): 7.0}

    def do_bench(fn, **kwargs):
        fn()
        config = timed[-1]
        return times.get((config, timed.count(config)), 100.0)

    monkeypatch.setattr(triton.testing, "do_bench", do_bench)
    assert ops._tuned("bwd_dqkg", 128, 128, (16, 30), "bfloat16", FakeCuda(), lambda *c: timed.append(c)) == default
