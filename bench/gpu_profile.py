"""Where a spec's forward+backward goes, CUDA kernel by kernel (PyTorch's own kernels included), at one shape.

usage: python bench/gpu_profile.py SPEC... [--shape B,T,H,K,V] [--bonus]; writes $OUT/profile.json.
`bench/sweep.py` does this for GLA's five kernels at a fixed shape; this one is for any spec, and shows the host-side
PyTorch work (copies, reductions, autograd's own kernels) that a spec's `ops` does around the generated kernels.
--bonus also times, forward+backward, three ways to form RWKV-6's bonus weight (q_t . (u * k_t)) at the shape.
"""

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import torch
from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linattn_gen.check import random_inputs  # noqa: E402
from linattn_gen.loader import load  # noqa: E402


def profile(spec, B, T, H, K, V, calls=5):
    module = load(spec)
    inputs, _ = random_inputs(spec, B, T, H, K, V, dtype=torch.bfloat16, device="cuda", seed=0)
    leaves = [x.to(torch.bfloat16).detach().requires_grad_() for x in inputs]
    do = torch.randn(B, T, H, V, device="cuda", dtype=torch.bfloat16)

    def fwdbwd():
        for x in leaves:
            x.grad = None
        module.chunk(*leaves)[0].backward(do)

    fwdbwd()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fwdbwd()
        torch.cuda.synchronize()
    per_kernel, count = defaultdict(float), defaultdict(int)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[event.name[:90]] += event.device_time_total / calls / 1000
            count[event.name[:90]] += 1
    rows = sorted(per_kernel.items(), key=lambda kv: -kv[1])
    total = sum(per_kernel.values())
    print(f"{spec} B={B} T={T} H={H} K={K} V={V}: kernels {total:.3f} ms per forward+backward, "
          f"do_bench {do_bench(fwdbwd, return_mode='median'):.3f} ms", flush=True)
    for name, ms in rows[:14]:
        print(f"  {ms:7.3f} ms  x{count[name] // calls:<3} {name}", flush=True)
    return {"kernels_ms": total, "per_kernel_ms": {n: round(ms, 4) for n, ms in rows},
            "launches": {n: count[n] // calls for n, _ in rows}}


def bonus_alternatives(B, T, H, K):
    q, b = (torch.randn(B, T, H, K, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    ways = {
        "einsum (bf16, fp32 accumulation)": lambda: torch.einsum("bthk,bthk->bth", q, b),
        "mul then sum(dtype=float32)": lambda: (q * b).sum(-1, dtype=torch.float32),
        "float32 copies, mul, sum": lambda: (q.float() * b.float()).sum(-1),
    }
    out = {}
    for name, fn in ways.items():
        grad = torch.randn(B, T, H, device="cuda", dtype=fn().dtype)
        out[name] = {"fwd_ms": do_bench(fn, return_mode="median"),
                     "fwdbwd_ms": do_bench(lambda: fn().backward(grad), grad_to_none=[q, b], return_mode="median")}
        print(f"  bonus weight, {name:<34} fwd {out[name]['fwd_ms']:.3f} ms, fwd+bwd {out[name]['fwdbwd_ms']:.3f} ms",
              flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="+")
    parser.add_argument("--shape", default="4,4096,16,128,128", help="B,T,H,K,V (K = 16 is used for taylor2 specs)")
    parser.add_argument("--bonus", action="store_true", help="also time ways to form RWKV-6's bonus weight")
    args = parser.parse_args()
    B, T, H, K, V = (int(x) for x in args.shape.split(","))
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "profiles": {}}
    for spec in args.specs:
        k = 16 if "based" in spec else K
        result["profiles"][spec] = profile(spec, B, T, H, k, V)
    if args.bonus:
        result["bonus_weight"] = bonus_alternatives(B, T, H, K)
    path = Path(os.environ.get("OUT", "/tmp")) / "profile.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
