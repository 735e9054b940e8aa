"""GLA's output pass (`fwd_o`) as a persistent kernel: a grid of a few programs per SM, each looping over chunks with
`tl.range(..., num_stages)`, so that the loads of its next chunk are in flight while it computes the current one.
The generated `fwd_o` gives every (chunk, head) its own program with nothing to pipeline (BK = K: one pass of its
loop), and sits at 1.75x the time its bytes need (run 11); the state pass, which loops over chunks and pipelines
them, sits at 1.23x. Optionally the tiles come in through the Hopper tensor-memory accelerator (host-side
`TensorDescriptor`s) instead of block pointers.

Every variant computes what the generated kernel computes (span test and sub-chunk fallback included unless
`span test off` says otherwise) and is checked against its output.

usage: python bench/gpu_fwd_persistent.py [--T 2048] [--ordered-only | --warp-specialize] [--smoke]; writes $OUT/fwd-persistent-T<T>.json
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
from triton.tools.tensor_descriptor import TensorDescriptor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from linattn_gen import load  # noqa: E402
from generated.gla.kernels import _rows_per_subchunk, _scores_query_rebased  # noqa: E402
from linattn_gen.check import relative_error  # noqa: E402
from probe_harness import Probe, add_shape_arguments, probe_shape  # noqa: E402


@triton.jit
def persistent_fwd_o(q, k, v, g, h, o, q_desc, k_desc, g_desc, v_desc, h_desc, o_desc, scale, T, NT, n_tiles,
                     H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                     SPAN_LIMIT: tl.constexpr, SPAN_TEST: tl.constexpr, USE_TMA: tl.constexpr,
                     STAGES: tl.constexpr, DOT_PRECISION: tl.constexpr, WARP_SPECIALIZE: tl.constexpr = False):
    # the generated chunk_fwd_o_kernel with BK = K, BV = V (its tuned config at K = V = 128), one chunk per iteration
    o_i = tl.arange(0, BT)
    o_k = tl.arange(0, K)
    m_causal = o_i[:, None] >= o_i[None, :]
    for tile in tl.range(tl.program_id(0), n_tiles, tl.num_programs(0), num_stages=STAGES,
                         warp_specialize=WARP_SPECIALIZE):
        # consecutive programs take consecutive chunks of one head: their keys and gates share L2 lines' neighbours
        i_bh = tile // NT
        i_t = tile % NT
        i_b, i_h = i_bh // H, i_bh % H
        i_chunk = i_b * NT + i_t
        bos = i_b.to(tl.int64) * T
        m_t = i_t * BT + o_i < T
        if USE_TMA:
            b_q = q_desc.load([i_b, i_t * BT, i_h * K]).reshape(BT, K)
            b_k = k_desc.load([i_b, i_t * BT, i_h * K]).reshape(BT, K)
            b_g = g_desc.load([i_b, i_t * BT, i_h * K]).reshape(BT, K).to(tl.float32)
            b_h = h_desc.load([(i_chunk * H + i_h) * K, 0])
            b_v = v_desc.load([i_b, i_t * BT, i_h * V]).reshape(BT, V)
        else:
            base_k = (bos * H + i_h) * K
            base_v = (bos * H + i_h) * V
            p_q = tl.make_block_ptr(q + base_k, (T, K), (H * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
            p_k = tl.make_block_ptr(k + base_k, (T, K), (H * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
            p_g = tl.make_block_ptr(g + base_k, (T, K), (H * K, 1), (i_t * BT, 0), (BT, K), (1, 0))
            p_h = tl.make_block_ptr(h + (i_chunk * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1), (0, 0), (K, V),
                                    (1, 0))
            p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, 0), (BT, V), (1, 0))
            b_q = tl.load(p_q, boundary_check=(0, 1))
            b_k = tl.load(p_k, boundary_check=(0, 1))
            b_g = tl.load(p_g, boundary_check=(0, 1)).to(tl.float32)
            b_h = tl.load(p_h, boundary_check=(0, 1))
            b_v = tl.load(p_v, boundary_check=(0, 1))
        b_h = b_h.to(b_q.dtype)
        b_a = tl.where(m_t[:, None], b_g, 0.0)
        b_rel = tl.cumsum(tl.where(o_i[:, None] > 0, b_a, 0.0), axis=0)
        b_b0 = tl.load(g + ((bos + i_t * BT) * H + i_h) * K + o_k).to(tl.float32)
        fast = True
        if SPAN_TEST:
            fast = tl.max(b_rel) - tl.min(b_rel) <= SPAN_LIMIT
        if fast:
            b_qr = b_q * tl.exp(b_rel)
            b_o = tl.dot((b_qr * tl.exp(b_b0)[None, :]).to(b_q.dtype), b_h, input_precision=DOT_PRECISION)
            b_kr = (b_k * tl.exp(-b_rel)).to(b_q.dtype)
            b_A = tl.dot(b_qr.to(b_q.dtype), tl.trans(b_kr), input_precision=DOT_PRECISION)
        else:
            b_b = b_rel + b_b0[None, :]
            b_o = tl.dot((b_q * tl.exp(b_b)).to(b_q.dtype), b_h, input_precision=DOT_PRECISION)
            b_A = _scores_query_rebased(b_q, b_b, tl.trans(b_k), tl.trans(b_b), o_i,
                                        _rows_per_subchunk(b_b, BT, BC, K, SPAN_LIMIT), BT, DOT_PRECISION)
        b_A = tl.where(m_causal, b_A, 0.0)
        b_o = (b_o + tl.dot(b_A.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)) * scale
        if USE_TMA:
            o_desc.store([i_b, i_t * BT, i_h * V], b_o.to(o_desc.dtype).reshape(1, BT, V))
        else:
            p_o = tl.make_block_ptr(o + (bos * H + i_h) * V, (T, V), (H * V, 1), (i_t * BT, 0), (BT, V), (1, 0))
            tl.store(p_o, b_o.to(p_o.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def ordered_fwd_o(q, k, v, g, h, o, scale, T, NT, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                  BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, SPAN_LIMIT: tl.constexpr,
                  SPAN_TEST: tl.constexpr, EARLY_V: tl.constexpr, FAST_FIRST: tl.constexpr,
                  DOT_PRECISION: tl.constexpr):
    # the generated chunk_fwd_o_kernel (dense batch), with two orderings to try: EARLY_V loads the values before the
    # span test's reduction and branch instead of after them; FAST_FIRST computes the chunk-wide block
    # unconditionally and branches only to replace it where the span is past the limit
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_chunk = i_b * NT + i_t
    bos = i_b.to(tl.int64) * T
    base_k = (bos * H + i_h) * K
    base_v = (bos * H + i_h) * V
    o_i = tl.arange(0, BT)
    m_t = i_t * BT + o_i < T
    m_causal = o_i[:, None] >= o_i[None, :]
    p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    if EARLY_V:
        b_v = tl.load(p_v, boundary_check=(0, 1))
    b_o = tl.zeros([BT, BV], dtype=tl.float32)
    b_A = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        p_q = tl.make_block_ptr(q + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        p_h = tl.make_block_ptr(h + (i_chunk * H + i_h).to(tl.int64) * K * V, (K, V), (V, 1),
                                (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        b_q = tl.load(p_q, boundary_check=(0, 1))
        p_k = tl.make_block_ptr(k + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        b_k = tl.load(p_k, boundary_check=(0, 1))
        b_h = tl.load(p_h, boundary_check=(0, 1)).to(b_q.dtype)
        p_g = tl.make_block_ptr(g + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        b_g = tl.load(p_g, boundary_check=(0, 1)).to(tl.float32)
        b_a = tl.where(m_t[:, None], b_g, 0.0)
        b_rel = tl.cumsum(tl.where(o_i[:, None] > 0, b_a, 0.0), axis=0)
        o_kc = i_k * BK + tl.arange(0, BK)
        b_b0 = tl.load(g + ((bos + i_t * BT) * H + i_h) * K + o_kc, mask=o_kc < K, other=0.0).to(tl.float32)
        if FAST_FIRST:
            b_qr = b_q * tl.exp(b_rel)
            b_oi = tl.dot((b_qr * tl.exp(b_b0)[None, :]).to(b_q.dtype), b_h, input_precision=DOT_PRECISION)
            b_kr = (b_k * tl.exp(-b_rel)).to(b_q.dtype)
            b_Ai = tl.dot(b_qr.to(b_q.dtype), tl.trans(b_kr), input_precision=DOT_PRECISION)
            if SPAN_TEST:
                if tl.max(b_rel) - tl.min(b_rel) > SPAN_LIMIT:
                    b_b = b_rel + b_b0[None, :]
                    b_oi = tl.dot((b_q * tl.exp(b_b)).to(b_q.dtype), b_h, input_precision=DOT_PRECISION)
                    b_Ai = _scores_query_rebased(b_q, b_b, tl.trans(b_k), tl.trans(b_b), o_i,
                                                 _rows_per_subchunk(b_b, BT, BC, BK, SPAN_LIMIT), BT, DOT_PRECISION)
            b_o += b_oi
            b_A += b_Ai
        elif (not SPAN_TEST) or (tl.max(b_rel) - tl.min(b_rel) <= SPAN_LIMIT):
            b_qr = b_q * tl.exp(b_rel)
            b_o += tl.dot((b_qr * tl.exp(b_b0)[None, :]).to(b_q.dtype), b_h, input_precision=DOT_PRECISION)
            b_kr = (b_k * tl.exp(-b_rel)).to(b_q.dtype)
            b_A += tl.dot(b_qr.to(b_q.dtype), tl.trans(b_kr), input_precision=DOT_PRECISION)
        else:
            b_b = b_rel + b_b0[None, :]
            b_o += tl.dot((b_q * tl.exp(b_b)).to(b_q.dtype), b_h, input_precision=DOT_PRECISION)
            b_A += _scores_query_rebased(b_q, b_b, tl.trans(b_k), tl.trans(b_b), o_i,
                                         _rows_per_subchunk(b_b, BT, BC, BK, SPAN_LIMIT), BT, DOT_PRECISION)
    b_A = tl.where(m_causal, b_A, 0.0)
    if not EARLY_V:
        b_v = tl.load(p_v, boundary_check=(0, 1))
    b_o = (b_o + tl.dot(b_A.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)) * scale
    p_o = tl.make_block_ptr(o + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    tl.store(p_o, b_o.to(p_o.dtype.element_ty), boundary_check=(0, 1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(parser)
    parser.add_argument("--warp-specialize", action="store_true",
                        help="the persistent variants with Triton's automatic warp specialization of the chunk loop "
                             "(tl.range(warp_specialize=True)) instead of the plain ones")
    parser.add_argument("--ordered-only", action="store_true",
                        help="only the output pass with its loads and branch reordered (ordered_fwd_o)")
    args = parser.parse_args()
    B, T, H, K, V, device, dtype = probe_shape(args, smoke=(2, 192, 2))
    BT = 64
    NT = triton.cdiv(T, BT)
    module = load(ROOT / "specs" / "gla.yaml")
    kernels = module.kernels
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, T, H, K, device=device, dtype=dtype) for _ in range(3))
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, K, device=device)).to(dtype)
    if args.smoke:  # one chunk past the span limit, so that the fallback runs too
        g[0, 64:128, 0] = -3.0
    h = q.new_empty(B, NT, H, K, V)
    o = torch.empty_like(v)
    scale = K ** -0.5
    probe = Probe(args.smoke, B=B, T=T, H=H, K=K, V=V)
    sms = 2 if args.smoke else torch.cuda.get_device_properties(0).multi_processor_count
    tokens = B * T * H
    fwd_o_bytes = tokens * (3 * K + 2 * V) * 2 + B * NT * H * K * V * 2

    def record(label, fn, check=None):
        probe.record(label, fn, fwd_o_bytes, check)

    kernels.chunk_fwd_h_kernel[(triton.cdiv(K, 64), 1, B * H)](
        k, v, g, h, None, None, None, None, None, T, NT, H=H, HK=H, K=K, V=V, BT=BT, BK=64, BV=V,
        USE_INITIAL_STATE=False, STORE_FINAL_STATE=False, STORE_CHUNK_DECAY=False, IS_VARLEN=False,
        DOT_PRECISION="tf32", num_warps=4, num_stages=3)

    def generated(out=o, warps=4, stages=2):
        kernels.chunk_fwd_o_kernel[(1, NT, B * H)](
            q, k, v, g, h, out, None, None, scale, T, NT, H=H, HK=H, K=K, V=V, BT=BT, BC=16, BK=K, BV=V,
            IS_VARLEN=False, SPAN_LIMIT=75.0, DOT_PRECISION="tf32", num_warps=warps, num_stages=stages)

    o_reference = torch.empty_like(o)
    generated(out=o_reference)
    record("generated (128, 128, 4, 2), one program per chunk", generated)
    for stages in (2, 3)[:0 if args.warp_specialize else 2]:
        for early_v, fast_first, span_test in ((False, False, True), (True, False, True), (False, True, True),
                                               (True, True, True), (False, False, False), (True, False, False)):
            def ordered(early_v=early_v, fast_first=fast_first, span_test=span_test, stages=stages):
                ordered_fwd_o[(1, NT, B * H)](
                    q, k, v, g, h, o, scale, T, NT, H=H, K=K, V=V, BT=BT, BC=16, BK=K, BV=V, SPAN_LIMIT=75.0,
                    SPAN_TEST=span_test, EARLY_V=early_v, FAST_FIRST=fast_first, DOT_PRECISION="tf32", num_warps=4,
                    num_stages=stages)

            label = (f"ordered: values {'before' if early_v else 'after'} the test, "
                     f"{'chunk-wide block first' if fast_first else 'branch first'}, "
                     f"span test {'on' if span_test else 'off'}, (128, 128, 4, {stages})")
            record(label, ordered, check=lambda run=ordered: (run(), relative_error(o, o_reference))[1])
    if args.ordered_only:
        return probe.write(f"fwd-persistent-T{T}")
    variants = [(use_tma, span_test, stages, per_sm, False) for use_tma in (False, True) for span_test in (True, False)
                for stages in (1, 2, 3) for per_sm in (1, 2, 3, None)]
    if args.warp_specialize:  # Triton's automatic warp specialization of the chunk loop (producer and consumer warps)
        variants = [(use_tma, True, stages, per_sm, True) for use_tma in (False, True) for stages in (2, 3)
                    for per_sm in (1, 2)]
    descs = [TensorDescriptor.from_tensor(x.view(B, T, H * x.shape[-1]), [1, BT, x.shape[-1]]) for x in (q, k, g, v)]
    h_desc = TensorDescriptor.from_tensor(h.view(B * NT * H * K, V), [K, V])
    o_desc = TensorDescriptor.from_tensor(o.view(B, T, H * V), [1, BT, V])
    n_tiles = B * H * NT
    for use_tma, span_test, stages, per_sm, warp_specialize in variants:
        if args.smoke and (stages > 2 or per_sm not in (1, None)):
            continue
        programs = n_tiles if per_sm is None else min(n_tiles, per_sm * sms)

        def run(use_tma=use_tma, span_test=span_test, stages=stages, programs=programs, ws=warp_specialize):
            persistent_fwd_o[(programs,)](
                q, k, v, g, h, o, *descs[:3], descs[3], h_desc, o_desc, scale, T, NT, n_tiles, H=H, K=K, V=V, BT=BT,
                BC=16, SPAN_LIMIT=75.0, SPAN_TEST=span_test, USE_TMA=use_tma, STAGES=stages, DOT_PRECISION="tf32",
                WARP_SPECIALIZE=ws, num_warps=4)

        label = (f"{'TMA' if use_tma else 'block ptr'}, span test {'on' if span_test else 'off'}, {stages} stages, "
                 f"{'one per chunk' if per_sm is None else f'{per_sm} per SM'}"
                 f"{', warp-specialized' if warp_specialize else ''}")
        record(label, run, check=lambda run=run: (run(), relative_error(o, o_reference))[1])
    probe.write(f"fwd-persistent-T{T}")


if __name__ == "__main__":
    main()
