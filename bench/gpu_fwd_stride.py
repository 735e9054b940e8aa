"""GLA's inference forward with the chunk states stored every STRIDE chunks instead of every chunk.

The two forward passes move 805 MB at T = 2048, B = 8 (run 11), of which 268 MB are the bf16 chunk states, written
by the state pass and read again by the output pass; the floor (q, k, v, g read and o written once) is 335 MB. With
a stride of S, the state pass stores 1/S of the states and each output program reads the state entering its
segment of S chunks. A chunk that is not the first of its segment adds the earlier chunks' contribution as
attention blocks, not by advancing the state:

    o_i += sum over earlier chunks p of the segment: (q_i * exp(G_i)) . (k_j * exp(after_j + D_p)) v_j

with G the chunk's own cumulative log decay (from its first row), after_j the log decay left after row j in chunk p
and D_p the total log decay of the chunks between p and this one (`chunk_log_decay`, stored by the state pass).
Every factor is <= 1 for log decays <= 0 (the sub-chunk fallback assumes the same), so these blocks need no span
test; the chunk's own block keeps the generated span test and fallback.

Both passes here are probe copies of the generated kernels (dense batch, BK = K in the output pass), checked
against the generated forward's output.

usage: python bench/gpu_fwd_stride.py [--T 2048] [--smoke]; writes $OUT/fwd-stride-T<T>.json
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if "--smoke" in sys.argv:  # the interpreter is chosen before the kernels below are defined
    os.environ["TRITON_INTERPRET"] = "1"

import torch
import triton
import triton.language as tl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from linattn_gen import load  # noqa: E402
from generated.gla.kernels import _rows_per_subchunk, _rows_summed, _scores_query_rebased  # noqa: E402
from linattn_gen.check import relative_error  # noqa: E402
from probe_harness import Probe, add_shape_arguments, probe_shape  # noqa: E402


@triton.jit
def stride_fwd_h(k, v, g, h, chunk_log_decay, T, NT, NS, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                 BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, STRIDE: tl.constexpr,
                 DOT_PRECISION: tl.constexpr):
    # chunk_fwd_h_kernel (dense batch, zero initial state) storing the state entering every STRIDE-th chunk, and every
    # chunk's total log decay
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    bos = i_b.to(tl.int64) * T
    base_k = (bos * H + i_h) * K
    base_v = (bos * H + i_h) * V
    o_i = tl.arange(0, BT)
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    for i_t in range(NT):
        m_t = i_t * BT + o_i < T
        if i_t % STRIDE == 0:
            p_h = tl.make_block_ptr(h + ((i_b * NS + i_t // STRIDE) * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                                    (i_k * BK, i_v * BV), (BK, BV), (1, 0))
            tl.store(p_h, b_h.to(p_h.dtype.element_ty), boundary_check=(0, 1))
        p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        b_v = tl.load(p_v, boundary_check=(0, 1))
        p_k = tl.make_block_ptr(k + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        b_k = tl.load(p_k, boundary_check=(0, 1))
        p_g = tl.make_block_ptr(g + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        b_g = tl.load(p_g, boundary_check=(0, 1)).to(tl.float32)
        b_a = tl.where(m_t[:, None], b_g, 0.0)
        b_last = tl.sum(b_a, axis=0)
        b_after = _rows_summed(o_i[None, :] > o_i[:, None], b_a, g, LOG_DECAY_IS_GATE=True)
        b_h *= tl.exp(b_last)[:, None]
        b_kT = tl.trans((b_k * tl.exp(b_after)).to(b_v.dtype))
        if STRIDE > 1:
            if i_v == 0:
                o_kd = i_k * BK + tl.arange(0, BK)
                tl.store(chunk_log_decay + ((i_b * NT + i_t) * H + i_h).to(tl.int64) * K + o_kd, b_last,
                         mask=o_kd < K)
        b_h += tl.dot(b_kT, b_v, input_precision=DOT_PRECISION)


@triton.jit
def stride_fwd_o(q, k, v, g, h, chunk_log_decay, o, scale, T, NT, NS, H: tl.constexpr, K: tl.constexpr,
                 V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, STRIDE: tl.constexpr,
                 SPAN_LIMIT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    # chunk_fwd_o_kernel (dense batch, BK = K, BV = V) reading the state entering its segment of STRIDE chunks
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    first = i_t - i_t % STRIDE
    bos = i_b.to(tl.int64) * T
    base_k = (bos * H + i_h) * K
    base_v = (bos * H + i_h) * V
    o_i = tl.arange(0, BT)
    o_k = tl.arange(0, K)
    m_t = i_t * BT + o_i < T
    m_causal = o_i[:, None] >= o_i[None, :]
    p_q = tl.make_block_ptr(q + base_k, (T, K), (H * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
    p_k = tl.make_block_ptr(k + base_k, (T, K), (H * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
    p_g = tl.make_block_ptr(g + base_k, (T, K), (H * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
    p_h = tl.make_block_ptr(h + ((i_b * NS + i_t // STRIDE) * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1), (0, 0),
                            (K, V), (1, 0))
    b_q = tl.load(p_q, boundary_check=(0, 1))
    b_k = tl.load(p_k, boundary_check=(0, 1))
    b_h = tl.load(p_h, boundary_check=(0, 1)).to(b_q.dtype)
    b_a = tl.where(m_t[:, None], tl.load(p_g, boundary_check=(0, 1)).to(tl.float32), 0.0)
    b_rel = tl.cumsum(tl.where(o_i[:, None] > 0, b_a, 0.0), axis=0)
    b_b0 = tl.load(g + ((bos + i_t * BT) * H + i_h) * K + o_k).to(tl.float32)
    b_o = tl.zeros([BT, V], dtype=tl.float32)
    b_between = tl.zeros([K], dtype=tl.float32)  # log decay of the segment's chunks before this one, summed
    if i_t > first:
        # the query decayed from this chunk's start: every factor <= 1
        b_ql = (b_q * tl.exp(b_rel + b_b0[None, :])).to(b_q.dtype)
        for i_back in range(i_t - first):
            i_p = i_t - 1 - i_back
            p_kp = tl.make_block_ptr(k + base_k, (T, K), (H * K, 1), (i_p * BT, 0), (BT, K), (1, 0))
            p_gp = tl.make_block_ptr(g + base_k, (T, K), (H * K, 1), (i_p * BT, 0), (BT, K), (1, 0))
            p_vp = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_p * BT, 0), (BT, V), (1, 0))
            b_ap = tl.load(p_gp, boundary_check=(0, 1)).to(tl.float32)
            b_afterp = _rows_summed(o_i[None, :] > o_i[:, None], b_ap, g, LOG_DECAY_IS_GATE=True)
            b_kp = (tl.load(p_kp, boundary_check=(0, 1)) * tl.exp(b_afterp + b_between[None, :])).to(b_q.dtype)
            b_Ap = tl.dot(b_ql, tl.trans(b_kp), input_precision=DOT_PRECISION)
            b_o += tl.dot(b_Ap.to(b_q.dtype), tl.load(p_vp, boundary_check=(0, 1)), input_precision=DOT_PRECISION)
            b_between += tl.load(chunk_log_decay + ((i_b * NT + i_p) * H + i_h).to(tl.int64) * K + o_k)
    if tl.max(b_rel) - tl.min(b_rel) <= SPAN_LIMIT:
        b_qr = b_q * tl.exp(b_rel)
        b_o += tl.dot((b_qr * tl.exp(b_b0 + b_between)[None, :]).to(b_q.dtype), b_h, input_precision=DOT_PRECISION)
        b_kr = (b_k * tl.exp(-b_rel)).to(b_q.dtype)
        b_A = tl.dot(b_qr.to(b_q.dtype), tl.trans(b_kr), input_precision=DOT_PRECISION)
    else:
        b_b = b_rel + b_b0[None, :]
        b_o += tl.dot((b_q * tl.exp(b_b + b_between[None, :])).to(b_q.dtype), b_h, input_precision=DOT_PRECISION)
        b_A = _scores_query_rebased(b_q, b_b, tl.trans(b_k), tl.trans(b_b), o_i,
                                    _rows_per_subchunk(b_b, BT, BC, K, SPAN_LIMIT), BT, DOT_PRECISION)
    b_A = tl.where(m_causal, b_A, 0.0)
    p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, 0), (BT, V), (1, 0))
    b_v = tl.load(p_v, boundary_check=(0, 1))
    b_o = (b_o + tl.dot(b_A.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)) * scale
    p_o = tl.make_block_ptr(o + base_v, (T, V), (H * V, 1), (i_t * BT, 0), (BT, V), (1, 0))
    tl.store(p_o, b_o.to(p_o.dtype.element_ty), boundary_check=(0, 1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(parser)
    args = parser.parse_args()
    B, T, H, K, V, device, dtype = probe_shape(args, smoke=(2, 300, 1))
    BT = 64
    NT = triton.cdiv(T, BT)
    module = load(ROOT / "specs" / "gla.yaml")
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, T, H, K, device=device, dtype=dtype) for _ in range(3))
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, K, device=device)).to(dtype)
    if args.smoke:  # one chunk past the span limit, so that the fallback runs too
        g[0, 64:128, 0] = -3.0
    scale = K ** -0.5
    with torch.no_grad():
        o_reference = module.chunk(q, k, v, g, scale=scale)[0]
    probe = Probe(args.smoke, B=B, T=T, H=H, K=K, V=V)
    record = probe.record
    tokens = B * T * H
    elt = q.element_size()

    def generated():
        with torch.no_grad():
            module.chunk(q, k, v, g)

    floor_bytes = tokens * (3 * K + 2 * V) * elt
    record("generated forward (module.chunk, no grad)", generated, floor_bytes)
    o = torch.empty_like(v)
    chunk_log_decay = torch.empty(B * NT, H, K, device=device, dtype=torch.float32)
    for stride in (1, 2, 4):
        NS = triton.cdiv(NT, stride)
        h = q.new_empty(B, NS, H, K, V)
        h_bytes = B * NS * H * K * V * elt
        for warps_h, stages_h in ((4, 3), (4, 2))[:1 if args.smoke else 2]:
            def state_pass(stride=stride, NS=NS, h=h, warps=warps_h, stages=stages_h):
                stride_fwd_h[(triton.cdiv(K, 64), 1, B * H)](
                    k, v, g, h, chunk_log_decay, T, NT, NS, H=H, K=K, V=V, BT=BT, BK=64, BV=V, STRIDE=stride,
                    DOT_PRECISION="tf32", num_warps=warps, num_stages=stages)
            record(f"state pass, stride {stride}, (64, 128, {warps_h}, {stages_h})", state_pass,
                          tokens * (2 * K + V) * elt + h_bytes + (B * NT * H * K * 4 if stride > 1 else 0))
        state_pass()
        for warps, stages in ((4, 2), (4, 3), (8, 2))[:1 if args.smoke else 3]:
            def output_pass(stride=stride, NS=NS, h=h, warps=warps, stages=stages):
                stride_fwd_o[(NT, B * H)](
                    q, k, v, g, h, chunk_log_decay, o, scale, T, NT, NS, H=H, K=K, V=V, BT=BT, BC=16, STRIDE=stride,
                    SPAN_LIMIT=75.0, DOT_PRECISION="tf32", num_warps=warps, num_stages=stages)
            record(f"output pass, stride {stride}, (128, 128, {warps}, {stages})", output_pass,
                   floor_bytes + h_bytes, check=lambda run=output_pass: (run(), relative_error(o, o_reference))[1])
    probe.write(f"fwd-stride-T{T}")


if __name__ == "__main__":
    main()
