# generated from specs/based.yaml (sha256 e12b4565a01418bf) by linattn-gen 0.1.0; do not edit
"""Triton kernels for `based`: Linear attention with the 2nd-order Taylor feature map and its normaliser (Based).

Plan: chunk size 64, decay form 'none',
states materialized per chunk (fp32 accumulation, stored in the input dtype).
Tensor-core products (tl.dot):
- inter-chunk output: taylor2(q) @ S, one 64-feature tile at a time
- state update: taylor2(k)^T @ v
- intra-chunk scores: s = q @ k^T on the raw q, k, then 1 + s + s^2 / 2
- intra-chunk output: A @ v
- backward: dphi = do @ S^T and v @ dS^T per feature tile, contracted to raw dq, dk with one-hot products; ds = (do @ v^T) * (1 + s), dq += ds @ k, dk += ds^T @ q; dv = A^T @ do + phi(k) @ dS
"""

import triton
import triton.language as tl



@triton.jit
def _feature_pairs(o_f, K: tl.constexpr):
    # Expanded feature f = c_f * x'_i(f) * x'_j(f), where index -1 stands for the factor 1: f = 0 is the constant
    # (-1, -1, 1), f = 1..K the linear terms (f - 1, -1, 1), f = 1 + K + i K + j the products (i, j, 1 / sqrt(2));
    # past F = 1 + K + K^2 (the tile's padding) c_f = 0.
    o_quad = tl.maximum(o_f - 1 - K, 0)
    i_f = tl.where(o_f == 0, -1, tl.where(o_f <= K, o_f - 1, o_quad // K))
    j_f = tl.where(o_f <= K, -1, o_quad % K)
    c_f = tl.where(o_f <= K, 1.0, tl.where(o_f < 1 + K + K * K, 0.7071067811865476, 0.0))
    return i_f, j_f, c_f


@triton.jit
def _feature_factor_rows(x, o_row, m_row, i_f, K: tl.constexpr, x_scale):
    # [BT, BF]: x'[row, i_f] = x[row, i_f] * x_scale gathered from the raw input, 1 where i_f is -1 (or past K)
    m_f = (i_f >= 0) & (i_f < K)
    b_x = tl.load(x + o_row[:, None] + tl.where(m_f, i_f, 0)[None, :], mask=m_row[:, None] & m_f[None, :], other=0.0)
    return tl.where(m_f[None, :], b_x.to(tl.float32) * x_scale, 1.0)


@triton.jit
def _feature_factor_cols(x, o_row, m_row, i_f, K: tl.constexpr, x_scale):
    # [BF, BT]: the transpose of _feature_factor_rows, loaded in that layout (no tl.trans)
    m_f = (i_f >= 0) & (i_f < K)
    b_x = tl.load(x + tl.where(m_f, i_f, 0)[:, None] + o_row[None, :], mask=m_f[:, None] & m_row[None, :], other=0.0)
    return tl.where(m_f[:, None], b_x.to(tl.float32) * x_scale, 1.0)


@triton.jit
def _features_rows(x, o_row, m_row, o_f, K: tl.constexpr, x_scale):
    # phi(x') [BT, BF] in fp32 for the rows starting at element offsets o_row and the features o_f; zero on masked rows
    i_f, j_f, c_f = _feature_pairs(o_f, K)
    b_phi = (c_f[None, :] * _feature_factor_rows(x, o_row, m_row, i_f, K, x_scale)
             * _feature_factor_rows(x, o_row, m_row, j_f, K, x_scale))
    return tl.where(m_row[:, None], b_phi, 0.0)


@triton.jit
def _features_cols(x, o_row, m_row, o_f, K: tl.constexpr, x_scale):
    # phi(x')^T [BF, BT], as _features_rows
    i_f, j_f, c_f = _feature_pairs(o_f, K)
    b_phi = (c_f[:, None] * _feature_factor_cols(x, o_row, m_row, i_f, K, x_scale)
             * _feature_factor_cols(x, o_row, m_row, j_f, K, x_scale))
    return tl.where(m_row[None, :], b_phi, 0.0)


@triton.jit
def _features_grad_rows(b_dphi, x, o_row, m_row, o_f, K: tl.constexpr, x_scale, DOT_PRECISION: tl.constexpr):
    # d x' [BT, K] from d phi [BT, BF]: phi_f = c_f x'_i(f) x'_j(f), so dx'_a = sum_f dphi_f c_f (x'_j [i(f) = a] +
    # x'_i [j(f) = a]), two products with one-hot [BF, K] matrices of i(f) and j(f) (the constant's -1 matches none)
    i_f, j_f, c_f = _feature_pairs(o_f, K)
    o_k = tl.arange(0, K)
    b_w = b_dphi * c_f[None, :]
    b_wi = b_w * _feature_factor_rows(x, o_row, m_row, j_f, K, x_scale)
    b_wj = b_w * _feature_factor_rows(x, o_row, m_row, i_f, K, x_scale)
    b_dx = tl.dot(b_wi, (i_f[:, None] == o_k[None, :]).to(tl.float32), input_precision=DOT_PRECISION)
    return b_dx + tl.dot(b_wj, (j_f[:, None] == o_k[None, :]).to(tl.float32), input_precision=DOT_PRECISION)


@triton.jit
def _feature_factor_row(p_x, i_f, K: tl.constexpr, x_scale):
    m_f = (i_f >= 0) & (i_f < K)
    return tl.where(m_f, tl.load(p_x + tl.where(m_f, i_f, 0), mask=m_f, other=0.0).to(tl.float32) * x_scale, 1.0)


@triton.jit
def _features_row(p_x, o_f, K: tl.constexpr, x_scale):
    # phi(x') [BF] of one token, whose raw [K] input starts at p_x
    i_f, j_f, c_f = _feature_pairs(o_f, K)
    return c_f * _feature_factor_row(p_x, i_f, K, x_scale) * _feature_factor_row(p_x, j_f, K, x_scale)


@triton.jit
def _features_grad_row(b_dphi, p_x, o_f, K: tl.constexpr, x_scale):
    # d x' [K] of one token from d phi [BF], as _features_grad_rows
    i_f, j_f, c_f = _feature_pairs(o_f, K)
    o_k = tl.arange(0, K)
    b_w = b_dphi * c_f
    b_wi = b_w * _feature_factor_row(p_x, j_f, K, x_scale)
    b_wj = b_w * _feature_factor_row(p_x, i_f, K, x_scale)
    return (tl.sum(tl.where(i_f[:, None] == o_k[None, :], b_wi[:, None], 0.0), axis=0)
            + tl.sum(tl.where(j_f[:, None] == o_k[None, :], b_wj[:, None], 0.0), axis=0))


@triton.jit
def chunk_fwd_h_kernel(
    k, v, h, h0, ht, cu_seqlens, chunk_offsets, x_scale, T, NT,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr, F: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr, STORE_FINAL_STATE: tl.constexpr, IS_VARLEN: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    # One program per (feature tile, V block, batch*head) walks the chunks in order and writes the state entering
    # each: rows of the state are the F expanded features of k, BK of them per tile, formed from the raw k here.
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
    o_f = i_k * BK + tl.arange(0, BK)
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL_STATE:
        p_h0 = tl.make_block_ptr(h0 + i_bh.to(tl.int64) * F * V, (F, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        b_h += tl.load(p_h0, boundary_check=(0, 1)).to(tl.float32)
    for i_t in range(NT):
        m_t = i_t * BT + o_i < T
        o_row = base_k + (i_t * BT + o_i).to(tl.int64) * HK * K
        p_h = tl.make_block_ptr(h + ((chunk_base + i_t) * H + i_h).to(tl.int64) * F * V, (F, V), (V, 1),
                                (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        tl.store(p_h, b_h.to(p_h.dtype.element_ty), boundary_check=(0, 1))
        p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        b_v = tl.load(p_v, boundary_check=(0, 1))
        b_kT = _features_cols(k, o_row, m_t, o_f, K, x_scale).to(b_v.dtype)
        b_h += tl.dot(b_kT, b_v, input_precision=DOT_PRECISION)
    if STORE_FINAL_STATE:
        p_ht = tl.make_block_ptr(ht + i_bh.to(tl.int64) * F * V, (F, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        tl.store(p_ht, b_h.to(p_ht.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def chunk_fwd_o_kernel(
    q, k, v, h, o, cu_seqlens, chunk_indices, scale, x_scale, T, NT,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr, F: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, IS_VARLEN: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # One program per (V block, chunk, batch*head): o = phi(q) @ S_chunk, a feature tile at a time, plus the causal
    # scores A = phi(q) phi(k)^T = 1 + s + s^2 / 2 (s = q k^T x_scale^2, the raw q and k: no expansion) @ v.
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
    o_row = base_k + (i_t * BT + o_i).to(tl.int64) * HK * K
    p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    b_v = tl.load(p_v, boundary_check=(0, 1))
    b_o = tl.zeros([BT, BV], dtype=tl.float32)
    for i_k in range(tl.cdiv(F, BK)):
        o_f = i_k * BK + tl.arange(0, BK)
        p_h = tl.make_block_ptr(h + (i_chunk * H + i_h).to(tl.int64) * F * V, (F, V), (V, 1),
                                (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        b_h = tl.load(p_h, boundary_check=(0, 1)).to(b_v.dtype)
        b_q = _features_rows(q, o_row, m_t, o_f, K, x_scale).to(b_v.dtype)
        b_o += tl.dot(b_q, b_h, input_precision=DOT_PRECISION)
    p_q = tl.make_block_ptr(q + base_k, (T, K), (HK * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
    p_kT = tl.make_block_ptr(k + base_k, (K, T), (1, HK * K), (0, i_t * BT), (K, BT), (0, 1))
    b_s = tl.dot(tl.load(p_q, boundary_check=(0, 1)), tl.load(p_kT, boundary_check=(0, 1)),
                 input_precision=DOT_PRECISION) * (x_scale * x_scale)
    b_A = tl.where(m_causal, 1.0 + b_s + 0.5 * b_s * b_s, 0.0)
    b_o = (b_o + tl.dot(b_A.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)) * scale
    p_o = tl.make_block_ptr(o + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    tl.store(p_o, b_o.to(p_o.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def chunk_bwd_dh_kernel(
    q, do, dh, dht, dh0, cu_seqlens, chunk_offsets, scale, x_scale, T, NT,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr, F: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_FINAL_STATE_GRADIENT: tl.constexpr, STORE_INITIAL_STATE_GRADIENT: tl.constexpr, IS_VARLEN: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    # Walks the chunks backwards; dh[n] is the gradient of the state after chunk n (entering chunk n + 1), one
    # feature tile of its rows per program.
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
    o_f = i_k * BK + tl.arange(0, BK)
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_FINAL_STATE_GRADIENT:
        p_dht = tl.make_block_ptr(dht + i_bh.to(tl.int64) * F * V, (F, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV),
                                  (1, 0))
        b_dh += tl.load(p_dht, boundary_check=(0, 1)).to(tl.float32)
    for i_t in range(NT - 1, -1, -1):
        m_t = i_t * BT + o_i < T
        o_row = base_k + (i_t * BT + o_i).to(tl.int64) * HK * K
        p_dh = tl.make_block_ptr(dh + ((chunk_base + i_t) * H + i_h).to(tl.int64) * F * V, (F, V), (V, 1),
                                 (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        tl.store(p_dh, b_dh.to(p_dh.dtype.element_ty), boundary_check=(0, 1))
        p_do = tl.make_block_ptr(do + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        b_do = tl.load(p_do, boundary_check=(0, 1))
        b_qT = (_features_cols(q, o_row, m_t, o_f, K, x_scale) * scale).to(b_do.dtype)
        b_dh += tl.dot(b_qT, b_do, input_precision=DOT_PRECISION)
    if STORE_INITIAL_STATE_GRADIENT:
        p_dh0 = tl.make_block_ptr(dh0 + i_bh.to(tl.int64) * F * V, (F, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV),
                                  (1, 0))
        tl.store(p_dh0, b_dh.to(p_dh0.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def chunk_bwd_dqk_kernel(
    q, k, v, h, do, dh, dq, dk, cu_seqlens, chunk_indices, scale, x_scale, T, NT,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr, F: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, IS_VARLEN: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # One program per (chunk, batch*key head): the raw dq and dk of the chunk, summed over the H // HK value heads
    # that share the key head. Inter-chunk: per feature tile, dphi(q) = do @ S^T and dphi(k) = v @ dS^T, contracted
    # to the raw inputs in registers (_features_grad_rows). Intra-chunk: A = 1 + s + s^2 / 2, so ds = dA * (1 + s)
    # with dA = do @ v^T, and s = q k^T x_scale^2 gives dq += ds @ k x_scale^2, dk += ds^T @ q x_scale^2.
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
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
    o_row = base_k + (i_t * BT + o_i).to(tl.int64) * HK * K
    p_q = tl.make_block_ptr(q + base_k, (T, K), (HK * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
    p_k = tl.make_block_ptr(k + base_k, (T, K), (HK * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
    p_qT = tl.make_block_ptr(q + base_k, (K, T), (1, HK * K), (0, i_t * BT), (K, BT), (0, 1))
    p_kT = tl.make_block_ptr(k + base_k, (K, T), (1, HK * K), (0, i_t * BT), (K, BT), (0, 1))
    b_q = tl.load(p_q, boundary_check=(0, 1))
    b_k = tl.load(p_k, boundary_check=(0, 1))
    score_scale = x_scale * x_scale
    b_s = tl.dot(b_q, tl.load(p_kT, boundary_check=(0, 1)), input_precision=DOT_PRECISION) * score_scale
    b_sT = tl.dot(b_k, tl.load(p_qT, boundary_check=(0, 1)), input_precision=DOT_PRECISION) * score_scale
    b_dA = tl.zeros([BT, BT], dtype=tl.float32)
    b_dAT = tl.zeros([BT, BT], dtype=tl.float32)
    for i_hv in range((H // HK) * tl.cdiv(V, BV)):
        i_h, i_v = i_hk * (H // HK) + i_hv // tl.cdiv(V, BV), i_hv % tl.cdiv(V, BV)
        base_v = (bos * H + i_h) * V
        p_do = tl.make_block_ptr(do + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        p_doT = tl.make_block_ptr(do + base_v, (V, T), (1, H * V), (i_v * BV, i_t * BT), (BV, BT), (0, 1))
        p_vT = tl.make_block_ptr(v + base_v, (V, T), (1, H * V), (i_v * BV, i_t * BT), (BV, BT), (0, 1))
        b_dA += tl.dot(tl.load(p_do, boundary_check=(0, 1)), tl.load(p_vT, boundary_check=(0, 1)),
                       input_precision=DOT_PRECISION)
        b_dAT += tl.dot(tl.load(p_v, boundary_check=(0, 1)), tl.load(p_doT, boundary_check=(0, 1)),
                        input_precision=DOT_PRECISION)
    b_ds = tl.where(m_causal, b_dA * (1.0 + b_s), 0.0) * scale
    b_dsT = tl.where(o_i[:, None] <= o_i[None, :], b_dAT * (1.0 + b_sT), 0.0) * scale
    b_dq = tl.dot(b_ds, b_k.to(tl.float32), input_precision=DOT_PRECISION) * score_scale
    b_dk = tl.dot(b_dsT, b_q.to(tl.float32), input_precision=DOT_PRECISION) * score_scale
    for i_f in range(tl.cdiv(F, BK)):
        o_f = i_f * BK + tl.arange(0, BK)
        b_dphi_q = tl.zeros([BT, BK], dtype=tl.float32)
        b_dphi_k = tl.zeros([BT, BK], dtype=tl.float32)
        for i_hv in range((H // HK) * tl.cdiv(V, BV)):
            i_h, i_v = i_hk * (H // HK) + i_hv // tl.cdiv(V, BV), i_hv % tl.cdiv(V, BV)
            base_v = (bos * H + i_h) * V
            base_h = (i_chunk * H + i_h).to(tl.int64) * F * V
            p_do = tl.make_block_ptr(do + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
            p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
            p_hT = tl.make_block_ptr(h + base_h, (V, F), (1, V), (i_v * BV, i_f * BK), (BV, BK), (0, 1))
            p_dhT = tl.make_block_ptr(dh + base_h, (V, F), (1, V), (i_v * BV, i_f * BK), (BV, BK), (0, 1))
            b_do = tl.load(p_do, boundary_check=(0, 1))
            b_v = tl.load(p_v, boundary_check=(0, 1))
            b_dphi_q += tl.dot(b_do, tl.load(p_hT, boundary_check=(0, 1)).to(b_do.dtype), input_precision=DOT_PRECISION)
            b_dphi_k += tl.dot(b_v, tl.load(p_dhT, boundary_check=(0, 1)).to(b_v.dtype), input_precision=DOT_PRECISION)
        b_dq += _features_grad_rows(b_dphi_q * scale, q, o_row, m_t, o_f, K, x_scale, DOT_PRECISION) * x_scale
        b_dk += _features_grad_rows(b_dphi_k, k, o_row, m_t, o_f, K, x_scale, DOT_PRECISION) * x_scale
    p_dq = tl.make_block_ptr(dq + base_k, (T, K), (HK * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
    p_dk = tl.make_block_ptr(dk + base_k, (T, K), (HK * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
    tl.store(p_dq, b_dq.to(p_dq.dtype.element_ty), boundary_check=(0, 1))
    tl.store(p_dk, b_dk.to(p_dk.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def chunk_bwd_dv_kernel(
    q, k, do, dh, dv, cu_seqlens, chunk_indices, scale, x_scale, T, NT,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr, F: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, IS_VARLEN: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # One program per (V block, chunk, batch*head): dv = A^T @ do + phi(k) @ dS_end, a feature tile at a time.
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
    o_row = base_k + (i_t * BT + o_i).to(tl.int64) * HK * K
    p_do = tl.make_block_ptr(do + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    b_do = tl.load(p_do, boundary_check=(0, 1))
    b_dv = tl.zeros([BT, BV], dtype=tl.float32)
    for i_k in range(tl.cdiv(F, BK)):
        o_f = i_k * BK + tl.arange(0, BK)
        p_dh = tl.make_block_ptr(dh + (i_chunk * H + i_h).to(tl.int64) * F * V, (F, V), (V, 1),
                                 (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        b_dh = tl.load(p_dh, boundary_check=(0, 1)).to(b_do.dtype)
        b_k = _features_rows(k, o_row, m_t, o_f, K, x_scale).to(b_do.dtype)
        b_dv += tl.dot(b_k, b_dh, input_precision=DOT_PRECISION)
    p_k = tl.make_block_ptr(k + base_k, (T, K), (HK * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
    p_qT = tl.make_block_ptr(q + base_k, (K, T), (1, HK * K), (0, i_t * BT), (K, BT), (0, 1))
    b_sT = tl.dot(tl.load(p_k, boundary_check=(0, 1)), tl.load(p_qT, boundary_check=(0, 1)),
                  input_precision=DOT_PRECISION) * (x_scale * x_scale)
    b_AT = tl.where(o_i[:, None] <= o_i[None, :], 1.0 + b_sT + 0.5 * b_sT * b_sT, 0.0) * scale
    b_dv += tl.dot(b_AT.to(b_do.dtype), b_do, input_precision=DOT_PRECISION)
    p_dv = tl.make_block_ptr(dv + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    tl.store(p_dv, b_dv.to(p_dv.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def recurrent_fwd_kernel(
    q, k, v, o, h0, ht, cu_seqlens, scale, x_scale, T, TOKENS,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr, F: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, USE_INITIAL_STATE: tl.constexpr, STORE_FINAL_STATE: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    # Token by token with one [BK, BV] feature tile of the state in registers per program: o holds one fp32 share of
    # the output per feature tile ([NF, B * T, H, V], TOKENS rows each), summed on the host.
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_hk = i_h // (H // HK)  # the query/key head (and gate) this value head shares
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_b).to(tl.int64)
        T = (tl.load(cu_seqlens + i_b + 1).to(tl.int64) - bos).to(tl.int32)
    else:
        bos = i_b.to(tl.int64) * T
    base_k = (bos * HK + i_hk) * K
    base_v = (bos * H + i_h) * V
    o_f = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_f, m_v = o_f < F, o_v < V
    m_h = m_f[:, None] & m_v[None, :]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL_STATE:
        b_h += tl.load(h0 + i_bh.to(tl.int64) * F * V + o_f[:, None] * V + o_v[None, :], mask=m_h, other=0.0)
    # running 64-bit pointers: t * HK * K would overflow int32 past 2^31 elements
    p_q, p_k, p_v = q + base_k, k + base_k, v + base_v + o_v
    p_o = o + i_k.to(tl.int64) * TOKENS * H * V + base_v + o_v
    for t in range(T):
        b_q = _features_row(p_q, o_f, K, x_scale)
        b_k = _features_row(p_k, o_f, K, x_scale)
        b_v = tl.load(p_v, mask=m_v, other=0.0).to(tl.float32)
        b_h += b_k[:, None] * b_v[None, :]
        b_o = tl.sum(b_h * b_q[:, None], axis=0) * scale
        tl.store(p_o, b_o, mask=m_v)
        p_q += HK * K
        p_k += HK * K
        p_v += H * V
        p_o += H * V
    if STORE_FINAL_STATE:
        tl.store(ht + i_bh.to(tl.int64) * F * V + o_f[:, None] * V + o_v[None, :], b_h.to(ht.dtype.element_ty),
                 mask=m_h)


@triton.jit
def recurrent_bwd_kernel(
    q, k, v, do, dq, dk, dv, h0, dht, dh0, cu_seqlens, scale, x_scale, T, TOKENS,
    H: tl.constexpr, HK: tl.constexpr, K: tl.constexpr, V: tl.constexpr, F: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, USE_INITIAL_STATE: tl.constexpr, USE_FINAL_STATE_GRADIENT: tl.constexpr,
    STORE_INITIAL_STATE_GRADIENT: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    # Two passes per (feature tile, V block, batch*head): forward again for dq, then backwards for dk, dv and dS.
    # dq and dk are this program's fp32 shares ([shares, B * T, HK, K]: one per feature tile, V block and value head
    # of the group), dv one share per feature tile ([NF, B * T, H, V]); the host sums them.
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_hk = i_h // (H // HK)  # the query/key head (and gate) this value head shares
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_b).to(tl.int64)
        T = (tl.load(cu_seqlens + i_b + 1).to(tl.int64) - bos).to(tl.int32)
    else:
        bos = i_b.to(tl.int64) * T
    base_k = (bos * HK + i_hk) * K
    base_v = (bos * H + i_h) * V
    share = (i_k * tl.num_programs(1) + i_v) * (H // HK) + i_h % (H // HK)
    base_part = share.to(tl.int64) * TOKENS * HK * K
    o_k = tl.arange(0, K)
    o_f = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_f, m_v = o_f < F, o_v < V
    m_h = m_f[:, None] & m_v[None, :]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL_STATE:
        b_h += tl.load(h0 + i_bh.to(tl.int64) * F * V + o_f[:, None] * V + o_v[None, :], mask=m_h, other=0.0)
    p_q, p_k, p_v, p_do = q + base_k, k + base_k, v + base_v + o_v, do + base_v + o_v
    p_dq = dq + base_part + base_k + o_k
    for t in range(T):
        b_k = _features_row(p_k, o_f, K, x_scale)
        b_v = tl.load(p_v, mask=m_v, other=0.0).to(tl.float32)
        b_do = tl.load(p_do, mask=m_v, other=0.0).to(tl.float32)
        b_h += b_k[:, None] * b_v[None, :]
        b_dphi = tl.sum(b_h * b_do[None, :], axis=1) * scale
        tl.store(p_dq, _features_grad_row(b_dphi, p_q, o_f, K, x_scale) * x_scale)
        p_q += HK * K
        p_k += HK * K
        p_v += H * V
        p_do += H * V
        p_dq += HK * K
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_FINAL_STATE_GRADIENT:
        b_dh += tl.load(dht + i_bh.to(tl.int64) * F * V + o_f[:, None] * V + o_v[None, :], mask=m_h, other=0.0)
    last_t = bos + T - 1  # this sequence's last token, as a row of the [B * T] flattening
    last_k, last_v = (last_t * HK + i_hk) * K, (last_t * H + i_h) * V
    p_q, p_k, p_v, p_do = q + last_k, k + last_k, v + last_v + o_v, do + last_v + o_v
    p_dk = dk + base_part + last_k + o_k
    p_dv = dv + i_k.to(tl.int64) * TOKENS * H * V + last_v + o_v
    for t in range(T - 1, -1, -1):
        b_q = _features_row(p_q, o_f, K, x_scale)
        b_k = _features_row(p_k, o_f, K, x_scale)
        b_v = tl.load(p_v, mask=m_v, other=0.0).to(tl.float32)
        b_do = tl.load(p_do, mask=m_v, other=0.0).to(tl.float32)
        # dS_t (gradient of the state after step t) collects this step's output
        b_dh += (b_q * scale)[:, None] * b_do[None, :]
        b_dphi = tl.sum(b_dh * b_v[None, :], axis=1)
        tl.store(p_dk, _features_grad_row(b_dphi, p_k, o_f, K, x_scale) * x_scale)
        tl.store(p_dv, tl.sum(b_dh * b_k[:, None], axis=0), mask=m_v)
        p_q -= HK * K
        p_k -= HK * K
        p_v -= H * V
        p_do -= H * V
        p_dk -= HK * K
        p_dv -= H * V
    if STORE_INITIAL_STATE_GRADIENT:
        tl.store(dh0 + i_bh.to(tl.int64) * F * V + o_f[:, None] * V + o_v[None, :], b_dh.to(dh0.dtype.element_ty),
                 mask=m_h)
