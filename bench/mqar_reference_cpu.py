"""MQAR on the CPU with a float64 parallel-form recurrence in place of the Triton kernels: a study tool for the
generated Layer's parameterisation (gate initialisation, norms, convolution) without a GPU. The interpreter runs the
real kernels too slowly for a thousand training steps; this form computes the same op,
    o_t = scale * sum_{s <= t} (q_t * exp(G_t - G_s)) . k_s v_s,   G = cumsum of the log decay per step,
as one masked product per call (exp(+-G) in float64, so it stays exact up to |G| ~ 700).

It serves specs whose op is that form: q, k, v and at most a log-space gate or a constant decay, the output
`scale * (q @ S)` (no derived operands, normaliser, bonus, 2-D gate or feature expansion); others are refused.

usage: python bench/mqar_reference_cpu.py specs/gla.yaml [--gate-bias none|spec|4] [--kv-pairs 32] [--steps 1000] ...
Found with it (2026-12-01): GLA's Layer at the `linattn-gen mqar` defaults (T = 128, D = 128, 32 pairs, lr 3e-3)
reached 0.046 with PyTorch's default gate bias, as on the GPU (0.047), and 0.999 with gate_bias 4.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linattn_gen import load  # noqa: E402
from linattn_gen.interpret import recurrence_of  # noqa: E402
from linattn_gen.mqar import train_recall  # noqa: E402
from linattn_gen.plan import plan_chunked  # noqa: E402


def parallel_form(module, spec_path):
    """A drop-in for `module.chunk` (no initial state, no packing) computing the op in float64 by the parallel form."""
    plan = plan_chunked(recurrence_of(spec_path))
    unsupported = [what for what, present in (
        ("derived operands", plan.derived), ("a normaliser", plan.normalizer), ("a bonus term", plan.bonus),
        ("a 2-D gate", plan.value_gate_name), ("an expanded feature map", plan.features),
        ("an unscaled output", not plan.scaled_output)) if present]
    if unsupported:
        raise ValueError(f"{plan.name}: the parallel form here does not cover {', '.join(unsupported)}")

    def chunk(q, k, v, *gates, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None):
        if initial_state is not None or cu_seqlens is not None:
            raise ValueError("the parallel form takes neither initial_state nor cu_seqlens")
        K = q.shape[-1]
        scale = K**-0.5 if scale is None else scale
        log_decay = module.ops._log_decay_steps((q, k, v, *gates))
        q64, k64, v64 = q.double(), k.double(), v.double()
        G = torch.zeros_like(q64[..., :1]) if log_decay is None else log_decay.double().cumsum(1)
        if G.abs().max() > 700:
            raise ValueError("the decay over this sequence overflows the parallel form's exp(-G); use a shorter T")
        scores = torch.einsum("bthk,bshk->bhts", q64 * G.exp(), k64 * (-G).exp()).tril() * scale
        return torch.einsum("bhts,bshv->bthv", scores, v64).to(v.dtype), None

    return chunk


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--gate-bias", default="spec",
                    help="the Layer's gate_bias: a number, 'none' (PyTorch's default init) or 'spec' (the spec's)")
    ap.add_argument("--kv-pairs", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args(argv)
    module = load(args.spec)
    layer_module = sys.modules[module.Layer.__module__]
    layer_module.chunk = parallel_form(module, args.spec)  # the Layer's long-call op; decode calls stay on recurrent
    if args.gate_bias != "spec":
        gate_bias = None if args.gate_bias == "none" else float(args.gate_bias)
        spec_init = module.Layer.__init__

        def init(self, *a, **kw):
            spec_init(self, *a, **{**kw, "gate_bias": gate_bias})

        module.Layer.__init__ = init
    start = time.time()
    result = train_recall(module, Path(args.spec).stem, kv_pairs=args.kv_pairs, seq_len=args.seq_len, dim=args.dim,
                          layers=args.layers, heads=args.heads, steps=args.steps, batch=args.batch, vocab=args.vocab,
                          lr=args.lr, device="cpu")
    print(f"{result.spec} kv {args.kv_pairs} T {args.seq_len} D {args.dim} gate_bias {args.gate_bias} lr {args.lr:g} "
          f"steps {args.steps}: accuracy {result.accuracy:.3f}, final loss {result.final_loss:.3f} "
          f"({time.time() - start:.0f} s)")
    return result


if __name__ == "__main__":
    main()
