"""GLA's output pass (`fwd_o`) written in Gluon, against the generated Triton kernel, at the shape of the performance
issue (B*T = 16K, T = 2048, H = 16, K = V = 128, bf16).

Why: the forward is 3.7x its HBM floor and the issue asks for 3x. `fwd_o` runs at 57% of copy bandwidth, bound by its
own gate arithmetic and latency; Triton's own pipelining and warp specialization made it slower (runs 11-13,
BENCHMARKS.md). Gluon gives explicit control: TMA loads of the next chunk's five tiles into a ring of shared-memory
stages while the current chunk computes, the cumulative gate by a 0/1 triangle product on the tensor cores, and the
query operands straight from registers into `warpgroup_mma`.

This is a probe, not generated code: the planner and templates take it over only if it wins. Like the generated
kernel's flagged variant (run 11), it computes every chunk chunk-wide, rebased on the chunk's first row, and flags in
`span_flag` the (chunk, head) pairs whose span of cumulative log decay passes SPAN_LIMIT; a second launch of the
generated kernel would recompute those (it costs 0.0065 ms empty, run 11).

Variants: num_warps 4 or 8, STAGES 1 (no prefetch) or 2, persistent (one program per SM, or two) or one program per
tile. Each is checked against the generated kernel's output (same arithmetic up to the order of sums) and timed with
do_bench.

usage: python bench/gpu_gluon_fwd.py [--T 2048] [--compile-only]; writes $OUT/gluon-fwd-T<T>.json
  --compile-only compiles every variant for sm_90a on this machine (no GPU needed) and prints registers and spills.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# the generated kernel's layout helpers: the probe's variants differ from it in their loop, not in their layouts
from generated.gla.gluon_kernels import _mma_layout, _shared_layout  # noqa: E402

BT = 64
SPAN_LIMIT = 75.0


@gluon.jit
def _issue_tile_loads(q_desc, k_desc, g_desc, v_desc, h_desc, q_s, k_s, g_s, v_s, h_s, bars, stage, tile, T, NT,
                      H: gl.constexpr, K: gl.constexpr, BV: gl.constexpr, NV: gl.constexpr, BT: gl.constexpr,
                      SPLIT_BARRIERS: gl.constexpr):
    # In the order the tile uses them: the gate (cumulative decay), queries and keys, then the state and values. With
    # SPLIT_BARRIERS each group has its own barrier, so the arithmetic starts before the whole tile has landed.
    i_bh = tile // (NT * NV)
    rem = tile % (NT * NV)
    i_t = rem // NV
    i_v = rem % NV
    i_b = i_bh // H
    i_h = i_bh % H
    row = i_b * T + i_t * BT
    if SPLIT_BARRIERS:
        bar_g = bars.index(3 * stage)
        bar_qk = bars.index(3 * stage + 1)
        bar_hv = bars.index(3 * stage + 2)
        mbarrier.expect(bar_g, BT * K * 2)
        mbarrier.expect(bar_qk, 2 * BT * K * 2)
        mbarrier.expect(bar_hv, BT * BV * 2 + K * BV * 2)
    else:
        bar_g = bars.index(stage)
        bar_qk = bar_g
        bar_hv = bar_g
        mbarrier.expect(bar_g, 3 * BT * K * 2 + BT * BV * 2 + K * BV * 2)
    tma.async_copy_global_to_shared(g_desc, [row, i_h * K], bar_g, g_s.index(stage))
    tma.async_copy_global_to_shared(q_desc, [row, i_h * K], bar_qk, q_s.index(stage))
    tma.async_copy_global_to_shared(k_desc, [row, i_h * K], bar_qk, k_s.index(stage))
    tma.async_copy_global_to_shared(h_desc, [((i_b * NT + i_t) * H + i_h) * K, i_v * BV], bar_hv, h_s.index(stage))
    tma.async_copy_global_to_shared(v_desc, [row, i_h * NV * BV + i_v * BV], bar_hv, v_s.index(stage))


@gluon.jit
def gla_fwd_o_gluon(q_desc, k_desc, g_desc, v_desc, h_desc, o_desc, g, span_flag, scale, T, NT, n_tiles, rows, h_rows,
                    H: gl.constexpr, K: gl.constexpr, BV: gl.constexpr, NV: gl.constexpr, BT: gl.constexpr,
                    SPAN_LIMIT: gl.constexpr, STAGES: gl.constexpr, SPLIT_BARRIERS: gl.constexpr,
                    CHEAP_FLAG: gl.constexpr, ASYNC_MMA: gl.constexpr, DEVICE_DESC: gl.constexpr,
                    num_warps: gl.constexpr):
    if DEVICE_DESC:
        # the *_desc arguments are the tensors' pointers, and each program makes its descriptors here: the host
        # encodes none per launch (run 15 measured 0.1-0.3 ms more host time per forward with six host descriptors)
        tile_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
        q_desc = tma.make_tensor_descriptor(q_desc, [rows, H * K], [H * K, 1], [BT, K], tile_layout)
        k_desc = tma.make_tensor_descriptor(k_desc, [rows, H * K], [H * K, 1], [BT, K], tile_layout)
        g_desc = tma.make_tensor_descriptor(g_desc, [rows, H * K], [H * K, 1], [BT, K], tile_layout)
        v_desc = tma.make_tensor_descriptor(v_desc, [rows, H * NV * BV], [H * NV * BV, 1], [BT, BV], tile_layout)
        o_desc = tma.make_tensor_descriptor(o_desc, [rows, H * NV * BV], [H * NV * BV, 1], [BT, BV], tile_layout)
        h_desc = tma.make_tensor_descriptor(h_desc, [h_rows, NV * BV], [NV * BV, 1], [K, BV], tile_layout)
    dtype: gl.constexpr = q_desc.dtype
    mma_k: gl.constexpr = _mma_layout(BT, K, num_warps)  # [BT, K] gate and query/key arithmetic
    mma_o: gl.constexpr = _mma_layout(BT, BV, num_warps)  # [BT, BV] output
    mma_a: gl.constexpr = _mma_layout(BT, BT, num_warps)  # [BT, BT] scores
    q_op_a: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_a, k_width=2)
    q_op_o: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_o, k_width=2)
    N_BARS: gl.constexpr = 3 * STAGES if SPLIT_BARRIERS else STAGES

    q_s = gl.allocate_shared_memory(dtype, [STAGES, BT, K], q_desc.layout)
    k_s = gl.allocate_shared_memory(dtype, [STAGES, BT, K], k_desc.layout)
    g_s = gl.allocate_shared_memory(dtype, [STAGES, BT, K], g_desc.layout)
    v_s = gl.allocate_shared_memory(dtype, [STAGES, BT, BV], v_desc.layout)
    h_s = gl.allocate_shared_memory(dtype, [STAGES, K, BV], h_desc.layout)
    kr_s = gl.allocate_shared_memory(dtype, [BT, K], k_desc.layout)
    if BV == K:  # the decayed keys' buffer is free once the scores are made: the output stages there (16 KiB less)
        o_s = kr_s
    else:
        o_s = gl.allocate_shared_memory(dtype, [BT, BV], o_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [N_BARS, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(N_BARS):
        mbarrier.init(bars.index(i), count=1)

    # the 0/1 triangle that sums a column down the rows after the first: b_rel[i] = sum_{0 < j <= i} g[j]
    tri_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    o_r = gl.arange(0, BT, layout=gl.SliceLayout(1, tri_layout))
    o_c = gl.arange(0, BT, layout=gl.SliceLayout(0, tri_layout))
    tri = ((o_c[None, :] <= o_r[:, None]) & (o_c[None, :] > 0)).to(dtype)
    tri_s = gl.allocate_shared_memory(dtype, [BT, BT], gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16,
                                                                           rank=2), tri)
    fence_async_shared()
    gl.thread_barrier()

    o_ka = gl.arange(0, K, layout=gl.SliceLayout(0, mma_k))
    o_ai = gl.arange(0, BT, layout=gl.SliceLayout(1, mma_a))
    o_aj = gl.arange(0, BT, layout=gl.SliceLayout(0, mma_a))
    m_causal = o_ai[:, None] >= o_aj[None, :]
    zero_flags = gl.zeros([BT, K], gl.int32, mma_k)

    pid = gl.program_id(0)
    n_programs = gl.num_programs(0)
    n_mine = gl.cdiv(n_tiles - pid, n_programs)
    for j in gl.static_range(STAGES - 1):
        if j < n_mine:
            _issue_tile_loads(q_desc, k_desc, g_desc, v_desc, h_desc, q_s, k_s, g_s, v_s, h_s, bars, j,
                              pid + j * n_programs, T, NT, H, K, BV, NV, BT, SPLIT_BARRIERS)
    for it in range(n_mine):
        tile = pid + it * n_programs
        stage = it % STAGES
        phase = (it // STAGES) & 1
        # every warpgroup is done with the stage the next load overwrites (it was read in the previous iteration)
        gl.thread_barrier()
        nxt = it + STAGES - 1
        if nxt < n_mine:
            _issue_tile_loads(q_desc, k_desc, g_desc, v_desc, h_desc, q_s, k_s, g_s, v_s, h_s, bars, nxt % STAGES,
                              pid + nxt * n_programs, T, NT, H, K, BV, NV, BT, SPLIT_BARRIERS)
        i_bh = tile // (NT * NV)
        rem = tile % (NT * NV)
        i_t = rem // NV
        i_v = rem % NV
        i_b = i_bh // H
        i_h = i_bh % H
        row = i_b * T + i_t * BT
        # the first row's log decay, issued before the wait so that its latency hides behind the tile's loads
        b_0 = gl.load(g + (row.to(gl.int64) * H + i_h) * K + o_ka).to(gl.float32)
        if SPLIT_BARRIERS:
            bar_g = bars.index(3 * stage)
            bar_qk = bars.index(3 * stage + 1)
            bar_hv = bars.index(3 * stage + 2)
        else:
            bar_g = bars.index(stage)
            bar_qk = bar_g
            bar_hv = bar_g
        mbarrier.wait(bar_g, phase)

        # cumulative log decay from the chunk's first row, on the tensor cores (exact for a 16-bit gate)
        if ASYNC_MMA:
            b_rel = warpgroup_mma(tri_s, g_s.index(stage), gl.zeros([BT, K], gl.float32, mma_k), use_acc=False,
                                  is_async=True)
            mbarrier.wait(bar_qk, phase)
            b_q = q_s.index(stage).load(mma_k).to(gl.float32)
            b_k = k_s.index(stage).load(mma_k).to(gl.float32)
            b_rel = warpgroup_mma_wait(num_outstanding=0, deps=(b_rel,))
        else:
            b_rel = warpgroup_mma(tri_s, g_s.index(stage), gl.zeros([BT, K], gl.float32, mma_k), use_acc=False)
            mbarrier.wait(bar_qk, phase)
            b_q = q_s.index(stage).load(mma_k).to(gl.float32)
            b_k = k_s.index(stage).load(mma_k).to(gl.float32)
        if CHEAP_FLAG:
            # every factor exp(+-b_rel) stays finite when |b_rel| <= SPAN_LIMIT everywhere; a violating element
            # writes the flag itself (no reduction across warps)
            gl.store(span_flag + ((i_b * NT + i_t) * H + i_h) + zero_flags, zero_flags + 1,
                     mask=gl.abs(b_rel) > SPAN_LIMIT)
        else:
            span = gl.max(gl.max(b_rel, axis=1), axis=0) - gl.min(gl.min(b_rel, axis=1), axis=0)
        e_rel = gl.exp(b_rel)
        b_q = b_q * e_rel
        b_k = b_k * gl.exp(-b_rel)
        tma.store_wait(pendings=0)  # the previous output's store may still read the buffer the keys go to
        gl.thread_barrier()
        kr_s.store(b_k.to(dtype))
        fence_async_shared()
        gl.thread_barrier()
        b_qg = gl.convert_layout((b_q * gl.exp(b_0)[None, :]).to(dtype), q_op_o)
        if ASYNC_MMA:
            b_A = warpgroup_mma(gl.convert_layout(b_q.to(dtype), q_op_a), kr_s.permute((1, 0)),
                                gl.zeros([BT, BT], gl.float32, mma_a), use_acc=False, is_async=True)
            mbarrier.wait(bar_hv, phase)
            b_o = warpgroup_mma(b_qg, h_s.index(stage), gl.zeros([BT, BV], gl.float32, mma_o), use_acc=False,
                                is_async=True)
            b_A = warpgroup_mma_wait(num_outstanding=1, deps=(b_A,))
            b_A = gl.convert_layout(gl.where(m_causal, b_A, 0.0).to(dtype), q_op_o)
            b_o = warpgroup_mma(b_A, v_s.index(stage), b_o, is_async=True)
            b_o = warpgroup_mma_wait(num_outstanding=0, deps=(b_o,))
        else:
            b_A = warpgroup_mma(gl.convert_layout(b_q.to(dtype), q_op_a), kr_s.permute((1, 0)),
                                gl.zeros([BT, BT], gl.float32, mma_a), use_acc=False)
            mbarrier.wait(bar_hv, phase)
            b_o = warpgroup_mma(b_qg, h_s.index(stage), gl.zeros([BT, BV], gl.float32, mma_o), use_acc=False)
            b_A = gl.where(m_causal, b_A, 0.0)
            b_o = warpgroup_mma(gl.convert_layout(b_A.to(dtype), q_op_o), v_s.index(stage), b_o)
        b_o = b_o * scale
        gl.thread_barrier()  # every warpgroup's score product has read the keys' buffer the output now takes
        o_s.store(b_o.to(dtype))
        fence_async_shared()
        gl.thread_barrier()
        tma.async_copy_shared_to_global(o_desc, [row, i_h * NV * BV + i_v * BV], o_s)
        if not CHEAP_FLAG:
            if i_v == 0:
                gl.store(span_flag + (i_b * NT + i_t) * H + i_h, (span > SPAN_LIMIT).to(gl.int32))
    tma.store_wait(pendings=0)
    for i in gl.static_range(N_BARS):
        mbarrier.invalidate(bars.index(i))


def _layout(block):
    return _shared_layout(tuple(block), torch.bfloat16)


def _scratch(size: int, alignment: int, stream):
    # global memory for the descriptors that DEVICE_DESC programs make (Triton asks for it per launch)
    return torch.empty(size, device="cuda", dtype=torch.int8)


def fwd_o_gluon(q, k, v, g, h, o, span_flag, scale, *, BV=128, num_warps=8, stages=2, programs_per_sm=1,
                persistent=True, split_barriers=True, cheap_flag=True, async_mma=True, device_desc=False):
    """A launcher for these tensors (descriptors built once, so that do_bench times the kernel, not the host)."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    B, T, H, K = q.shape
    V = v.shape[-1]
    NT = T // BT
    NV = V // BV
    if device_desc:
        triton.set_allocator(_scratch)
        qkg, v_desc, h_desc, o_desc = [q, k, g], v, h, o
    else:
        qkg = [TensorDescriptor.from_tensor(x.view(B * T, H * K), [BT, K], _layout([BT, K])) for x in (q, k, g)]
        v_desc = TensorDescriptor.from_tensor(v.view(B * T, H * V), [BT, BV], _layout([BT, BV]))
        o_desc = TensorDescriptor.from_tensor(o.view(B * T, H * V), [BT, BV], _layout([BT, BV]))
        h_desc = TensorDescriptor.from_tensor(h.view(-1, V), [K, BV], _layout([K, BV]))
    n_tiles = B * H * NT * NV
    sms = torch.cuda.get_device_properties(q.device).multi_processor_count
    grid = (min(n_tiles, sms * programs_per_sm),) if persistent else (n_tiles,)
    return lambda: gla_fwd_o_gluon[grid](*qkg, v_desc, h_desc, o_desc, g, span_flag, scale, T, NT, n_tiles, B * T,
                                         B * NT * H * K, H=H, K=K, BV=BV, NV=NV, BT=BT, SPAN_LIMIT=SPAN_LIMIT,
                                         STAGES=stages, SPLIT_BARRIERS=split_barriers, CHEAP_FLAG=cheap_flag,
                                         ASYNC_MMA=async_mma, DEVICE_DESC=device_desc, num_warps=num_warps)


# (BV, num_warps, stages, programs_per_sm, persistent, split_barriers, cheap_flag, async_mma, device_desc). Run 15's
# call 2 timed the first four fields alone (as the row with every refinement off): BV = 128, 8 warps, 2 stages,
# persistent was the only one faster than the generated kernel (0.174 against 0.194 ms); BV = 64 lost everywhere.
# Call 3 timed the three refinements: the per-element flag won (0.126 ms), the others did not help. device_desc
# (descriptors made on the GPU, none encoded by the host) is untimed so far.
VARIANTS = [
    (128, 8, 2, 1, True, False, False, False, False), (128, 8, 2, 1, True, True, False, False, False),
    (128, 8, 2, 1, True, False, True, False, False), (128, 8, 2, 1, True, False, False, True, False),
    (128, 8, 2, 1, True, True, True, True, False), (128, 4, 2, 1, True, True, True, True, False),
    (128, 4, 1, 1, False, False, True, False, False), (128, 8, 2, 1, True, False, True, False, True),
]


def _label(BV, warps, stages, per_sm, persistent, split, cheap, async_mma, device_desc=False) -> str:
    refinements = [name for name, on in (("split barriers", split), ("cheap flag", cheap), ("async mma", async_mma),
                                         ("device descriptors", device_desc)) if on]
    return (f"gluon BV={BV} warps={warps} stages={stages} " + (f"persistent x{per_sm}" if persistent else "per tile")
            + (" + " + ", ".join(refinements) if refinements else ""))


def _smem_bytes(BV, stages, K=128):
    return stages * (3 * BT * K + BT * BV + K * BV) * 2 + (BT * K + (BT * BV if BV != K else 0) + BT * BT) * 2


def compile_only() -> int:
    """Compile each variant for sm_90a here (no GPU): ptxas's registers and spills, or its error. Returns the number
    of variants that failed."""
    failed = 0
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    K = 128
    for BV, warps, stages, per_sm, persistent, split, cheap, async_mma, device_desc in VARIANTS:
        descs = {name: "*bf16" if device_desc else f"tensordesc<bf16[{shape[0]}, {shape[1]}],{_layout(shape)!r}>"
                 for name, shape in (("q_desc", [BT, K]), ("k_desc", [BT, K]), ("g_desc", [BT, K]),
                                     ("v_desc", [BT, BV]), ("h_desc", [K, BV]), ("o_desc", [BT, BV]))}
        signature = {**descs, "g": "*bf16", "span_flag": "*i32", "scale": "fp32", "T": "i32", "NT": "i32",
                     "n_tiles": "i32", "rows": "i32", "h_rows": "i32", "H": "constexpr", "K": "constexpr",
                     "BV": "constexpr", "NV": "constexpr", "BT": "constexpr", "SPAN_LIMIT": "constexpr",
                     "STAGES": "constexpr", "SPLIT_BARRIERS": "constexpr", "CHEAP_FLAG": "constexpr",
                     "ASYNC_MMA": "constexpr", "DEVICE_DESC": "constexpr", "num_warps": "constexpr"}
        constexprs = {"H": 16, "K": K, "BV": BV, "NV": K // BV, "BT": BT, "SPAN_LIMIT": SPAN_LIMIT, "STAGES": stages,
                      "SPLIT_BARRIERS": split, "CHEAP_FLAG": cheap, "ASYNC_MMA": async_mma,
                      "DEVICE_DESC": device_desc, "num_warps": warps}
        label = _label(BV, warps, stages, per_sm, persistent, split, cheap, async_mma, device_desc)
        try:
            src = GluonASTSource(fn=gla_fwd_o_gluon, signature=signature, constexprs=constexprs)
            compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
            ptx = compiled.asm["ptx"]
            print(f"{label}: compiled, smem {compiled.metadata.shared} B (tiles {_smem_bytes(BV, stages)}), "
                  f"ptx {len(ptx.splitlines())} lines, {_ptxas_usage(compiled)}", flush=True)
        except Exception as err:  # noqa: BLE001 - report each variant's failure and go on
            print(f"{label}: FAILED {type(err).__name__}: {str(err)[:1500]}", flush=True)
            failed += 1
    return failed


def _ptxas_usage(compiled) -> str:
    """Registers and spill bytes, from ptxas -v on the kernel's PTX (the same ptxas Triton used)."""
    import subprocess
    import tempfile
    from triton.backends.nvidia.compiler import get_ptxas
    ptxas = get_ptxas(90).path
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.ptx"
        path.write_text(compiled.asm["ptx"])
        run = subprocess.run([ptxas, "-v", "--gpu-name", "sm_90a", str(path), "-o", str(Path(tmp) / "k.o")],
                             capture_output=True, text=True)
    lines = [line.strip() for line in run.stderr.splitlines() if "registers" in line or "spill" in line]
    return " | ".join(lines) or run.stderr[-300:]


def op_check(specs) -> bool:
    """The generated ops' Gluon output pass (gluon_kernels.py) against their Triton one (LINATTN_GEN_GLUON off) on
    the same bf16 inputs, in the training forward (inputs that need gradients; inference takes the Triton pass): normal gates, gates steep enough that chunks are flagged and redone by the Triton kernel,
    grouped heads, V = 256 (no Gluon config: must fall back), and whether the Gluon kernel ran at all. Then the
    forward timed both ways at the performance issue's shape (B*T = 16K, H = 16, K = V = 128). Writes
    $OUT/gluon-op-check.json; returns whether every check passed."""
    import importlib
    import json

    from triton.testing import do_bench

    from linattn_gen import load
    from linattn_gen.bench import cuda_kernel_times, environment
    from linattn_gen.check import random_inputs, relative_error
    rows, ok = [], True
    for spec in specs:
        module = load(ROOT / "specs" / f"{spec}.yaml")
        ops = module.ops
        gluon_module = importlib.import_module(ops.__package__ + ".gluon_kernels")
        launches = []
        launch = gluon_module.chunk_fwd_o_gluon
        gluon_module.chunk_fwd_o_gluon = lambda *a, **kw: (launches.append(1), launch(*a, **kw))[1]
        cases = [("normal", 2, 256, 4, 4, 128, 128, 1.0), ("steep gates", 2, 256, 4, 4, 128, 128, 8.0),
                 ("grouped heads", 2, 192, 8, 2, 128, 128, 1.0), ("odd chunk count", 3, 320, 2, 2, 128, 128, 0.5),
                 ("V = 256 (Triton only)", 1, 128, 2, 2, 128, 256, 1.0), ("T = 200 (Triton only)", 1, 200, 2, 2, 128,
                                                                          128, 1.0)]
        for label, B, T, H, HK, K, V, gate_scale in cases:
            if HK != H and spec != "gla":
                continue
            inputs, _ = random_inputs(ROOT / "specs" / f"{spec}.yaml", B, T, H, K, V, dtype=torch.bfloat16,
                                      device="cuda", gate_scale=gate_scale, seed=T + H)
            inputs = [x.to(torch.bfloat16) for x in inputs]
            if HK != H:  # GLA's q, k, v, g with the query/key heads (and gate) shared by H // HK value heads
                inputs = [x[:, :, :HK].contiguous() if i != 2 else x for i, x in enumerate(inputs)]
            # inputs that need gradients: the training forward, which takes the Gluon pass (inference does not)
            inputs = [x.requires_grad_() for x in inputs]
            outputs = {}
            for use_gluon in (True, False):
                ops.GLUON = use_gluon
                before = len(launches)
                o, ht = module.chunk(*inputs, output_final_state=True)
                torch.cuda.synchronize()
                outputs[use_gluon] = (o.float(), len(launches) > before)
            ops.GLUON = True
            err = relative_error(outputs[True][0], outputs[False][0])
            ran = outputs[True][1]
            expect_gluon = V == 128 and T % 64 == 0
            passed = err <= 1e-3 and ran == expect_gluon and bool(torch.isfinite(outputs[True][0]).all())
            ok &= passed
            rows.append(dict(spec=spec, case=label, shape=[B, T, H, HK, K, V], gate_scale=gate_scale, relerr=err,
                             gluon_ran=ran, passed=passed))
            print(f"{'ok  ' if passed else 'FAIL'} {spec:7} {label:24} relerr vs Triton {err:.1e}, gluon ran {ran}",
                  flush=True)
        gluon_module.chunk_fwd_o_gluon = launch
        # the launch cache's direct launch against Gluon's entry: the same outputs, and the host time each takes
        inputs, _ = random_inputs(ROOT / "specs" / f"{spec}.yaml", 2, 256, 4, 128, 128, dtype=torch.bfloat16,
                                  device="cuda", seed=5)
        inputs = [x.to(torch.bfloat16).requires_grad_() for x in inputs]
        results = {}
        for cached in (False, True):
            gluon_module.LAUNCH_CACHE = cached
            # the training forward (inputs need gradients), without a backward
            results[cached] = module.chunk(*inputs)[0].detach().float()
            module.chunk(*inputs)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(50):
                module.chunk(*inputs)
            host_ms = (time.perf_counter() - start) / 50 * 1e3
            torch.cuda.synchronize()
            print(f"     {spec:7} launch cache {'on ' if cached else 'off'}: host {host_ms:.3f} ms per forward",
                  flush=True)
            rows.append(dict(spec=spec, case=f"launch cache {'on' if cached else 'off'}", host_ms_per_forward=host_ms))
        err = relative_error(results[True], results[False])
        passed = err == 0.0
        ok &= passed
        rows.append(dict(spec=spec, case="launch cache on against off", relerr=err, passed=passed))
        print(f"{'ok  ' if passed else 'FAIL'} {spec:7} {'launch cache on = off':24} relerr {err:.1e}", flush=True)
        gluon_module.LAUNCH_CACHE = True
    timing = []
    module = load(ROOT / "specs" / "gla.yaml")
    for T in (1024, 2048, 4096, 8192, 16384, 32768):
        B = max(16384 // T, 1)
        q, k, v = (torch.randn(B, T, 16, 128, device="cuda", dtype=torch.bfloat16).requires_grad_() for _ in range(3))
        g = torch.nn.functional.logsigmoid(torch.randn(B, T, 16, 128, device="cuda")).to(torch.bfloat16).requires_grad_()
        row = dict(spec="gla", B=B, T=T)
        # the training forward (inputs need gradients): states saved, the Gluon pass taken
        for use_gluon in (True, False):
            name = "gluon" if use_gluon else "triton"
            module.ops.GLUON = use_gluon
            module.chunk(q, k, v, g)  # tuning, compilation
            row[f"fwd_ms_{name}"] = do_bench(lambda: module.chunk(q, k, v, g), warmup=10, rep=50,
                                             return_mode="median")
            # the GPU's time whatever the host's (do_bench's is the host's where that is longer), and the host's
            kernels, _ = cuda_kernel_times(lambda: module.chunk(q, k, v, g), calls=5)
            row[f"fwd_kernels_ms_{name}"] = sum(kernels.values())
            row[f"fwd_kernel_breakdown_{name}"] = kernels
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(20):
                module.chunk(q, k, v, g)
            row[f"host_ms_per_call_{name}"] = (time.perf_counter() - start) / 20 * 1e3
            torch.cuda.synchronize()
        module.ops.GLUON = True
        timing.append(row)
        print(f"gla forward B={B} T={T}: Gluon output pass {row['fwd_ms_gluon']:.3f} ms (kernels "
              f"{row['fwd_kernels_ms_gluon']:.3f}, host {row['host_ms_per_call_gluon']:.3f}), Triton "
              f"{row['fwd_ms_triton']:.3f} ms (kernels {row['fwd_kernels_ms_triton']:.3f}, host "
              f"{row['host_ms_per_call_triton']:.3f})", flush=True)
        print("  kernels (Gluon):", {name[:40]: round(ms, 4) for name, ms in row["fwd_kernel_breakdown_gluon"].items()},
              flush=True)
    # the generated kernel against itself re-jitted with its lengths specialized (T, NT, n_tiles: what the launch
    # cache gives up), at T = 2048, GPU time per forward
    gluon_module = importlib.import_module(module.ops.__package__ + ".gluon_kernels")
    q, k, v = (torch.randn(8, 2048, 16, 128, device="cuda", dtype=torch.bfloat16).requires_grad_() for _ in range(3))
    g = torch.nn.functional.logsigmoid(torch.randn(8, 2048, 16, 128, device="cuda")).to(torch.bfloat16).requires_grad_()
    shipped = gluon_module.chunk_fwd_o_gluon_kernel
    for label, kernel in (("generated", shipped), ("lengths specialized", gluon.jit(shipped.fn))):
        gluon_module.chunk_fwd_o_gluon_kernel = kernel
        gluon_module._COMPILED.clear()
        module.chunk(q, k, v, g)
        kernels, _ = cuda_kernel_times(lambda: module.chunk(q, k, v, g), calls=5)
        gluon_ms = sum(ms for name, ms in kernels.items() if "gluon" in name)
        timing.append(dict(spec="gla", B=8, T=2048, variant=label, gluon_kernel_ms=gluon_ms))
        print(f"gla T=2048 output pass, {label}: {gluon_ms:.4f} ms", flush=True)
    gluon_module.chunk_fwd_o_gluon_kernel = shipped
    gluon_module._COMPILED.clear()
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gluon-op-check.json").write_text(json.dumps({"environment": environment(), "checks": rows,
                                                         "forward": timing}, indent=1))
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, default=2048, help="sequence length; B = 16K tokens / T (default 2048)")
    parser.add_argument("--compile-only", action="store_true", help="compile for sm_90a here; no GPU needed")
    parser.add_argument("--op", metavar="SPECS", default=None,
                        help="check the generated ops' Gluon output pass against their Triton one (comma-separated "
                             "specs, e.g. gla,rwkv6,hgrn2) and time GLA's forward both ways; no probe variants")
    args = parser.parse_args()
    if args.compile_only:
        os.environ.pop("TRITON_INTERPRET", None)
        sys.exit(1 if compile_only() else 0)
    if args.op:
        sys.exit(0 if op_check(args.op.split(",")) else 1)

    from linattn_gen import load
    from linattn_gen.check import relative_error
    from probe_harness import Probe

    B, T, H, K, V = 16384 // args.T, args.T, 16, 128, 128
    NT = T // BT
    kernels = load(ROOT / "specs" / "gla.yaml").kernels
    torch.manual_seed(0)
    dev, dtype = "cuda", torch.bfloat16
    q, k, v = (torch.randn(B, T, H, K, device=dev, dtype=dtype) for _ in range(3))
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, K, device=dev)).to(dtype)
    h = q.new_empty(B, NT, H, K, V)
    o_ref, o = torch.empty_like(v), torch.empty_like(v)
    span_flag = torch.zeros(B * NT * H, device=dev, dtype=torch.int32)
    scale = K ** -0.5
    probe = Probe(False, B=B, T=T, H=H, K=K, V=V)
    tokens = B * T * H
    h_bytes = B * NT * H * K * V * 2
    fwd_o_bytes = tokens * (3 * K + 2 * V) * 2 + h_bytes

    kernels.chunk_fwd_h_kernel[(1, 1, B * H)](
        k, v, g, h, None, None, None, None, None, T, NT, H=H, HK=H, K=K, V=V, BT=BT, BK=128, BV=128,
        USE_INITIAL_STATE=False, STORE_FINAL_STATE=False, STORE_CHUNK_DECAY=False, IS_VARLEN=False,
        DOT_PRECISION="tf32", num_warps=8, num_stages=2)

    def generated(out=o_ref):
        kernels.chunk_fwd_o_kernel[(1, NT, B * H)](
            q, k, v, g, h, out, None, None, scale, T, NT, H=H, HK=H, K=K, V=V, BT=BT, BC=16, BK=128, BV=128,
            IS_VARLEN=False, SPAN_LIMIT=SPAN_LIMIT, DOT_PRECISION="tf32", num_warps=4, num_stages=2)

    probe.record("generated (128, 128, 4, 2)", generated, fwd_o_bytes, kernel="fwd_o")
    generated()
    torch.cuda.synchronize()

    def check(run):
        o.zero_()
        span_flag.zero_()
        run()
        torch.cuda.synchronize()
        err = relative_error(o.float(), o_ref.float())
        return {"o": err, "flagged": float(span_flag.sum().item())}

    for variant in VARIANTS:
        BV, warps, stages, per_sm, persistent, split, cheap, async_mma, device_desc = variant
        run = fwd_o_gluon(q, k, v, g, h, o, span_flag, scale, BV=BV, num_warps=warps, stages=stages,
                          programs_per_sm=per_sm, persistent=persistent, split_barriers=split, cheap_flag=cheap,
                          async_mma=async_mma, device_desc=device_desc)
        label = _label(*variant)
        probe.record(label, run, fwd_o_bytes, check=lambda run=run: check(run), kernel="fwd_o")

    # The generated op's Gluon kernel (gluon_kernels.py) ran 0.160 ms in the op's forward (profiler, after fwd_h)
    # against this probe's 0.126 (do_bench), with the same instructions. Both here, under both harnesses: do_bench
    # alone (its cache flush between calls), and the profiler's kernel time with fwd_h run before it, as in the op.
    import importlib

    from linattn_gen.bench import cuda_kernel_times
    gluon_kernels = importlib.import_module(load(ROOT / "specs" / "gla.yaml").ops.__package__ + ".gluon_kernels")

    def state_pass():
        kernels.chunk_fwd_h_kernel[(1, 1, B * H)](
            k, v, g, h, None, None, None, None, None, T, NT, H=H, HK=H, K=K, V=V, BT=BT, BK=128, BV=128,
            USE_INITIAL_STATE=False, STORE_FINAL_STATE=False, STORE_CHUNK_DECAY=False, IS_VARLEN=False,
            DOT_PRECISION="tf32", num_warps=8, num_stages=2)

    contenders = {
        "generated gluon_kernels.chunk_fwd_o_gluon": lambda: gluon_kernels.chunk_fwd_o_gluon(
            q, k, v, g, h, o, span_flag, scale, BT, SPAN_LIMIT, 128, 8, 2),
        "probe, cheap flag": fwd_o_gluon(q, k, v, g, h, o, span_flag, scale, split_barriers=False, async_mma=False),
        "probe, cheap flag, device descriptors": fwd_o_gluon(q, k, v, g, h, o, span_flag, scale, split_barriers=False,
                                                             async_mma=False, device_desc=True),
    }
    probe.result["harness_ab"] = []
    for label, run in contenders.items():
        ms = probe.record(label + " (do_bench)", run, fwd_o_bytes, check=lambda run=run: check(run), kernel="fwd_o")
        state_pass()
        run()
        torch.cuda.synchronize()
        times, _ = cuda_kernel_times(lambda run=run: (state_pass(), run()), calls=10)
        after_state_pass = sum(t for name, t in times.items() if "fwd_h" not in name)
        probe.result["harness_ab"].append(dict(label=label, do_bench_ms=ms, profiled_after_fwd_h_ms=after_state_pass))
        print(f"fwd_o  {label:48} profiled after fwd_h: {after_state_pass:.3f} ms", flush=True)

    # a chunk past the span limit must be flagged (the second launch recomputes it)
    g_steep = g.clone()
    g_steep[0, :BT, 0, 0] = -3.0  # 64 rows x -3 = a span of 189 in one column of the first chunk of head 0
    span_flag.zero_()
    fwd_o_gluon(q, k, v, g_steep, h, o, span_flag, scale)()
    torch.cuda.synchronize()
    flagged = span_flag.nonzero().flatten().tolist()
    print(f"steep chunk flagged: {flagged} (expected [0])", flush=True)
    probe.result["steep_flagged"] = flagged
    probe.write(f"gluon-fwd-T{T}")


if __name__ == "__main__":
    main()
