"""The per-key state passes sum a chunk's log decay with a 0/1 triangle product (`_rows_summed`): one pass in the
gate's own dtype when the log decay is a 16-bit gate itself (its values are exact there), three tf32 passes on fp32
operands otherwise. Both paths against the float64 recurrence under the interpreter: a 16-bit gate that is its own log
decay (GLA's), and a per-key log decay that is a function of the gate (the planner then takes the fp32 path)."""

from __future__ import annotations

import pytest
import torch
from helpers import import_package, spec_path, write_package

from linattn_gen import interpret
from linattn_gen.check import check_op, random_inputs, relative_error
from linattn_gen.interpret import recurrence_of
from linattn_gen.lower import lower
from linattn_gen.plan import plan_chunked

FP16_TOL = 1e-2
FP32_TOL = 1e-3

HALF_GATE_SPEC = """\
name: half_gate
description: GLA with half the gate's log decay per key dim
inputs:
  q: [B, T, H, K]
  k: [B, T, H, K]
  v: [B, T, H, V]
  g: [B, T, H, K]
gates:
  g: {space: log}
decay:
  kind: data_dependent
  gate: key
recurrence:
  state: "S = exp(g / 2) * S + outer(k, v)"
  output: "o = scale * (q @ S)"
"""


def test_the_planner_knows_when_the_log_decay_is_the_gate(tmp_path):
    assert plan_chunked(recurrence_of(spec_path("gla"))).log_decay_is_gate
    spec = tmp_path / "half_gate.yaml"
    spec.write_text(HALF_GATE_SPEC)
    plan = plan_chunked(recurrence_of(spec))
    assert plan.decay_form.value == "subchunk" and not plan.log_decay_is_gate


@pytest.mark.parametrize("gate_dtype", [torch.float16, torch.float32])
def test_gla_gate_in_16_bits_or_32(modules, gate_dtype):
    # fp16 inputs; the gate in fp16 takes the one-pass path in its own dtype, in fp32 the three-pass one
    inputs, h0 = random_inputs(spec_path("gla"), 1, 100, 2, 32, 32, dtype=torch.float16, seed=4)
    inputs[3] = inputs[3].to(gate_dtype)
    xs = [x.clone().requires_grad_() for x in inputs]
    o, ht = modules["gla"].chunk(*xs, initial_state=h0, output_final_state=True)
    ys = [x.detach().double().requires_grad_() for x in inputs]
    o_ref, ht_ref = interpret(spec_path("gla"), *ys, initial_state=h0.double(), output_final_state=True)
    do = torch.randn(o_ref.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    (o.double() * do).sum().backward()
    (o_ref * do).sum().backward()
    errors = {"o": relative_error(o, o_ref), "final_state": relative_error(ht, ht_ref)}
    errors.update({f"d{name}": relative_error(x.grad, y.grad) for name, x, y in zip("qkvg", xs, ys)})
    assert max(errors.values()) <= FP16_TOL, errors


@pytest.mark.parametrize("dtype, tol", [(torch.float32, FP32_TOL), (torch.float16, FP16_TOL)])
def test_a_log_decay_computed_from_the_gate(tmp_path, dtype, tol):
    spec = tmp_path / "half_gate.yaml"
    spec.write_text(HALF_GATE_SPEC)
    module = import_package(write_package(lower(spec).files, tmp_path / "half_gate"))
    result = check_op(module, spec, 2, 90, 2, 32, 16, dtype=dtype, seed=6)
    assert result.max_error <= tol, result.errors
