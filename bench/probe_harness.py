"""What the GPU probe scripts (`gpu_fwd_probe.py`, `gpu_bwd_probe.py`, `gpu_fwd_persistent.py`, `gpu_fwd_stride.py`)
share: time a variant (do_bench's median on the GPU; one plain call under the interpreter with --smoke), record it
against the time its bytes need at the measured copy bandwidth, with its error against the generated kernels where it
computes the same thing, and write the rows as JSON under $OUT."""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

import torch
from triton.testing import do_bench

from linattn_gen.bench import environment, measure_ceilings


def _errors(err) -> str:
    """One relative error, or several by name ({"dq": ..., "dk": ...})."""
    if isinstance(err, dict):
        return ", ".join(f"{name} {value:.1e}" for name, value in err.items())
    return f"{err:.1e}"


def add_shape_arguments(parser) -> None:
    """--T and --smoke, which every probe script takes (see probe_shape)."""
    parser.add_argument("--T", type=int, default=2048, help="sequence length; B = 16K tokens / T (default 2048)")
    parser.add_argument("--smoke", action="store_true",
                        help="run every step once on the CPU under the Triton interpreter at a toy size (float32): "
                             "checks the script, not the speed")


def probe_shape(args, smoke: tuple) -> tuple:
    """(B, T, H, K, V, device, dtype): the performance issue's workload on the GPU (B * T = 16K tokens, H = 16,
    K = V = 128, bf16), or with --smoke the script's toy (B, T, H) on the CPU in float32."""
    if args.smoke:
        B, T, H = smoke
        return B, T, H, 128, 128, "cpu", torch.float32
    return 16384 // args.T, args.T, 16, 128, 128, "cuda", torch.bfloat16


class Probe:
    def __init__(self, smoke: bool, **shape):
        self.smoke = smoke
        self.copy_tbps = 1.0 if smoke else measure_ceilings()[0]
        self.result = {"environment": {"device": "cpu (smoke)"} if smoke else environment(), **shape,
                       "copy_tbps": self.copy_tbps, "rows": []}

    def timed(self, fn) -> float:
        if self.smoke:  # the script's steps, not their speed
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e3
        return do_bench(fn, warmup=10, rep=50, return_mode="median")

    def record(self, label: str, fn, nbytes: int, check=None, kernel: str | None = None) -> float | None:
        """Time fn, print and keep its row; `check()` runs it once more and returns its relative error against the
        generated kernels. A variant that fails (one this GPU cannot compile) is kept as a row with its error."""
        name = f"{kernel:6} {label:48}" if kernel else f"{label:60}"
        row = {"kernel": kernel} if kernel else {}
        try:
            ms = self.timed(fn)
        except Exception as err:  # noqa: BLE001 - a variant this GPU cannot compile is data
            where = traceback.extract_tb(err.__traceback__)[-1]
            print(f"{name} failed: {type(err).__name__}: {str(err)[:200]} ({where.filename}:{where.lineno})",
                  flush=True)
            self.result["rows"].append({**row, "label": label, "error": str(err)[:300],
                                        "raised_at": f"{where.filename}:{where.lineno}"})
            return None
        row.update(label=label, ms=ms, bytes_ms=nbytes / self.copy_tbps / 1e9)
        if check is not None:
            row["relerr_vs_generated"] = check()
        self.result["rows"].append(row)
        print(f"{name} {ms:7.3f} ms  {ms / row['bytes_ms']:5.2f}x its bytes"
              + (f"  relerr {_errors(row['relerr_vs_generated'])}" if check is not None else ""), flush=True)
        return ms

    def write(self, stem: str) -> Path:
        out = Path(os.environ.get("OUT", "/tmp/out"))
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{stem}.json"
        path.write_text(json.dumps(self.result, indent=1))
        print(f"wrote {path}")
        return path
