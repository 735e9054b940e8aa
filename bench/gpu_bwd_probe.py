"""Where GLA's largest backward kernel (`bwd_dqkg`: dq, dk and the gate gradient, 61% of forward+backward in run 10)
spends its time: the generated kernel under several launch configs, and probe copies of it with parts of the gate
arithmetic removed or replaced the way run 10 replaced them in the forward, at the shape of the performance issue
(B*T = 16K, T = 2048, H = 16, K = V = 128, bf16).

Modes of the probe copy (every mode but the lower bound is checked against the generated kernel's dq, dk, dg):
  0 no gate: the products and bytes alone (a lower bound; wrong results)
  1 as generated
  2 row-free: the chunk-wide case rebases on the first row loaded as a vector and the last row's cumulative decay
    (b_last, already summed), with one whole-block range as the span test; no row extraction by reductions
  3 mode 2 with the cumulative decay by a 0/1 triangle product (exact for a bf16 gate)
  4 mode 3 with the gate gradient's two float32 cumulative sums by triangle products too (three tf32 passes)

usage: python bench/gpu_bwd_probe.py [--T 2048] [--smoke]; writes $OUT/bwd-probe-T<T>.json
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

from generated.gla.kernels import _dk_intra, _dq_intra, _rows_per_subchunk  # noqa: E402
from linattn_gen import load  # noqa: E402
from linattn_gen.check import relative_error  # noqa: E402
from probe_harness import Probe, add_shape_arguments, probe_shape  # noqa: E402


@triton.jit
def probe_dqkg(q, k, v, g, h, do, dh, dq, dk, dg, scale, T, NT, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
               BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, MODE: tl.constexpr,
               PRECISION: tl.constexpr):
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_chunk = i_b * NT + i_t
    bos = i_b.to(tl.int64) * T
    base_k = (bos * H + i_h) * K
    base_v = (bos * H + i_h) * V
    base_h = (i_chunk * H + i_h).to(tl.int64) * K * V
    o_i = tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    m_t = i_t * BT + o_i < T
    p_q = tl.make_block_ptr(q + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    p_k = tl.make_block_ptr(k + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    p_g = tl.make_block_ptr(g + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    b_q = tl.load(p_q, boundary_check=(0, 1))
    b_k = tl.load(p_k, boundary_check=(0, 1))
    b_g = tl.load(p_g, boundary_check=(0, 1))
    b_a = tl.where(m_t[:, None], b_g.to(tl.float32), 0.0)
    b_last = tl.sum(b_a, axis=0)
    if MODE >= 3:
        b_b = tl.dot((o_i[None, :] <= o_i[:, None]).to(b_g.dtype), tl.where(m_t[:, None], b_g, 0.0))
    else:
        b_b = tl.cumsum(b_a, axis=0)
    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    b_dA = tl.zeros([BT, BT], dtype=tl.float32)
    b_dAT = tl.zeros([BT, BT], dtype=tl.float32)
    b_hdh = tl.zeros([BK], dtype=tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        p_do = tl.make_block_ptr(do + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        p_v = tl.make_block_ptr(v + base_v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
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
        b_dA += tl.dot(b_do, b_vT)
        b_dAT += tl.dot(b_v, b_doT)
        b_dq += tl.dot(b_do, b_hT)
        b_dk += tl.dot(b_v, b_dhT)
        b_hdh += tl.sum(b_hT.to(tl.float32) * b_dhT.to(tl.float32), axis=0)
    b_diag = tl.sum(tl.where(o_i[:, None] == o_i[None, :], b_dA, 0.0), axis=1) * scale
    b_dA = tl.where(o_i[:, None] > o_i[None, :], b_dA, 0.0) * scale
    b_dAT = tl.where(o_i[:, None] < o_i[None, :], b_dAT, 0.0) * scale
    if MODE == 0:
        b_dq = b_dq * scale + tl.dot(b_dA, b_k.to(tl.float32), input_precision=PRECISION)
        b_dk = b_dk + tl.dot(b_dAT, b_q.to(tl.float32), input_precision=PRECISION)
        b_dlog = b_q.to(tl.float32) * b_dq - b_k.to(tl.float32) * b_dk + b_hdh[None, :]
        b_dq += b_diag[:, None] * b_k.to(tl.float32)
        b_dk += b_diag[:, None] * b_q.to(tl.float32)
    else:
        b_dq *= tl.exp(b_b) * scale
        b_dk *= tl.exp(tl.where(m_t[:, None], b_last[None, :] - b_b, 0.0))
        b_kdk = b_k.to(tl.float32) * b_dk
        if MODE == 4:
            b_before = tl.dot((o_i[None, :] < o_i[:, None]).to(tl.float32), b_kdk, input_precision="tf32x3")
        else:
            b_before = tl.cumsum(b_kdk, axis=0) - b_kdk
        b_tail = tl.exp(b_last)[None, :] * b_hdh[None, :] + b_before
        if MODE == 1:
            bc = _rows_per_subchunk(b_b, BT, BC, BK, 75.0)
            b_dq_intra = _dq_intra(b_dA, b_k, b_b, o_i, bc, BT, PRECISION)
            b_dk_intra = _dk_intra(b_dAT, b_q, b_b, o_i, bc, BT, PRECISION)
        else:
            # the first row's log decay as a vector, the last row's is b_last: no row extraction by reductions
            b_b0 = tl.load(g + ((bos + i_t * BT) * H + i_h) * K + o_k, mask=o_k < K, other=0.0).to(tl.float32)
            b_rel = b_b - b_b0[None, :]
            if tl.max(b_rel) - tl.min(b_rel) <= 75.0:
                b_kr = b_k * tl.exp(-b_rel)
                b_dq_intra = tl.dot(b_dA, b_kr, input_precision=PRECISION) * tl.exp(b_rel)
                b_rel_last = b_last - b_b0
                b_qr = b_q * tl.exp(b_rel - b_rel_last[None, :])
                b_dk_intra = tl.dot(b_dAT, b_qr, input_precision=PRECISION) * tl.exp(b_rel_last[None, :] - b_rel)
            else:
                bc = _rows_per_subchunk(b_b, BT, BC, BK, 75.0)
                b_dq_intra = _dq_intra(b_dA, b_k, b_b, o_i, bc, BT, PRECISION)
                b_dk_intra = _dk_intra(b_dAT, b_q, b_b, o_i, bc, BT, PRECISION)
        b_dlog = b_q.to(tl.float32) * (b_dq + b_dq_intra) - b_k.to(tl.float32) * b_dk_intra
        if MODE == 4:
            b_dlog = tl.dot((o_i[None, :] >= o_i[:, None]).to(tl.float32), b_dlog, input_precision="tf32x3") + b_tail
        else:
            b_dlog = tl.cumsum(b_dlog, axis=0, reverse=True) + b_tail
        b_dq += b_dq_intra + b_diag[:, None] * b_k.to(tl.float32)
        b_dk += b_dk_intra + b_diag[:, None] * b_q.to(tl.float32)
    p_dg = tl.make_block_ptr(dg + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    p_dq = tl.make_block_ptr(dq + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    p_dk = tl.make_block_ptr(dk + base_k, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    tl.store(p_dg, b_dlog.to(p_dg.dtype.element_ty), boundary_check=(0, 1))
    tl.store(p_dq, b_dq.to(p_dq.dtype.element_ty), boundary_check=(0, 1))
    tl.store(p_dk, b_dk.to(p_dk.dtype.element_ty), boundary_check=(0, 1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(parser)
    args = parser.parse_args()
    B, T, H, K, V, device, dtype = probe_shape(args, smoke=(1, 128, 1))
    precision = "tf32x3" if args.smoke else "tf32"
    BT, BC = 64, 16
    NT = T // BT
    kernels = load(ROOT / "specs" / "gla.yaml").kernels
    torch.manual_seed(0)
    q, k, v, do = (torch.randn(B, T, H, K, device=device, dtype=dtype) for _ in range(4))
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, K, device=device)).to(dtype)
    h, dh = (torch.randn(B, NT, H, K, V, device=device, dtype=dtype) * 0.1 for _ in range(2))
    dq, dk = torch.empty_like(q), torch.empty_like(k)
    dg = torch.empty(B, T, H, K, device=device, dtype=torch.float32)
    scale = K ** -0.5
    probe = Probe(args.smoke, B=B, T=T, H=H, K=K, V=V)
    tokens = B * T * H
    # q, k, v, do, g read; dq, dk (bf16) and dg (fp32) written; h, dh read
    nbytes = tokens * (4 * K + 2 * K + K) * 2 + tokens * K * 4 + 2 * B * NT * H * K * V * 2

    def record(label, fn, check=None):
        probe.record(label, fn, nbytes, check)

    def generated(BK, BV, warps, stages):
        kernels.chunk_bwd_dqkg_kernel[(triton.cdiv(K, BK), NT, B * H)](
            q, k, v, g, h, do, dh, dq, dk, dg, None, None, scale, T, NT, B * T, H=H, HK=H, K=K, V=V, BT=BT, BC=BC,
            BK=BK, BV=BV, IS_VARLEN=False, SPAN_LIMIT=75.0, DOT_PRECISION=precision,
            INTRA_GRAD_DOT_PRECISION=precision, num_warps=warps, num_stages=stages)

    configs = [(64, 64, 8, 1), (64, 64, 4, 2), (64, 128, 8, 2), (64, 64, 8, 2), (64, 128, 4, 2), (128, 64, 8, 1)]
    for c in configs[:1] if args.smoke else configs:
        record(f"generated {c}", lambda c=c: generated(*c))
    generated(64, 64, 8, 1)
    reference = [x.clone() for x in (dq, dk, dg)]

    def against_generated():
        return {name: relative_error(x, ref) for name, x, ref in zip(("dq", "dk", "dg"), (dq, dk, dg), reference)}

    names = {0: "no gate (lower bound)", 1: "as generated", 2: "row-free", 3: "row-free, cumsum by product",
             4: "row-free, all cumsums by products"}
    for BK, BV, warps, stages in ((64, 64, 8, 1),) if args.smoke else ((64, 64, 8, 1), (64, 64, 4, 2)):
        for mode in names:
            def run(mode=mode, BK=BK, BV=BV, warps=warps, stages=stages):
                probe_dqkg[(triton.cdiv(K, BK), NT, B * H)](
                    q, k, v, g, h, do, dh, dq, dk, dg, scale, T, NT, H=H, K=K, V=V, BT=BT, BC=BC, BK=BK, BV=BV,
                    MODE=mode, PRECISION=precision, num_warps=warps, num_stages=stages)
            record(f"probe {names[mode]} {(BK, BV, warps, stages)}", run,
                   check=None if mode == 0 else (lambda run=run: (run(), against_generated())[1]))
    probe.write(f"bwd-probe-T{T}")


if __name__ == "__main__":
    main()
