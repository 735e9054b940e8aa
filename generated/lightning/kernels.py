# generated from specs/lightning.yaml (sha256 e3d7dbda907dc07e) by linattn-gen 0.1.0; do not edit
"""Triton kernels for `lightning`: Lightning Attention-2 with a constant per-head decay from ALiBi-style slopes.

Plan: chunk size 64, decay form 'mask',
states materialized per chunk (fp32 accumulation, stored in the input dtype); an inference
forward may carry them through the chunks instead (chunk_fwd_carried_kernel, when the planner's rule says so).
Tensor-core products (tl.dot):
- inter-chunk output: (q * decay) @ S
- state update: (k * decay)^T @ v
- intra-chunk scores: q @ k^T (times a decay mask)
- intra-chunk output: A @ v
- backward: dA = do @ v^T, dq/dk inter and intra, dv = A^T @ do + (k * decay) @ dS
"""

import triton
import triton.language as tl



@triton.jit
def chunk_fwd_h_kernel(
    k, v, g, h, h0, ht, chunk_log_decay, cu_seqlens, chunk_offsets, T, NT,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr, STORE_FINAL_STATE: tl.constexpr, STORE_CHUNK_DECAY: tl.constexpr,
    IS_VARLEN: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # One program per (K block, V block, batch*head) walks the chunks in order and writes the state entering each.
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
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL_STATE:
        p_h0 = tl.make_block_ptr(h0 + i_bh.to(tl.int64) * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        b_h += tl.load(p_h0, boundary_check=(0, 1)).to(tl.float32)
    b_log_gamma = tl.load(g + i_h).to(tl.float32)
    for i_t in range(NT):
        m_t = i_t * BT + o_i < T
        p_h = tl.make_block_ptr(h + ((chunk_base + i_t) * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                                (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        tl.store(p_h, b_h.to(p_h.dtype.element_ty), boundary_check=(0, 1))
        p_kT = tl.make_block_ptr(k + base_k, (K, T), (1, HK * K), (i_k * BK, i_t * BT), (BK, BT), (0, 1))
        p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        b_kT = tl.load(p_kT, boundary_check=(0, 1))
        b_v = tl.load(p_v, boundary_check=(0, 1))
        b_b = (o_i + 1).to(tl.float32) * b_log_gamma
        b_last = tl.minimum(T - i_t * BT, BT).to(tl.float32) * b_log_gamma

        b_h *= tl.exp(b_last)
        b_kT = (b_kT * tl.exp(tl.where(m_t, b_last - b_b, 0.0))[None, :]).to(b_v.dtype)
        if STORE_CHUNK_DECAY:
            if (i_v == 0) & (i_k == 0):
                tl.store(chunk_log_decay + (chunk_base + i_t) * H + i_h, b_last)

        b_h += tl.dot(b_kT, b_v, input_precision=DOT_PRECISION)
    if STORE_FINAL_STATE:
        p_ht = tl.make_block_ptr(ht + i_bh.to(tl.int64) * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        tl.store(p_ht, b_h.to(p_ht.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def chunk_fwd_o_kernel(
    q, k, v, g, h, o, cu_seqlens, chunk_indices, scale, T, NT,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, IS_VARLEN: tl.constexpr, SPAN_LIMIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
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
    o_i = tl.arange(0, BT)
    m_t = i_t * BT + o_i < T
    m_causal = o_i[:, None] >= o_i[None, :]
    b_o = tl.zeros([BT, BV], dtype=tl.float32)
    b_A = tl.zeros([BT, BT], dtype=tl.float32)
    b_log_gamma = tl.load(g + i_h).to(tl.float32)
    b_b = (o_i + 1).to(tl.float32) * b_log_gamma
    b_last = tl.minimum(T - i_t * BT, BT).to(tl.float32) * b_log_gamma

    for i_k in range(tl.cdiv(K, BK)):
        p_q = tl.make_block_ptr(q + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        p_h = tl.make_block_ptr(h + (i_chunk * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                                (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        b_q = tl.load(p_q, boundary_check=(0, 1))
        p_kT = tl.make_block_ptr(k + base_k, (K, T), (1, HK * K), (i_k * BK, i_t * BT), (BK, BT), (0, 1))
        b_kT = tl.load(p_kT, boundary_check=(0, 1))
        b_h = tl.load(p_h, boundary_check=(0, 1)).to(b_q.dtype)
        b_o += tl.dot(b_q, b_h, input_precision=DOT_PRECISION)
        b_A += tl.dot(b_q, b_kT, input_precision=DOT_PRECISION)
    b_o *= tl.exp(b_b)[:, None]
    b_A *= tl.exp(tl.where(m_causal, b_b[:, None] - b_b[None, :], 0.0))
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
    b_log_gamma = tl.load(g + i_h).to(tl.float32)
    for i_t in range(NT):
        m_t = i_t * BT + o_i < T
        p_q = tl.make_block_ptr(q + base_k, (T, K), (HK * K, 1), (i_t * BT, 0), (BT, BK), (1, 0))
        p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        b_q = tl.load(p_q, boundary_check=(0, 1))
        p_kT = tl.make_block_ptr(k + base_k, (K, T), (1, HK * K), (0, i_t * BT), (BK, BT), (0, 1))
        b_kT = tl.load(p_kT, boundary_check=(0, 1))
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
        b_b = (o_i + 1).to(tl.float32) * b_log_gamma
        b_last = tl.minimum(T - i_t * BT, BT).to(tl.float32) * b_log_gamma

        b_o += tl.dot(b_q, b_hq, input_precision=DOT_PRECISION)
        b_A += tl.dot(b_q, b_kT, input_precision=DOT_PRECISION)
        b_o *= tl.exp(b_b)[:, None]
        b_A *= tl.exp(tl.where(m_causal, b_b[:, None] - b_b[None, :], 0.0))
        b_A = tl.where(m_causal, b_A, 0.0)
        b_o = (b_o + tl.dot(b_A.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)) * scale
        p_o = tl.make_block_ptr(o + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        tl.store(p_o, b_o.to(p_o.dtype.element_ty), boundary_check=(0, 1))
        # the state update of chunk_fwd_h
        b_h *= tl.exp(b_last)
        b_kT = (b_kT * tl.exp(tl.where(m_t, b_last - b_b, 0.0))[None, :]).to(b_v.dtype)
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
    b_log_gamma = tl.load(g + i_h).to(tl.float32)
    for i_t in range(NT - 1, -1, -1):
        m_t = i_t * BT + o_i < T
        p_dh = tl.make_block_ptr(dh + ((chunk_base + i_t) * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                                 (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        tl.store(p_dh, b_dh.to(p_dh.dtype.element_ty), boundary_check=(0, 1))
        p_qT = tl.make_block_ptr(q + base_k, (K, T), (1, HK * K), (i_k * BK, i_t * BT), (BK, BT), (0, 1))
        p_do = tl.make_block_ptr(do + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        b_qT = tl.load(p_qT, boundary_check=(0, 1))
        b_do = tl.load(p_do, boundary_check=(0, 1))
        b_b = (o_i + 1).to(tl.float32) * b_log_gamma
        b_last = tl.minimum(T - i_t * BT, BT).to(tl.float32) * b_log_gamma

        b_dh *= tl.exp(b_last)
        b_qT = (b_qT * (tl.exp(b_b) * scale)[None, :]).to(b_do.dtype)
        if STORE_CHUNK_DECAY:
            if (i_v == 0) & (i_k == 0):
                tl.store(chunk_log_decay + (chunk_base + i_t) * H + i_h, b_last)

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
    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    b_dA = tl.zeros([BT, BT], dtype=tl.float32)
    b_dAT = tl.zeros([BT, BT], dtype=tl.float32)
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
        # each value head decays at its own rate, so its terms take their decay factors before the group's sum
        b_log_gamma = tl.load(g + i_h).to(tl.float32)
        b_b = (o_i + 1).to(tl.float32) * b_log_gamma
        b_last = tl.minimum(T - i_t * BT, BT).to(tl.float32) * b_log_gamma
        b_dA += tl.dot(b_do, b_vT, input_precision=DOT_PRECISION) * tl.exp(
            tl.where(m_causal, b_b[:, None] - b_b[None, :], 0.0))
        b_dAT += tl.dot(b_v, b_doT, input_precision=DOT_PRECISION) * tl.exp(
            tl.where(o_i[:, None] <= o_i[None, :], b_b[None, :] - b_b[:, None], 0.0))
        b_dq += tl.dot(b_do, b_hT, input_precision=DOT_PRECISION) * (tl.exp(b_b) * scale)[:, None]
        b_dk += tl.dot(b_v, b_dhT, input_precision=DOT_PRECISION) * tl.exp(tl.where(m_t, b_last - b_b, 0.0))[:, None]
    b_dA = tl.where(m_causal, b_dA, 0.0) * scale
    b_dAT = tl.where(o_i[:, None] <= o_i[None, :], b_dAT, 0.0) * scale
    # the decay factors were applied per value head inside the loop
    b_dq += tl.dot(b_dA.to(b_k.dtype), b_k, input_precision=DOT_PRECISION)
    b_dk += tl.dot(b_dAT.to(b_q.dtype), b_q, input_precision=DOT_PRECISION)
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
    b_log_gamma = tl.load(g + i_h).to(tl.float32)
    b_b = (o_i + 1).to(tl.float32) * b_log_gamma
    b_last = tl.minimum(T - i_t * BT, BT).to(tl.float32) * b_log_gamma

    for i_k in range(tl.cdiv(K, BK)):
        p_k = tl.make_block_ptr(k + base_k, (T, K), (HK * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        p_qT = tl.make_block_ptr(q + base_k, (K, T), (1, HK * K), (i_k * BK, i_t * BT), (BK, BT), (0, 1))
        p_dh = tl.make_block_ptr(dh + (i_chunk * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                                 (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        b_k = tl.load(p_k, boundary_check=(0, 1))
        b_qT = tl.load(p_qT, boundary_check=(0, 1))
        b_dh = tl.load(p_dh, boundary_check=(0, 1)).to(b_k.dtype)
        b_dv += tl.dot(b_k, b_dh, input_precision=DOT_PRECISION)
        b_AT += tl.dot(b_k, b_qT, input_precision=DOT_PRECISION)
    b_dv *= tl.exp(tl.where(m_t, b_last - b_b, 0.0))[:, None]
    b_AT *= tl.exp(tl.where(m_anticausal, b_b[None, :] - b_b[:, None], 0.0))
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
    b_log_gamma = tl.load(g + i_h).to(tl.float32)
    # running 64-bit pointers: t * HK * K would overflow int32 past 2^31 elements
    p_q, p_k, p_v, p_o = q + base_k + o_k, k + base_k + o_k, v + base_v + o_v, o + base_v + o_v
    for t in range(T):
        b_q = tl.load(p_q, mask=m_k, other=0.0).to(tl.float32)
        b_k = tl.load(p_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(p_v, mask=m_v, other=0.0).to(tl.float32)
        b_decay = tl.exp(b_log_gamma)
        b_h = b_h * b_decay + b_k[:, None] * b_v[None, :]
        b_o = tl.sum(b_h * b_q[:, None], axis=0) * scale
        tl.store(p_o, b_o.to(o.dtype.element_ty), mask=m_v)
        p_q += HK * K
        p_k += HK * K
        p_v += H * V
        p_o += H * V
    if STORE_FINAL_STATE:
        tl.store(ht + i_bh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :], b_h.to(ht.dtype.element_ty),
                 mask=m_h)


@triton.jit
def recurrent_bwd_kernel(
    q, k, v, g, do, dq, dk, dv, h0, dht, dh0, cu_seqlens, scale, T,
    TOKENS, H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr, USE_FINAL_STATE_GRADIENT: tl.constexpr,
    STORE_INITIAL_STATE_GRADIENT: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    # Two passes per (V block, batch*head): forward again for dq, then backwards for dk, dv and dS. dq and dk are
    # this V block's shares ([NV, B, T, H, K] buffers, summed on the host); the gate gradient is formed on the host.
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
    b_log_gamma = tl.load(g + i_h).to(tl.float32)
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL_STATE:
        b_h += tl.load(h0 + i_bh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :], mask=m_h, other=0.0)
    p_k, p_v, p_do, p_dq = k + base_k + o_k, v + base_v + o_v, do + base_v + o_v, dq + base_part + base_k + o_k
    for t in range(T):
        b_k = tl.load(p_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(p_v, mask=m_v, other=0.0).to(tl.float32)
        b_do = tl.load(p_do, mask=m_v, other=0.0).to(tl.float32)
        b_decay = tl.exp(b_log_gamma)
        b_h = b_h * b_decay + b_k[:, None] * b_v[None, :]
        b_dq = tl.sum(b_h * b_do[None, :], axis=1) * scale
        tl.store(p_dq, b_dq, mask=m_k)
        p_k += HK * K
        p_v += H * V
        p_do += H * V
        p_dq += HK * K
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_FINAL_STATE_GRADIENT:
        b_dh += tl.load(dht + i_bh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :], mask=m_h, other=0.0)
    last_t = bos + T - 1  # this sequence's last token, as a row of the [B * T] flattening
    last_k, last_v = (last_t * HK + i_hk) * K, (last_t * H + i_h) * V
    p_q, p_k, p_v, p_do = q + last_k + o_k, k + last_k + o_k, v + last_v + o_v, do + last_v + o_v
    p_dk, p_dv = dk + base_part + last_k + o_k, dv + last_v + o_v
    for t in range(T - 1, -1, -1):
        b_q = tl.load(p_q, mask=m_k, other=0.0).to(tl.float32)
        b_k = tl.load(p_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(p_v, mask=m_v, other=0.0).to(tl.float32)
        b_do = tl.load(p_do, mask=m_v, other=0.0).to(tl.float32)
        # dS_t (gradient of the state after step t) collects this step's output, then flows back through the decay
        b_dh += (b_q * scale)[:, None] * b_do[None, :]
        tl.store(p_dk, tl.sum(b_dh * b_v[None, :], axis=1), mask=m_k)
        tl.store(p_dv, tl.sum(b_dh * b_k[:, None], axis=0).to(dv.dtype.element_ty), mask=m_v)
        b_decay = tl.exp(b_log_gamma)
        b_dh *= b_decay
        p_q -= HK * K
        p_k -= HK * K
        p_v -= H * V
        p_do -= H * V
        p_dk -= HK * K
        p_dv -= H * V
    if STORE_INITIAL_STATE_GRADIENT:
        tl.store(dh0 + i_bh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :], b_dh.to(dh0.dtype.element_ty),
                 mask=m_h)
