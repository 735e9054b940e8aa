"""A/B of the carried forward on the GPU: the state carried through the chunks in registers
(`chunk_fwd_carried_kernel`) against the materialized forward (`fwd_h` then `fwd_o`), for inference (no autograd)
and for training (forward+backward; the carried pass then stores the chunk states too), at the shapes of the
performance issue where the carried kernel's programs, B * H * V / BV, fill the GPU or come close. Both carried
passes are checked against the float64 reference on the first sequence and two heads. The JSON is rewritten after
every row, so a run cut short keeps what it measured.

usage: python bench/gpu_carried.py [--specs gla,retnet,linear_attn] [--lengths 1024,2048,4096] [--out DIR]
writes DIR/carried-<device>-<date>.json. --device cpu: a smoke run of the same steps under TRITON_INTERPRET=1 at
toy sizes (the timings mean nothing there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from linattn_gen import interpret, load
from linattn_gen.bench import environment
from linattn_gen.check import check_op, random_inputs, relative_error

def median_ms(fn, device):
    if device == "cpu":
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    from triton.testing import do_bench

    return do_bench(fn, return_mode="median")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--specs", default="gla,retnet,linear_attn")
    parser.add_argument("--lengths", default="1024,2048,4096")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
        H, K, V, TOKENS, dtype = 2, 32, 32, 256, torch.float32  # the interpreter's bf16 arithmetic is wrong
    else:
        H, K, V, TOKENS, dtype = 16, 128, 128, 16384, torch.bfloat16
    meta = environment() if args.device == "cuda" else {"device": "cpu", "date": time.strftime("%Y-%m-%d")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"carried-{meta['device'].replace(' ', '-')}-{meta['date']}.json"
    rows = []
    for name in args.specs.split(","):
        spec = ROOT / "specs" / f"{name}.yaml"
        module = load(spec)
        for T in (int(t) for t in args.lengths.split(",")):
            B = max(1, TOKENS // T)
            inputs, _ = random_inputs(spec, B, T, H, K, V, dtype=dtype, device=args.device, seed=0)
            _, BV, _, _ = module.ops._launch("fwd_carried", K, V)
            row = {"spec": name, "B": B, "T": T, "H": H, "K": K, "V": V, "carried_programs": B * H * (V // BV),
                   "sms": torch.cuda.get_device_properties(0).multi_processor_count if args.device == "cuda" else 0}
            outputs = {}
            leaves = [x.clone().requires_grad_() for x in inputs]
            do = torch.randn_like(inputs[2])
            for label, carries in (("carried", True), ("materialized", False)):
                module.ops._carries_states = lambda *a, carries=carries: carries

                def forward():
                    with torch.no_grad():
                        return module.chunk(*inputs)[0]

                def forward_backward():
                    for x in leaves:
                        x.grad = None
                    module.chunk(*leaves)[0].backward(do)

                outputs[label] = forward()
                row[label] = {"fwd_ms": median_ms(forward, args.device),
                              "fwdbwd_ms": median_ms(forward_backward, args.device)}
            # inference output against the float64 reference; the training pass (states stored on the way) with
            # every gradient by check_op, both on the first sequence and two heads
            module.ops._carries_states = lambda *a: True
            head = [x[:1, :, :2].double() for x in inputs]
            reference, _ = interpret(spec, *head, num_heads=H)
            row["carried"]["relerr"] = relative_error(outputs["carried"][:1, :, :2], reference)
            row["carried"]["fwdbwd_errors"] = check_op(module, spec, B, T, H, K, V, dtype=dtype, device=args.device,
                                                       seed=1, reference_slice=(1, 2)).errors
            row["carried_vs_materialized"] = relative_error(outputs["carried"], outputs["materialized"])
            rows.append(row)
            path.write_text(json.dumps({**meta, "rows": rows}, indent=1))
            worst = max(row["carried"]["fwdbwd_errors"].values())
            print(f"{name:<12} T={T:<6} B={B:<3} programs {row['carried_programs']:<4}: fwd carried "
                  f"{row['carried']['fwd_ms']:.3f} / materialized {row['materialized']['fwd_ms']:.3f} ms, f+b "
                  f"carried {row['carried']['fwdbwd_ms']:.3f} / materialized {row['materialized']['fwdbwd_ms']:.3f}"
                  f" ms; carried relerr fwd {row['carried']['relerr']:.1e}, f+b {worst:.1e}", flush=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
