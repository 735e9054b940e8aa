"""Which fla op each spec is benchmarked against: `bench._baseline` picks it from the plan, never from the spec's name.

fla itself needs a GPU, so a stand-in `fla` package records which of its functions a baseline calls and with what.
"""

import sys
import types

import pytest
import torch

from linattn_gen import load
from linattn_gen.bench import _baseline
from linattn_gen.check import random_inputs
from linattn_gen.interpret import recurrence_of
from linattn_gen.plan import plan_chunked

# spec -> (fla function the baseline must call, the fla operands' count)
EXPECTED = {
    "gla": ("chunk_gla", 4),
    "hgrn2": ("chunk_gla", 4),  # HGRN2 is GLA with the key 1 - exp(g), which is how fla runs it
    "retnet": ("chunk_simple_gla", 3),  # with g_gamma
    "lightning": ("chunk_simple_gla", 3),
    "mamba2": ("chunk_simple_gla", 3),  # with a data-dependent scalar gate g
    "linear_attn": ("chunk_linear_attn", 3),
    "katharopoulos": ("chunk_linear_attn", 3),  # on (elu(q) + 1, elu(k) + 1, v), with fla's normaliser
    "rwkv6": ("chunk_rwkv6", 5),
    "based": ("fused_chunk_based", 3),
}


@pytest.fixture()
def fake_fla(monkeypatch):
    calls = []

    def recorder(name):
        def fn(*args, **kwargs):
            calls.append((name, args, kwargs))
            out = args[2].clone()  # o has v's shape
            return out if name == "fused_chunk_based" else (out, None)
        return fn

    modules = {"fla": types.ModuleType("fla"), "fla.ops": types.ModuleType("fla.ops")}
    for sub, names in {"gla": ["chunk_gla"], "linear_attn": ["chunk_linear_attn"], "simple_gla": ["chunk_simple_gla"],
                       "rwkv6": ["chunk_rwkv6"], "based": ["fused_chunk_based"]}.items():
        mod = types.ModuleType(f"fla.ops.{sub}")
        for name in names:
            setattr(mod, name, recorder(name))
        modules[f"fla.ops.{sub}"] = mod
    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return calls


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_spec_reaches_its_fla_equivalent(fake_fla, name):
    spec = f"specs/{name}.yaml"
    module, plan = load(spec), plan_chunked(recurrence_of(spec))
    fn, note = _baseline("fla", plan, module)
    assert fn is not None, note
    K = 16 if name == "based" else 32
    inputs, _ = random_inputs(spec, 1, 20, 2, K, 16, dtype=torch.float32, device="cpu", seed=0)
    out = fn(*inputs)
    called, args, kwargs = fake_fla[-1]
    assert (called, len(args)) == EXPECTED[name], f"{name}: {note}"
    assert tuple(out.shape) == (1, 20, 2, 16)  # o: [B, T, H, V]
    if name in ("retnet", "lightning"):
        assert kwargs["g_gamma"].shape == (2,)
    if name == "mamba2":
        assert kwargs["g"].shape == (1, 20, 2)
    if name in ("linear_attn", "katharopoulos"):  # only Katharopoulos's spec has a normaliser
        assert kwargs == {"normalize": name == "katharopoulos"}
    if name == "based":
        assert kwargs == {"use_norm": True}


def test_the_two_dimensional_gate_has_no_fla_equivalent(fake_fla):
    spec = "specs/gla2d.yaml"
    fn, note = _baseline("fla", plan_chunked(recurrence_of(spec)), load(spec))
    assert fn is None and "2-D" in note and not fake_fla


def test_an_unknown_baseline_is_refused():
    spec = "specs/gla.yaml"
    with pytest.raises(ValueError, match="unknown baseline 'flash'"):
        _baseline("flash", plan_chunked(recurrence_of(spec)), load(spec))
