"""Run 9's profile of the variants: `linattn-gen profile` for several specs (K = 16 for taylor2 ones) in one JSON,
plus, with --bonus, three ways to form RWKV-6's bonus weight (q_t . (u * k_t)) timed forward+backward at the shape.

usage: python bench/gpu_profile.py SPEC... [--shape B,T,H,K,V] [--bonus]; writes $OUT/profile.json.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linattn_gen.bench import profile_spec  # noqa: E402


def profile(spec, B, T, H, K, V):
    result = profile_spec(spec, B, T, H, K, V, torch.bfloat16)
    print(f"{spec} B={B} T={T} H={H} K={K} V={V}: kernels {result['kernels_ms']:.3f} ms per forward+backward, "
          f"do_bench {result['fwdbwd_ms']:.3f} ms", flush=True)
    for name, ms in list(result["per_kernel_ms"].items())[:14]:
        print(f"  {ms:7.3f} ms  x{result['launches'][name]:<3} {name}", flush=True)
    return result


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
