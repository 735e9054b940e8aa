"""A spec's chunk kernels (GLA by default) under register caps (`maxnreg`) and the other warp count.

A kernel that ptxas lets take 255 registers a thread fits two 4-warp blocks in an SM's 65536 registers. Does it run
faster capped so that three fit (<= 168 registers), or with 8 warps a block, at the cost of spills? Compiled for
sm_90a on the CPU as the JIT compiles it (bench/ptx_info.py), GLA's `fwd_o` at (128, 128, 4, 2) takes 255 registers
and spills; with 8 warps it spills nothing, but then one block fills the SM's registers.

Every launch of one forward+backward is recorded with its arguments (the planner's launch configs and register
caps, tuning off), then each kernel is timed alone on those arguments under each (num_warps, maxnreg), with Triton's
own count of registers and spills; after each variant every tensor argument is compared with what the planner's
launch left (the same arithmetic: the error is 0 unless the variant is wrong).

usage: python bench/gpu_register_caps.py [--spec specs/gla.yaml] [--T 2048] [--smoke];
writes $OUT/register-caps-<spec>-T<T>.json
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if "--smoke" in sys.argv:  # the interpreter is chosen before the kernels are loaded
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("LINATTN_GEN_AUTOTUNE", "0")

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from linattn_gen import load  # noqa: E402
from linattn_gen.bench import record_launches  # noqa: E402
from linattn_gen.check import random_inputs, relative_error  # noqa: E402
from probe_harness import Probe, add_shape_arguments, probe_shape  # noqa: E402

KERNELS = ("chunk_fwd_h_kernel", "chunk_fwd_o_kernel", "chunk_bwd_dh_kernel", "chunk_bwd_dqkg_kernel",
           "chunk_bwd_dv_kernel")
# register caps at the planner's warp count (None: no cap), and at the other warp count (4 <-> 8)
CAPS = (None, 232, 200, 168, 128)
OTHER_WARPS_CAPS = (None, 168, 128)


def _detached(x):
    return x.detach() if isinstance(x, torch.Tensor) else x


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="specs/gla.yaml")
    add_shape_arguments(parser)
    args = parser.parse_args()
    B, T, H, K, V, device, dtype = probe_shape(args, smoke=(1, 128, 1))
    spec = ROOT / args.spec
    module = load(spec)
    launches = record_launches(module, KERNELS)
    inputs, _ = random_inputs(spec, B, T, H, K, V, dtype=dtype, device=device, seed=0)
    # the gate in the inputs' dtype, as the bench's records take it (random_inputs draws float32 gates, which turn the
    # state passes' 0/1-triangle sums into three tf32 passes: fwd_h takes 0.28 ms instead of 0.10)
    inputs = [x.to(dtype) for x in inputs]
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    o, _ = module.chunk(*leaves)
    o.float().square().sum().backward()
    launches = [(launch.kernel, launch.grid, tuple(_detached(a) for a in launch.args),
                 {k: _detached(v) for k, v in launch.kwargs.items()}) for launch in launches]
    probe = Probe(args.smoke, spec=spec.stem, B=B, T=T, H=H, K=K, V=V)
    tokens = B * T * H
    for name, grid, call_args, kwargs in launches:
        tensors = [a for a in list(call_args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
        left = [t.clone() for t in tensors]  # what the planner's launch left in every tensor argument
        nbytes = sum(t.numel() * t.element_size() for t in tensors if t.numel() >= tokens)
        kernel = getattr(module.kernels, name)  # the Triton kernel itself, not the ops' launch cache
        planned = kwargs.get("num_warps", 4)
        variants = [(planned, cap) for cap in CAPS] + [(12 - planned, cap) for cap in OTHER_WARPS_CAPS]
        for warps, cap in variants[:2 if args.smoke else None]:
            options = dict(kwargs, num_warps=warps, maxnreg=cap)  # cap None: uncapped, whatever the planner set
            label = f"{name.removeprefix('chunk_').removesuffix('_kernel')} w{options.get('num_warps')} maxnreg {cap}"
            compiled = {}

            def run(options=options, compiled=compiled):
                compiled["kernel"] = kernel[grid](*call_args, **options)

            def check(tensors=tensors, left=left):
                return max(relative_error(t, ref) for t, ref in zip(tensors, left))

            ms = probe.record(label, run, nbytes, check=check, kernel=None)
            if ms is not None and not args.smoke:
                row = probe.result["rows"][-1]
                row.update(op=name, num_warps=options.get("num_warps"), maxnreg=cap,
                           registers=getattr(compiled.get("kernel"), "n_regs", None),
                           spills=getattr(compiled.get("kernel"), "n_spills", None))
                print(f"    {row['registers']} registers, {row['spills']} bytes spilled", flush=True)
            with torch.no_grad():  # the next variant starts from the planner's results
                for t, ref in zip(tensors, left):
                    t.copy_(ref)
    probe.write(f"register-caps-{spec.stem}-T{T}")


if __name__ == "__main__":
    main()
