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


@pytest.mark.parametrize("name, conv", [("gla", False), ("retnet", False), ("linear_attn", False), ("gla", True),
                                        ("rwkv6", False)])
def test_two_layer_model_compiles_fullgraph(modules, name, conv):
    torch._dynamo.reset()
    torch.manual_seed(2)
    build = make_conv if conv else make
    model = torch.nn.ModuleList([build(modules[name], seed=s) for s in (3, 4)])

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


def make_conv(module, seed=0):
    torch.manual_seed(seed)
    layer = module.Layer(64, 2, short_conv_size=4)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("name", ["gla", "hgrn2"])
def test_short_conv_decode_matches_full_sequence(modules, name):
    """Prefill, then single tokens carrying the (state, convolution cache) pair, equals one call on everything."""
    layer = make_conv(modules[name], seed=5)
    x = torch.randn(2, 33, 64)
    with torch.no_grad():
        y_full, (state_full, cache_full) = layer(x)
        y_prefill, state = layer(x[:, :30])
        steps = []
        for t in range(30, 33):
            y_t, state = layer(x[:, t:t + 1], state)
            steps.append(y_t)
    assert relative_error(torch.cat([y_prefill, *steps], dim=1), y_full) < 1e-4
    assert relative_error(state[0], state_full) < 1e-4
    assert torch.allclose(state[1], cache_full, atol=1e-6) and cache_full.shape == (2, 3, layer.conv.weight.shape[0])


def test_short_conv_packed_matches_separate_sequences(modules):
    """With cu_seqlens, no tap crosses into the previous sequence (lengths 2 and 0 are shorter than the kernel), and
    each sequence's cache is its own: forward, states, caches and every parameter's gradient."""
    lengths = [7, 2, 0, 20]
    layer = make_conv(modules["gla"], seed=6)
    xs = [torch.randn(1, n, 64) for n in lengths]
    h0 = [torch.randn(1, 2, 32, 32) * 0.1 for _ in lengths]
    c0 = [torch.randn(1, 3, layer.conv.weight.shape[0]) for _ in lengths]
    cu = torch.tensor([0, 7, 9, 9, 29])
    y, (state, cache) = layer(torch.cat(xs, dim=1), (torch.cat(h0), torch.cat(c0)), cu_seqlens=cu)
    y.square().sum().backward()
    packed_grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    total = 0
    for i, n in enumerate(lengths):
        if n == 0:
            assert torch.equal(state[i], h0[i][0]) and torch.equal(cache[i], c0[i][0])
            continue
        y_i, (state_i, cache_i) = layer(xs[i], (h0[i], c0[i]))
        assert relative_error(y[:, cu[i]:cu[i + 1]], y_i) < 1e-5
        assert relative_error(state[i], state_i[0]) < 1e-5
        assert torch.allclose(cache[i], cache_i[0], atol=1e-5)
        total = total + y_i.square().sum()
    total.backward()
    for a, p in zip(packed_grads, layer.parameters()):
        assert relative_error(a, p.grad) < 1e-5


def test_short_conv_state_must_be_the_pair(modules):
    layer = make_conv(modules["linear_attn"])
    _, (state, _) = layer(torch.randn(1, 20, 64))
    with pytest.raises(TypeError, match="convolution cache"):
        layer(torch.randn(1, 1, 64), state)
    with pytest.raises(ValueError, match="short_conv_size"):
        modules["linear_attn"].Layer(64, 2, short_conv_size=1)


@pytest.mark.parametrize("name, norm", [("gla", "none"), ("retnet", "rms_swish"), ("linear_attn", "group_norm")])
def test_output_norm_override(modules, name, norm):
    """Any Layer takes any of the output norms (MQAR puts the same block around every recurrence); each trains."""
    torch.manual_seed(7)
    layer = modules[name].Layer(64, 2, output_norm=norm)
    assert hasattr(layer, "output_gate") == (norm == "rms_swish") and hasattr(layer, "norm") == (norm == "group_norm")
    y, _ = layer(torch.randn(2, 20, 64))
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    with pytest.raises(ValueError, match="output_norm must be one of"):
        modules[name].Layer(64, 2, output_norm="layer_norm")


def test_gate_bias_sets_the_initial_decay(modules):
    import math

    import torch.nn.functional as F

    gla = modules["gla"].Layer(64, 2)  # the spec's gate_bias: 4, decay logsigmoid(4) / 16 per step
    assert torch.all(gla.gate_proj[-1].bias == 4.0)
    assert math.isclose(F.logsigmoid(torch.tensor(4.0)).item() / gla.gate_temperature, -0.00113, rel_tol=1e-2)
    gla2d = modules["gla2d"].Layer(64, 2, gate_bias=2.0)  # both sides of the 2-D gate
    assert torch.all(gla2d.gate_proj[-1].bias == 2.0) and torch.all(gla2d.value_gate_proj[-1].bias == 2.0)
    torch.manual_seed(0)
    default = modules["gla"].Layer(64, 2, gate_bias=None)  # PyTorch's default initialisation
    assert default.gate_proj[-1].bias.abs().max() <= 16**-0.5 and default.gate_proj[-1].bias.std() > 0
    hgrn2 = modules["hgrn2"].Layer(64, 2, gate_bias=-1.0)  # a linear gate projection
    assert torch.all(hgrn2.gate_proj.bias == -1.0)
