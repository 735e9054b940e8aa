"""A short GPU pass for specs new since the last full `gpu_features.py` run: chunk and recurrent against the float64
reference in fp32 and bf16 at one shape per spec (no packed or grouped checks, no decode timing), in one process.

usage: python bench/gpu_quick_check.py SPEC:B,T,H,K,V ...   (e.g. gla2d:2,300,2,128,128 based:2,300,2,16,128)
prints one line per check and exits 1 if any is over its tolerance (fp32 1e-3, bf16 1e-2).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linattn_gen import load  # noqa: E402
from linattn_gen.check import as_chunk, check_op  # noqa: E402

TOL = {torch.float32: 1e-3, torch.bfloat16: 1e-2}


def main(args):
    failed = 0
    for arg in args:
        name, shape = arg.split(":")
        B, T, H, K, V = map(int, shape.split(","))
        path = Path(__file__).resolve().parents[1] / "specs" / f"{name}.yaml"
        module = load(path)
        for op in ("chunk", "recurrent"):
            for dtype in (torch.float32, torch.bfloat16):
                try:
                    result = check_op(as_chunk(module, op), path, B, T, H, K, V, dtype=dtype, device="cuda", seed=1,
                                      reference_slice=(1, 2))
                    ok = result.max_error <= TOL[dtype]
                    worst = max(result.errors, key=result.errors.get)
                    print(f"{'ok  ' if ok else 'FAIL'} {name:<8} {op:<9} {str(dtype)[6:]:<8} {B},{T},{H},{K},{V}: "
                          f"max rel err {result.max_error:.2e} ({worst})", flush=True)
                except Exception as err:  # noqa: BLE001 - one line per check, the pass goes on
                    ok = False
                    print(f"FAIL {name:<8} {op:<9} {str(dtype)[6:]:<8} {type(err).__name__}: {str(err)[:300]}", flush=True)
                failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
