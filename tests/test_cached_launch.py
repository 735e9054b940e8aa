"""The generated ops launch their kernels through `_CachedLaunch`: Triton's entry on the first launch of each
specialization, the compiled kernel directly after that. On the GPU this saves about 22 us of host time per launch
(BENCHMARKS.md, run 12); the interpreter has nothing compiled, so here the cache is driven by a stand-in kernel with
Triton's own specialization function, and every real call site is checked to pass what a direct launch needs."""

import pytest
import torch
from helpers import SHIPPED_SPECS, spec_path
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import BaseBackend

from linattn_gen.bench import record_launches
from linattn_gen.check import random_inputs


def specialize(arg):
    return native_specialize_impl(BaseBackend, arg, False, True, True)


class StandInKernel:
    """A JIT function's two launch paths, recorded: its entry (kernel[grid](...)), which returns the compiled kernel,
    and that compiled kernel's direct launch, which takes every parameter in order."""

    def __init__(self):
        self.calls = []

        def fn(x, y, T, scale, BT, HAS_Y, flags=None, FLAGGED_ONLY=False):  # the parameters, in the kernel's order
            pass

        self.fn = fn
        kernel = self

        class Compiled:  # as triton.compiler.CompiledKernel: a 3-D grid, read without padding
            def __getitem__(self, grid):
                grid = (grid[0], grid[1], grid[2])
                return lambda *values: kernel.calls.append(("direct", grid, values))

        self.compiled = Compiled()

    def __getitem__(self, grid):
        def entry(*args, **kwargs):
            self.calls.append(("entry", grid, args, kwargs))
            return self.compiled

        return entry


@pytest.fixture
def launcher(modules):
    kernel = StandInKernel()
    return kernel, modules["gla"].ops._CachedLaunch(kernel, specialize=specialize)


def test_repeat_launch_goes_direct_with_every_parameter_in_order(launcher):
    kernel, launch = launcher
    x, y = torch.zeros(64), torch.zeros(64)
    launch[(4, 2)](x, y, 2048, 0.5, BT=64, HAS_Y=True, num_warps=4)
    launch[(8, 1)](torch.ones(64), y, 4096, 0.25, BT=64, HAS_Y=True, num_warps=4)
    assert [call[0] for call in kernel.calls] == ["entry", "direct"]
    _, grid, values = kernel.calls[1]
    assert grid == (8, 1, 1)
    assert values[2:] == (4096, 0.25, 64, True, None, False)  # positional, the constexprs by name, the defaults


@pytest.mark.parametrize("change", ["length not divisible by 16", "misaligned tensor", "other dtype", "constexpr",
                                    "launch option", "length 1"])
def test_a_new_specialization_goes_through_tritons_entry(launcher, change):
    kernel, launch = launcher
    x, y = torch.zeros(64), torch.zeros(64)
    launch[(1,)](x, y, 2048, 0.5, BT=64, HAS_Y=True, num_warps=4)
    args, kwargs = [x, y, 2048, 0.5], dict(BT=64, HAS_Y=True, num_warps=4)
    if change == "length not divisible by 16":
        args[2] = 2047
    elif change == "length 1":
        args[2] = 1
    elif change == "misaligned tensor":
        args[0] = torch.zeros(65)[1:]  # 4 bytes past a 16-byte boundary
    elif change == "other dtype":
        args[1] = torch.zeros(64, dtype=torch.bfloat16)
    elif change == "constexpr":
        kwargs["BT"] = 32
    else:
        kwargs["num_warps"] = 8
    launch[(1,)](*args, **kwargs)
    launch[(1,)](*args, **kwargs)
    assert [call[0] for call in kernel.calls] == ["entry", "entry", "direct"]


def test_interpreted_kernels_pass_through(modules):
    # under the interpreter there is nothing compiled to keep: every launch is the kernel's own, nothing is cached
    module = modules["gla"]
    inputs, _ = random_inputs(spec_path("gla"), 1, 20, 1, 16, 16, seed=0)
    with torch.no_grad():
        module.chunk(*inputs)
    assert not module.ops.chunk_fwd_h_kernel.cached and module.ops.chunk_fwd_h_kernel.compiled == {}


@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_every_call_site_passes_what_a_direct_launch_needs(modules, monkeypatch, name):
    """Every launch the op makes (chunked forward and backward, packed batch, split state pass, carried forward,
    token loop) passes its positional arguments first and every later parameter by name, with no default left to
    fill, and hashable keyword values: the cache key and the direct launch are built from exactly those."""
    module = modules[name]
    cached = {attr: getattr(module.ops, attr) for attr in dir(module.ops)
              if isinstance(getattr(module.ops, attr), module.ops._CachedLaunch)}
    seen = record_launches(module, list(cached), assign=monkeypatch.setattr)
    K = 16 if name == "based" else 32
    inputs, h0 = random_inputs(spec_path(name), 2, 70, 2, K, 32, seed=0)

    def forward_backward(**kwargs):
        leaves = [x.clone().requires_grad_() for x in inputs]
        o, final = module.chunk(*leaves, initial_state=h0, output_final_state=True, **kwargs)
        (o.sum() + final.sum()).backward()

    forward_backward()
    # a packed batch: two sequences in one row, as cu_seqlens gives them
    packed = [(x[:1] if x.dim() >= 3 else x).clone().requires_grad_() for x in inputs]
    o, final = module.chunk(*packed, initial_state=h0, output_final_state=True,
                            cu_seqlens=torch.tensor([0, 30, 70], dtype=torch.int32))
    (o.sum() + final.sum()).backward()
    if hasattr(module.ops, "_state_pass_segments"):  # where the plan has the split state pass
        unsplit = module.ops._state_pass_segments
        monkeypatch.setattr(module.ops, "_state_pass_segments", lambda *args: 2)
        forward_backward()
        monkeypatch.setattr(module.ops, "_state_pass_segments", unsplit)
    if hasattr(module.ops, "_carries_states"):
        monkeypatch.setattr(module.ops, "_carries_states", lambda *args: True)
        with torch.no_grad():
            module.chunk(*inputs, initial_state=h0, output_final_state=True)
    # the token loop (short sequences); per-head inputs ([H, K]) have no time axis
    leaves = [(x[:, :3] if x.dim() >= 3 else x).clone().requires_grad_() for x in inputs]
    module.recurrent(*leaves, initial_state=h0, output_final_state=True)[0].sum().backward()
    launched = {launch.kernel for launch in seen}
    expected = {"chunk_fwd_h_kernel", "chunk_fwd_o_kernel", "recurrent_fwd_kernel"}
    if hasattr(module.ops, "_state_pass_segments"):
        expected |= {"segment_scan_kernel", "fold_segment_states_kernel"}
    if hasattr(module.ops, "chunk_fwd_carried_kernel"):
        expected.add("chunk_fwd_carried_kernel")
    assert expected <= launched
    for launch in seen:
        hash(tuple(launch.kwargs.items()))  # part of the cache key: every keyword value must hash
        params = cached[launch.kernel].params
        assert set(params[len(launch.args):]) <= set(launch.kwargs), (launch.kernel, params, len(launch.args))


def test_a_parameter_left_out_takes_its_default_on_the_direct_launch(launcher):
    # chunk_fwd_o_kernel's span_flag and FLAGGED_ONLY are given only by the launch after the Gluon output pass
    kernel, launch = launcher
    x, y = torch.zeros(64), torch.zeros(64)
    launch[(4,)](x, y, 2048, 0.5, BT=64, HAS_Y=False, num_warps=4)
    launch[(4,)](x, y, 2048, 0.5, BT=64, HAS_Y=False, num_warps=4)
    assert kernel.calls[1] == ("direct", (4, 1, 1), (x, y, 2048, 0.5, 64, False, None, False))


def test_a_tensor_passed_by_name_is_keyed_by_its_specialization(launcher):
    # the launch after the Gluon output pass passes a fresh span_flag tensor by name on every call: keyed by the tensor
    # itself, each call missed, went through the entry and was kept in the cache
    kernel, launch = launcher
    x, y = torch.zeros(64), torch.zeros(64)
    for _ in range(3):
        flags = torch.zeros(16, dtype=torch.int32)
        launch[(4,)](x, y, 2048, 0.5, BT=64, HAS_Y=False, flags=flags, FLAGGED_ONLY=True, num_warps=4)
    assert [call[0] for call in kernel.calls] == ["entry", "direct", "direct"]
    assert kernel.calls[2][2][-2] is flags and len(launch.compiled) == 1
