"""The generated `Layer`: builds for every spec, trains (finite gradients for every parameter), decodes token by
token from a prefill state exactly like the full sequence, and compiles with fullgraph=True."""

import pytest
import torch
from helpers import SHIPPED_SPECS, spec_path

from linattn_gen.check import relative_error, state_width
from linattn_gen.interpret import recurrence_of


def make(module, seed=0):
    torch.manual_seed(seed)
    layer = module.Layer(64, 2)
    with torch.no_grad():  # non-trivial norm and gate parameters, so every path carries signal
        for p in layer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_layer_trains(modules, name):
    layer = make(modules[name])
    x = torch.randn(2, 40, 64)
    y, state = layer(x)
    width = state_width(recurrence_of(spec_path(name)), 32)  # V, plus the normaliser's column where there is one
    assert y.shape == x.shape and state.shape == (2, 2, 32, width)
    (y.square().mean() + state.square().mean()).backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_layer_decode_matches_full_sequence(modules, name):
    layer = make(modules[name], seed=1)
    x = torch.randn(1, 36, 64)
    with torch.no_grad():
        y_full, state_full = layer(x)
        y_prefill, state = layer(x[:, :30])
        steps = []
        for t in range(30, 36):
            y_t, state = layer(x[:, t:t + 1], state)
            steps.append(y_t)
    y = torch.cat([y_prefill, *steps], dim=1)
    assert relative_error(y, y_full) < 1e-4
    assert relative_error(state, state_full) < 1e-4


@pytest.mark.parametrize("name", ["gla", "retnet", "linear_attn"])
def test_two_layer_model_compiles_fullgraph(modules, name):
    torch._dynamo.reset()
    torch.manual_seed(2)
    model = torch.nn.ModuleList([make(modules[name], seed=s) for s in (3, 4)])

    def run(x):
        for layer in model:
            x = x + layer(x)[0]
        return x

    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    x = torch.randn(1, 24, 64)
    results = []
    for fn in (run, compiled):
        model.zero_grad()
        out = fn(x)
        out.square().mean().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (o_e, g_e), (o_c, g_c) = results
    assert relative_error(o_c, o_e) < 1e-6
    for a, b in zip(g_c, g_e):
        assert relative_error(a, b) < 1e-5
