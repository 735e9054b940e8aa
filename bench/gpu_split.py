"""A/B of the split state pass on the GPU: forward and forward+backward with the planner's rule (as shipped), with the
state passes never split, and always split below the planner's target of programs per SM (the shipped rule with its
thresholds lowered: programs below the target, any sequence of two segments or more; this is how a spec whose plan
never splits is measured), at long T, each split variant checked against the float64 reference.

usage: python bench/gpu_split.py [--specs gla,retnet,linear_attn] [--lengths 8192,16384,32768] [--out DIR]; writes
DIR/split-<device>-<date>.json (bench/gpu_run.sh split passes SPLIT_ARGS).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from triton.testing import do_bench

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from linattn_gen import load
from linattn_gen.bench import cuda_kernel_times, environment
from linattn_gen.check import check_op, random_inputs

H, K, V, TOKENS = 16, 128, 128, 16384


def times(module, inputs):
    leaves = [x.clone().requires_grad_() for x in inputs]
    do = torch.randn_like(inputs[2])

    def forward():
        with torch.no_grad():
            module.chunk(*inputs)

    def forward_backward():
        for x in leaves:  # no gradient accumulation kernels in the profiled calls either
            x.grad = None
        o, _ = module.chunk(*leaves)
        o.backward(do)

    timed = {"fwd_ms": do_bench(forward, return_mode="median"),
             "fwdbwd_ms": do_bench(forward_backward, return_mode="median")}
    # the GPU's own time, which the host's speed does not move (the medians above are the host's time where it needs
    # longer to issue a call than the GPU to run it: Mamba-2 at T = 16K in run 14)
    for name, fn in (("fwd_kernels_ms", forward), ("fwdbwd_kernels_ms", forward_backward)):
        timed[name] = sum(cuda_kernel_times(fn)[0].values())
    return timed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--specs", default="gla,retnet,linear_attn")
    parser.add_argument("--lengths", default="8192,16384,32768")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    rows = []
    meta = environment()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"split-{meta['device'].replace(' ', '-')}-{meta['date']}.json"
    for name in args.specs.split(","):
        module = load(ROOT / "specs" / f"{name}.yaml")
        if not hasattr(module.ops, "_state_pass_segments"):
            print(f"{name}: no split state pass in its plan (StatePassSplit.exists), skipped", flush=True)
            continue
        shipped_rule = module.ops._state_pass_segments
        shipped_split = module.ops.STATE_PASS_SPLIT
        _, target, min_chunks, _ = shipped_split
        # split below the target of programs per SM, any sequence of two segments or more
        forced_split = (target, target, min_chunks, 2 * min_chunks)
        for T in (int(t) for t in args.lengths.split(",")):
            B = max(1, TOKENS // T)
            inputs, _ = random_inputs(ROOT / "specs" / f"{name}.yaml", B, T, H, K, V, dtype=torch.bfloat16,
                                      device="cuda", seed=0)
            # gates in bf16 too, as `linattn-gen bench` times them (run 10's A/B still had float32 gates)
            inputs = [x.to(torch.bfloat16) for x in inputs]
            NT = -(-T // module.ops.CHUNK_SIZE)
            row = {"spec": name, "B": B, "T": T, "H": H, "K": K, "V": V,
                   "segments_fwd_h": shipped_rule(B, H, K, V, NT, "fwd_h", torch.device("cuda")),
                   "segments_bwd_dh": shipped_rule(B, H, K, V, NT, "bwd_dh", torch.device("cuda"))}
            module.ops.STATE_PASS_SPLIT = forced_split
            row["forced_segments_fwd_h"] = shipped_rule(B, H, K, V, NT, "fwd_h", torch.device("cuda"))
            row["forced_segments_bwd_dh"] = shipped_rule(B, H, K, V, NT, "bwd_dh", torch.device("cuda"))
            for label, rule, split in (("split", shipped_rule, shipped_split), ("unsplit", lambda *a: 1, shipped_split),
                                       ("forced", shipped_rule, forced_split)):
                module.ops._state_pass_segments, module.ops.STATE_PASS_SPLIT = rule, split
                row[label] = times(module, inputs)
                # the unsplit kernels are checked by `linattn-gen bench`; the split ones here, at the same shape
                if label != "unsplit":
                    check = check_op(module, ROOT / "specs" / f"{name}.yaml", B, T, H, K, V, dtype=torch.bfloat16,
                                     device="cuda", seed=1, reference_slice=(1, 2))
                    row[label]["relerr"] = max(check.errors.values())
            module.ops._state_pass_segments, module.ops.STATE_PASS_SPLIT = shipped_rule, shipped_split
            rows.append(row)
            path.write_text(json.dumps({**meta, "rows": rows}, indent=1))  # after every row: a cut run keeps them
            print(f"{name:<12} T={T:<6} segments fwd {row['segments_fwd_h']} bwd {row['segments_bwd_dh']} (forced "
                  f"{row['forced_segments_fwd_h']}, {row['forced_segments_bwd_dh']}): shipped "
                  f"{row['split']['fwd_ms']:.3f} / {row['split']['fwdbwd_ms']:.3f} ms, unsplit "
                  f"{row['unsplit']['fwd_ms']:.3f} / {row['unsplit']['fwdbwd_ms']:.3f}, forced "
                  f"{row['forced']['fwd_ms']:.3f} / {row['forced']['fwdbwd_ms']:.3f}; kernels alone "
                  + ", ".join(f"{label} {row[label]['fwd_kernels_ms']:.3f} / {row[label]['fwdbwd_kernels_ms']:.3f}"
                              for label in ("split", "unsplit", "forced"))
                  + f"; relerr shipped {row['split']['relerr']:.1e}, forced {row['forced']['relerr']:.1e}", flush=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
