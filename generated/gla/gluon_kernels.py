# generated from specs/gla.yaml (sha256 f2e30ebd32ea7aa2) by linattn-gen 0.1.0; do not edit
"""Gluon kernels for `gla` on Hopper (sm_90), with Hopper's TMA and warpgroup MMA under explicit control:
the forward's output pass, o = (q * decay) @ S_chunk + (causal scores) @ v, as `chunk_fwd_o_kernel` in kernels.py
computes it; the carried forward (`chunk_fwd_carried_gluon_kernel`), which makes each chunk's output the same way
and carries the state from chunk to chunk on chip; and the state pass before the carried forward's later segments
(`chunk_segment_ends_gluon_kernel`). ops.py imports this module only on such a GPU; Gluon has no interpreter, so on
the CPU its kernels are only compiled (tests/gluon_compile.py) and their numbers are checked on the GPU.

The output pass: one persistent program per SM walks the (chunk, head, V block) tiles. Each tile's gate, queries,
keys, state and values arrive by TMA in a ring of NUM_STAGES shared-memory stages, the next tile's while this one
computes. The cumulative log decay from the chunk's first row is a 0/1 triangle product on the tensor cores, and the
whole chunk is one block rebased on that row. Where |b_rel| passes SPAN_LIMIT anywhere in a chunk, its factors could
overflow: the chunk is flagged in `span_flag` (one int32 per chunk and head, written by the tile of V block 0) and a
second launch of chunk_fwd_o_kernel redoes it by the sub-chunk path. Flagging element by element needs no reduction
across warps, which cost this kernel a quarter of its time (H200 run 15).
"""

import collections
import functools
import os

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma, warpgroup_mma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor


@triton.constexpr_function
def _mma_layout(M, N, num_warps):
    """The warpgroup MMA accumulator layout of an [M, N] fp32 tile: warps tile M first (16 rows each), then N."""
    warps = [4, 1]
    while warps[0] * warps[1] != num_warps:
        if M > 16 * warps[0]:
            warps[0] *= 2
        else:
            warps[1] *= 2
    n_max = max(N // warps[1], 8)
    n = 256
    while n > n_max or N % n != 0:
        n -= 8
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=warps, instr_shape=[16, n, 16])


@gluon.jit
def _tile_coordinates(tile, T, NT, H: gl.constexpr, HK: gl.constexpr, NV: gl.constexpr, BT: gl.constexpr):
    # tiles run V block fastest, then chunk, then batch*head: a program's consecutive tiles share a sequence
    i_bh = tile // (NT * NV)
    i_t = (tile % (NT * NV)) // NV
    i_v = tile % NV
    i_b = i_bh // H
    i_h = i_bh % H
    return i_b, i_h, i_h // (H // HK), i_t, i_v, i_b * T + i_t * BT


@gluon.jit
def _load_tile(q_desc, k_desc, g_desc, v_desc, h_desc, q_s, k_s, g_s, v_s, h_s, bar, tile, T, NT,
               H: gl.constexpr, HK: gl.constexpr, K: gl.constexpr, BV: gl.constexpr, NV: gl.constexpr,
               BT: gl.constexpr):
    i_b, i_h, i_hk, i_t, i_v, row = _tile_coordinates(tile, T, NT, H, HK, NV, BT)
    mbarrier.expect(bar, (3 * BT * K + BT * BV + K * BV) * 2)  # 16-bit tiles
    tma.async_copy_global_to_shared(g_desc, [row, i_hk * K], bar, g_s)
    tma.async_copy_global_to_shared(q_desc, [row, i_hk * K], bar, q_s)
    tma.async_copy_global_to_shared(k_desc, [row, i_hk * K], bar, k_s)
    tma.async_copy_global_to_shared(h_desc, [((i_b * NT + i_t) * H + i_h) * K, i_v * BV], bar, h_s)
    tma.async_copy_global_to_shared(v_desc, [row, i_h * NV * BV + i_v * BV], bar, v_s)


# T, NT and n_tiles unspecialized: the launch cache below reuses one compiled kernel across lengths
@gluon.jit(do_not_specialize=["T", "NT", "n_tiles"])
def chunk_fwd_o_gluon_kernel(
    q_desc, k_desc, g_desc, v_desc, h_desc, o_desc, g, span_flag, scale, T, NT, n_tiles,
    H: gl.constexpr, HK: gl.constexpr, K: gl.constexpr, BV: gl.constexpr, NV: gl.constexpr, BT: gl.constexpr,
    SPAN_LIMIT: gl.constexpr, NUM_STAGES: gl.constexpr, num_warps: gl.constexpr,
):
    dtype: gl.constexpr = q_desc.dtype
    mma_k: gl.constexpr = _mma_layout(BT, K, num_warps)  # [BT, K]: the gate, query and key arithmetic
    mma_o: gl.constexpr = _mma_layout(BT, BV, num_warps)  # [BT, BV]: the output
    mma_a: gl.constexpr = _mma_layout(BT, BT, num_warps)  # [BT, BT]: the scores
    # the products' left operands go from registers straight into the MMA
    lhs_scores: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_a, k_width=2)
    lhs_output: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_o, k_width=2)

    q_s = gl.allocate_shared_memory(dtype, [NUM_STAGES, BT, K], q_desc.layout)
    k_s = gl.allocate_shared_memory(dtype, [NUM_STAGES, BT, K], k_desc.layout)
    g_s = gl.allocate_shared_memory(dtype, [NUM_STAGES, BT, K], g_desc.layout)
    v_s = gl.allocate_shared_memory(dtype, [NUM_STAGES, BT, BV], v_desc.layout)
    h_s = gl.allocate_shared_memory(dtype, [NUM_STAGES, K, BV], h_desc.layout)
    kr_s = gl.allocate_shared_memory(dtype, [BT, K], k_desc.layout)
    if BV == K:  # the decayed keys' buffer is free once the scores are made: the output is staged there (16 KiB)
        o_s = kr_s
    else:
        o_s = gl.allocate_shared_memory(dtype, [BT, BV], o_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(bars.index(i), count=1)

    # the 0/1 triangle that sums the gate down the rows after the first: b_rel[i] = sum_{0 < j <= i} g[j]
    tri_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    o_r = gl.arange(0, BT, layout=gl.SliceLayout(1, tri_layout))
    o_c = gl.arange(0, BT, layout=gl.SliceLayout(0, tri_layout))
    tri = ((o_c[None, :] <= o_r[:, None]) & (o_c[None, :] > 0)).to(dtype)
    tri_s = gl.allocate_shared_memory(dtype, [BT, BT], gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16,
                                                                           rank=2), tri)
    fence_async_shared()
    gl.thread_barrier()

    o_k = gl.arange(0, K, layout=gl.SliceLayout(0, mma_k))
    o_ai = gl.arange(0, BT, layout=gl.SliceLayout(1, mma_a))
    o_aj = gl.arange(0, BT, layout=gl.SliceLayout(0, mma_a))
    m_causal = o_ai[:, None] >= o_aj[None, :]
    zeros_k = gl.zeros([BT, K], gl.int32, mma_k)

    pid = gl.program_id(0)
    n_programs = gl.num_programs(0)
    n_mine = gl.cdiv(n_tiles - pid, n_programs)
    for j in gl.static_range(NUM_STAGES - 1):
        if j < n_mine:
            _load_tile(q_desc, k_desc, g_desc, v_desc, h_desc, q_s.index(j), k_s.index(j), g_s.index(j), v_s.index(j),
                       h_s.index(j), bars.index(j), pid + j * n_programs, T, NT, H, HK, K, BV, NV, BT)
    for it in range(n_mine):
        stage = it % NUM_STAGES
        i_b, i_h, i_hk, i_t, i_v, row = _tile_coordinates(pid + it * n_programs, T, NT, H, HK, NV, BT)
        i_flag = (i_b * NT + i_t) * H + i_h
        # the first row's log decay, loaded before the wait so that its latency hides behind the tile's loads
        b_0 = gl.load(g + (row.to(gl.int64) * HK + i_hk) * K + o_k).to(gl.float32)
        if i_v == 0:
            gl.store(span_flag + i_flag, 0)
        # every warp is done with the stage the next load overwrites (the tile before read it), and the 0 above is
        # written before any thread flags this chunk below
        gl.thread_barrier()
        nxt = it + NUM_STAGES - 1
        if nxt < n_mine:
            ring = nxt % NUM_STAGES
            _load_tile(q_desc, k_desc, g_desc, v_desc, h_desc, q_s.index(ring), k_s.index(ring), g_s.index(ring),
                       v_s.index(ring), h_s.index(ring), bars.index(ring), pid + nxt * n_programs, T, NT, H, HK, K,
                       BV, NV, BT)
        mbarrier.wait(bars.index(stage), (it // NUM_STAGES) & 1)

        b_rel = warpgroup_mma(tri_s, g_s.index(stage), gl.zeros([BT, K], gl.float32, mma_k), use_acc=False)
        gl.store(span_flag + i_flag + zeros_k, zeros_k + 1, mask=(gl.abs(b_rel) > SPAN_LIMIT) & (i_v == 0))
        e_rel = gl.exp(b_rel)
        b_q = q_s.index(stage).load(mma_k).to(gl.float32) * e_rel
        b_k = k_s.index(stage).load(mma_k).to(gl.float32) * gl.exp(-b_rel)
        tma.store_wait(pendings=0)  # the previous tile's output store may still read the buffer the keys go to
        gl.thread_barrier()
        kr_s.store(b_k.to(dtype))
        fence_async_shared()
        gl.thread_barrier()
        b_A = warpgroup_mma(gl.convert_layout(b_q.to(dtype), lhs_scores), kr_s.permute((1, 0)),
                            gl.zeros([BT, BT], gl.float32, mma_a), use_acc=False)
        # the inter-chunk product reuses the query factor: exp(b) = exp(b_rel) exp(b_0)
        b_qg = gl.convert_layout((b_q * gl.exp(b_0)[None, :]).to(dtype), lhs_output)
        b_o = warpgroup_mma(b_qg, h_s.index(stage), gl.zeros([BT, BV], gl.float32, mma_o), use_acc=False)
        b_A = gl.where(m_causal, b_A, 0.0)
        b_o = warpgroup_mma(gl.convert_layout(b_A.to(dtype), lhs_output), v_s.index(stage), b_o)
        b_o = b_o * scale
        gl.thread_barrier()  # every warpgroup's score product has read the keys' buffer the output now takes
        o_s.store(b_o.to(dtype))
        fence_async_shared()
        gl.thread_barrier()
        tma.async_copy_shared_to_global(o_desc, [row, i_h * NV * BV + i_v * BV], o_s)
    tma.store_wait(pendings=0)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(bars.index(i))


@triton.constexpr_function
def _column_layout(BT, K, num_warps):
    """A [BT, K] tile with each thread holding half of one column's rows: its column sums take one shuffle and no
    shared memory (the warpgroup MMA layout spreads a column over four warps)."""
    return gl.BlockedLayout([BT // 2, 1], [2, 16], [1, num_warps], [0, 1])


@gluon.jit
def _add(a, b):
    # gl.sum's combine function is a Triton jit function, which the interpreter (tests import this module under it)
    # replaces with one that Gluon cannot compile
    return a + b


@gluon.jit
def _load_chunk(q_desc, k_desc, g_desc, v_desc, q_s, k_s, g_s, v_s, bar, row, i_h, i_hk,
                K: gl.constexpr, V: gl.constexpr, BT: gl.constexpr):
    mbarrier.expect(bar, (3 * BT * K + BT * V) * 2)  # 16-bit tiles
    tma.async_copy_global_to_shared(g_desc, [row, i_hk * K], bar, g_s)
    tma.async_copy_global_to_shared(q_desc, [row, i_hk * K], bar, q_s)
    tma.async_copy_global_to_shared(k_desc, [row, i_hk * K], bar, k_s)
    tma.async_copy_global_to_shared(v_desc, [row, i_h * V], bar, v_s)


# T, NT, SEG and NS unspecialized, as in chunk_fwd_o_gluon_kernel: one compiled kernel serves every length
@gluon.jit(do_not_specialize=["T", "NT", "SEG", "NS", "H0_SEGMENTS", "H0_STEP"])
def chunk_fwd_carried_gluon_kernel(
    q_desc, k_desc, g_desc, v_desc, o_desc, h_desc, g, h0, ht, span_flag, scale, T, NT, SEG, NS, H0_SEGMENTS, H0_STEP,
    H: gl.constexpr, HK: gl.constexpr, K: gl.constexpr, V: gl.constexpr, BT: gl.constexpr,
    SPAN_LIMIT: gl.constexpr, USE_INITIAL_STATE: gl.constexpr, STORE_FINAL_STATE: gl.constexpr,
    STORE_STATES: gl.constexpr, NUM_STAGES: gl.constexpr, num_warps: gl.constexpr,
):
    # The forward with the state carried on chip. One program per (sequence, segment, head) walks the segment's
    # chunks in order from the state entering it (h0: the split state pass's scan; zero or the initial state for a
    # single segment): each chunk's output as chunk_fwd_o_gluon_kernel makes it, from the carried state, then the
    # state update as chunk_fwd_h_kernel makes it. q, k, v, the gate and o cross HBM once. The state lives in
    # registers in fp32 and in shared memory in the input dtype (the output product's operand, as the materialized
    # path stores it). STORE_STATES (training) also writes the state entering every chunk, for the backward;
    # otherwise only a flagged chunk's, which the Triton output pass then redoes from it.
    dtype: gl.constexpr = q_desc.dtype
    mma_k: gl.constexpr = _mma_layout(BT, K, num_warps)  # [BT, K]: the gate, query and key arithmetic
    mma_o: gl.constexpr = _mma_layout(BT, V, num_warps)  # [BT, V]: the output
    mma_a: gl.constexpr = _mma_layout(BT, BT, num_warps)  # [BT, BT]: the scores
    mma_h: gl.constexpr = _mma_layout(K, V, num_warps)  # [K, V]: the state
    columns: gl.constexpr = _column_layout(BT, K, num_warps)
    lhs_scores: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_a, k_width=2)
    lhs_output: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_o, k_width=2)

    q_s = gl.allocate_shared_memory(dtype, [NUM_STAGES, BT, K], q_desc.layout)
    k_s = gl.allocate_shared_memory(dtype, [NUM_STAGES, BT, K], k_desc.layout)
    g_s = gl.allocate_shared_memory(dtype, [NUM_STAGES, BT, K], g_desc.layout)
    v_s = gl.allocate_shared_memory(dtype, [NUM_STAGES, BT, V], v_desc.layout)
    h_s = gl.allocate_shared_memory(dtype, [K, V], h_desc.layout)
    kr_s = gl.allocate_shared_memory(dtype, [BT, K], k_desc.layout)  # keys rebased for the scores
    kd_s = gl.allocate_shared_memory(dtype, [BT, K], k_desc.layout)  # keys decayed to the chunk's end, for the state
    if V == K:  # the rebased keys' buffer is free once the scores are made: the output is staged there
        o_s = kr_s
    else:
        o_s = gl.allocate_shared_memory(dtype, [BT, V], o_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(bars.index(i), count=1)

    # 0/1 triangles that sum the gate down the rows: b_rel[i] = sum_{0 < j <= i} g[j] (the log decay from the first
    # row, as chunk_fwd_o_gluon_kernel rebases), b_after[i] = sum_{j > i} g[j] (what is left of the chunk's decay)
    tri_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    o_r = gl.arange(0, BT, layout=gl.SliceLayout(1, tri_layout))
    o_c = gl.arange(0, BT, layout=gl.SliceLayout(0, tri_layout))
    tri_layout_s: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    rel_s = gl.allocate_shared_memory(dtype, [BT, BT], tri_layout_s,
                                      ((o_c[None, :] <= o_r[:, None]) & (o_c[None, :] > 0)).to(dtype))
    after_s = gl.allocate_shared_memory(dtype, [BT, BT], tri_layout_s, (o_c[None, :] > o_r[:, None]).to(dtype))

    pid = gl.program_id(0)
    i_h = pid % H
    i_hk = i_h // (H // HK)  # the query/key head (and gate) this value head shares
    i_b = (pid // H) // NS
    i_s = (pid // H) % NS
    first = i_s * SEG
    n_chunks = gl.minimum(SEG, NT - first)

    o_hk = gl.arange(0, K, layout=gl.SliceLayout(1, mma_h))
    o_hv = gl.arange(0, V, layout=gl.SliceLayout(0, mma_h))
    o_state = o_hk[:, None] * V + o_hv[None, :]
    if USE_INITIAL_STATE:
        # h0 holds H0_SEGMENTS states per sequence and head ([B, H0_SEGMENTS, H, K, V]); this segment starts from
        # number i_s * H0_STEP (the scan's segments may be finer than these)
        i_h0 = (i_b * H0_SEGMENTS + i_s * H0_STEP) * H + i_h
        b_h = gl.load(h0 + i_h0.to(gl.int64) * K * V + o_state).to(gl.float32)
    else:
        b_h = gl.zeros([K, V], gl.float32, mma_h)
    h_s.store(b_h.to(dtype))
    fence_async_shared()
    gl.thread_barrier()

    o_k = gl.arange(0, K, layout=gl.SliceLayout(0, mma_k))
    o_ai = gl.arange(0, BT, layout=gl.SliceLayout(1, mma_a))
    o_aj = gl.arange(0, BT, layout=gl.SliceLayout(0, mma_a))
    m_causal = o_ai[:, None] >= o_aj[None, :]
    zeros_k = gl.zeros([BT, K], gl.int32, mma_k)
    row0 = i_b * T + first * BT
    for j in gl.static_range(NUM_STAGES - 1):
        if j < n_chunks:
            _load_chunk(q_desc, k_desc, g_desc, v_desc, q_s.index(j), k_s.index(j), g_s.index(j), v_s.index(j),
                        bars.index(j), row0 + j * BT, i_h, i_hk, K, V, BT)
    for it in range(n_chunks):
        stage = it % NUM_STAGES
        i_t = first + it
        row = row0 + it * BT
        i_flag = (i_b * NT + i_t) * H + i_h
        # the first row's log decay, loaded before the wait so that its latency hides behind the chunk's loads
        b_0 = gl.load(g + (row.to(gl.int64) * HK + i_hk) * K + o_k).to(gl.float32)
        gl.store(span_flag + i_flag, 0)
        # every warp is done with the stage the next load overwrites (the chunk before read it), and the 0 above is
        # written before any thread flags this chunk below
        gl.thread_barrier()
        nxt = it + NUM_STAGES - 1
        if nxt < n_chunks:
            ring = nxt % NUM_STAGES
            _load_chunk(q_desc, k_desc, g_desc, v_desc, q_s.index(ring), k_s.index(ring), g_s.index(ring),
                        v_s.index(ring), bars.index(ring), row0 + nxt * BT, i_h, i_hk, K, V, BT)
        mbarrier.wait(bars.index(stage), (it // NUM_STAGES) & 1)

        b_rel = warpgroup_mma(rel_s, g_s.index(stage), gl.zeros([BT, K], gl.float32, mma_k), use_acc=False)
        gl.store(span_flag + i_flag + zeros_k, zeros_k + 1, mask=gl.abs(b_rel) > SPAN_LIMIT)
        b_after = warpgroup_mma(after_s, g_s.index(stage), gl.zeros([BT, K], gl.float32, mma_k), use_acc=False)
        b_last = gl.reduce(g_s.index(stage).load(columns).to(gl.float32), 0, _add)  # the chunk's total log decay
        b_q = q_s.index(stage).load(mma_k).to(gl.float32) * gl.exp(b_rel)
        b_k = k_s.index(stage).load(mma_k).to(gl.float32)
        tma.store_wait(pendings=0)  # the chunk before's output store may still read the buffer the keys go to
        gl.thread_barrier()
        kr_s.store((b_k * gl.exp(-b_rel)).to(dtype))
        kd_s.store((b_k * gl.exp(b_after)).to(dtype))
        fence_async_shared()
        gl.thread_barrier()  # also: every thread's flag for this chunk is written
        if STORE_STATES:
            tma.async_copy_shared_to_global(h_desc, [((i_b * NT + i_t) * H + i_h) * K, 0], h_s)
        elif gl.load(span_flag + i_flag) != 0:
            tma.async_copy_shared_to_global(h_desc, [((i_b * NT + i_t) * H + i_h) * K, 0], h_s)

        b_A = warpgroup_mma(gl.convert_layout(b_q.to(dtype), lhs_scores), kr_s.permute((1, 0)),
                            gl.zeros([BT, BT], gl.float32, mma_a), use_acc=False)
        # the inter-chunk product reuses the query factor: exp(b) = exp(b_rel) exp(b_0)
        b_qg = gl.convert_layout((b_q * gl.exp(b_0)[None, :]).to(dtype), lhs_output)
        b_o = warpgroup_mma(b_qg, h_s, gl.zeros([BT, V], gl.float32, mma_o), use_acc=False)
        b_A = gl.where(m_causal, b_A, 0.0)
        b_o = warpgroup_mma(gl.convert_layout(b_A.to(dtype), lhs_output), v_s.index(stage), b_o)
        # the state leaving the chunk: decayed by the chunk's total, plus its decayed keys' products with its values
        b_h = b_h * gl.exp(gl.convert_layout(b_last, gl.SliceLayout(1, mma_h)))[:, None]
        b_h = warpgroup_mma(kd_s.permute((1, 0)), v_s.index(stage), b_h)
        tma.store_wait(pendings=0)  # the entering state's store reads the buffer the next state goes to
        gl.thread_barrier()  # every warpgroup's products have read the rebased keys and the entering state
        o_s.store((b_o * scale).to(dtype))
        h_s.store(b_h.to(dtype))
        fence_async_shared()
        gl.thread_barrier()
        tma.async_copy_shared_to_global(o_desc, [row, i_h * V], o_s)
    tma.store_wait(pendings=0)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(bars.index(i))
    if STORE_FINAL_STATE:
        if i_s == NS - 1:
            gl.store(ht + (i_b * H + i_h).to(gl.int64) * K * V + o_state, b_h)


@gluon.jit
def _load_state_chunk(k_desc, g_desc, v_desc, k_s, g_s, v_s, bar, row, i_h, i_hk,
                      K: gl.constexpr, V: gl.constexpr, BT: gl.constexpr):
    # a chunk's gate, keys and values: _load_chunk without the queries
    mbarrier.expect(bar, (2 * BT * K + BT * V) * 2)  # 16-bit tiles
    tma.async_copy_global_to_shared(g_desc, [row, i_hk * K], bar, g_s)
    tma.async_copy_global_to_shared(k_desc, [row, i_hk * K], bar, k_s)
    tma.async_copy_global_to_shared(v_desc, [row, i_h * V], bar, v_s)


# T, NT, SEG, NS and USED unspecialized: one compiled kernel serves every length
@gluon.jit(do_not_specialize=["T", "NT", "SEG", "NS", "USED"])
def chunk_segment_ends_gluon_kernel(
    k_desc, g_desc, v_desc, ends, totals, T, NT, SEG, NS, USED,
    H: gl.constexpr, HK: gl.constexpr, K: gl.constexpr, V: gl.constexpr, BT: gl.constexpr,
    NUM_STAGES: gl.constexpr, num_warps: gl.constexpr,
):
    # The state pass before the carried forward's later segments: one program per (sequence, segment < USED, head)
    # walks the segment's chunks from a zero state, the update of chunk_fwd_carried_gluon_kernel without the output,
    # and writes the end state (fp32) into ends and the segment's total log decay into totals, at row
    # (sequence * NS + segment) * H + head, as segment_scan_kernel reads them.
    dtype: gl.constexpr = k_desc.dtype
    mma_k: gl.constexpr = _mma_layout(BT, K, num_warps)
    mma_h: gl.constexpr = _mma_layout(K, V, num_warps)
    columns: gl.constexpr = _column_layout(BT, K, num_warps)

    k_s = gl.allocate_shared_memory(dtype, [NUM_STAGES, BT, K], k_desc.layout)
    g_s = gl.allocate_shared_memory(dtype, [NUM_STAGES, BT, K], g_desc.layout)
    v_s = gl.allocate_shared_memory(dtype, [NUM_STAGES, BT, V], v_desc.layout)
    kd_s = gl.allocate_shared_memory(dtype, [BT, K], k_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(bars.index(i), count=1)
    tri_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    o_r = gl.arange(0, BT, layout=gl.SliceLayout(1, tri_layout))
    o_c = gl.arange(0, BT, layout=gl.SliceLayout(0, tri_layout))
    tri_layout_s: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    after_s = gl.allocate_shared_memory(dtype, [BT, BT], tri_layout_s, (o_c[None, :] > o_r[:, None]).to(dtype))
    fence_async_shared()
    gl.thread_barrier()

    pid = gl.program_id(0)
    i_h = pid % H
    i_hk = i_h // (H // HK)
    i_b = (pid // H) // USED
    i_s = (pid // H) % USED
    first = i_s * SEG
    n_chunks = gl.minimum(SEG, NT - first)
    row0 = i_b * T + first * BT
    for j in gl.static_range(NUM_STAGES - 1):
        if j < n_chunks:
            _load_state_chunk(k_desc, g_desc, v_desc, k_s.index(j), g_s.index(j), v_s.index(j), bars.index(j),
                              row0 + j * BT, i_h, i_hk, K, V, BT)
    b_h = gl.zeros([K, V], gl.float32, mma_h)
    b_total = gl.zeros([K], gl.float32, gl.SliceLayout(0, columns))
    for it in range(n_chunks):
        stage = it % NUM_STAGES
        # every warp is done with the stage the next load overwrites, and with the decayed keys' buffer
        gl.thread_barrier()
        nxt = it + NUM_STAGES - 1
        if nxt < n_chunks:
            ring = nxt % NUM_STAGES
            _load_state_chunk(k_desc, g_desc, v_desc, k_s.index(ring), g_s.index(ring), v_s.index(ring),
                              bars.index(ring), row0 + nxt * BT, i_h, i_hk, K, V, BT)
        mbarrier.wait(bars.index(stage), (it // NUM_STAGES) & 1)
        b_after = warpgroup_mma(after_s, g_s.index(stage), gl.zeros([BT, K], gl.float32, mma_k), use_acc=False)
        b_last = gl.reduce(g_s.index(stage).load(columns).to(gl.float32), 0, _add)
        b_total += b_last
        kd_s.store((k_s.index(stage).load(mma_k).to(gl.float32) * gl.exp(b_after)).to(dtype))
        fence_async_shared()
        gl.thread_barrier()
        b_h = b_h * gl.exp(gl.convert_layout(b_last, gl.SliceLayout(1, mma_h)))[:, None]
        b_h = warpgroup_mma(kd_s.permute((1, 0)), v_s.index(stage), b_h)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(bars.index(i))
    i_row = ((i_b * NS + i_s) * H + i_h).to(gl.int64)
    o_hk = gl.arange(0, K, layout=gl.SliceLayout(1, mma_h))
    o_hv = gl.arange(0, V, layout=gl.SliceLayout(0, mma_h))
    gl.store(ends + i_row * K * V + o_hk[:, None] * V + o_hv[None, :], b_h)
    gl.store(totals + i_row * K + gl.arange(0, K, layout=gl.SliceLayout(0, columns)), b_total)


@functools.lru_cache(maxsize=None)
def _shared_layout(block: tuple, dtype: torch.dtype):
    # cached: making one takes about 5 us of host time, and a launch needs six
    return gl.NVMMASharedLayout.get_default_for(list(block), gl.bfloat16 if dtype == torch.bfloat16 else gl.float16)


class _Address:
    """A cached descriptor's base: its tensor's address and dtype, which the launcher reads, not the tensor, which the
    cache would keep alive."""

    __slots__ = ("address", "dtype")

    def __init__(self, address: int, dtype: torch.dtype):
        self.address, self.dtype = address, dtype

    def data_ptr(self) -> int:
        return self.address


# (address, rows, columns, dtype, block) -> TensorDescriptor, the 64 latest: a descriptor depends on nothing else, and
# in a training or inference loop the caching allocator hands the same addresses back, so the launch cache's launches
# skip building and validating six descriptors in Python (the launcher still encodes them)
_DESCRIPTORS: collections.OrderedDict = collections.OrderedDict()


def _descriptor(x: torch.Tensor, rows: int, block: tuple, cached: bool) -> TensorDescriptor:
    # [B * T (or B * NT * H * K for the states), heads * head size]: a chunk's tile is one TMA box. Gluon's entry
    # (a first launch) gets one made from the tensor, which it inspects to specialize the kernel.
    columns = x.numel() // rows
    if not cached:
        return TensorDescriptor.from_tensor(x.view(rows, columns), list(block), _shared_layout(block, x.dtype))
    key = (x.data_ptr(), rows, columns, x.dtype, block)
    descriptor = _DESCRIPTORS.get(key)
    if descriptor is None:
        descriptor = TensorDescriptor(_Address(x.data_ptr(), x.dtype), [rows, columns], [columns, 1], list(block),
                                      _shared_layout(block, x.dtype))
        _DESCRIPTORS[key] = descriptor
        if len(_DESCRIPTORS) > 64:
            _DESCRIPTORS.popitem(last=False)
    return descriptor


_SMS = {}
# (device, dtype, pointer alignments, constexprs) -> the compiled kernel. Gluon's entry binds and specializes every
# argument on each launch, six tensor descriptors among them; the compiled kernel launched directly skips that (as
# ops._CachedLaunch does for the Triton kernels). Its integer arguments are unspecialized, and the key holds what
# else Triton specializes on: the dtype, and each pointer's 16-byte alignment.
_COMPILED = {}
# LINATTN_GEN_LAUNCH_CACHE=0 (as for the Triton kernels in ops.py): Gluon's entry on every launch
LAUNCH_CACHE = os.environ.get("LINATTN_GEN_LAUNCH_CACHE", "1") != "0"


def _launch_compiled(kernel, key: tuple, grid: tuple, arguments, constexprs: dict):
    """kernel[grid] on arguments(cached) and the constexprs. Through the launch cache (LAUNCH_CACHE) the compiled
    kernel is launched directly, with cached descriptors (arguments(True)); Gluon's entry, the first time per key
    or with the cache off, gets descriptors made from the tensors (arguments(False)), and its compiled kernel is
    kept under `key`."""
    compiled = _COMPILED.get(key) if LAUNCH_CACHE else None
    if compiled is None:
        _COMPILED[key] = kernel[grid](*arguments(False), **constexprs)
    else:
        compiled[grid](*arguments(True), *constexprs.values())


def chunk_fwd_o_gluon(q, k, v, g, h, o, span_flag, scale, BT, span_limit, block_v, num_warps, num_stages):
    """o for dense [B, T, H(K), K | V] inputs with T a multiple of BT; span_flag [B * NT * H] int32 comes back 1
    where a chunk's cumulative log decay passed span_limit (those outputs are to be redone)."""
    B, T, HK, K = q.shape
    H, V = v.shape[2], v.shape[3]
    NT = T // BT
    NV = V // block_v
    n_tiles = B * NT * H * NV
    device = q.device.index if q.device.index is not None else torch.cuda.current_device()
    if device not in _SMS:
        _SMS[device] = torch.cuda.get_device_properties(device).multi_processor_count
    constexprs = dict(H=H, HK=HK, K=K, BV=block_v, NV=NV, BT=BT, SPAN_LIMIT=span_limit, NUM_STAGES=num_stages,
                      num_warps=num_warps)
    grid = (min(n_tiles, _SMS[device]), 1, 1)
    key = (device, q.dtype, g.data_ptr() % 16 == 0, span_flag.data_ptr() % 16 == 0, *constexprs.values())

    def arguments(cached):
        return (*(_descriptor(x, B * T, (BT, K), cached) for x in (q, k, g)),
                _descriptor(v, B * T, (BT, block_v), cached), _descriptor(h, B * NT * H * K, (K, block_v), cached),
                _descriptor(o, B * T, (BT, block_v), cached),
                g, span_flag, scale, T, NT, n_tiles)

    _launch_compiled(chunk_fwd_o_gluon_kernel, key, grid, arguments, constexprs)


def chunk_fwd_carried_gluon(q, k, v, g, o, h, h0, ht, span_flag, scale, BT, span_limit, SEG, NS, store_states,
                            num_warps, num_stages, h0_segments=1, h0_step=1):
    """o (and with store_states every chunk's entering state into h [B, NT, H, K, V]) for dense [B, T, H(K), K | V]
    inputs with T a multiple of BT, V = the whole value head; SEG chunks per segment, NS segments per sequence; h0
    [B, h0_segments, H, K, V] or None (zero): segment s starts from h0[:, s * h0_step]; ht [B, H, K, V] (fp32) the
    final state or None. span_flag [B * NT * H] int32 comes back 1 where a chunk's cumulative log decay passed
    span_limit; those chunks' entering states are in h, and their outputs are to be redone."""
    B, T, HK, K = q.shape
    H, V = v.shape[2], v.shape[3]
    NT = T // BT
    constexprs = dict(H=H, HK=HK, K=K, V=V, BT=BT, SPAN_LIMIT=span_limit, USE_INITIAL_STATE=h0 is not None,
                      STORE_FINAL_STATE=ht is not None, STORE_STATES=store_states, NUM_STAGES=num_stages,
                      num_warps=num_warps)
    grid = (B * NS * H, 1, 1)
    device = q.device.index if q.device.index is not None else torch.cuda.current_device()
    key = ("carried", device, q.dtype, g.data_ptr() % 16 == 0, span_flag.data_ptr() % 16 == 0,
           None if h0 is None else (h0.dtype, h0.data_ptr() % 16 == 0),
           None if ht is None else ht.data_ptr() % 16 == 0, *constexprs.values())

    def arguments(cached):
        return (*(_descriptor(x, B * T, (BT, K), cached) for x in (q, k, g)), _descriptor(v, B * T, (BT, V), cached),
                _descriptor(o, B * T, (BT, V), cached), _descriptor(h, B * NT * H * K, (K, V), cached),
                g, h0, ht, span_flag, scale, T, NT, SEG, NS, h0_segments, h0_step)

    _launch_compiled(chunk_fwd_carried_gluon_kernel, key, grid, arguments, constexprs)


def chunk_segment_ends_gluon(k, v, g, ends, totals, BT, SEG, NS, used, num_warps, num_stages):
    """For dense [B, T, H(K), K | V] inputs with T a multiple of BT cut into NS segments of SEG chunks per sequence:
    the end state of each of the first `used` segments from a zero state into ends [B * NS, H, K, V] (fp32) and its
    total log decay into totals [B * NS, H, K] (fp32); the other rows are left as they are."""
    B, T, HK, K = k.shape
    H, V = v.shape[2], v.shape[3]
    NT = T // BT
    constexprs = dict(H=H, HK=HK, K=K, V=V, BT=BT, NUM_STAGES=num_stages, num_warps=num_warps)
    grid = (B * used * H, 1, 1)
    device = k.device.index if k.device.index is not None else torch.cuda.current_device()
    key = ("segment ends", device, k.dtype, *constexprs.values())

    def arguments(cached):
        return (_descriptor(k, B * T, (BT, K), cached), _descriptor(g, B * T, (BT, K), cached),
                _descriptor(v, B * T, (BT, V), cached), ends, totals, T, NT, SEG, NS, used)

    _launch_compiled(chunk_segment_ends_gluon_kernel, key, grid, arguments, constexprs)
