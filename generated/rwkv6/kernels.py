# generated from specs/rwkv6.yaml (sha256 3d97625cd6463310) by linattn-gen 0.1.0; do not edit
"""Triton kernels for `rwkv6`: RWKV-6 with a data-dependent per-key decay, an output that reads the previous state, and a bonus u.

Plan: chunk size 64, sub-chunk 16, decay form 'subchunk',
states materialized per chunk (fp32 accumulation, stored in the input dtype); an inference
forward may carry them through the chunks instead (chunk_fwd_carried_kernel, when the planner's rule says so).
Tensor-core products (tl.dot):
- inter-chunk output: (q * decay) @ S
- state update: (k * decay)^T @ v
- intra-chunk scores: one rebased (q, k^T) product per 16-row query sub-chunk
- intra-chunk output: A @ v
- backward: dA = do @ v^T, dq/dk inter and intra, dv = A^T @ do + (k * decay) @ dS
"""

import triton
import triton.language as tl



@triton.jit
def _rows_summed(m_tri, b_a, g, LOG_DECAY_IS_GATE: tl.constexpr):
    # m_tri @ b_a for a 0/1 triangle m_tri [BT, BT]: cumulative sums of a log decay b_a [BT, BK] down the rows, on
    # tensor cores. tl.cumsum's scan across warps, and on the transposed [BK, BT] layout, took 40% of fwd_h's time
    # (H200 run 10, bench/gpu_fwd_probe.py). Products with 0 and 1 are exact and the sum accumulates in fp32: a 16-bit
    # gate that is its own log decay holds values exact in its dtype (one pass); anything else takes fp32 operands and
    # three tf32 passes, about fp32's accuracy.
    if LOG_DECAY_IS_GATE:
        if g.dtype.element_ty != tl.float32:
            return tl.dot(m_tri.to(g.dtype.element_ty), b_a.to(g.dtype.element_ty))
    return tl.dot(m_tri.to(tl.float32), b_a, input_precision="tf32x3")


@triton.jit
def _chunk_span(b_x):
    # The largest spread over the chunk's rows of any column of a cumulative log decay [BT, D]: rebased on one row,
    # the chunk's factors reach exp(span) at most.
    return tl.max(tl.max(b_x, axis=0) - tl.min(b_x, axis=0))


@triton.jit
def _rows_per_subchunk(b_b, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, SPAN_LIMIT: tl.constexpr):
    # Rebased factors inside a sub-chunk reach exp(span of b over it); past SPAN_LIMIT they could overflow the dot's
    # operand dtype. So: the whole chunk as one block when its span allows (one product, the common case), else
    # BC-row sub-chunks, else single rows, where every factor is <= 1 and the result is exact for any gate.
    span_chunk = _chunk_span(b_b)
    bc = tl.where(span_chunk <= SPAN_LIMIT, BT, BC)
    if span_chunk > SPAN_LIMIT:
        b_sub = tl.reshape(b_b, (BT // BC, BC, BK))
        span_sub = tl.max(tl.max(b_sub, axis=1) - tl.min(b_sub, axis=1))
        bc = tl.where(span_sub <= SPAN_LIMIT, BC, 1)
    return bc


@triton.jit
def _row(b_x, o_i, r):
    return tl.sum(tl.where(o_i[:, None] == r, b_x, 0.0), axis=0)


@triton.jit
def _scores_query_rebased(b_q, b_b, b_kT, b_bT, o_i, bc, BT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    # A[i, j] = sum_k q_ik k_jk exp(b_ik - b_jk) for keys j up to the end of i's sub-chunk (caller masks j > i).
    # Query sub-chunk [r, r + bc) is rebased on row r: exp(b_i - b_r) <= 1, and exp(b_r - b_j) <= 1 for j < r.
    b_A = tl.zeros([BT, BT], dtype=tl.float32)
    for i_c in range(0, BT // bc):
        r = i_c * bc
        b_br = _row(b_b, o_i, r)
        m_q = (o_i >= r) & (o_i < r + bc)
        m_k = o_i < r + bc
        b_qr = tl.where(m_q[:, None], b_q * tl.exp(tl.where(m_q[:, None], b_b - b_br[None, :], 0.0)), 0.0)
        b_kr = tl.where(m_k[None, :], b_kT * tl.exp(tl.where(m_k[None, :], b_br[:, None] - b_bT, 0.0)), 0.0)
        b_A += tl.dot(b_qr.to(b_q.dtype), b_kr.to(b_q.dtype), input_precision=DOT_PRECISION)
    return b_A


@triton.jit
def _scores_key_rebased(b_k, b_b, b_qT, b_bT, o_i, bc, BT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    # A^T[j, i] = A[i, j] for queries i from the start of j's sub-chunk on (caller masks i < j).
    # Key sub-chunk [r, r + bc) is rebased on its last row l: exp(b_l - b_j) <= 1, exp(b_i - b_l) <= 1 for i >= l.
    b_AT = tl.zeros([BT, BT], dtype=tl.float32)
    for i_c in range(0, BT // bc):
        r = i_c * bc
        b_bl = _row(b_b, o_i, r + bc - 1)
        m_k = (o_i >= r) & (o_i < r + bc)
        m_q = o_i >= r
        b_kr = tl.where(m_k[:, None], b_k * tl.exp(tl.where(m_k[:, None], b_bl[None, :] - b_b, 0.0)), 0.0)
        b_qr = tl.where(m_q[None, :], b_qT * tl.exp(tl.where(m_q[None, :], b_bT - b_bl[:, None], 0.0)), 0.0)
        b_AT += tl.dot(b_kr.to(b_k.dtype), b_qr.to(b_k.dtype), input_precision=DOT_PRECISION)
    return b_AT


@triton.jit
def _dq_intra(b_dA, b_k, b_b, o_i, bc, BT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    # dq_i = sum_{j <= i} dA_ij k_j exp(b_i - b_j), with the query-side rebasing of _scores_query_rebased.
    # Operands stay fp32: the gate gradient q * dq - k * dk cancels, and bf16 operands cost it a 10x larger error.
    b_dq = tl.zeros_like(b_b)
    for i_c in range(0, BT // bc):
        r = i_c * bc
        b_br = _row(b_b, o_i, r)
        m_q = (o_i >= r) & (o_i < r + bc)
        m_k = o_i < r + bc
        b_kr = tl.where(m_k[:, None], b_k * tl.exp(tl.where(m_k[:, None], b_br[None, :] - b_b, 0.0)), 0.0)
        b_dqr = tl.dot(tl.where(m_q[:, None], b_dA, 0.0), b_kr, input_precision=DOT_PRECISION)
        b_dq += tl.where(m_q[:, None], b_dqr * tl.exp(tl.where(m_q[:, None], b_b - b_br[None, :], 0.0)), 0.0)
    return b_dq


@triton.jit
def _dk_intra(b_dAT, b_q, b_b, o_i, bc, BT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    # dk_j = sum_{i >= j} dA_ij q_i exp(b_i - b_j), with the key-side rebasing of _scores_key_rebased.
    b_dk = tl.zeros_like(b_b)
    for i_c in range(0, BT // bc):
        r = i_c * bc
        b_bl = _row(b_b, o_i, r + bc - 1)
        m_k = (o_i >= r) & (o_i < r + bc)
        m_q = o_i >= r
        b_qr = tl.where(m_q[:, None], b_q * tl.exp(tl.where(m_q[:, None], b_b - b_bl[None, :], 0.0)), 0.0)
        b_dkr = tl.dot(tl.where(m_k[:, None], b_dAT, 0.0), b_qr, input_precision=DOT_PRECISION)
        b_dk += tl.where(m_k[:, None], b_dkr * tl.exp(tl.where(m_k[:, None], b_bl[None, :] - b_b, 0.0)), 0.0)
    return b_dk


@triton.jit
def chunk_fwd_h_kernel(
    k, v, g, h, h0, ht, chunk_log_decay, cu_seqlens, chunk_offsets, T, NT,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr, STORE_FINAL_STATE: tl.constexpr, STORE_CHUNK_DECAY: tl.constexpr,
    IS_VARLEN: tl.constexpr, DOT_PRECISION: tl.constexpr,
    STORE_STATES: tl.constexpr = True, STORE_TOTAL_DECAY: tl.constexpr = False, SEGMENTS: tl.constexpr = 0,
    SEGMENTS_USED: tl.constexpr = 0,
):
    # One program per (K block, V block, batch*head) walks the chunks in order and writes the state entering each.
    # Before the Gluon carried forward (gluon_kernels.py), over segments: STORE_STATES off (it carries the chunk
    # states itself), STORE_TOTAL_DECAY writes each segment's total log decay into chunk_log_decay, for the scan,
    # and with SEGMENTS per sequence, only each sequence's first SEGMENTS_USED run: the carried forward starts from
    # no later segment's end.
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    if SEGMENTS > 0:
        if (i_bh // H) % SEGMENTS >= SEGMENTS_USED:
            return
    i_b, i_h = i_bh // H, i_bh % H
    i_hk = i_h // (H // HK)  # the query/key head (and gate) this value head shares
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_b).to(tl.int64)
        T = (tl.load(cu_seqlens + i_b + 1).to(tl.int64) - bos).to(tl.int32)
        NT = tl.cdiv(T, BT)
        chunk_base = tl.load(chunk_offsets + i_b).to(tl.int32)
    else:
        bos = i_b.to(tl.int64) * T
        chunk_base = i_b * NT
    base_k = (bos * HK + i_hk) * K
    base_v = (bos * H + i_h) * V
    o_i = tl.arange(0, BT)
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    b_total = tl.zeros([BK], dtype=tl.float32)
    if USE_INITIAL_STATE:
        p_h0 = tl.make_block_ptr(h0 + i_bh.to(tl.int64) * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        b_h += tl.load(p_h0, boundary_check=(0, 1)).to(tl.float32)
    for i_t in range(NT):
        m_t = i_t * BT + o_i < T
        if STORE_STATES:
            p_h = tl.make_block_ptr(h + ((chunk_base + i_t) * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                                    (i_k * BK, i_v * BV), (BK, BV), (1, 0))
            tl.store(p_h, b_h.to(p_h.dtype.element_ty), boundary_check=(0, 1))
        p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        b_v = tl.load(p_v, boundary_check=(0, 1))
        # keys and gate in their [BT, BK] layout: the decay left after each row is the later rows' log decays
        # summed (_rows_summed), and the product takes the decayed keys' register transpose
        p_k = tl.make_block_ptr(k + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        b_k = tl.load(p_k, boundary_check=(0, 1))
        p_g = tl.make_block_ptr(g + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        b_g = tl.load(p_g, boundary_check=(0, 1)).to(tl.float32)
        b_a = tl.where(m_t[:, None], b_g, 0.0)
        b_last = tl.sum(b_a, axis=0)
        b_total += b_last
        b_after = _rows_summed(o_i[None, :] > o_i[:, None], b_a, g, LOG_DECAY_IS_GATE=True)
        b_h *= tl.exp(b_last)[:, None]
        b_kT = tl.trans((b_k * tl.exp(b_after)).to(b_v.dtype))
        if STORE_CHUNK_DECAY:
            if i_v == 0:
                o_kd = i_k * BK + tl.arange(0, BK)
                tl.store(chunk_log_decay + ((chunk_base + i_t) * H + i_h).to(tl.int64) * K + o_kd, b_last, mask=o_kd < K)

        b_h += tl.dot(b_kT, b_v, input_precision=DOT_PRECISION)
    if STORE_FINAL_STATE:
        p_ht = tl.make_block_ptr(ht + i_bh.to(tl.int64) * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        tl.store(p_ht, b_h.to(p_ht.dtype.element_ty), boundary_check=(0, 1))
    if STORE_TOTAL_DECAY:
        if i_v == 0:
            o_kd = i_k * BK + tl.arange(0, BK)
            tl.store(chunk_log_decay + i_bh.to(tl.int64) * K + o_kd, b_total, mask=o_kd < K)


@triton.jit
def chunk_fwd_o_kernel(
    q, k, v, g, h, o, cu_seqlens, chunk_indices, scale, T, NT,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, IS_VARLEN: tl.constexpr, SPAN_LIMIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    span_flag=None, FLAGGED_ONLY: tl.constexpr = False,
):
    # One program per (V block, chunk, batch*head): o = (q * decay) @ S_chunk + (causal scores) @ v.
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_hk = i_h // (H // HK)  # the query/key head (and gate) this value head shares
    if IS_VARLEN:
        i_chunk = i_t
        i_n = tl.load(chunk_indices + i_t * 2).to(tl.int32)
        i_t = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int32)
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        T = (tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos).to(tl.int32)
    else:
        i_chunk = i_b * NT + i_t
        bos = i_b.to(tl.int64) * T
    base_k = (bos * HK + i_hk) * K
    base_v = (bos * H + i_h) * V
    if FLAGGED_ONLY:
        # after the Gluon output pass (gluon_kernels.py): only the chunks it flagged, whose span it cannot take
        if tl.load(span_flag + i_chunk * H + i_h) == 0:
            return
    o_i = tl.arange(0, BT)
    m_t = i_t * BT + o_i < T
    m_causal = o_i[:, None] >= o_i[None, :]
    b_o = tl.zeros([BT, BV], dtype=tl.float32)
    b_A = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        p_q = tl.make_block_ptr(q + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        p_h = tl.make_block_ptr(h + (i_chunk * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                                (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        b_q = tl.load(p_q, boundary_check=(0, 1))
        p_k = tl.make_block_ptr(k + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        b_k = tl.load(p_k, boundary_check=(0, 1))

        b_h = tl.load(p_h, boundary_check=(0, 1)).to(b_q.dtype)
        p_g = tl.make_block_ptr(g + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        b_g = tl.load(p_g, boundary_check=(0, 1)).to(tl.float32)
        b_a = tl.where(m_t[:, None], b_g, 0.0)
        # Rebased on the chunk's first row: b_rel = b - b_0 sums the rows after it, and b_0 is that row's log decay, loaded
        # as a vector (extracting it from the cumulative sum took a reduction across warps); its address from bos, int64, as
        # a long sequence's element offsets pass 2^31.
        b_rel = tl.cumsum(tl.where(o_i[:, None] > 0, b_a, 0.0), axis=0)
        o_kc = i_k * BK + tl.arange(0, BK)
        b_g = tl.load(g + ((bos + i_t * BT) * HK + i_hk) * K + o_kc, mask=o_kc < K, other=0.0).to(tl.float32)
        b_b0 = b_g
        # b_rel holds 0 (row 0), so its range over the whole block bounds every column's span: one test, no per-column pass
        if tl.max(b_rel) - tl.min(b_rel) <= SPAN_LIMIT:
            # the whole chunk as one block (the common case); the inter-chunk product reuses the query factor:
            # exp(b) = exp(b - b_0) exp(b_0), one exponential per key column, not per element
            b_qr = b_q * tl.exp(b_rel)
            b_o += tl.dot((b_qr * tl.exp(b_b0)[None, :]).to(b_q.dtype), b_h, input_precision=DOT_PRECISION)
            # the keys decayed in their [BT, BK] layout and transposed in the input dtype, not the fp32 decay
            b_kr = (b_k * tl.exp(-b_rel)).to(b_q.dtype)
            b_A += tl.dot(b_qr.to(b_q.dtype), tl.trans(b_kr), input_precision=DOT_PRECISION)
        else:
            b_b = b_rel + b_b0[None, :]
            b_o += tl.dot((b_q * tl.exp(b_b)).to(b_q.dtype), b_h, input_precision=DOT_PRECISION)
            b_A += _scores_query_rebased(b_q, b_b, tl.trans(b_k), tl.trans(b_b), o_i,
                                         _rows_per_subchunk(b_b, BT, BC, BK, SPAN_LIMIT), BT, DOT_PRECISION)
    b_A = tl.where(m_causal, b_A, 0.0)
    p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    b_v = tl.load(p_v, boundary_check=(0, 1))
    b_o = (b_o + tl.dot(b_A.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)) * scale
    p_o = tl.make_block_ptr(o + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    tl.store(p_o, b_o.to(p_o.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def chunk_fwd_carried_kernel(
    q, k, v, g, o, h, h0, ht, cu_seqlens, chunk_offsets, scale, T, NT,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr, STORE_FINAL_STATE: tl.constexpr, STORE_STATES: tl.constexpr,
    IS_VARLEN: tl.constexpr, SPAN_LIMIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # The forward with the state carried in registers. One program per (V block, batch*head) walks the chunks in
    # order: each chunk's output from the state entering it (as chunk_fwd_o), then the state update (as
    # chunk_fwd_h). q, k, v, the gates and o cross HBM once. STORE_STATES (training) also writes the state entering
    # each chunk, for the backward; inference writes none. BK = K: a chunk's scores and output need every key column.
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_hk = i_h // (H // HK)  # the query/key head (and gate) this value head shares
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_b).to(tl.int64)
        T = (tl.load(cu_seqlens + i_b + 1).to(tl.int64) - bos).to(tl.int32)
        NT = tl.cdiv(T, BT)
        chunk_base = tl.load(chunk_offsets + i_b).to(tl.int32)
    else:
        bos = i_b.to(tl.int64) * T
        chunk_base = i_b * NT
    base_k = (bos * HK + i_hk) * K
    base_v = (bos * H + i_h) * V
    i_k = 0
    o_i = tl.arange(0, BT)
    m_causal = o_i[:, None] >= o_i[None, :]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL_STATE:
        p_h0 = tl.make_block_ptr(h0 + i_bh.to(tl.int64) * K * V, (K, V), (V, 1), (0, i_v * BV), (BK, BV), (1, 0))
        b_h += tl.load(p_h0, boundary_check=(0, 1)).to(tl.float32)
    for i_t in range(NT):
        m_t = i_t * BT + o_i < T
        p_q = tl.make_block_ptr(q + base_k, (T, K), (HK * K, 1), (i_t * BT, 0), (BT, BK), (1, 0))
        p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        b_q = tl.load(p_q, boundary_check=(0, 1))
        p_k = tl.make_block_ptr(k + base_k, (T, K), (HK * K, 1), (i_t * BT, 0), (BT, BK), (1, 0))
        b_k = tl.load(p_k, boundary_check=(0, 1))

        b_v = tl.load(p_v, boundary_check=(0, 1))
        # the entering state in the input dtype, as the materialized path stores it for chunk_fwd_o
        b_hq = b_h.to(b_q.dtype)
        if STORE_STATES:
            p_h = tl.make_block_ptr(h + ((chunk_base + i_t) * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                                    (0, i_v * BV), (BK, BV), (1, 0))
            tl.store(p_h, b_hq.to(p_h.dtype.element_ty), boundary_check=(0, 1))
        # the output pass of chunk_fwd_o with its single K block
        b_o = tl.zeros([BT, BV], dtype=tl.float32)
        b_A = tl.zeros([BT, BT], dtype=tl.float32)
        p_g = tl.make_block_ptr(g + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        b_g = tl.load(p_g, boundary_check=(0, 1)).to(tl.float32)
        b_a = tl.where(m_t[:, None], b_g, 0.0)
        # Rebased on the chunk's first row: b_rel = b - b_0 sums the rows after it, and b_0 is that row's log decay, loaded
        # as a vector (extracting it from the cumulative sum took a reduction across warps); its address from bos, int64, as
        # a long sequence's element offsets pass 2^31.
        b_rel = tl.cumsum(tl.where(o_i[:, None] > 0, b_a, 0.0), axis=0)
        o_kc = i_k * BK + tl.arange(0, BK)
        b_g = tl.load(g + ((bos + i_t * BT) * HK + i_hk) * K + o_kc, mask=o_kc < K, other=0.0).to(tl.float32)
        b_b0 = b_g
        # b_rel holds 0 (row 0), so its range over the whole block bounds every column's span: one test, no per-column pass
        if tl.max(b_rel) - tl.min(b_rel) <= SPAN_LIMIT:
            # the whole chunk as one block (the common case); the inter-chunk product reuses the query factor:
            # exp(b) = exp(b - b_0) exp(b_0), one exponential per key column, not per element
            b_qr = b_q * tl.exp(b_rel)
            b_o += tl.dot((b_qr * tl.exp(b_b0)[None, :]).to(b_q.dtype), b_hq, input_precision=DOT_PRECISION)
            # the keys decayed in their [BT, BK] layout and transposed in the input dtype, not the fp32 decay
            b_kr = (b_k * tl.exp(-b_rel)).to(b_q.dtype)
            b_A += tl.dot(b_qr.to(b_q.dtype), tl.trans(b_kr), input_precision=DOT_PRECISION)
        else:
            b_b = b_rel + b_b0[None, :]
            b_o += tl.dot((b_q * tl.exp(b_b)).to(b_q.dtype), b_hq, input_precision=DOT_PRECISION)
            b_A += _scores_query_rebased(b_q, b_b, tl.trans(b_k), tl.trans(b_b), o_i,
                                         _rows_per_subchunk(b_b, BT, BC, BK, SPAN_LIMIT), BT, DOT_PRECISION)
        b_A = tl.where(m_causal, b_A, 0.0)
        b_o = (b_o + tl.dot(b_A.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)) * scale
        p_o = tl.make_block_ptr(o + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        tl.store(p_o, b_o.to(p_o.dtype.element_ty), boundary_check=(0, 1))
        # the state update of chunk_fwd_h, from the chunk's rebased cumulative decay: b_last - b = b_last - b_0 - b_rel
        b_last = tl.sum(b_a, axis=0)
        b_h *= tl.exp(b_last)[:, None]
        b_kT = tl.trans((b_k * tl.exp(tl.where(m_t[:, None], (b_last - b_b0)[None, :] - b_rel, 0.0))).to(b_v.dtype))
        b_h += tl.dot(b_kT, b_v, input_precision=DOT_PRECISION)
    if STORE_FINAL_STATE:
        p_ht = tl.make_block_ptr(ht + i_bh.to(tl.int64) * K * V, (K, V), (V, 1), (0, i_v * BV), (BK, BV), (1, 0))
        tl.store(p_ht, b_h.to(p_ht.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def chunk_bwd_dh_kernel(
    q, g, do, dh, dht, dh0, chunk_log_decay, cu_seqlens, chunk_offsets, scale, T, NT,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_FINAL_STATE_GRADIENT: tl.constexpr, STORE_INITIAL_STATE_GRADIENT: tl.constexpr,
    STORE_CHUNK_DECAY: tl.constexpr, IS_VARLEN: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # Walks the chunks backwards; dh[n] is the gradient of the state after chunk n (entering chunk n + 1).
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_hk = i_h // (H // HK)  # the query/key head (and gate) this value head shares
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_b).to(tl.int64)
        T = (tl.load(cu_seqlens + i_b + 1).to(tl.int64) - bos).to(tl.int32)
        NT = tl.cdiv(T, BT)
        chunk_base = tl.load(chunk_offsets + i_b).to(tl.int32)
    else:
        bos = i_b.to(tl.int64) * T
        chunk_base = i_b * NT
    base_k = (bos * HK + i_hk) * K
    base_v = (bos * H + i_h) * V
    o_i = tl.arange(0, BT)
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_FINAL_STATE_GRADIENT:
        p_dht = tl.make_block_ptr(dht + i_bh.to(tl.int64) * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV),
                                  (1, 0))
        b_dh += tl.load(p_dht, boundary_check=(0, 1)).to(tl.float32)
    for i_t in range(NT - 1, -1, -1):
        m_t = i_t * BT + o_i < T
        p_dh = tl.make_block_ptr(dh + ((chunk_base + i_t) * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                                 (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        tl.store(p_dh, b_dh.to(p_dh.dtype.element_ty), boundary_check=(0, 1))
        p_do = tl.make_block_ptr(do + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        b_do = tl.load(p_do, boundary_check=(0, 1))
        # as chunk_fwd_h: queries and gate in their [BT, BK] layout, the cumulative decay by _rows_summed
        p_q = tl.make_block_ptr(q + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        b_q = tl.load(p_q, boundary_check=(0, 1))
        p_g = tl.make_block_ptr(g + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        b_g = tl.load(p_g, boundary_check=(0, 1)).to(tl.float32)
        b_a = tl.where(m_t[:, None], b_g, 0.0)
        b_last = tl.sum(b_a, axis=0)
        b_b = _rows_summed(o_i[None, :] <= o_i[:, None], b_a, g, LOG_DECAY_IS_GATE=True)
        b_dh *= tl.exp(b_last)[:, None]
        b_qT = tl.trans((b_q * tl.exp(b_b) * scale).to(b_do.dtype))
        if STORE_CHUNK_DECAY:
            if i_v == 0:
                o_kd = i_k * BK + tl.arange(0, BK)
                tl.store(chunk_log_decay + ((chunk_base + i_t) * H + i_h).to(tl.int64) * K + o_kd, b_last, mask=o_kd < K)

        b_dh += tl.dot(b_qT, b_do, input_precision=DOT_PRECISION)
    if STORE_INITIAL_STATE_GRADIENT:
        p_dh0 = tl.make_block_ptr(dh0 + i_bh.to(tl.int64) * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV),
                                  (1, 0))
        tl.store(p_dh0, b_dh.to(p_dh0.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def segment_scan_kernel(
    x, log_decay, out, final, NS,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KD: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_FIRST: tl.constexpr, HAS_DECAY: tl.constexpr, REVERSE: tl.constexpr, ENTERING_ONLY: tl.constexpr = False,
):
    # The split state pass's middle step, one program per (K block, V block, sequence*head). The segments of a
    # sequence ran from a zero state; x[s] is what segment s adds (forward: its end state; backward: the gradient of
    # the state entering it) and log_decay[s] its total log decay. Walking the segments (backwards for REVERSE), this
    # writes out[s], the true state entering segment s (backward: the true gradient of the state leaving it), and
    # the state after the last (forward: the final state; backward: the initial state's gradient). USE_FIRST: the
    # walk starts from final's incoming value (initial state / final-state gradient) instead of zero.
    # ENTERING_ONLY (forward): only out is wanted, so each sequence's last x and log_decay are not read, and final
    # is read (USE_FIRST) but not written. (The Gluon carried forward reads out only up to its last segment's start;
    # x past it may be unwritten.)
    i_k, i_v, i_nh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    o_k = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_kv = (o_k[:, None] < K) & (o_v[None, :] < V)
    o_kv = o_k[:, None] * V + o_v[None, :]
    b_s = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_FIRST:
        b_s += tl.load(final + i_nh.to(tl.int64) * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for i in range(NS):
        i_s = NS - 1 - i if REVERSE else i
        i_row = ((i_n * NS + i_s) * H + i_h).to(tl.int64)
        tl.store(out + i_row * K * V + o_kv, b_s, mask=m_kv)
        if (not ENTERING_ONLY) or (i_s < NS - 1):
            if HAS_DECAY:
                if KD == 1:
                    b_s *= tl.exp(tl.load(log_decay + i_row))
                else:
                    b_s *= tl.exp(tl.load(log_decay + i_row * K + o_k, mask=o_k < K, other=0.0))[:, None]
            b_s += tl.load(x + i_row * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    if not ENTERING_ONLY:
        tl.store(final + i_nh.to(tl.int64) * K * V + o_kv, b_s.to(final.dtype.element_ty), mask=m_kv)


@triton.jit
def fold_segment_states_kernel(
    h, seg_states, fold_log_decay, NT, SEG, NS,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KD: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_DECAY: tl.constexpr,
):
    # The split state pass's last step, one program per (K*V block, chunk, sequence*head): h[c] += decay * S[seg(c)],
    # with S the segment's true incoming state (or outgoing state gradient) and the decay between the segment's
    # boundary and the chunk, fold_log_decay[c].
    i_kv, i_t, i_nh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    i_k, i_v = i_kv // tl.cdiv(V, BV), i_kv % tl.cdiv(V, BV)
    o_k = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_kv = (o_k[:, None] < K) & (o_v[None, :] < V)
    o_kv = o_k[:, None] * V + o_v[None, :]
    i_row = ((i_n * NT + i_t) * H + i_h).to(tl.int64)
    b_s = tl.load(seg_states + ((i_n * NS + i_t // SEG) * H + i_h).to(tl.int64) * K * V + o_kv, mask=m_kv, other=0.0)
    if HAS_DECAY:
        if KD == 1:
            b_s *= tl.exp(tl.load(fold_log_decay + i_row))
        else:
            b_s *= tl.exp(tl.load(fold_log_decay + i_row * K + o_k, mask=o_k < K, other=0.0))[:, None]
    b_h = tl.load(h + i_row * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    tl.store(h + i_row * K * V + o_kv, (b_h + b_s).to(h.dtype.element_ty), mask=m_kv)


@triton.jit
def chunk_bwd_dqkg_kernel(
    q, k, v, g, h, do, dh, dq, dk, dg, cu_seqlens, chunk_indices, scale, T, NT, TOKENS,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, IS_VARLEN: tl.constexpr, SPAN_LIMIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    INTRA_GRAD_DOT_PRECISION: tl.constexpr,
):
    # One program per (K block, chunk, batch*key head): dq, dk and the gate gradient of this K block, summed over
    # the H // HK value heads that share the key head. A shared gate lets their dA, dq and dk terms add before the
    # decay factors; per-head decays take each head's factors inside the loop.
    # The gate gradient is closed-form: d(log decay)_t = reverse-cumsum over s >= t of (q * dq - k * dk)_s, where
    # the part from later chunks is rowsum(S * dS) at this chunk's end (GLA paper); no per-step states are needed.
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_hk = i_bh // HK, i_bh % HK
    if IS_VARLEN:
        i_chunk = i_t
        i_n = tl.load(chunk_indices + i_t * 2).to(tl.int32)
        i_t = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int32)
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        T = (tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos).to(tl.int32)
    else:
        i_chunk = i_b * NT + i_t
        bos = i_b.to(tl.int64) * T
    base_k = (bos * HK + i_hk) * K
    o_i = tl.arange(0, BT)
    m_t = i_t * BT + o_i < T
    m_causal = o_i[:, None] >= o_i[None, :]
    p_q = tl.make_block_ptr(q + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    p_k = tl.make_block_ptr(k + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    b_q = tl.load(p_q, boundary_check=(0, 1))
    b_k = tl.load(p_k, boundary_check=(0, 1))
    p_g = tl.make_block_ptr(g + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    b_g = tl.load(p_g, boundary_check=(0, 1)).to(tl.float32)
    b_a = tl.where(m_t[:, None], b_g, 0.0)
    # the cumulative decay on tensor cores (_rows_summed): tl.cumsum's scan across warps cost this kernel 0.23 ms at
    # T = 2048 together with the rebasing rows' extraction below (H200 run 15, bench/gpu_bwd_probe.py, mode 3)
    b_b = _rows_summed(o_i[None, :] <= o_i[:, None], b_a, g, LOG_DECAY_IS_GATE=True)
    b_last = tl.sum(b_a, axis=0)
    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    b_dA = tl.zeros([BT, BT], dtype=tl.float32)
    b_dAT = tl.zeros([BT, BT], dtype=tl.float32)
    b_hdh = tl.zeros([BK], dtype=tl.float32)
    for i_hv in range((H // HK) * tl.cdiv(V, BV)):
        i_h, i_v = i_hk * (H // HK) + i_hv // tl.cdiv(V, BV), i_hv % tl.cdiv(V, BV)
        base_v = (bos * H + i_h) * V
        base_h = (i_chunk * H + i_h).to(tl.int64) * K * V
        p_do = tl.make_block_ptr(do + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        # dA^T by its own product from transposed loads, not tl.trans of dA: a transpose of a tensor-core result
        # miscompiles with Triton 3.4-3.7.0 on Hopper (fla issue #640)
        p_doT = tl.make_block_ptr(do + base_v, (V, T), (1, H * V), (i_v * BV, i_t * BT), (BV, BT), (0, 1))
        p_vT = tl.make_block_ptr(v + base_v, (V, T), (1, H * V), (i_v * BV, i_t * BT), (BV, BT), (0, 1))
        p_hT = tl.make_block_ptr(h + base_h, (V, K), (1, V), (i_v * BV, i_k * BK), (BV, BK), (0, 1))
        p_dhT = tl.make_block_ptr(dh + base_h, (V, K), (1, V), (i_v * BV, i_k * BK), (BV, BK), (0, 1))
        b_do = tl.load(p_do, boundary_check=(0, 1))
        b_v = tl.load(p_v, boundary_check=(0, 1))
        b_doT = tl.load(p_doT, boundary_check=(0, 1))
        b_vT = tl.load(p_vT, boundary_check=(0, 1))
        b_hT = tl.load(p_hT, boundary_check=(0, 1)).to(b_do.dtype)
        b_dhT = tl.load(p_dhT, boundary_check=(0, 1)).to(b_do.dtype)
        b_dA += tl.dot(b_do, b_vT, input_precision=DOT_PRECISION)
        b_dAT += tl.dot(b_v, b_doT, input_precision=DOT_PRECISION)
        b_dq += tl.dot(b_do, b_hT, input_precision=DOT_PRECISION)
        b_dk += tl.dot(b_v, b_dhT, input_precision=DOT_PRECISION)
        b_hdh += tl.sum(b_hT.to(tl.float32) * b_dhT.to(tl.float32), axis=0)
    # The gate gradient sums pairs (key j, query i) with j < t <= i. The closed form adds all pairs with i >= t and
    # subtracts those with j >= t; the diagonal pairs (j = i, never decayed) would cancel there in float32 and leave
    # its rounding as the whole answer when the gate decays hard. So the intra products run strictly below the
    # diagonal and the diagonal enters dq and dk as an elementwise term, outside q * dq - k * dk.
    b_diag = tl.sum(tl.where(o_i[:, None] == o_i[None, :], b_dA, 0.0), axis=1) * scale
    b_dA = tl.where(o_i[:, None] > o_i[None, :], b_dA, 0.0) * scale
    b_dAT = tl.where(o_i[:, None] < o_i[None, :], b_dAT, 0.0) * scale
    b_dq *= tl.exp(b_b) * scale
    b_dk *= tl.exp(tl.where(m_t[:, None], b_last[None, :] - b_b, 0.0))
    # pairs from before row t to after the chunk: the entering state's (exp(b_last) rowsum(S * dS_end)), and this
    # chunk's keys j < t (an exclusive cumsum, so no key's own term is added and then taken away)
    b_kdk = b_k.to(tl.float32) * b_dk
    b_tail = tl.exp(b_last)[None, :] * b_hdh[None, :] + (tl.cumsum(b_kdk, axis=0) - b_kdk)
    # Rebased on the chunk's first row, as in chunk_fwd_o_kernel: that row's log decay loaded as a vector, the last
    # row's relative decay from b_last, so no row is extracted from the block by a reduction across warps
    o_kc = i_k * BK + tl.arange(0, BK)
    b_g0 = tl.load(g + ((bos + i_t * BT) * HK + i_hk) * K + o_kc, mask=o_kc < K, other=0.0).to(tl.float32)
    b_b0 = b_g0
    b_rel = b_b - b_b0[None, :]
    if tl.max(b_rel) - tl.min(b_rel) <= SPAN_LIMIT:
        # the whole chunk as one block: dq_i = exp(b_rel_i) sum_j dA_ij k_j exp(-b_rel_j), and dk on the last row
        b_dq_intra = tl.dot(b_dA, b_k * tl.exp(-b_rel), input_precision=INTRA_GRAD_DOT_PRECISION) * tl.exp(b_rel)
        b_rel_last = b_last - b_b0
        b_dk_intra = tl.dot(b_dAT, b_q * tl.exp(b_rel - b_rel_last[None, :]),
                            input_precision=INTRA_GRAD_DOT_PRECISION) * tl.exp(b_rel_last[None, :] - b_rel)
    else:
        bc = _rows_per_subchunk(b_b, BT, BC, BK, SPAN_LIMIT)
        b_dq_intra = _dq_intra(b_dA, b_k, b_b, o_i, bc, BT, INTRA_GRAD_DOT_PRECISION)
        b_dk_intra = _dk_intra(b_dAT, b_q, b_b, o_i, bc, BT, INTRA_GRAD_DOT_PRECISION)
    b_dlog = b_q.to(tl.float32) * (b_dq + b_dq_intra) - b_k.to(tl.float32) * b_dk_intra
    b_dlog = tl.cumsum(b_dlog, axis=0, reverse=True) + b_tail
    b_dg = b_dlog * (1.0)
    p_dg = tl.make_block_ptr(dg + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    tl.store(p_dg, b_dg.to(p_dg.dtype.element_ty), boundary_check=(0, 1))
    b_dq += b_dq_intra + b_diag[:, None] * b_k.to(tl.float32)
    b_dk += b_dk_intra + b_diag[:, None] * b_q.to(tl.float32)
    p_dq = tl.make_block_ptr(dq + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    p_dk = tl.make_block_ptr(dk + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    tl.store(p_dq, b_dq.to(p_dq.dtype.element_ty), boundary_check=(0, 1))
    tl.store(p_dk, b_dk.to(p_dk.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def chunk_bwd_dv_kernel(
    q, k, g, do, dh, dv, cu_seqlens, chunk_indices, scale, T, NT,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, IS_VARLEN: tl.constexpr, SPAN_LIMIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # One program per (V block, chunk, batch*head): dv = A^T @ do + (k * decay to chunk end) @ dS_end.
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_hk = i_h // (H // HK)  # the query/key head (and gate) this value head shares
    if IS_VARLEN:
        i_chunk = i_t
        i_n = tl.load(chunk_indices + i_t * 2).to(tl.int32)
        i_t = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int32)
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        T = (tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos).to(tl.int32)
    else:
        i_chunk = i_b * NT + i_t
        bos = i_b.to(tl.int64) * T
    base_k = (bos * HK + i_hk) * K
    base_v = (bos * H + i_h) * V
    o_i = tl.arange(0, BT)
    m_t = i_t * BT + o_i < T
    m_anticausal = o_i[:, None] <= o_i[None, :]
    b_dv = tl.zeros([BT, BV], dtype=tl.float32)
    b_AT = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        p_k = tl.make_block_ptr(k + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        p_qT = tl.make_block_ptr(q + base_k, (K, T), (1, HK * K), (i_k * BK, i_t * BT), (BK, BT), (0, 1))
        p_dh = tl.make_block_ptr(dh + (i_chunk * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                                 (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        b_k = tl.load(p_k, boundary_check=(0, 1))
        b_qT = tl.load(p_qT, boundary_check=(0, 1))
        b_dh = tl.load(p_dh, boundary_check=(0, 1)).to(b_k.dtype)
        p_g = tl.make_block_ptr(g + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        b_g = tl.load(p_g, boundary_check=(0, 1)).to(tl.float32)
        b_a = tl.where(m_t[:, None], b_g, 0.0)
        b_b = tl.cumsum(b_a, axis=0)
        b_last = tl.sum(b_a, axis=0)

        b_bT = tl.trans(b_b)
        b_kd = (b_k * tl.exp(tl.where(m_t[:, None], b_last[None, :] - b_b, 0.0))).to(b_k.dtype)
        b_dv += tl.dot(b_kd, b_dh, input_precision=DOT_PRECISION)
        bc = _rows_per_subchunk(b_b, BT, BC, BK, SPAN_LIMIT)
        if bc == BT:
            # the whole chunk as one block, rebased on its last row (b_last, flat past T): the key factor is b_kd's
            b_AT += tl.dot(b_kd, (b_qT * tl.exp(b_bT - b_last[:, None])).to(b_k.dtype), input_precision=DOT_PRECISION)
        else:
            b_AT += _scores_key_rebased(b_k, b_b, b_qT, b_bT, o_i, bc, BT, DOT_PRECISION)
    b_AT = tl.where(m_anticausal, b_AT, 0.0) * scale
    p_do = tl.make_block_ptr(do + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    b_do = tl.load(p_do, boundary_check=(0, 1))
    b_dv += tl.dot(b_AT.to(b_do.dtype), b_do, input_precision=DOT_PRECISION)
    p_dv = tl.make_block_ptr(dv + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    tl.store(p_dv, b_dv.to(p_dv.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def recurrent_fwd_kernel(
    q, k, v, g, o, h0, ht, cu_seqlens, scale, T,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr, STORE_FINAL_STATE: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    # Token by token with the [K, BV] state in registers: decode (T = 1) and short sequences.
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_hk = i_h // (H // HK)  # the query/key head (and gate) this value head shares
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_b).to(tl.int64)
        T = (tl.load(cu_seqlens + i_b + 1).to(tl.int64) - bos).to(tl.int32)
    else:
        bos = i_b.to(tl.int64) * T
    base_k = (bos * HK + i_hk) * K
    base_v = (bos * H + i_h) * V
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_h = m_k[:, None] & m_v[None, :]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL_STATE:
        b_h += tl.load(h0 + i_bh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :], mask=m_h, other=0.0)
    # running 64-bit pointers: t * HK * K would overflow int32 past 2^31 elements
    p_q, p_k, p_v, p_o = q + base_k + o_k, k + base_k + o_k, v + base_v + o_v, o + base_v + o_v
    p_g = g + base_k + o_k
    for t in range(T):
        b_q = tl.load(p_q, mask=m_k, other=0.0).to(tl.float32)
        b_k = tl.load(p_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(p_v, mask=m_v, other=0.0).to(tl.float32)
        b_g = tl.load(p_g, mask=m_k, other=0.0).to(tl.float32)
        b_decay = tl.exp(b_g)
        b_h = b_h * b_decay[:, None] + b_k[:, None] * b_v[None, :]
        b_o = tl.sum(b_h * b_q[:, None], axis=0) * scale
        tl.store(p_o, b_o.to(o.dtype.element_ty), mask=m_v)
        p_q += HK * K
        p_k += HK * K
        p_v += H * V
        p_o += H * V
        p_g += HK * K
    if STORE_FINAL_STATE:
        tl.store(ht + i_bh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :], b_h.to(ht.dtype.element_ty),
                 mask=m_h)


@triton.jit
def recurrent_bwd_kernel(
    q, k, v, g, do, dq, dk, dv, h0, dht, dh0, dk_final, tail, cu_seqlens, scale, T,
    TOKENS, H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr, USE_FINAL_STATE_GRADIENT: tl.constexpr,
    STORE_INITIAL_STATE_GRADIENT: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    # Two passes per (V block, batch*head): forward again for dq, then backwards for dk, dv and dS. dq and dk are
    # this V block's shares ([NV, B, T, H, K] buffers, summed on the host); the gate gradient is formed on the host.
    # For it, dq and dk leave out the diagonal pair (a token's key feeding its own query), which the host adds back
    # elementwise, and dk_final is the part of dk that comes from the final-state gradient, kept apart: see
    # recurrent_bwd for why both would otherwise cancel.
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_hk = i_h // (H // HK)  # the query/key head (and gate) this value head shares
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_b).to(tl.int64)
        T = (tl.load(cu_seqlens + i_b + 1).to(tl.int64) - bos).to(tl.int32)
    else:
        bos = i_b.to(tl.int64) * T
    base_k = (bos * HK + i_hk) * K
    base_v = (bos * H + i_h) * V
    share = i_v * (H // HK) + i_h % (H // HK)  # dq, dk shares: one per (V block, value head of the group)
    base_part = share.to(tl.int64) * TOKENS * HK * K
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_h = m_k[:, None] & m_v[None, :]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL_STATE:
        b_h += tl.load(h0 + i_bh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :], mask=m_h, other=0.0)
    p_k, p_v, p_do, p_dq = k + base_k + o_k, v + base_v + o_v, do + base_v + o_v, dq + base_part + base_k + o_k
    p_g = g + base_k + o_k
    for t in range(T):
        b_k = tl.load(p_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(p_v, mask=m_v, other=0.0).to(tl.float32)
        b_do = tl.load(p_do, mask=m_v, other=0.0).to(tl.float32)
        b_g = tl.load(p_g, mask=m_k, other=0.0).to(tl.float32)
        b_decay = tl.exp(b_g)
        b_h = b_h * b_decay[:, None]
        b_dq = tl.sum(b_h * b_do[None, :], axis=1) * scale  # without the diagonal pair
        b_h += b_k[:, None] * b_v[None, :]
        tl.store(p_dq, b_dq, mask=m_k)
        p_k += HK * K
        p_v += H * V
        p_do += H * V
        p_dq += HK * K
        p_g += HK * K
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    b_dh_final = tl.zeros([BK, BV], dtype=tl.float32)  # the final-state gradient's part of dS, kept apart
    if USE_FINAL_STATE_GRADIENT:
        b_dh_final += tl.load(dht + i_bh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :], mask=m_h, other=0.0)
    last_t = bos + T - 1  # this sequence's last token, as a row of the [B * T] flattening
    last_k, last_v = (last_t * HK + i_hk) * K, (last_t * H + i_h) * V
    p_q, p_k, p_v, p_do = q + last_k + o_k, k + last_k + o_k, v + last_v + o_v, do + last_v + o_v
    p_dk, p_dv = dk + base_part + last_k + o_k, dv + last_v + o_v
    p_dk_final = dk_final + base_part + last_k + o_k
    p_g = g + last_k + o_k
    for t in range(T - 1, -1, -1):
        b_q = tl.load(p_q, mask=m_k, other=0.0).to(tl.float32)
        b_k = tl.load(p_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(p_v, mask=m_v, other=0.0).to(tl.float32)
        b_do = tl.load(p_do, mask=m_v, other=0.0).to(tl.float32)
        # dS_t (gradient of the state after step t) collects this step's output, then flows back through the decay
        tl.store(p_dk, tl.sum(b_dh * b_v[None, :], axis=1), mask=m_k)  # without the diagonal pair
        tl.store(p_dk_final, tl.sum(b_dh_final * b_v[None, :], axis=1), mask=m_k)
        b_dh += (b_q * scale)[:, None] * b_do[None, :]
        tl.store(p_dv, tl.sum((b_dh + b_dh_final) * b_k[:, None], axis=0).to(dv.dtype.element_ty), mask=m_v)
        b_g = tl.load(p_g, mask=m_k, other=0.0).to(tl.float32)
        b_decay = tl.exp(b_g)
        b_dh *= b_decay[:, None]
        b_dh_final *= b_decay[:, None]
        p_q -= HK * K
        p_k -= HK * K
        p_v -= H * V
        p_do -= H * V
        p_dk -= HK * K
        p_dv -= H * V
        p_dk_final -= HK * K
        p_g -= HK * K
    # the pairs (initial state, final-state gradient): rowsum(h0 * decay over the whole sequence * dS_T)
    b_h0 = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL_STATE:
        b_h0 += tl.load(h0 + i_bh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :], mask=m_h, other=0.0)
    p_tail = tail + ((share * (tl.num_programs(1) // H) + i_b) * HK + i_hk).to(tl.int64) * K + o_k
    tl.store(p_tail, tl.sum(b_h0 * b_dh_final, axis=1), mask=m_k)
    b_dh += b_dh_final
    if STORE_INITIAL_STATE_GRADIENT:
        tl.store(dh0 + i_bh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :], b_dh.to(dh0.dtype.element_ty),
                 mask=m_h)


@triton.jit
def recurrent_bwd_dlog_kernel(
    q, k, dq, dk, dk_final, tail, dlog, cu_seqlens, T,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    # The gate gradient (before the chain rule through the gate's decay expression) of one (sequence, head); see
    # recurrent_bwd for the pairs it sums. A forward pass adds the final-state sink's pairs over keys j < t, a
    # backward pass the reverse cumsum of q * dq - k * dk. dq, dk and dk_final are summed over V blocks already.
    i_bh = tl.program_id(0)
    i_b, i_hk = i_bh // HK, i_bh % HK
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_b).to(tl.int64)
        T = (tl.load(cu_seqlens + i_b + 1).to(tl.int64) - bos).to(tl.int32)
    else:
        bos = i_b.to(tl.int64) * T
    base_k = (bos * HK + i_hk) * K
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    b_acc = tl.load(tail + i_bh.to(tl.int64) * K + o_k, mask=m_k, other=0.0)
    p_dlog = dlog + base_k + o_k
    p_k, p_dk_final = k + base_k + o_k, dk_final + base_k + o_k
    for t in range(T):
        tl.store(p_dlog, b_acc, mask=m_k)
        b_pairs = tl.load(p_k, mask=m_k, other=0.0).to(tl.float32) * tl.load(p_dk_final, mask=m_k, other=0.0)
        b_acc += b_pairs
        p_k += HK * K
        p_dk_final += HK * K
        p_dlog += HK * K
    last_k = ((bos + T - 1) * HK + i_hk) * K
    p_q, p_k, p_dq, p_dk = q + last_k + o_k, k + last_k + o_k, dq + last_k + o_k, dk + last_k + o_k
    b_acc *= 0.0
    for t in range(T - 1, -1, -1):
        p_dlog -= HK * K
        b_pairs = (tl.load(p_q, mask=m_k, other=0.0).to(tl.float32) * tl.load(p_dq, mask=m_k, other=0.0)
                   - tl.load(p_k, mask=m_k, other=0.0).to(tl.float32) * tl.load(p_dk, mask=m_k, other=0.0))
        b_acc += b_pairs
        tl.store(p_dlog, tl.load(p_dlog, mask=m_k, other=0.0) + b_acc, mask=m_k)
        p_q -= HK * K
        p_k -= HK * K
        p_dq -= HK * K
        p_dk -= HK * K
