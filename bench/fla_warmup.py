"""Run fla's baselines once, forward and backward, so that Triton's autotuner times their configs and caches the choice.

fla 0.6.0 autotunes every kernel on its first call (about four minutes per op on an H200), which does not fit next to
the timings in one device call. This script only fills the cache (with TRITON_CACHE_AUTOTUNING=1, as gpu_run.sh sets):
it can run in the background while our own correctness checks compile, and a later `linattn-gen bench --against fla`
then compiles only the chosen configs. Nothing here is timed or recorded.

usage: python bench/fla_warmup.py [--ops gla,simple_gla_gamma,simple_gla_g,linear,rwkv6] [--shapes B,T/B,T...]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

# B*T = 16K tokens at every T of the performance issue, and the variants' B=4, T=4096: fla's cumulative-sum kernels
# key their autotuning on B, the others on H, K, V and the chunk size
DEFAULT_SHAPES = "16,1024/8,2048/4,4096/2,8192/1,16384/1,32768"


def ops():
    from fla.ops.gla import chunk_gla
    from fla.ops.linear_attn import chunk_linear_attn
    from fla.ops.rwkv6 import chunk_rwkv6
    from fla.ops.simple_gla import chunk_simple_gla

    def gamma(H, device):
        return torch.tensor([math.log(1 - 2 ** (-5 - h * 5 / H)) for h in range(H)], device=device)

    return {
        "gla": lambda q, k, v, g: chunk_gla(q, k, v, g)[0],
        "simple_gla_gamma": lambda q, k, v, g: chunk_simple_gla(q, k, v, g_gamma=gamma(q.shape[2], q.device))[0],
        "simple_gla_g": lambda q, k, v, g: chunk_simple_gla(q, k, v, g=g[..., 0].contiguous())[0],
        "linear": lambda q, k, v, g: chunk_linear_attn(q, k, v, normalize=False)[0],
        "rwkv6": lambda q, k, v, g: chunk_rwkv6(q, k, v, g, torch.randn(q.shape[2], q.shape[3], device=q.device,
                                                                        dtype=q.dtype) * 0.1)[0],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", default="simple_gla_gamma,linear,simple_gla_g,rwkv6,gla")
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="B,T pairs separated by '/' (H=16, K=V=128)")
    args = parser.parse_args()
    table = ops()
    H, K, V = 16, 128, 128
    for name in args.ops.split(","):
        for shape in args.shapes.split("/"):
            B, T = (int(x) for x in shape.split(","))
            q, k, v = (torch.randn(B, T, H, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                       for d in (K, K, V))
            g = F.logsigmoid(torch.randn(B, T, H, K, device="cuda")).div(16).to(torch.bfloat16).requires_grad_()
            start = time.perf_counter()
            try:
                table[name](q, k, v, g).sum().backward()
                torch.cuda.synchronize()
                result = "ok"
            except Exception as err:  # noqa: BLE001 - fla's Hopper guard refuses some backwards: record, go on
                torch.cuda.synchronize()
                result = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
            print(f"{name:<18} B={B:<3} T={T:<6} {time.perf_counter() - start:7.1f} s  {result}", flush=True)


if __name__ == "__main__":
    main()
