"""The generated ops are torch.library custom ops: torch.compile(fullgraph=True) traces through them, and the
compiled model matches eager, forward and gradients. On the CPU the `aot_eager` backend keeps this fast; the
kernels still run (under the interpreter) inside the custom ops."""

import pytest
import torch
from helpers import SHIPPED_SPECS, along_t, spec_path

from linattn_gen.check import random_inputs, relative_error


class TwoCalls(torch.nn.Module):
    """Prefill with chunk, then continue with recurrent from the carried state, with a learnable input scale."""

    def __init__(self, module):
        super().__init__()
        self.op = module
        self.scale_q = torch.nn.Parameter(torch.tensor(0.9))

    def forward(self, q, *rest):  # the spec's inputs; the query comes first in every shipped spec
        split = q.shape[1] // 2
        first, second = slice(None, split), slice(split, None)
        o1, state = self.op.chunk(q[:, first] * self.scale_q, *[along_t(x, first) for x in rest],
                                  output_final_state=True)
        o2, _ = self.op.recurrent(q[:, second] * self.scale_q, *[along_t(x, second) for x in rest],
                                  initial_state=state)
        return torch.cat([o1, o2], dim=1)


@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_fullgraph_compile_matches_eager(modules, name):
    torch._dynamo.reset()
    inputs, _ = random_inputs(spec_path(name), 1, 40, 2, 16, 32, seed=11)
    model = TwoCalls(modules[name])
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (model, compiled):
        leaves = [x.clone().requires_grad_() for x in inputs]
        out = fn(*leaves)
        out.square().sum().backward()
        results.append((out.detach(), [x.grad for x in leaves], model.scale_q.grad.clone()))
        model.scale_q.grad = None
    (o_eager, g_eager, s_eager), (o_comp, g_comp, s_comp) = results
    assert relative_error(o_comp, o_eager) < 1e-6
    for a, b in zip(g_comp, g_eager):
        assert relative_error(a, b) < 1e-6
    assert relative_error(s_comp, s_eager) < 1e-6


def test_opcheck_chunk(modules):
    """torch.library.opcheck: schema, fake (meta) implementation and autograd registration agree with the kernel."""
    module = modules["gla"]
    inputs, h0 = random_inputs(spec_path("gla"), 1, 20, 1, 16, 16, seed=3)
    args = [x.requires_grad_() for x in inputs] + [0.25, h0.requires_grad_(), True, None, None, None]
    torch.library.opcheck(module.ops._chunk_fwd_op, args,
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_opcheck_packed_batch(modules):
    """The same for a packed batch (cu_seqlens), chunk and recurrent: the fakes size states by sequence count."""
    module = modules["mamba2"]
    inputs, _ = random_inputs(spec_path("mamba2"), 1, 90, 1, 16, 16, seed=4)
    h0 = torch.randn(3, 1, 16, 16)
    layout = module.ops._packed_layout(torch.tensor([0, 70, 71, 90]), 90, "cpu")
    utils = ("test_schema", "test_faketensor", "test_autograd_registration")
    args = [x.requires_grad_() for x in inputs] + [0.25, h0.requires_grad_(), True]
    torch.library.opcheck(module.ops._chunk_fwd_op, args + list(layout), test_utils=utils)
    torch.library.opcheck(module.ops._recurrent_fwd_op, args + [layout[0]], test_utils=utils)


def test_inference_calls_skip_the_dispatcher(modules, monkeypatch):
    """Without autograd (no_grad, or no input that requires grad) and outside torch.compile, chunk and recurrent call
    the kernels directly: the custom-op dispatcher costs as much host time as a decode step's kernel. Same results."""
    module = modules["gla"]
    inputs, h0 = random_inputs(spec_path("gla"), 2, 30, 2, 16, 32, seed=12)
    reference = {op: getattr(module, op)(*[x.clone().requires_grad_() for x in inputs], initial_state=h0,
                                         output_final_state=True) for op in ("chunk", "recurrent")}

    def dispatcher(*args, **kwargs):
        raise AssertionError("the custom op was dispatched for an inference call")

    monkeypatch.setattr(module.ops, "_chunk_fwd_op", dispatcher)
    monkeypatch.setattr(module.ops, "_recurrent_fwd_op", dispatcher)
    for op, (o_ref, final_ref) in reference.items():
        for grad_mode in (torch.no_grad(), torch.enable_grad()):  # enable_grad: inputs that do not require grad
            with grad_mode:
                o, final = getattr(module, op)(*inputs, initial_state=h0, output_final_state=True)
            assert relative_error(o, o_ref.detach()) < 1e-6
            assert relative_error(final, final_ref.detach()) < 1e-6
