"""Rebuild bench/results/<gpu>-<date>.json from the text logs of runs whose JSON was lost to a timeout.

Run 4 (12:06 UTC, 2026-11-23) printed every row but was stopped before writing its JSON; its kernels are the
committed ones. Run 5's JSON rows were measured with a state-pass block rule that was then reverted; they are kept
with a note saying so. usage: python bench/record_from_logs.py LOG... --json RUN5_JSON
"""

import argparse
import json
import re
from dataclasses import asdict

from linattn_gen.bench import Row, floors

LINE = re.compile(r"^\s+(\w+)\s+(\w+)\s+B=(\d+) T=(\d+) H=(\d+) K=(\d+) V=(\d+): fwd ([\d.-]+) ms, "
                  r"fwd\+bwd ([\d.-]+) ms, relerr ([\d.e+-]+|-) ?(.*)$")
GATE_ELEMS = {"gla": "K", "retnet": 0, "linear_attn": 0}


def parse(path, copy_tbps, mm_tflops, note):
    rows = []
    with open(path) as f:
        lines = f.read().splitlines()
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        op, impl, B, T, H, K, V, fwd, fb, err, rest = m.groups()
        B, T, H, K, V = map(int, (B, T, H, K, V))
        gate = K if GATE_ELEMS[op] == "K" else 0
        ffwd, ffb = floors(B, T, H, K, V, gate, 2, copy_tbps, mm_tflops)
        rows.append(Row(op=op, impl=impl, B=B, T=T, H=H, K=K, V=V, dtype="bfloat16",
                        fwd_ms=None if fwd == "-" else float(fwd), fwdbwd_ms=None if fb == "-" else float(fb),
                        relerr=None if err == "-" else float(err), floor_fwd_ms=ffwd, floor_fwdbwd_ms=ffb,
                        note="; ".join(x for x in (rest.strip(), note) if x)))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("logs", nargs="+")
    ap.add_argument("--json", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.json) as f:
        run5 = json.load(f)
    rows = []
    for log in args.logs:
        rows += [asdict(r) | {"run": "run4"} for r in parse(log, 3.00, 703.0, "")]
    for r in run5["rows"]:
        r["note"] = "; ".join(x for x in (r["note"], "measured with a state-pass block rule since reverted") if x)
        rows.append(r | {"run": "run5"})
    meta = {k: v for k, v in run5.items() if k != "rows"}
    meta["runs"] = {"run4": "2026-11-23 12:06 UTC, committed kernels, copy 3.00 TB/s, matmul 703 TFLOP/s",
                    "run5": "2026-11-23 12:17 UTC, state-pass value block halved below 264 programs (reverted)"}
    with open(args.out, "w") as f:
        json.dump({**meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
