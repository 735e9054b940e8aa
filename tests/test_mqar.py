"""MQAR data is right, and a tiny model of a generated Layer learns (its loss falls) on the CPU."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import spec_path

from linattn_gen.check import random_inputs, relative_error
from linattn_gen.cli import main
from linattn_gen.mqar import learning_rate_schedule, mqar_batch, train_recall


def test_mqar_labels_are_the_bound_values():
    inputs, labels = mqar_batch(8, 64, 6, 64, generator=torch.Generator().manual_seed(0))
    for b in range(8):
        bindings = {int(inputs[b, 2 * i]): int(inputs[b, 2 * i + 1]) for i in range(6)}
        scored = (labels[b] != -100).nonzero().flatten()
        assert len(scored) == 6
        for p in scored:
            assert p >= 12
            assert bindings[int(inputs[b, p])] == int(labels[b, p])
        assert sorted(int(inputs[b, p]) for p in scored) == sorted(bindings)


@pytest.mark.parametrize("steps", [1, 2, 10, 11, 19, 20, 1000])
def test_learning_rate_schedule_runs_for_any_step_count(steps):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    sched = learning_rate_schedule(opt, 1e-2, steps)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert all(0.0 < r <= 1e-2 * (1 + 1e-9) for r in rates)
    if steps >= 20:  # one cycle: warm up to the peak over a tenth of the steps, then anneal
        peak = rates.index(max(rates))
        assert rates[0] < 1e-3 and abs(max(rates) - 1e-2) < 1e-4 and peak <= steps // 10 and rates[-1] < 1e-3


def test_tiny_recall_training_lowers_the_loss(modules):
    result = train_recall(modules["gla"], "gla", kv_pairs=2, seq_len=32, dim=32, layers=1, heads=2, steps=30,
                          batch=8, vocab=16, lr=1e-2, device="cpu", eval_batches=1)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < first, result.losses
    assert 0.0 <= result.accuracy <= 1.0


def test_mqar_command_writes_results(tmp_path):
    out = CliRunner().invoke(main, ["mqar", str(spec_path("linear_attn")), "--steps", "2", "--seq-len", "32",
                                    "--kv-pairs", "2", "--dim", "32", "--layers", "1", "--batch", "4", "--vocab", "16",
                                    "--lr", "1e-3,1e-2", "--device", "cpu", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "accuracy" in out.output and "best lr" in out.output
    (path,) = tmp_path.glob("mqar-cpu-*.json")
    (row,) = json.loads(path.read_text())["rows"]  # one (spec, kv pairs): the better of its two rates
    assert row["lr"] in (1e-3, 1e-2) and row["kv_pairs"] == 2


def test_tiny_lm_example_runs_on_the_cpu():
    import importlib.util

    from helpers import ROOT

    spec = importlib.util.spec_from_file_location("tiny_lm", ROOT / "examples" / "tiny_lm.py")
    tiny_lm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_lm)
    losses, valid = tiny_lm.main([str(spec_path("retnet")), "--device", "cpu", "--steps", "12", "--seq-len", "32",
                                  "--batch", "4", "--dim", "32", "--layers", "1", "--heads", "2", "--lr", "1e-2",
                                  "--corpus-bytes", "200000"])
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # byte statistics are learnt within a dozen steps
    assert math.isfinite(valid)


def _bench_script(name):
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["gla", "retnet"])
def test_cpu_study_tool_parallel_form_is_the_op(modules, name):
    # bench/mqar_reference_cpu.py stands in for the kernels when studying the Layer on the CPU: it must be the same op
    tool = _bench_script("mqar_reference_cpu")
    inputs, _ = random_inputs(spec_path(name), 2, 45, 2, 16, 32, seed=3, with_initial_state=False)
    expected, _ = modules[name].chunk(*inputs)
    actual, _ = tool.parallel_form(modules[name], spec_path(name))(*inputs)
    assert relative_error(actual, expected) < 1e-5


def test_cpu_study_tool_refuses_what_its_form_does_not_cover(modules):
    tool = _bench_script("mqar_reference_cpu")
    with pytest.raises(ValueError, match="normaliser"):
        tool.parallel_form(modules["katharopoulos"], spec_path("katharopoulos"))
