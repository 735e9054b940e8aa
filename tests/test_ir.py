"""Decay analysis (IR) and the plan's decay form, device-free; plus a scalar-gate spec run end to end."""

from __future__ import annotations

import math

import pytest
import sympy
import torch
from helpers import spec_path

from linattn_gen import load
from linattn_gen.check import check_op
from linattn_gen.errors import SpecError
from linattn_gen.ir import DecayKind, GateShape, build_ir
from linattn_gen.lower import lower
from linattn_gen.plan import DecayForm, DecaySource, plan_chunked
from linattn_gen.spec import parse_spec

SCALAR_GATE_SPEC = """\
name: scalar_gate
description: Linear attention with one data-dependent decay per head and step (Mamba-2 / simple GLA style)
inputs:
  q: [B, T, H, K]
  k: [B, T, H, K]
  v: [B, T, H, V]
  a: [B, T, H]
gates:
  a: {space: log}
decay:
  kind: data_dependent
  gate: scalar
recurrence:
  state: "S = exp(a) * S + outer(k, v)"
  output: "o = scale * (q @ S)"
"""


def ir_of(name):
    return build_ir(parse_spec(spec_path(name)))


def test_gla_decay():
    rec = ir_of("gla")
    decay = rec.decay
    assert decay.kind is DecayKind.DATA_DEPENDENT
    assert decay.gate.name == "g" and decay.gate.shape is GateShape.KEY
    assert decay.factors_out_of_key_sum is False
    assert decay.log_decay == sympy.Symbol("g", real=True)
    assert decay.dlog_decay_dgate == 1
    assert (rec.query, rec.key, rec.value, rec.input_names) == ("q", "k", "v", ("q", "k", "v", "g"))
    assert rec.scaled_output


def test_retnet_decay():
    decay = ir_of("retnet").decay
    assert decay.kind is DecayKind.CONSTANT
    assert decay.gate is None and decay.dlog_decay_dgate is None
    assert decay.factors_out_of_key_sum is True
    h = next(s for s in decay.log_decay.free_symbols if s.name == "h")
    assert {s.name for s in decay.log_decay.free_symbols} <= {"h", "H"}
    expected = sympy.log(1 - sympy.Integer(2) ** (-5 - h))
    for head in range(8):
        got = float(decay.log_decay.subs(h, head))
        assert got == pytest.approx(float(expected.subs(h, head)), rel=1e-14)
        assert got == pytest.approx(math.log(1 - 2.0 ** (-5 - head)), rel=1e-14)


def test_linear_attn_decay():
    decay = ir_of("linear_attn").decay
    assert decay.kind is DecayKind.NONE
    assert decay.gate is None and decay.log_decay == 0


@pytest.mark.parametrize("name, form, source", [
    ("gla", DecayForm.SUBCHUNK, DecaySource.GATE),
    ("retnet", DecayForm.MASK, DecaySource.PER_HEAD),
    ("linear_attn", DecayForm.NONE, DecaySource.NONE),
])
def test_plan_decay_form(name, form, source):
    plan = plan_chunked(ir_of(name))
    assert plan.decay_form is form and plan.decay_source is source


def test_retnet_plan_per_head_expression():
    """The host-side per-head log decay the plan emits evaluates to log(1 - 2^(-5 - h))."""
    plan = plan_chunked(ir_of("retnet"))
    for head in range(8):
        value = eval(plan.log_decay_per_head, {"math": math, "h": head, "H": 8})
        assert value == pytest.approx(math.log(1 - 2.0 ** (-5 - head)), rel=1e-14)


def test_equivalent_spellings_of_the_decay(tmp_path):
    """`S * exp(g)` and `exp(g) * S` are the same decay; so are gamma as a constant and inline."""
    path = tmp_path / "gla2.yaml"
    path.write_text(spec_path("gla").read_text().replace("exp(g) * S", "S * exp(g)"))
    assert build_ir(parse_spec(path)).decay == ir_of("gla").decay
    inline = spec_path("retnet").read_text().replace("gamma * S", "(1 - 2**(-5 - h)) * S")
    inline = inline.replace('constants:\n  gamma: "1 - 2**(-5 - h)"\n', "")
    path.write_text(inline)
    assert build_ir(parse_spec(path)).decay.log_decay.equals(ir_of("retnet").decay.log_decay)


def test_constant_decay_out_of_range(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(spec_path("retnet").read_text().replace('"1 - 2**(-5 - h)"', '"1 + 2**(-5 - h)"'))
    with pytest.raises(SpecError, match=r"must lie in \(0, 1\]"):
        build_ir(parse_spec(path))


def test_scalar_gate_plan(tmp_path):
    path = tmp_path / "scalar_gate.yaml"
    path.write_text(SCALAR_GATE_SPEC)
    compiled = lower(path)
    decay = compiled.recurrence.decay
    assert decay.kind is DecayKind.DATA_DEPENDENT and decay.gate.shape is GateShape.SCALAR
    assert decay.factors_out_of_key_sum is True
    assert compiled.plan.decay_form is DecayForm.MASK and compiled.plan.decay_source is DecaySource.GATE
    assert compiled.plan.gate_per_key is False


@pytest.mark.parametrize("gate_scale, with_initial_state", [(1.0, True), (20.0, False)])
def test_scalar_gate_kernel_matches_interpret(tmp_path, gate_scale, with_initial_state):
    path = tmp_path / "scalar_gate.yaml"
    path.write_text(SCALAR_GATE_SPEC)
    module = load(path)
    assert module.GATES == ("a",)
    result = check_op(module, path, 2, 90, 2, 32, 16, dtype=torch.float32, gate_scale=gate_scale, seed=7,
                      with_initial_state=with_initial_state)
    assert "da" in result.errors
    assert result.max_error <= 1e-3, result.errors
