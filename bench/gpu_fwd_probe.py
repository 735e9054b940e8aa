"""Where GLA's forward spends its time: the two forward kernels (`fwd_h`, `fwd_o`) under launch configs outside the
tuner's list, and probe copies of them with parts of the gate arithmetic removed or precomputed, at the shape of
the performance issue (B*T = 16K, T = 2048, H = 16, K = V = 128, bf16).

The probe kernels are not the generated ones: they exist to price each part (the in-kernel cumsum, the chunk-span
test and its branch, the reduction that extracts the rebasing row, the state stores) by timing the kernel without
it. A mode that changes the arithmetic is checked against the generated kernel's output where it computes the same
thing (modes 2-4 of fwd_o, mode 4 of fwd_h); the others are lower bounds and say so.

usage: python bench/gpu_fwd_probe.py [--T 2048] [--generated-only] [--segments] [--smoke]; writes
$OUT/fwd-probe-T<T>.json
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
from generated.gla.kernels import _rows_per_subchunk, _scores_query_rebased  # noqa: E402
from linattn_gen.check import relative_error  # noqa: E402
from probe_harness import Probe, add_shape_arguments, probe_shape  # noqa: E402

# gate modes
NO_GATE = 0  # lower bound: the products and bytes without any gate arithmetic
CURRENT = 1  # as generated: cumsum in the kernel, chunk-span test and branch, rebasing row by a reduction
CHUNK_WIDE = 2  # no span test: always the chunk-wide block (valid for the probe's gates, whose span is small)
ROW_FREE = 3  # CHUNK_WIDE with the rebasing row's log decay loaded as a vector and a cumsum from row 1
PRECOMPUTED = 4  # the cumulative log decay loaded as fp32 from HBM (as fla's chunk_local_cumsum leaves it)
# fwd_h only
NATURAL_TRANS = 5  # the gate loaded [BT, BK], cumsum along rows, a register transpose to [BK, BT]
NATURAL_KEYS = 6  # gate and keys loaded [BT, BK], decayed keys formed there, the product on their transpose
DOT_CUMSUM = 7  # the reverse cumulative sum as a product with a 0/1 triangle (bf16 operands: exact for a bf16 gate)
DOT_CUMSUM_NATURAL = 8  # DOT_CUMSUM on the [BT, BK] layout, with NATURAL_KEYS' product
# fwd_o only
DOT_ROW_FREE = 9  # ROW_FREE with the cumulative sum as a product with a 0/1 triangle
DOT_ROW_FREE_SPAN = 10  # DOT_ROW_FREE plus a one-reduction span bound (column sums of |a|), its result used
DOT_ROW_FREE_BRANCH = 11  # DOT_ROW_FREE_SPAN with the real branch to the generated sub-chunk path
FLAGGED_NATURAL = 12  # as generated (keys decayed in [BT, BK]), but a chunk past the span limit is flagged, not branched
FLAGGED_TRANSPOSED = 13  # FLAGGED_NATURAL with ROW_FREE's transposed key load and decay
NATURAL_ROW_FREE = 14  # ROW_FREE with the keys loaded and decayed in [BT, BK], transposed in bf16 (as generated)
ABS_TEST_BRANCH = 15  # ROW_FREE (keys [BK, BT]) with one reduction, max |b_rel| (every factor within exp(limit)), and
# the real branch to the sub-chunk path
BOUND_TRANSPOSED = 16  # ROW_FREE (keys [BK, BT]) testing the column sums of |a| that the state pass stored (ABS_BOUND),
# a bound on every column's span, reduced over the K block's BK values only, with the real branch
BOUND_NATURAL = 17  # BOUND_TRANSPOSED with the keys loaded and decayed in [BT, BK] (as generated)
# fwd_h only
ABS_BOUND = 9  # DOT_CUMSUM_NATURAL storing each chunk's column sums of |a| (one reduction with b_last, on the loaded
# block, not on the triangle product's result) for the output pass's span test


@triton.jit
def _row_free_decay(g, base_k, i_t, i_k, T, m_t, o_i, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr,
                    BK: tl.constexpr):
    # ROW_FREE's rebase: b_rel, the log decay of rows 1..i summed (0 on row 0), and b_b0, row 0's own, loaded as a
    # vector
    o_k = i_k * BK + tl.arange(0, BK)
    p_g = tl.make_block_ptr(g + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    b_g = tl.load(p_g, boundary_check=(0, 1)).to(tl.float32)
    b_b0 = tl.load(g + base_k + i_t * BT * H * K + o_k, mask=o_k < K, other=0.0).to(tl.float32)
    b_rel = tl.cumsum(tl.where(m_t[:, None] & (o_i[:, None] > 0), b_g, 0.0), axis=0)
    return b_rel, b_b0


@triton.jit
def _subchunk_fallback(b_q, b_kT, b_h, b_rel, b_b0, o_i, BT: tl.constexpr, BK: tl.constexpr):
    # the generated output pass's path for a chunk past the span limit: b_o's and b_A's shares from this K block
    b_bb = b_rel + b_b0[None, :]
    bc = _rows_per_subchunk(b_bb, BT, 16, BK, 75.0)
    return (tl.dot((b_q * tl.exp(b_bb)).to(b_q.dtype), b_h),
            _scores_query_rebased(b_q, b_bb, b_kT, tl.trans(b_bb), o_i, bc, BT, "tf32"))


@triton.jit
def probe_fwd_o(q, k, v, g, gcum, h, o, flags, bound, scale, T, NT, H: tl.constexpr, K: tl.constexpr,
                V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, MODE: tl.constexpr):
    # flags (FLAGGED_* modes): one int32 per program, 1 where a chunk's span passed the limit and its output was not
    # stored (a second launch would compute those on the sub-chunk path)
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_chunk = i_b * NT + i_t
    bos = i_b.to(tl.int64) * T
    base_k = (bos * H + i_h) * K
    base_v = (bos * H + i_h) * V
    o_i = tl.arange(0, BT)
    m_t = i_t * BT + o_i < T
    m_causal = o_i[:, None] >= o_i[None, :]
    b_o = tl.zeros([BT, BV], dtype=tl.float32)
    b_A = tl.zeros([BT, BT], dtype=tl.float32)
    span_max = tl.full([], 0.0, tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        p_q = tl.make_block_ptr(q + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        p_kT = tl.make_block_ptr(k + base_k, (K, T), (1, H * K), (i_k * BK, i_t * BT), (BK, BT), (0, 1))
        p_h = tl.make_block_ptr(h + (i_chunk * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                                (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        b_q = tl.load(p_q, boundary_check=(0, 1))
        b_kT = tl.load(p_kT, boundary_check=(0, 1))
        b_h = tl.load(p_h, boundary_check=(0, 1)).to(b_q.dtype)
        if MODE == 0:
            b_o += tl.dot(b_q, b_h)
            b_A += tl.dot(b_q, b_kT)
        elif MODE == 16 or MODE == 17:
            b_rel, b_b0 = _row_free_decay(g, base_k, i_t, i_k, T, m_t, o_i, H, K, BT, BK)
            o_k = i_k * BK + tl.arange(0, BK)
            # sum of |a| over the chunk's rows bounds each column's span (row 0's own term included: a bound)
            span = tl.max(tl.load(bound + (i_chunk * H + i_h).to(tl.int64) * K + o_k, mask=o_k < K, other=0.0))
            if span <= 75.0:
                b_qr = b_q * tl.exp(b_rel)
                b_o += tl.dot((b_qr * tl.exp(b_b0)[None, :]).to(b_q.dtype), b_h)
                if MODE == 16:
                    b_A += tl.dot(b_qr.to(b_q.dtype), (b_kT * tl.exp(-tl.trans(b_rel))).to(b_q.dtype))
                else:
                    p_k = tl.make_block_ptr(k + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
                    b_kr = (tl.load(p_k, boundary_check=(0, 1)) * tl.exp(-b_rel)).to(b_q.dtype)
                    b_A += tl.dot(b_qr.to(b_q.dtype), tl.trans(b_kr))
            else:
                b_o_sub, b_A_sub = _subchunk_fallback(b_q, b_kT, b_h, b_rel, b_b0, o_i, BT, BK)
                b_o += b_o_sub
                b_A += b_A_sub
        elif MODE == 15:
            b_rel, b_b0 = _row_free_decay(g, base_k, i_t, i_k, T, m_t, o_i, H, K, BT, BK)
            if tl.max(tl.abs(b_rel)) <= 75.0:
                b_qr = b_q * tl.exp(b_rel)
                b_o += tl.dot((b_qr * tl.exp(b_b0)[None, :]).to(b_q.dtype), b_h)
                b_A += tl.dot(b_qr.to(b_q.dtype), (b_kT * tl.exp(-tl.trans(b_rel))).to(b_q.dtype))
            else:
                b_o_sub, b_A_sub = _subchunk_fallback(b_q, b_kT, b_h, b_rel, b_b0, o_i, BT, BK)
                b_o += b_o_sub
                b_A += b_A_sub
        elif MODE >= 12:
            b_rel, b_b0 = _row_free_decay(g, base_k, i_t, i_k, T, m_t, o_i, H, K, BT, BK)
            if MODE != 14:
                span_max = tl.maximum(span_max, tl.max(b_rel) - tl.min(b_rel))
            b_qr = b_q * tl.exp(b_rel)
            b_o += tl.dot((b_qr * tl.exp(b_b0)[None, :]).to(b_q.dtype), b_h)
            if MODE == 12 or MODE == 14:
                p_k = tl.make_block_ptr(k + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
                b_kr = (tl.load(p_k, boundary_check=(0, 1)) * tl.exp(-b_rel)).to(b_q.dtype)
                b_A += tl.dot(b_qr.to(b_q.dtype), tl.trans(b_kr))
            else:
                b_kr = b_kT * tl.exp(-tl.trans(b_rel))
                b_A += tl.dot(b_qr.to(b_q.dtype), b_kr.to(b_q.dtype))
        else:
            o_k = i_k * BK + tl.arange(0, BK)
            if MODE >= 9:
                p_g = tl.make_block_ptr(g + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
                b_g = tl.load(p_g, boundary_check=(0, 1))
                b_b0 = tl.load(g + base_k + i_t * BT * H * K + o_k, mask=o_k < K, other=0.0).to(tl.float32)
                # rows 1..i summed: a 0/1 triangle times the gate, exact products, fp32 accumulation
                m_sum = (o_i[None, :] <= o_i[:, None]) & (o_i[None, :] > 0)
                b_rel = tl.dot(m_sum.to(b_g.dtype), tl.where(m_t[:, None], b_g, 0.0).to(b_g.dtype))
                if MODE >= 10:
                    span = tl.max(tl.sum(tl.abs(tl.where(m_t[:, None], b_g, 0.0).to(tl.float32)), axis=0))
                    if MODE == 10:
                        b_b0 = tl.where(span <= 75.0, b_b0, b_b0 * 1.0000001)
            elif MODE == 4:
                p_b = tl.make_block_ptr(gcum + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
                b_b = tl.load(p_b, boundary_check=(0, 1))
                b_b0 = tl.load(gcum + base_k + i_t * BT * H * K + o_k, mask=o_k < K, other=0.0)
                b_rel = b_b - b_b0[None, :]
            elif MODE == 3:
                b_rel, b_b0 = _row_free_decay(g, base_k, i_t, i_k, T, m_t, o_i, H, K, BT, BK)
            else:
                p_g = tl.make_block_ptr(g + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
                b_g = tl.load(p_g, boundary_check=(0, 1)).to(tl.float32)
                b_b = tl.cumsum(tl.where(m_t[:, None], b_g, 0.0), axis=0)
                b_b0 = tl.sum(tl.where(o_i[:, None] == 0, b_b, 0.0), axis=0)
                if MODE == 1:
                    span = tl.max(tl.max(b_b, axis=0) - tl.min(b_b, axis=0))
                    b_b0 = tl.where(span <= 75.0, b_b0, b_b0 * 1.0000001)  # keeps the test and its use
                b_rel = b_b - b_b0[None, :]
            if MODE == 11:
                if span <= 75.0:
                    b_qr = b_q * tl.exp(b_rel)
                    b_o += tl.dot((b_qr * tl.exp(b_b0)[None, :]).to(b_q.dtype), b_h)
                    b_kr = b_kT * tl.exp(-tl.trans(b_rel))
                    b_A += tl.dot(b_qr.to(b_q.dtype), b_kr.to(b_q.dtype))
                else:
                    b_o_sub, b_A_sub = _subchunk_fallback(b_q, b_kT, b_h, b_rel, b_b0, o_i, BT, BK)
                    b_o += b_o_sub
                    b_A += b_A_sub
            else:
                b_qr = b_q * tl.exp(b_rel)
                b_o += tl.dot((b_qr * tl.exp(b_b0)[None, :]).to(b_q.dtype), b_h)
                b_kr = b_kT * tl.exp(-tl.trans(b_rel))
                b_A += tl.dot(b_qr.to(b_q.dtype), b_kr.to(b_q.dtype))
    b_A = tl.where(m_causal, b_A, 0.0)
    p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    b_v = tl.load(p_v, boundary_check=(0, 1))
    b_o = (b_o + tl.dot(b_A.to(b_v.dtype), b_v)) * scale
    p_o = tl.make_block_ptr(o + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    if (MODE == 12) or (MODE == 13):
        exceeded = span_max > 75.0
        tl.store(flags + (i_bh * NT + i_t) * tl.num_programs(0) + i_v, exceeded.to(tl.int32))
        if not exceeded:
            tl.store(p_o, b_o.to(p_o.dtype.element_ty), boundary_check=(0, 1))
    else:
        tl.store(p_o, b_o.to(p_o.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def probe_fwd_h(k, v, g, gcum, h, bound, T, NT, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr,
                BK: tl.constexpr, BV: tl.constexpr, MODE: tl.constexpr, STORE: tl.constexpr,
                STORE_EVERY: tl.constexpr = 1):
    # bound (ABS_BOUND): [B * NT, H, K] float32, each chunk's column sums of |a|
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    bos = i_b.to(tl.int64) * T
    base_k = (bos * H + i_h) * K
    base_v = (bos * H + i_h) * V
    o_i = tl.arange(0, BT)
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    for i_t in range(NT):
        m_t = i_t * BT + o_i < T
        if STORE and (i_t % STORE_EVERY == 0):
            p_h = tl.make_block_ptr(h + ((i_b * NT + i_t) * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                                    (i_k * BK, i_v * BV), (BK, BV), (1, 0))
            tl.store(p_h, b_h.to(p_h.dtype.element_ty), boundary_check=(0, 1))
        p_kT = tl.make_block_ptr(k + base_k, (K, T), (1, H * K), (i_k * BK, i_t * BT), (BK, BT), (0, 1))
        p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        b_v = tl.load(p_v, boundary_check=(0, 1))
        p_g = tl.make_block_ptr(g + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        p_k = tl.make_block_ptr(k + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        if MODE == 0:
            b_kT = tl.load(p_kT, boundary_check=(0, 1))
            b_h += tl.dot(b_kT, b_v)
        elif MODE == 5:
            b_kT = tl.load(p_kT, boundary_check=(0, 1))
            b_a = tl.where(m_t[:, None], tl.load(p_g, boundary_check=(0, 1)).to(tl.float32), 0.0)
            b_last = tl.sum(b_a, axis=0)
            b_bT = tl.trans(tl.cumsum(b_a, axis=0))
            b_h *= tl.exp(b_last)[:, None]
            b_kT = (b_kT * tl.exp(tl.where(m_t[None, :], b_last[:, None] - b_bT, 0.0))).to(b_v.dtype)
            b_h += tl.dot(b_kT, b_v)
        elif MODE == 6:
            b_k = tl.load(p_k, boundary_check=(0, 1))
            b_a = tl.where(m_t[:, None], tl.load(p_g, boundary_check=(0, 1)).to(tl.float32), 0.0)
            b_last = tl.sum(b_a, axis=0)
            b_b = tl.cumsum(b_a, axis=0)
            b_h *= tl.exp(b_last)[:, None]
            b_k = (b_k * tl.exp(tl.where(m_t[:, None], b_last[None, :] - b_b, 0.0))).to(b_v.dtype)
            b_h += tl.dot(tl.trans(b_k), b_v)
        elif MODE == 7:
            b_kT = tl.load(p_kT, boundary_check=(0, 1))
            p_gT = tl.make_block_ptr(g + base_k, (K, T), (1, H * K), (i_k * BK, i_t * BT), (BK, BT), (0, 1))
            b_aT = tl.where(m_t[None, :], tl.load(p_gT, boundary_check=(0, 1)), 0.0)
            # sum over the later rows r > j: a 0/1 triangle, exact products, fp32 accumulation
            b_after = tl.dot(b_aT.to(b_kT.dtype), (o_i[:, None] > o_i[None, :]).to(b_kT.dtype))
            b_last = tl.sum(b_aT.to(tl.float32), axis=1)
            b_h *= tl.exp(b_last)[:, None]
            b_kT = (b_kT * tl.exp(b_after)).to(b_v.dtype)
            b_h += tl.dot(b_kT, b_v)
        elif MODE == 8 or MODE == 9:
            b_k = tl.load(p_k, boundary_check=(0, 1))
            b_a = tl.where(m_t[:, None], tl.load(p_g, boundary_check=(0, 1)), 0.0)
            b_after = tl.dot((o_i[None, :] > o_i[:, None]).to(b_k.dtype), b_a.to(b_k.dtype))
            if MODE == 9:
                b_last, b_abs = tl.reduce((b_a.to(tl.float32), tl.abs(b_a.to(tl.float32))), 0, _sum_pair)
                if i_v == 0:
                    o_k = i_k * BK + tl.arange(0, BK)
                    tl.store(bound + ((i_b * NT + i_t) * H + i_h).to(tl.int64) * K + o_k, b_abs, mask=o_k < K)
            else:
                b_last = tl.sum(b_a.to(tl.float32), axis=0)
            b_h *= tl.exp(b_last)[:, None]
            b_k = (b_k * tl.exp(b_after)).to(b_v.dtype)
            b_h += tl.dot(tl.trans(b_k), b_v)
        else:
            b_kT = tl.load(p_kT, boundary_check=(0, 1))
            if MODE == 4:
                p_bT = tl.make_block_ptr(gcum + base_k, (K, T), (1, H * K), (i_k * BK, i_t * BT), (BK, BT), (0, 1))
                b_bT = tl.load(p_bT, boundary_check=(0, 1))
                o_k = i_k * BK + tl.arange(0, BK)
                last = tl.minimum(i_t * BT + BT, T) - 1
                b_last = tl.load(gcum + base_k + last * H * K + o_k, mask=o_k < K, other=0.0)
            else:
                p_gT = tl.make_block_ptr(g + base_k, (K, T), (1, H * K), (i_k * BK, i_t * BT), (BK, BT), (0, 1))
                b_aT = tl.where(m_t[None, :], tl.load(p_gT, boundary_check=(0, 1)).to(tl.float32), 0.0)
                b_bT = tl.cumsum(b_aT, axis=1)
                b_last = tl.sum(b_aT, axis=1)
            b_h *= tl.exp(b_last)[:, None]
            b_kT = (b_kT * tl.exp(tl.where(m_t[None, :], b_last[:, None] - b_bT, 0.0))).to(b_v.dtype)
            b_h += tl.dot(b_kT, b_v)


@triton.jit
def _sum_pair(a_x, a_y, b_x, b_y):
    return a_x + b_x, a_y + b_y


@triton.jit
def _max_and_min(a_max, a_min, b_max, b_min):
    return tl.maximum(a_max, b_max), tl.minimum(a_min, b_min)


@triton.jit
def probe_fwd_segment(q, k, v, g, h, o, scale, T, NT, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                      BT: tl.constexpr, BV: tl.constexpr, S: tl.constexpr, SPAN_TEST: tl.constexpr):
    # The output pass over S chunks per program: the state entering the first is read (fwd_h stored only every S-th),
    # the later ones are carried in registers, each chunk's keys entering it after the chunk's output (as the
    # carried forward does). S = 1 is chunk_fwd_o with one K block. T is a multiple of S chunks here.
    # SPAN_TEST, the test that sends a chunk to the sub-chunk path: 0 none (a lower bound, wrong for extreme gates),
    # 1 the range of b_rel by a max and a min (as generated), 2 the column sums of |a| and their max (one reduction
    # across rows), 3 the max and min in one tuple reduction.
    i_v, i_s, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    bos = i_b.to(tl.int64) * T
    base_k = (bos * H + i_h) * K
    base_v = (bos * H + i_h) * V
    o_i = tl.arange(0, BT)
    o_k = tl.arange(0, K)
    m_causal = o_i[:, None] >= o_i[None, :]
    p_h = tl.make_block_ptr(h + ((i_b * NT + i_s * S) * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                            (0, i_v * BV), (K, BV), (1, 0))
    b_h = tl.load(p_h, boundary_check=(0, 1)).to(tl.float32)
    for s in range(S):
        i_t = i_s * S + s
        m_t = i_t * BT + o_i < T
        p_q = tl.make_block_ptr(q + base_k, (T, K), (H * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
        p_k = tl.make_block_ptr(k + base_k, (T, K), (H * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
        p_g = tl.make_block_ptr(g + base_k, (T, K), (H * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
        p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        b_q = tl.load(p_q, boundary_check=(0, 1))
        b_k = tl.load(p_k, boundary_check=(0, 1))
        b_v = tl.load(p_v, boundary_check=(0, 1))
        b_a = tl.where(m_t[:, None], tl.load(p_g, boundary_check=(0, 1)).to(tl.float32), 0.0)
        b_rel = tl.cumsum(tl.where(o_i[:, None] > 0, b_a, 0.0), axis=0)
        b_b0 = tl.load(g + ((bos + i_t * BT) * H + i_h) * K + o_k).to(tl.float32)
        b_hq = b_h.to(b_q.dtype)
        if SPAN_TEST == 1:
            span = tl.max(b_rel) - tl.min(b_rel)
        elif SPAN_TEST == 2:
            span = tl.max(tl.sum(tl.abs(b_a), axis=0))
        elif SPAN_TEST == 3:
            b_flat = tl.reshape(b_rel, [BT * K])
            b_max, b_min = tl.reduce((b_flat, b_flat), 0, _max_and_min)
            span = b_max - b_min
        if SPAN_TEST != 0:
            if span <= 75.0:
                b_qr = b_q * tl.exp(b_rel)
                b_o = tl.dot((b_qr * tl.exp(b_b0)[None, :]).to(b_q.dtype), b_hq)
                b_kr = (b_k * tl.exp(-b_rel)).to(b_q.dtype)
                b_A = tl.dot(b_qr.to(b_q.dtype), tl.trans(b_kr))
            else:
                b_b = b_rel + b_b0[None, :]
                b_o = tl.dot((b_q * tl.exp(b_b)).to(b_q.dtype), b_hq)
                b_A = _scores_query_rebased(b_q, b_b, tl.trans(b_k), tl.trans(b_b), o_i,
                                            _rows_per_subchunk(b_b, BT, 16, K, 75.0), BT, "tf32")
        else:
            b_qr = b_q * tl.exp(b_rel)
            b_o = tl.dot((b_qr * tl.exp(b_b0)[None, :]).to(b_q.dtype), b_hq)
            b_kr = (b_k * tl.exp(-b_rel)).to(b_q.dtype)
            b_A = tl.dot(b_qr.to(b_q.dtype), tl.trans(b_kr))
        b_A = tl.where(m_causal, b_A, 0.0)
        b_o = (b_o + tl.dot(b_A.to(b_v.dtype), b_v)) * scale
        p_o = tl.make_block_ptr(o + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        tl.store(p_o, b_o.to(p_o.dtype.element_ty), boundary_check=(0, 1))
        if s < S - 1:
            b_last = tl.sum(b_a, axis=0)
            b_h *= tl.exp(b_last)[:, None]
            b_kd = (b_k * tl.exp(tl.where(m_t[:, None], (b_last - b_b0)[None, :] - b_rel, 0.0))).to(b_v.dtype)
            b_h += tl.dot(tl.trans(b_kd), b_v)


@triton.jit
def probe_fwd_overlapped(q, k, v, g, h, o, flags, scale, T, NT, STATE_PROGRAMS, H: tl.constexpr, K: tl.constexpr,
                         V: tl.constexpr, BT: tl.constexpr, BKH: tl.constexpr, BVO: tl.constexpr,
                         SPAN_TEST: tl.constexpr):
    # The state pass and the output pass in one launch. The first STATE_PROGRAMS programs walk the chunks as fwd_h
    # does (one per K block of BKH rows and batch*head, all V columns) and, after storing the state entering a chunk,
    # count it in flags[batch*head, chunk] (release). The others compute one chunk's output each, as fwd_o does (one
    # K block, BVO columns), in chunk-major order, once that chunk's count is complete (acquire). Blocks start in
    # index order, so a waiting output program only waits on state programs that are already running: the latency
    # of the sequential state walk hides under the output work instead of preceding it.
    pid = tl.program_id(0)
    NKH: tl.constexpr = K // BKH
    o_i = tl.arange(0, BT)
    if pid < STATE_PROGRAMS:
        i_k, i_bh = pid % NKH, pid // NKH
        i_b, i_h = i_bh // H, i_bh % H
        bos = i_b.to(tl.int64) * T
        base_k = (bos * H + i_h) * K
        base_v = (bos * H + i_h) * V
        b_h = tl.zeros([BKH, V], dtype=tl.float32)
        for i_t in range(NT):
            m_t = i_t * BT + o_i < T
            p_h = tl.make_block_ptr(h + ((i_b * NT + i_t) * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                                    (i_k * BKH, 0), (BKH, V), (1, 0))
            tl.store(p_h, b_h.to(p_h.dtype.element_ty), boundary_check=(0, 1))
            tl.debug_barrier()
            tl.atomic_add(flags + i_bh * NT + i_t, 1, sem="release")
            p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, 0), (BT, V), (1, 0))
            p_k = tl.make_block_ptr(k + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BKH), (BT, BKH), (1, 0))
            p_g = tl.make_block_ptr(g + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BKH), (BT, BKH), (1, 0))
            b_v = tl.load(p_v, boundary_check=(0, 1))
            b_k = tl.load(p_k, boundary_check=(0, 1))
            b_a = tl.where(m_t[:, None], tl.load(p_g, boundary_check=(0, 1)), 0.0)
            b_after = tl.dot((o_i[None, :] > o_i[:, None]).to(b_k.dtype), b_a.to(b_k.dtype))
            b_last = tl.sum(b_a.to(tl.float32), axis=0)
            b_h *= tl.exp(b_last)[:, None]
            b_h += tl.dot(tl.trans((b_k * tl.exp(b_after)).to(b_v.dtype)), b_v)
    else:
        NVO: tl.constexpr = V // BVO
        j = pid - STATE_PROGRAMS
        BHS = (tl.num_programs(0) - STATE_PROGRAMS) // (NVO * NT)  # batch*heads
        i_t, i_bh, i_v = j // (BHS * NVO), (j // NVO) % BHS, j % NVO
        i_b, i_h = i_bh // H, i_bh % H
        bos = i_b.to(tl.int64) * T
        base_k = (bos * H + i_h) * K
        base_v = (bos * H + i_h) * V
        o_k = tl.arange(0, K)
        m_t = i_t * BT + o_i < T
        ready = tl.atomic_add(flags + i_bh * NT + i_t, 0, sem="acquire")
        while ready < NKH:
            ready = tl.atomic_add(flags + i_bh * NT + i_t, 0, sem="acquire")
        p_h = tl.make_block_ptr(h + ((i_b * NT + i_t) * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                                (0, i_v * BVO), (K, BVO), (1, 0))
        p_q = tl.make_block_ptr(q + base_k, (T, K), (H * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
        p_k = tl.make_block_ptr(k + base_k, (T, K), (H * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
        p_g = tl.make_block_ptr(g + base_k, (T, K), (H * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
        p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BVO), (BT, BVO), (1, 0))
        b_q = tl.load(p_q, boundary_check=(0, 1))
        b_k = tl.load(p_k, boundary_check=(0, 1))
        b_v = tl.load(p_v, boundary_check=(0, 1))
        b_hq = tl.load(p_h, boundary_check=(0, 1), cache_modifier=".cg").to(b_q.dtype)
        b_a = tl.where(m_t[:, None], tl.load(p_g, boundary_check=(0, 1)).to(tl.float32), 0.0)
        b_rel = tl.cumsum(tl.where(o_i[:, None] > 0, b_a, 0.0), axis=0)
        b_b0 = tl.load(g + ((bos + i_t * BT) * H + i_h) * K + o_k).to(tl.float32)
        if SPAN_TEST:
            span = tl.max(b_rel) - tl.min(b_rel)
        else:
            span = 0.0
        if span <= 75.0:
            b_qr = b_q * tl.exp(b_rel)
            b_o = tl.dot((b_qr * tl.exp(b_b0)[None, :]).to(b_q.dtype), b_hq)
            b_A = tl.dot(b_qr.to(b_q.dtype), tl.trans((b_k * tl.exp(-b_rel)).to(b_q.dtype)))
        else:
            b_b = b_rel + b_b0[None, :]
            b_o = tl.dot((b_q * tl.exp(b_b)).to(b_q.dtype), b_hq)
            b_A = _scores_query_rebased(b_q, b_b, tl.trans(b_k), tl.trans(b_b), o_i,
                                        _rows_per_subchunk(b_b, BT, 16, K, 75.0), BT, "tf32")
        b_A = tl.where(o_i[:, None] >= o_i[None, :], b_A, 0.0)
        b_o = (b_o + tl.dot(b_A.to(b_v.dtype), b_v)) * scale
        p_o = tl.make_block_ptr(o + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BVO), (BT, BVO), (1, 0))
        tl.store(p_o, b_o.to(p_o.dtype.element_ty), boundary_check=(0, 1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generated-only", action="store_true", help="time the generated kernels only, no probes")
    parser.add_argument("--segments", action="store_true",
                        help="also time a segment-carried forward (fwd_h storing every S-th state, then an output pass "
                             "carrying the state through S chunks per program) and a probe copy of the two passes in "
                             "one launch, the output programs waiting on per-chunk counts from the state programs "
                             "(the generated one was removed in run 12, measured slower)")
    parser.add_argument("--flagged", action="store_true",
                        help="only the output-pass probes where a chunk past the span limit is flagged for a second "
                             "launch instead of branching to the sub-chunk path, and that second launch's cost")
    parser.add_argument("--span-free", action="store_true",
                        help="only the output-pass probes without a span test, the keys in either layout, and the "
                             "transposed one with a one-reduction test (max |b_rel|) and its branch")
    parser.add_argument("--bound", action="store_true",
                        help="only the state pass storing each chunk's column sums of |a| and the output passes "
                             "testing that bound instead of reducing a span (both key layouts), against the span-free "
                             "and one-reduction output passes")
    parser.add_argument("--chunk128", action="store_true",
                        help="also time the generated state and output kernels on 128-row chunks (half the states)")
    add_shape_arguments(parser)
    args = parser.parse_args()
    B, T, H, K, V, device, dtype = probe_shape(args, smoke=(1, 128, 1))
    BT = 64
    NT = T // BT
    module = load(ROOT / "specs" / "gla.yaml")
    kernels = module.kernels
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, T, H, K, device=device, dtype=dtype) for _ in range(3))
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, K, device=device)).to(dtype)
    # the chunk-local cumulative log decay, fp32, for the PRECOMPUTED probes
    gcum = g.float().view(B, NT, BT, H, K).cumsum(2).view(B, T, H, K).contiguous()
    h = q.new_empty(B, NT, H, K, V)
    o = torch.empty_like(v)
    scale = K ** -0.5
    probe = Probe(args.smoke, B=B, T=T, H=H, K=K, V=V)
    elt = 2

    def record(kernel, label, fn, nbytes, check=None):
        probe.record(label, fn, nbytes, check, kernel=kernel)

    tokens = B * T * H
    h_bytes = B * NT * H * K * V * elt
    fwd_h_bytes = tokens * (2 * K + V) * elt + h_bytes
    fwd_o_bytes = tokens * (3 * K + 2 * V) * elt + h_bytes

    def gen_fwd_h(BK, BV, warps, stages):
        kernels.chunk_fwd_h_kernel[(triton.cdiv(K, BK), triton.cdiv(V, BV), B * H)](
            k, v, g, h, None, None, None, None, None, T, NT, H=H, HK=H, K=K, V=V, BT=BT, BK=BK, BV=BV,
            USE_INITIAL_STATE=False, STORE_FINAL_STATE=False, STORE_CHUNK_DECAY=False, IS_VARLEN=False,
            DOT_PRECISION="tf32", num_warps=warps, num_stages=stages)

    def gen_fwd_o(BK, BV, warps, stages, out=o):
        kernels.chunk_fwd_o_kernel[(triton.cdiv(V, BV), NT, B * H)](
            q, k, v, g, h, out, None, None, scale, T, NT, H=H, HK=H, K=K, V=V, BT=BT, BC=16, BK=BK, BV=BV,
            IS_VARLEN=False, SPAN_LIMIT=75.0, DOT_PRECISION="tf32", num_warps=warps, num_stages=stages)

    h_configs = [(64, 64, 4, 3), (128, 128, 8, 2), (128, 128, 8, 3), (128, 128, 4, 2), (64, 128, 4, 2), (64, 128, 4, 3),
                 (64, 128, 8, 2), (64, 64, 4, 2)]
    for c in h_configs:
        record("fwd_h", f"generated {c}", lambda c=c: gen_fwd_h(*c), fwd_h_bytes)
    gen_fwd_h(64, 64, 4, 3)
    h_reference = h.clone()
    o_configs = [(64, 128, 4, 2), (128, 128, 4, 2), (128, 128, 4, 3), (128, 128, 8, 2), (128, 64, 4, 2), (64, 64, 4, 2)]
    for c in o_configs:
        record("fwd_o", f"generated {c}", lambda c=c: gen_fwd_o(*c), fwd_o_bytes)
    o_reference = torch.empty_like(o)
    gen_fwd_o(64, 128, 4, 2, out=o_reference)

    names = {NO_GATE: "no gate (lower bound)", CURRENT: "as generated", CHUNK_WIDE: "no span test",
             ROW_FREE: "no span test, row-free rebase", PRECOMPUTED: "precomputed fp32 cumsum",
             NATURAL_TRANS: "[BT, BK] cumsum, transposed", NATURAL_KEYS: "[BT, BK] cumsum and keys",
             DOT_CUMSUM: "cumsum by a 0/1 product", DOT_CUMSUM_NATURAL: "cumsum by a 0/1 product, [BT, BK]",
             DOT_ROW_FREE: "row-free, cumsum by a 0/1 product", DOT_ROW_FREE_SPAN: "... + one-reduction span",
             DOT_ROW_FREE_BRANCH: "... + span and the sub-chunk branch"}
    names[FLAGGED_NATURAL] = "span flagged, not branched (keys [BT, BK])"
    names[FLAGGED_TRANSPOSED] = "span flagged, not branched (keys [BK, BT])"
    names[NATURAL_ROW_FREE] = "no span test, row-free, keys [BT, BK]"
    names[ABS_TEST_BRANCH] = "row-free, keys [BK, BT], max |b_rel| test and branch"
    names[BOUND_TRANSPOSED] = "row-free, keys [BK, BT], stored colsum |a| test and branch"
    names[BOUND_NATURAL] = "row-free, keys [BT, BK], stored colsum |a| test and branch"
    names[ABS_BOUND] = "cumsum by a 0/1 product, [BT, BK], storing colsum |a|"
    flags = torch.zeros(B * H * NT * 2, dtype=torch.int32, device=q.device)
    bound = torch.zeros(B * NT, H, K, dtype=torch.float32, device=q.device)
    probes = not args.generated_only
    o_probe_configs = ((64, 128, 4, 2), (128, 128, 4, 2), (128, 128, 4, 3), (128, 64, 4, 2))
    o_probe_modes = (NO_GATE, CHUNK_WIDE, ROW_FREE, DOT_ROW_FREE, DOT_ROW_FREE_SPAN, DOT_ROW_FREE_BRANCH)
    if args.flagged:
        probes, o_probe_configs = True, ((128, 128, 4, 2), (64, 128, 4, 2), (128, 128, 8, 2))
        o_probe_modes = (ROW_FREE, FLAGGED_NATURAL, FLAGGED_TRANSPOSED)
    if args.span_free:
        probes, o_probe_configs = True, ((128, 128, 4, 2), (128, 128, 4, 3), (64, 128, 4, 2))
        o_probe_modes = (ROW_FREE, NATURAL_ROW_FREE, ABS_TEST_BRANCH)
    if args.bound:
        probes, o_probe_configs = True, ((128, 128, 4, 2), (128, 128, 4, 3))
        o_probe_modes = (ROW_FREE, ABS_TEST_BRANCH, BOUND_TRANSPOSED, BOUND_NATURAL)
        # the state pass storing the bound, against the same pass without it; it runs before the output probes,
        # which read the bound, and the generated state pass then restores the states they read
        for mode in (DOT_CUMSUM_NATURAL, ABS_BOUND):
            def run(mode=mode):
                probe_fwd_h[(triton.cdiv(K, 64), triton.cdiv(V, 128), B * H)](
                    k, v, g, gcum, h, bound, T, NT, H=H, K=K, V=V, BT=BT, BK=64, BV=128, MODE=mode, STORE=True,
                    num_warps=4, num_stages=3)
            record("fwd_h", f"probe {names[mode]} (64, 128, 4, 3)", run, fwd_h_bytes + bound.numel() * 4,
                   check=lambda run=run: (run(), relative_error(h, h_reference))[1])
        gen_fwd_h(64, 64, 4, 3)
    for BK, BV, warps, stages in o_probe_configs[:4 * probes]:
        for mode in o_probe_modes:
            def run(mode=mode, BK=BK, BV=BV, warps=warps, stages=stages):
                probe_fwd_o[(triton.cdiv(V, BV), NT, B * H)](
                    q, k, v, g, gcum, h, o, flags, bound, scale, T, NT, H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, MODE=mode,
                    num_warps=warps, num_stages=stages)
            extra = tokens * K * 2 if mode == PRECOMPUTED else 0  # fp32 instead of bf16 gate
            record("fwd_o", f"probe {names[mode]} {(BK, BV, warps, stages)}", run, fwd_o_bytes + extra,
                   check=None if mode == NO_GATE else (lambda run=run: (run(), relative_error(o, o_reference))[1]))
    for BK, BV, warps, stages in ((64, 64, 4, 3), (128, 128, 8, 2), (128, 128, 4, 2), (64, 128, 4, 2))[
            :4 * (probes and not (args.flagged or args.span_free or args.bound))]:
        for mode, store in ((NO_GATE, True), (CURRENT, True), (NATURAL_TRANS, True), (NATURAL_KEYS, True),
                            (DOT_CUMSUM, True), (DOT_CUMSUM_NATURAL, True)):
            def run(mode=mode, store=store, BK=BK, BV=BV, warps=warps, stages=stages):
                probe_fwd_h[(triton.cdiv(K, BK), triton.cdiv(V, BV), B * H)](
                    k, v, g, gcum, h, bound, T, NT, H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, MODE=mode, STORE=store,
                    num_warps=warps, num_stages=stages)
            label = f"probe {names[mode]}{'' if store else ', no state stores'} {(BK, BV, warps, stages)}"
            check = None
            if mode != NO_GATE and store:
                check = lambda run=run: (run(), relative_error(h, h_reference))[1]  # noqa: E731
            record("fwd_h", label, run, fwd_h_bytes - (0 if store else h_bytes), check=check)
    if args.flagged:
        def flag_exits():  # the second launch's cost where no chunk was flagged: every program reads its flag, exits
            flag_exit[(triton.cdiv(V, 128), NT, B * H)](flags, o, NT)
        record("fixup", "second launch, nothing flagged", flag_exits, B * H * NT * 4)
    if args.chunk128:
        chunk128(record, module, kernels, q, k, v, g, o, scale, B, T, H, K, V, tokens, elt)
    if args.segments:
        segment_forward(record, o_reference, q, k, v, g, gcum, h, o, scale, B, T, NT, H, K, V, BT,
                        tokens, elt)
        flags = torch.zeros(B * H * NT, dtype=torch.int32, device=q.device)
        # (ptxas, bench/ptx_info.py in run 10: the generated fused kernel, removed in run 12, took 255 registers and
        # 64 KiB at 4 warps, 2 blocks per SM, so at T = 2048 the 256 state programs of BKH = 64 would fill nearly every
        # slot; BKH = 128 leaves half)
        for BKH, BVO, warps, stages in ((64, 128, 4, 2), (128, 128, 4, 2), (128, 64, 4, 2), (64, 64, 4, 2),
                                        (64, 128, 8, 2), (128, 128, 8, 2)):
            for span in (True, False):
                def overlapped(BKH=BKH, BVO=BVO, warps=warps, stages=stages, span=span):
                    flags.zero_()  # a fresh count per call (a memset, inside the timing)
                    state_programs = (K // BKH) * B * H
                    probe_fwd_overlapped[(state_programs + (V // BVO) * NT * B * H,)](
                        q, k, v, g, h, o, flags, scale, T, NT, state_programs, H=H, K=K, V=V, BT=BT, BKH=BKH, BVO=BVO,
                        SPAN_TEST=span, num_warps=warps, num_stages=stages)
                record("overlap", f"state and output passes in one launch, {(BKH, BVO, warps, stages)}"
                       f"{'' if span else ', no span test'}", overlapped, fwd_h_bytes + fwd_o_bytes,
                       check=lambda overlapped=overlapped: (overlapped(), relative_error(o, o_reference))[1])
    # the whole generated forward as the bench times it, for reference
    with torch.no_grad():
        record("chunk", "generated forward (tuned)", lambda: module.chunk(q, k, v, g)[0],
               tokens * (3 * K + 2 * V + K) * elt)
    probe.write(f"fwd-probe-T{T}")


@triton.jit
def flag_exit(flags, o, NT):
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    if tl.load(flags + (i_bh * NT + i_t) * tl.num_programs(0) + i_v) != 0:
        tl.store(o + i_bh, 0.0)


def chunk128(record, module, kernels, q, k, v, g, o, scale, B, T, H, K, V, tokens, elt):
    """The generated fwd_h and fwd_o launched on 128-row chunks: half the chunk states to write and read. The output
    pass is timed on gates of half the scale (their span over 128 rows then stays under the limit, as over 64 rows
    with the full gates), against the generated forward on 64-row chunks with the same gates."""
    BT, NT = 128, T // 128
    h = q.new_empty(B, NT, H, K, V)
    h_bytes = B * NT * H * K * V * elt
    g_half = (g.float() * 0.5).to(g.dtype)
    with torch.no_grad():
        reference = module.chunk(q, k, v, g_half)[0]
    for gates, gate_label in ((g_half, "gates x 0.5"), (g, "full gates")):
        for BK, BV, warps, stages in ((64, 128, 4, 3), (64, 128, 8, 2), (128, 128, 8, 2), (64, 64, 4, 3)):
            def fwd_h(BK=BK, BV=BV, warps=warps, stages=stages, gates=gates):
                kernels.chunk_fwd_h_kernel[(triton.cdiv(K, BK), triton.cdiv(V, BV), B * H)](
                    k, v, gates, h, None, None, None, None, None, T, NT, H=H, HK=H, K=K, V=V, BT=BT,
                    BK=BK, BV=BV, USE_INITIAL_STATE=False, STORE_FINAL_STATE=False, STORE_CHUNK_DECAY=False, IS_VARLEN=False,
                    DOT_PRECISION="tf32", num_warps=warps, num_stages=stages)
            record("h128", f"generated, BT = 128, {gate_label} {(BK, BV, warps, stages)}", fwd_h,
                   tokens * (2 * K + V) * elt + h_bytes)
        if gates is g:
            break
        fwd_h(64, 128, 4, 3, g_half)
        for BK, BV, warps, stages in ((128, 128, 8, 2), (64, 128, 8, 2), (64, 128, 4, 2), (128, 64, 8, 2),
                                      (64, 64, 4, 2), (128, 128, 8, 1)):
            def fwd_o(BK=BK, BV=BV, warps=warps, stages=stages):
                kernels.chunk_fwd_o_kernel[(triton.cdiv(V, BV), NT, B * H)](
                    q, k, v, g_half, h, o, None, None, scale, T, NT, H=H, HK=H, K=K, V=V, BT=BT, BC=16,
                    BK=BK, BV=BV, IS_VARLEN=False, SPAN_LIMIT=75.0, DOT_PRECISION="tf32", num_warps=warps, num_stages=stages)
            record("o128", f"generated, BT = 128, gates x 0.5 {(BK, BV, warps, stages)}", fwd_o,
                   tokens * (3 * K + 2 * V) * elt + h_bytes,
                   check=lambda fwd_o=fwd_o: (fwd_o(), relative_error(o, reference))[1])
    with torch.no_grad():
        record("chunk", "generated forward (tuned), BT = 64, gates x 0.5", lambda: module.chunk(q, k, v, g_half)[0],
               tokens * (3 * K + 2 * V + K) * elt)


def segment_forward(record, o_reference, q, k, v, g, gcum, h, o, scale, B, T, NT, H, K, V, BT,
                    tokens, elt):
    """The segment-carried forward's two passes for S chunks per segment: their times, the sum, and the output's
    error against the generated forward (the state enters each chunk in bf16 either way)."""
    h_bytes = B * NT * H * K * V * elt
    for S in (1, 2, 4, 8):
        if NT % S:
            continue

        def states(S=S):
            probe_fwd_h[(K // 64, V // 128, B * H)](k, v, g, gcum, h, None, T, NT, H=H, K=K, V=V, BT=BT, BK=64, BV=128,
                                                   MODE=DOT_CUMSUM_NATURAL, STORE=True, STORE_EVERY=S, num_warps=4,
                                                   num_stages=3)
        record("seg_h", f"fwd_h storing every {S}", states, tokens * (2 * K + V) * elt + h_bytes // S)
        states()
        tests = {0: "no span test", 1: "max - min", 2: "colsum |a|", 3: "one (max, min) reduction"}
        variants = [(128, 4, 1), (64, 4, 1), (128, 8, 1), (64, 8, 1)]
        if S == 1:  # the span test's alternatives, in the generated output pass's structure
            variants += [(128, 4, 0), (128, 4, 2), (128, 4, 3)]
        for BV, warps, span in variants:
            def outputs(S=S, BV=BV, warps=warps, span=span):
                probe_fwd_segment[(V // BV, NT // S, B * H)](q, k, v, g, h, o, scale, T, NT, H=H, K=K, V=V, BT=BT,
                                                             BV=BV, S=S, SPAN_TEST=span, num_warps=warps,
                                                             num_stages=2)
            record("seg_o", f"output pass, S = {S}, BV = {BV}, {warps} warps, {tests[span]}",
                   outputs, tokens * (3 * K + 2 * V) * elt + h_bytes // S,
                   check=lambda outputs=outputs: (outputs(), relative_error(o, o_reference))[1])


if __name__ == "__main__":
    main()
