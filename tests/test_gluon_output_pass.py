"""The Gluon output pass (GluonOutputPass in plan.py, gluon_kernels.py in the generated packages).

Gluon has no interpreter: on the CPU its kernel is compiled for sm_90a through ptxas (so a template change that
breaks it fails here), and its outputs are checked on the GPU (`bash bench/gpu_run.sh gluon-op`). What runs on the
CPU is checked here: the planner's choice, the op's rule for when the kernel applies, and the Triton kernel's second
launch that redoes the chunks the Gluon kernel flags."""

from __future__ import annotations

import pytest
import torch
from helpers import ROOT, gluon_compiled

from linattn_gen import load
from linattn_gen.check import relative_error
from linattn_gen.lower import lower

WITH_GLUON = ["gla", "hgrn2", "rwkv6"]


def test_the_planner_gives_the_gluon_pass_to_per_key_gates_that_are_their_own_log_decay():
    with_pass = {spec.stem for spec in (ROOT / "specs").glob("*.yaml")
                 if lower(spec).plan.gluon_output_pass.exists}
    assert with_pass == set(WITH_GLUON)
    plan = lower(ROOT / "specs" / "gla.yaml").plan
    assert set(plan.gluon_output_pass.configs) == {(128, 128)}
    assert not plan.gluon_output_pass.in_inference  # host-bound there (run 15)
    assert "gluon_kernels.py" not in lower(ROOT / "specs" / "gla2d.yaml").files  # a value gate: no Gluon kernel


@pytest.mark.parametrize("spec", WITH_GLUON)
def test_generated_gluon_kernel_compiles_for_hopper(spec):
    compiled = gluon_compiled(spec)
    plan = lower(ROOT / "specs" / f"{spec}.yaml").plan
    for K, V in plan.gluon_output_pass.configs:
        kernel = compiled[f"output_pass {K}x{V}"]
        assert kernel["shared"] <= 227 * 1024, kernel  # one block per SM must fit
        assert kernel["wgmma"] > 0
        assert kernel["tma"] > 0  # the tiles arrive by TMA


def test_the_gluon_pass_stays_off_the_cpu():
    ops = load(ROOT / "specs" / "gla.yaml").ops
    x = torch.zeros(1, 64, 1, 128, dtype=torch.bfloat16)
    h = torch.zeros(1, 1, 1, 128, 128, dtype=torch.bfloat16)
    assert ops._gluon_output_pass(x, x, x, x, h, 64, 128, 128, None, True) is None


def test_when_the_gluon_pass_applies():
    rule = load(ROOT / "specs" / "gla.yaml").ops._gluon_output_pass_rule
    bf16 = (torch.bfloat16,) * 5
    applies = dict(on_sm90=True, dtypes=bf16, contiguous=True, T=2048, K=128, V=128, packed=False, need_states=True)
    assert rule(**applies) == (128, 8, 2)  # (BV, num_warps, num_stages), the planner's
    assert rule(**{**applies, "dtypes": (torch.float16,) * 5}) == (128, 8, 2)
    for change in (dict(on_sm90=False), dict(T=200), dict(V=256), dict(K=64), dict(packed=True),
                   dict(contiguous=False), dict(need_states=False), dict(dtypes=(torch.float32,) * 5),
                   dict(dtypes=(torch.bfloat16,) * 3 + (torch.float32, torch.bfloat16))):  # an fp32 gate
        assert rule(**{**applies, **change}) is None, change


def test_the_second_launch_redoes_exactly_the_flagged_chunks():
    """chunk_fwd_o_kernel with FLAGGED_ONLY writes the flagged (chunk, head) outputs, as the full launch does, and
    leaves every other output as the Gluon pass wrote it. Gates steep enough for some chunks' sub-chunk path."""
    module = load(ROOT / "specs" / "gla.yaml")
    ops, kernels = module.ops, module.kernels
    B, T, H, K, V, BT = 2, 192, 2, 32, 32, 64
    NT = T // BT
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(B, T, H, K, generator=gen) for _ in range(3))
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, K, generator=gen)) * 4.0
    h = torch.randn(B, NT, H, K, V, generator=gen) * 0.1
    scale = K ** -0.5

    def launch(o, **flagged):
        kernels.chunk_fwd_o_kernel[(1, NT, B * H)](
            q, k, v, g, h, o, None, None, scale, T, NT, H=H, HK=H, K=K, V=V, BT=BT, BC=16, BK=K, BV=V,
            IS_VARLEN=False, SPAN_LIMIT=ops.SPAN_LIMIT["float32"], DOT_PRECISION="tf32x3", **flagged)

    full = torch.empty(B, T, H, V)
    launch(full)
    span_flag = torch.zeros(B * NT * H, dtype=torch.int32)
    flagged = [(0, 1, 0), (1, 2, 1), (1, 0, 0)]  # (batch, chunk, head)
    for b, t, hh in flagged:
        span_flag[(b * NT + t) * H + hh] = 1
    sentinel = torch.full((B, T, H, V), 1234.5)
    redone = sentinel.clone()
    launch(redone, span_flag=span_flag, FLAGGED_ONLY=True)
    for b in range(B):
        for t in range(NT):
            for hh in range(H):
                rows = (b, slice(t * BT, (t + 1) * BT), hh)
                if (b, t, hh) in flagged:
                    assert relative_error(redone[rows], full[rows]) == 0.0
                else:
                    assert torch.equal(redone[rows], sentinel[rows])


def test_cached_descriptors_are_keyed_by_everything_they_encode():
    """The launch cache's launches reuse descriptors by (address, rows, columns, dtype, block); the first launch
    (Gluon's entry) gets one made from the tensor. A cached one keeps the address, not the tensor."""
    import importlib

    gluon_kernels = importlib.import_module(load(ROOT / "specs" / "gla.yaml").ops.__package__ + ".gluon_kernels")
    x = torch.zeros(4, 64, 2, 128, dtype=torch.bfloat16)
    fresh = gluon_kernels._descriptor(x, 4 * 64, (64, 128), cached=False)
    assert fresh.base.data_ptr() == x.data_ptr() and list(fresh.shape) == [256, 256]
    cached = gluon_kernels._descriptor(x, 4 * 64, (64, 128), cached=True)
    assert list(cached.shape) == [256, 256] and list(cached.strides) == [256, 1]
    assert cached.base.data_ptr() == x.data_ptr() and not isinstance(cached.base, torch.Tensor)
    assert gluon_kernels._descriptor(x, 4 * 64, (64, 128), cached=True) is cached
    assert gluon_kernels._descriptor(x, 4 * 64 * 2, (64, 128), cached=True) is not cached  # other rows
    assert gluon_kernels._descriptor(x, 4 * 64, (64, 64), cached=True) is not cached  # another block
    y = torch.zeros(4, 64, 2, 128, dtype=torch.bfloat16)
    assert gluon_kernels._descriptor(y, 4 * 64, (64, 128), cached=True).base.data_ptr() == y.data_ptr()
    held = [torch.zeros(64, 128, dtype=torch.bfloat16) for _ in range(100)]
    for z in held:  # bounded
        gluon_kernels._descriptor(z, 64, (64, 128), cached=True)
    assert len(gluon_kernels._DESCRIPTORS) <= 64


def test_a_loaded_package_imports_its_gluon_module():
    """ops.py imports gluon_kernels relatively, on Hopper only. Until run 16 a package from linattn_gen.load could
    not: its parent package was not importable, so the benchmark (which loads specs that way) ran the Triton passes
    with a warning, unless something had imported the Gluon module by its full name first."""
    import importlib
    import sys

    ops = load(ROOT / "specs" / "rwkv6.yaml").ops
    ops._gluon_kernels.cache_clear()
    sys.modules.pop(ops.__package__ + ".gluon_kernels", None)
    assert ops._gluon_kernels() is importlib.import_module(ops.__package__ + ".gluon_kernels")


def test_gluon_launches_go_through_the_entry_once_per_key():
    """The three Gluon wrappers launch through _launch_compiled: Gluon's entry, with descriptors made from the
    tensors, the first time per key (and always with the launch cache off); the compiled kernel with cached
    descriptors after that."""
    import importlib

    gluon_kernels = importlib.import_module(load(ROOT / "specs" / "gla.yaml").ops.__package__ + ".gluon_kernels")
    calls = []

    class Compiled:
        def __getitem__(self, grid):
            return lambda *args: calls.append(("direct", grid, args))

    class Kernel:
        def __getitem__(self, grid):
            def entry(*args, **constexprs):
                calls.append(("entry", grid, args, constexprs))
                return Compiled()
            return entry

    def arguments(cached):
        return ("descriptors", "cached" if cached else "fresh", 7)

    kernel, key = Kernel(), ("test key", object())
    try:
        for _ in range(2):
            gluon_kernels._launch_compiled(kernel, key, (4, 1, 1), arguments, dict(H=2, num_warps=8))
        assert calls == [("entry", (4, 1, 1), ("descriptors", "fresh", 7), dict(H=2, num_warps=8)),
                         ("direct", (4, 1, 1), ("descriptors", "cached", 7, 2, 8))]
        calls.clear()
        gluon_kernels.LAUNCH_CACHE = False
        gluon_kernels._launch_compiled(kernel, key, (4, 1, 1), arguments, dict(H=2, num_warps=8))
        assert [call[0] for call in calls] == ["entry"] and calls[0][2][1] == "fresh"
    finally:
        gluon_kernels.LAUNCH_CACHE = True
        gluon_kernels._COMPILED.pop(key, None)
