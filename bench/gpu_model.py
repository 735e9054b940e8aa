"""Generated Layers in a model: eager against torch.compile(fullgraph=True), training step time, on one GPU.

A stack of LAYERS generated Layers (pre-norm residual blocks with an MLP) per spec, bf16 autocast, one training step
(forward, backward) on x [B, T, D]. fullgraph=True makes any graph break an error, so finishing at all shows the
custom ops trace; outputs and gradients are compared with eager. Prints a table and writes
DIR/model-<device>-<date>.json.

usage: python bench/gpu_model.py [--specs gla,retnet,linear_attn] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linattn_gen import load
from linattn_gen.bench import environment
from linattn_gen.check import relative_error

ROOT = Path(__file__).resolve().parents[1]


class Block(nn.Module):
    def __init__(self, layer_cls, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.mixer = layer_cls(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim, bias=False), nn.GELU(), nn.Linear(4 * dim, dim, bias=False))

    def forward(self, x):
        y, _ = self.mixer(self.norm1(x))
        x = x + y
        return x + self.mlp(self.norm2(x))


def step_time(fn, x, repeats: int) -> float:
    """Median seconds of one forward + backward."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        started = time.perf_counter()
        fn(x).float().square().mean().backward()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--specs", default="gla,retnet,linear_attn")
    parser.add_argument("--shape", default="4,2048,1024", help="B,T,D")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    B, T, D = (int(x) for x in args.shape.split(","))
    rows = []
    for name in args.specs.split(","):
        torch._dynamo.reset()
        torch.manual_seed(0)
        module = load(ROOT / "specs" / f"{name}.yaml")
        model = nn.Sequential(*[Block(module.Layer, D, args.heads) for _ in range(args.layers)]).cuda()
        x = torch.randn(B, T, D, device="cuda")

        def eager(x):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return model(x)

        compiled_model = torch.compile(model, fullgraph=True)

        def compiled(x):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return compiled_model(x)

        results, first_call_s = [], []
        for fn in (eager, compiled):  # the compiled model's first call traces and compiles it
            model.zero_grad()
            started = time.perf_counter()
            out = fn(x)
            out.float().square().mean().backward()
            torch.cuda.synchronize()
            first_call_s.append(time.perf_counter() - started)
            results.append((out.detach().float(), [p.grad.detach().clone() for p in model.parameters()]))
        output_error = relative_error(results[1][0], results[0][0])
        grad_error = max(relative_error(a, b) for a, b in zip(results[1][1], results[0][1]))
        step_time(compiled, x, 2)  # warm-up: a recompile on the second call, if any
        eager_s, compiled_s = step_time(eager, x, args.repeats), step_time(compiled, x, args.repeats)
        row = {"spec": name, "B": B, "T": T, "D": D, "heads": args.heads, "layers": args.layers,
               "eager_ms": eager_s * 1e3, "compiled_ms": compiled_s * 1e3, "speedup": eager_s / compiled_s,
               "output_rel_error": output_error, "grad_rel_error": grad_error, "compiled_first_call_s": first_call_s[1],
               "fullgraph": True}
        rows.append(row)
        print(f"{name:<12} eager {row['eager_ms']:7.2f} ms  compiled {row['compiled_ms']:7.2f} ms  "
              f"x{row['speedup']:.2f}  out err {output_error:.1e}  grad err {grad_error:.1e}", flush=True)
    meta = environment()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"model-{meta['device'].replace(' ', '-')}-{meta['date']}.json"
    path.write_text(json.dumps({**meta, "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
