"""The generated chunked kernels (run by the Triton interpreter) against `interpret` in float64.

Every check compares the output, the final state and the gradient of every input, the gate and the initial state.
Errors are relative: ||kernel - reference|| / ||reference||.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import torch
from helpers import SHIPPED_SPECS, spec_path
from hypothesis import example, given, note
from hypothesis import strategies as st

from linattn_gen import interpret
from linattn_gen.check import check_op, random_inputs, relative_error

FP32_TOL = 1e-3
NORMALISED = {"katharopoulos"}  # normalization: sum
FP16_TOL = 1e-2
EXPECTED_ERRORS = {
    "gla": {"o", "final_state", "dq", "dk", "dv", "dg", "dinitial_state"},
    "retnet": {"o", "final_state", "dq", "dk", "dv", "dinitial_state"},
    "linear_attn": {"o", "final_state", "dq", "dk", "dv", "dinitial_state"},
    "mamba2": {"o", "final_state", "dq", "dk", "dv", "dg", "dinitial_state"},
    "lightning": {"o", "final_state", "dq", "dk", "dv", "dinitial_state"},
    "hgrn2": {"o", "final_state", "dq", "dv", "dg", "dinitial_state"},  # k = 1 - exp(g) is derived, not an input
    "katharopoulos": {"o", "final_state", "dq", "dk", "dv", "dinitial_state"},
    "rwkv6": {"o", "final_state", "dq", "dk", "dv", "dw", "du", "dinitial_state"},  # u: the per-head bonus
    "gla2d": {"o", "final_state", "dq", "dk", "dv", "dg", "df", "dinitial_state"},  # g: key side, f: value side
}


def assert_within(result, tol):
    bad = {name: err for name, err in result.errors.items() if not err <= tol}
    assert not bad, f"{result.spec} {result.dtype} {result.shape}: errors over {tol:g}: {bad} (all: {result.errors})"


@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_fixed_case_fp32(modules, name):
    result = check_op(modules[name], spec_path(name), 2, 100, 2, 32, 64, dtype=torch.float32, seed=0)
    assert set(result.errors) == EXPECTED_ERRORS[name]
    assert_within(result, FP32_TOL)


@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_fixed_case_fp16(modules, name):
    result = check_op(modules[name], spec_path(name), 2, 100, 2, 32, 64, dtype=torch.float16, seed=1)
    assert_within(result, FP16_TOL)


@pytest.mark.parametrize("K, V", [(32, 32), (64, 16)])
def test_gla_strong_gates_fp32(modules, K, V):
    """gate_scale=20 makes a 16-row sub-chunk span far more than the rebasing limit: the single-row fallback runs."""
    result = check_op(modules["gla"], spec_path("gla"), 1, 70, 2, K, V, dtype=torch.float32, gate_scale=20.0, seed=2)
    assert_within(result, FP32_TOL)


def test_gla_strong_gates_fp16(modules):
    result = check_op(modules["gla"], spec_path("gla"), 1, 70, 1, 32, 16, dtype=torch.float16, gate_scale=20.0, seed=3)
    assert_within(result, FP16_TOL)


head_dims = st.lists(st.sampled_from([16, 32, 64]), min_size=2, max_size=2, unique=True)  # K != V
log_gate_scale = st.floats(math.log(0.01), math.log(20.0))


@pytest.mark.parametrize("name", SHIPPED_SPECS)
@given(B=st.integers(1, 2), T=st.integers(1, 150), H=st.integers(1, 2), dims=head_dims, log_gate=log_gate_scale,
       with_initial_state=st.booleans(), seed=st.integers(0, 2**32 - 1))
@example(B=1, T=1, H=1, dims=[16, 32], log_gate=0.0, with_initial_state=True, seed=0)
@example(B=1, T=1, H=1, dims=[16, 32], log_gate=0.0, with_initial_state=False, seed=0)  # gla: the reference dg is 0
@example(B=2, T=65, H=2, dims=[32, 16], log_gate=math.log(20.0), with_initial_state=False, seed=1)
@example(B=1, T=127, H=1, dims=[64, 32], log_gate=math.log(0.01), with_initial_state=True, seed=2)
def test_property_fp32(modules, name, B, T, H, dims, log_gate, with_initial_state, seed):
    K, V = dims
    result = check_op(modules[name], spec_path(name), B, T, H, K, V, dtype=torch.float32,
                      gate_scale=math.exp(log_gate), seed=seed, with_initial_state=with_initial_state)
    note(f"errors: {result.errors}")
    if name in NORMALISED and T == 1 and not with_initial_state:
        # o_1 = v_1 * den / (den + 1e-6) does not depend on q: the exact dq is 1e-6 of the two terms (numerator and
        # normaliser paths) whose float32 difference forms it, in any implementation; the rest must still hold
        result = dataclasses.replace(result, errors={k: e for k, e in result.errors.items() if k != "dq"})
    assert_within(result, FP32_TOL)


@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_scale_argument_and_no_final_state(modules, name):
    inputs, _ = random_inputs(spec_path(name), 1, 40, 2, 16, 32, seed=4, with_initial_state=False)
    # an output without `scale` in the spec (katharopoulos) has no scale argument
    scale = {"scale": 0.3} if "scale" in inspect.signature(modules[name].chunk).parameters else {}
    o, final = modules[name].chunk(*inputs, **scale)
    assert final is None
    assert o.shape == (1, 40, 2, 32) and o.dtype == torch.float32
    o_ref, _ = interpret(spec_path(name), *(x.double() for x in inputs), **scale)
    torch.testing.assert_close(o.double(), o_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_non_contiguous_inputs(modules, name):
    """Inputs laid out [B, H, T, D] and viewed as [B, T, H, D] give the same result as contiguous ones."""
    inputs, h0 = random_inputs(spec_path(name), 2, 50, 2, 32, 16, seed=5)
    strided = [x.t().contiguous().t() if x.dim() == 2 else x.transpose(1, 2).contiguous().transpose(1, 2)
               for x in inputs]
    assert not strided[0].is_contiguous()
    o, final = modules[name].chunk(*strided, initial_state=h0, output_final_state=True)
    o_ref, final_ref = modules[name].chunk(*inputs, initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, o_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(final, final_ref, rtol=1e-6, atol=1e-6)


def test_relative_error():
    expected = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert relative_error(expected + torch.tensor([0.0, 0.5]), expected) == pytest.approx(0.1)
    # an identically zero reference (one gated step, no initial state) is judged by the RMS of the difference
    assert relative_error(torch.full((4,), 1e-6), torch.zeros(4)) == pytest.approx(1e-6)
    assert relative_error(torch.tensor([float("nan"), 0.0]), expected) == float("inf")
