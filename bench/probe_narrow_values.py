"""Probe: which launch configs of the narrow normaliser pass (value width 16, 32 or 64) run right on the GPU.

The Katharopoulos normaliser runs the chunk kernels a second time on a value of ones NORMALIZER_WIDTH wide (64 since
this probe's first run). At width 16 with the table's configs, chunk_bwd_dv_kernel faulted on the H100 (illegal memory access; clean under the
bounds-checked interpreter), like the ptxas WGMMA miscompiles of narrow tiles noted in
../shared/notes/triton-interpreter.md. Each candidate runs in its own process (a fault poisons the CUDA context):
chunk and recurrent, fp32 and bf16, against the float64 reference, plus a packed batch and grouped heads.

usage: python bench/probe_narrow_values.py [--out DIR]   (or: --candidate NAME, in the child)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> (normaliser width, num_warps forced on every chunk kernel's (K, width) config, or None to keep the table)
# the shipped width first, then the narrower (cheaper) ones that might replace it
CANDIDATES = {"w64": (64, None), "w32": (32, None), "w32-4warps": (32, 4), "w16-4warps": (16, 4), "w16": (16, None)}


def child(name: str) -> dict:
    from linattn_gen import load
    from linattn_gen.check import as_chunk, check_grouped_heads, check_op, check_packed_batch

    width, warps = CANDIDATES[name]
    module = load(ROOT / "specs" / "katharopoulos.yaml")
    ops = module.ops
    ops.NORMALIZER_WIDTH = width
    if warps is not None:
        for kernel, table in ops.LAUNCH.items():
            if kernel != "recurrent":
                for (K, V), (bk, bv, _, stages) in list(table.items()):
                    if V == width:
                        table[(K, V)] = (bk, bv, warps, stages)
    spec = ROOT / "specs" / "katharopoulos.yaml"

    errors = {}
    for dtype in (torch.float32, torch.bfloat16):
        for op in ("chunk", "recurrent"):
            result = check_op(as_chunk(module, op), spec, 2, 300, 2, 128, 128, dtype=dtype, device="cuda", seed=1)
            errors[f"reference {op} {dtype}"] = max(result.errors.values())
            packed = check_packed_batch(module, spec, op, [37, 64, 1, 90], 2, 128, 128, dtype=dtype, device="cuda",
                                        seed=3)
            errors[f"packed {op} {dtype}"] = max(packed.values())
            grouped = check_grouped_heads(module, spec, op, 2, 200, 2, 4, 128, 128, dtype=dtype, device="cuda", seed=4)
            errors[f"grouped {op} {dtype}"] = max(grouped.values())
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    args = parser.parse_args()
    if args.candidate:
        print(json.dumps(child(args.candidate)))
        return
    results = {}
    for name in CANDIDATES:
        done = subprocess.run([sys.executable, __file__, "--candidate", name], capture_output=True, text=True,
                              env={**os.environ, "CUDA_LAUNCH_BLOCKING": "1"}, timeout=150, check=False)
        if done.returncode == 0:
            results[name] = {"ok": True, "errors": json.loads(done.stdout.strip().splitlines()[-1])}
        else:
            results[name] = {"ok": False, "error": done.stderr.strip().splitlines()[-1:]}
        print(name, json.dumps(results[name]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe-narrow-values.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
