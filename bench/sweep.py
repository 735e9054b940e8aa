"""Per-kernel time breakdown and a greedy launch-config sweep on the GPU; feeds the planner's launch table.

usage: python bench/sweep.py SPEC... (env SWEEP_SECONDS bounds the run; results go to $OUT/sweep.json)
Configs are (BK, BV, num_warps, num_stages). BK=32 with 4 warps is left out: ptxas miscompiles WGMMA there with
Triton 3.6 on Hopper (see ../shared/notes/triton-interpreter.md).
"""

import json
import os
import sys
import time

import torch
from triton.testing import do_bench

from linattn_gen.bench import profile_spec
from linattn_gen.check import random_inputs
from linattn_gen.loader import load

CANDIDATES = {
    "fwd_o": [(64, 128, 4, 2), (64, 128, 8, 2), (64, 64, 4, 2), (64, 128, 8, 3), (128, 128, 8, 2), (128, 64, 8, 2),
              (32, 128, 8, 2), (64, 64, 8, 1)],
    "fwd_h": [(64, 64, 4, 2), (64, 64, 8, 2), (64, 64, 4, 3), (64, 32, 4, 2), (128, 64, 8, 2), (64, 128, 8, 2),
              (128, 32, 8, 2), (64, 64, 4, 1)],
    "bwd_dqkg": [(64, 64, 4, 2), (64, 64, 8, 2), (64, 128, 8, 2), (64, 32, 4, 2), (32, 64, 8, 2), (64, 64, 4, 3),
                 (32, 128, 8, 2), (64, 64, 8, 1)],
    "bwd_dv": [(64, 64, 4, 2), (64, 64, 8, 2), (64, 128, 8, 2), (128, 64, 8, 2), (64, 32, 4, 2), (64, 64, 4, 3),
               (128, 128, 8, 2), (64, 64, 8, 1)],
    "bwd_dh": [(64, 64, 4, 2), (64, 64, 8, 2), (64, 64, 4, 3), (64, 32, 4, 2), (128, 64, 8, 2), (64, 128, 8, 2),
               (128, 32, 8, 2), (64, 64, 4, 1)],
}
FORWARD = {"fwd_o", "fwd_h"}


def main(specs):
    kernels = os.environ.get("SWEEP_KERNELS")
    candidates_by_kernel = {k: v for k, v in CANDIDATES.items() if not kernels or k in kernels.split(",")}
    deadline = time.time() + float(os.environ.get("SWEEP_SECONDS", 400))
    out = {}
    for spec in specs:
        mod = load(spec)
        ops = mod.ops
        B, T, H, K, V = 8, 2048, 16, 128, 128
        inputs, _ = random_inputs(spec, B, T, H, K, V, dtype=torch.bfloat16, device="cuda", seed=0)
        inputs = [x.to(torch.bfloat16) for x in inputs]
        leaves = [x.clone().requires_grad_() for x in inputs]
        do = torch.randn(B, T, H, V, device="cuda", dtype=torch.bfloat16)

        def fwd():
            with torch.no_grad():
                mod.chunk(*inputs)

        def fwdbwd():
            mod.chunk(*leaves)[0].backward(do)

        breakdown = profile_spec(spec, B, T, H, K, V, torch.bfloat16)["per_kernel_ms"]
        print(f"{spec}: per-kernel ms {breakdown}", flush=True)
        entry = {"breakdown_ms": breakdown, "best": {}, "timings": {}}
        for kernel, candidates in candidates_by_kernel.items():
            fn = fwd if kernel in FORWARD else fwdbwd
            timings = {}
            for cfg in candidates:
                if time.time() > deadline:
                    break
                ops.LAUNCH[kernel][(K, V)] = cfg
                try:
                    fn()
                    timings[str(cfg)] = do_bench(fn, warmup=10, rep=50, grad_to_none=leaves, return_mode="median")
                except Exception as err:
                    timings[str(cfg)] = f"failed: {type(err).__name__}: {str(err)[:120]}"
            valid = {c: t for c, t in timings.items() if isinstance(t, float)}
            if not valid:  # out of time: keep the planner's choice
                continue
            best = min(valid, key=valid.get)
            ops.LAUNCH[kernel][(K, V)] = tuple(int(x) for x in best.strip("()").split(","))
            entry["best"][kernel], entry["timings"][kernel] = best, timings
            print(f"  {kernel}: best {best} {valid.get(best, float('nan')):.3f} ms  all {timings}", flush=True)
        entry["tuned_fwd_ms"] = do_bench(fwd, return_mode="median")
        entry["tuned_fwdbwd_ms"] = do_bench(fwdbwd, grad_to_none=leaves, return_mode="median")
        print(f"  tuned: fwd {entry['tuned_fwd_ms']:.3f} ms, fwd+bwd {entry['tuned_fwdbwd_ms']:.3f} ms", flush=True)
        out[spec] = entry
    path = os.path.join(os.environ.get("OUT", "/tmp"), "sweep.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
