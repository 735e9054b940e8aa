"""One GPU pass over the features the CPU tests cover under the interpreter, plus decode timing.

Correctness (compiled kernels, not the interpreter):
  - chunk and recurrent against the float64 reference, every shipped spec, fp32 and bf16;
  - the gate gradient under hard decay (gates near exp(-15) per step);
  - packed batches (cu_seqlens) against one call per sequence;
  - grouped heads against repeated heads.
Timing: one decode step (recurrent, T = 1, fp32 state) against the time to read and write the state once, with fla's
fused recurrent kernels side by side, over batch sizes.

usage: python bench/gpu_features.py [--out DIR] [--quick] [--specs a,b] [--skip correctness,packed,decode,recurrent]
       [--jobs N]; writes DIR/features-<device>-<date>.json.
On the GPU each spec's checks run in a child process with CUDA_LAUNCH_BLOCKING=1: a kernel that faults fails its own
spec with the faulting launch in its traceback, instead of poisoning the CUDA context for every later check.
--jobs runs that many specs' children at once: their time is mostly Triton compiling, on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linattn_gen import load
from linattn_gen.bench import environment, measure_ceilings
from linattn_gen.interpret import recurrence_of
from linattn_gen.plan import plan_chunked
from linattn_gen.check import as_chunk, check_grouped_heads, check_op, check_packed_batch, random_inputs

SPECS = ["gla", "retnet", "linear_attn", "mamba2", "lightning", "hgrn2", "katharopoulos", "rwkv6", "based", "gla2d"]
TOL = {"float32": 1e-3, "bfloat16": 1e-2}
SELF_TOL = {"float32": 1e-4, "bfloat16": 1e-2}  # the same kernels on both sides


def spec(name: str) -> Path:
    return Path(__file__).resolve().parents[1] / "specs" / f"{name}.yaml"


class Report:
    def __init__(self):
        self.rows = []

    def add(self, kind, name, op, dtype, errors, tol, **extra):
        worst = max(errors.values()) if errors else float("nan")
        ok = bool(errors) and worst <= tol
        self.rows.append({"kind": kind, "spec": name, "op": op, "dtype": dtype, "max_error": worst, "tol": tol,
                          "ok": ok, "errors": errors, **extra})
        print(f"{'ok  ' if ok else 'FAIL'} {kind:<12} {name:<12} {op:<9} {dtype:<8} max err {worst:.2e} (tol {tol:g})"
              f" {extra if extra else ''}", flush=True)

    def failure(self, kind, name, op, dtype, err):
        self.rows.append({"kind": kind, "spec": name, "op": op, "dtype": dtype, "ok": False, "error": repr(err)})
        print(f"FAIL {kind:<12} {name:<12} {op:<9} {dtype:<8} {err!r}", flush=True)
        traceback.print_exc()


def key_size(name: str, K: int) -> int:
    """K for a spec's checks: an expanding feature map (Based's taylor2, 1 + K + K^2 features) takes its own small K."""
    features = plan_chunked(recurrence_of(spec(name))).features
    return K if features is None else min(features.key_sizes)


def correctness(report: Report, modules, quick: bool, device: str, specs, packed: bool = True,
                ops=("chunk", "recurrent")):
    # bf16 arithmetic is wrong in the interpreter: only fp32 there
    dtypes = {"float32": torch.float32} if device == "cpu" else {"float32": torch.float32, "bfloat16": torch.bfloat16}
    small = device == "cpu"  # the interpreter: a smoke run of this script, tiny shapes
    B, T, H, K, V = (1, 40, 2, 16, 16) if small else (2, 300, 2, 128, 128) if quick else (2, 1000, 4, 128, 128)
    for name in specs:
        for dname, dtype in dtypes.items():
            for op in ops:
                try:
                    target = as_chunk(modules[name], op)
                    shape = (B, T, H, key_size(name, K), V) if op == "chunk" else (B, min(T, 300), H, key_size(name, K), V)
                    result = check_op(target, spec(name), *shape, dtype=dtype, device=device, seed=1,
                                      reference_slice=(1, 2))
                    report.add("reference", name, op, dname, result.errors, TOL[dname], shape=list(shape))
                except Exception as err:  # noqa: BLE001 - keep going: one report for the whole pass
                    report.failure("reference", name, op, dname, err)
    for name in [name for name in ("gla", "mamba2", "gla2d") if name in specs]:
        for op in ops:
            for T_hard in (1, 70):
                try:
                    target = as_chunk(modules[name], op)
                    result = check_op(target, spec(name), 1, T_hard, 2, K, V, dtype=torch.float32, device=device,
                                      gate_scale=20.0, seed=2)
                    report.add("hard_decay", name, op, "float32", result.errors, TOL["float32"], T=T_hard)
                except Exception as err:  # noqa: BLE001 - recorded in the report, the pass goes on
                    report.failure("hard_decay", name, op, "float32", err)
    lengths = [5, 0, 20] if small else [37, 64, 1, 90] if quick else [37, 64, 1, 90, 1000, 0, 513]
    for name in specs if packed else ():
        for dname, dtype in dtypes.items():
            for op in ops:
                try:
                    errors = check_packed_batch(modules[name], spec(name), op, lengths, H, key_size(name, K), V, dtype=dtype,
                                                device=device, seed=3)
                    report.add("packed", name, op, dname, errors, SELF_TOL[dname], lengths=lengths)
                except Exception as err:  # noqa: BLE001 - recorded in the report, the pass goes on
                    report.failure("packed", name, op, dname, err)
                try:
                    errors = check_grouped_heads(modules[name], spec(name), op, B, min(T, 300), 2, 4, key_size(name, K),
                                                 V, dtype=dtype,
                                                 device=device, seed=4)
                    report.add("grouped", name, op, dname, errors, SELF_TOL[dname], HK=2, groups=4)
                except Exception as err:  # noqa: BLE001 - recorded in the report, the pass goes on
                    report.failure("grouped", name, op, dname, err)


def _checks_in_child(name: str, quick: bool, skip: set) -> list:
    with tempfile.NamedTemporaryFile(suffix=".json") as rows:
        command = ([sys.executable, __file__, "--specs", name, "--rows", rows.name] + (["--quick"] if quick else [])
                   + (["--skip", ",".join(sorted(skip))] if skip else []))
        done = subprocess.run(command, env={**os.environ, "CUDA_LAUNCH_BLOCKING": "1"}, check=False)
        text = Path(rows.name).read_text()
    if done.returncode != 0 or not text:
        row = {"kind": "process", "spec": name, "ok": False, "error": f"checks exited with status {done.returncode}"}
        print(f"FAIL process      {name:<12} exited with status {done.returncode}", flush=True)
        return [row]
    return json.loads(text)


def _fla_decode(name):
    """fla's fused recurrent kernel for the spec, as fn(q, k, v, gates, state) -> (o, state); or (None, reason)."""
    try:
        if name == "gla":
            from fla.ops.gla import fused_recurrent_gla

            return (lambda q, k, v, g, s: fused_recurrent_gla(q, k, v, gk=g, initial_state=s,
                                                              output_final_state=True)), "fused_recurrent_gla"
        if name == "retnet":
            from fla.ops.simple_gla import fused_recurrent_simple_gla

            def retnet(q, k, v, g, s):
                H = q.shape[2]
                gamma = torch.tensor([math.log(1 - 2 ** (-5 - h)) for h in range(H)], device=q.device)
                return fused_recurrent_simple_gla(q, k, v, g_gamma=gamma, initial_state=s, output_final_state=True)

            return retnet, "fused_recurrent_simple_gla(g_gamma)"
        if name == "linear_attn":
            from fla.ops.linear_attn import fused_recurrent_linear_attn

            return (lambda q, k, v, g, s: fused_recurrent_linear_attn(q, k, v, initial_state=s, output_final_state=True,
                                                                      normalize=False)), "fused_recurrent_linear_attn"
    except ImportError as err:
        return None, f"fla not installed ({err})"
    return None, "no fla counterpart"


def decode(report_rows: list, modules, copy_tbps: float, batches):
    from triton.testing import do_bench, do_bench_cudagraph

    H, K, V = 16, 128, 128
    for name in ("gla", "retnet", "linear_attn"):
        fla_fn, fla_note = _fla_decode(name)
        for B in batches:
            inputs, _ = random_inputs(spec(name), B, 1, H, K, V, dtype=torch.bfloat16, device="cuda", seed=5)
            state = torch.randn(B, H, K, V, device="cuda")
            ours = lambda: modules[name].recurrent(*inputs, initial_state=state, output_final_state=True)
            floor_us = 2 * B * H * K * V * 4 / (copy_tbps * 1e12) * 1e6
            row = {"spec": name, "B": B, "H": H, "K": K, "V": V, "floor_us": floor_us}
            with torch.no_grad():
                row["ours_eager_us"] = do_bench(ours, return_mode="median") * 1e3
                row["ours_graph_us"] = do_bench_cudagraph(ours, return_mode="median") * 1e3
                if fla_fn is not None:
                    gates = inputs[3] if len(inputs) > 3 else None
                    q, k, v = inputs[:3]
                    try:
                        fla_call = lambda: fla_fn(q, k, v, gates, state)
                        row["fla_eager_us"] = do_bench(fla_call, return_mode="median") * 1e3
                        row["fla_graph_us"] = do_bench_cudagraph(fla_call, return_mode="median") * 1e3
                    except Exception as err:  # noqa: BLE001 - recorded in the report, the pass goes on
                        row["fla_error"] = repr(err)
            row["fla"] = fla_note
            report_rows.append(row)
            print(f"decode {name:<12} B={B:<4} floor {floor_us:7.1f} us  ours {row['ours_graph_us']:7.1f} us "
                  f"(graph) {row['ours_eager_us']:7.1f} us (eager)  fla {row.get('fla_graph_us', float('nan')):7.1f}"
                  f" us (graph) {row.get('fla_eager_us', float('nan')):7.1f} us (eager)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--quick", action="store_true", help="smaller shapes and fewer batch sizes")
    parser.add_argument("--skip", default="",
                        help="comma list of parts to skip: correctness, packed (packed batches and grouped heads), decode, "
                             "recurrent (check chunk only)")
    parser.add_argument("--jobs", type=int, default=1, help="specs checked at once, each in its own process")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run of the checks under TRITON_INTERPRET=1")
    parser.add_argument("--specs", default=",".join(SPECS), help="comma list of specs to check")
    parser.add_argument("--rows", help=argparse.SUPPRESS)  # child process: write the check rows here and stop
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    specs = args.specs.split(",")
    ops = ("chunk",) if "recurrent" in skip else ("chunk", "recurrent")
    started = time.time()
    modules = {name: load(spec(name)) for name in SPECS}
    if args.rows:
        report = Report()
        correctness(report, modules, args.quick, args.device, specs, packed="packed" not in skip, ops=ops)
        Path(args.rows).write_text(json.dumps(report.rows))
        return
    if args.device == "cpu":  # a smoke run of the script itself: no timing
        import datetime

        meta, copy_tbps, mm_tflops = {"device": "cpu", "date": datetime.date.today().isoformat()}, None, None
        skip.add("decode")
    else:
        meta = environment()
        copy_tbps, mm_tflops = measure_ceilings()
    report = Report()
    decode_rows = []
    if "correctness" not in skip and args.device == "cpu":
        correctness(report, modules, args.quick, args.device, specs, packed="packed" not in skip, ops=ops)
    elif "correctness" not in skip:
        child_skip = skip & {"packed", "recurrent"}
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for rows in pool.map(lambda name: _checks_in_child(name, args.quick, child_skip), specs):
                report.rows += rows
    if "decode" not in skip:
        decode(decode_rows, modules, copy_tbps, [1, 8, 32] if args.quick else [1, 4, 16, 32, 64, 128])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"features-{meta['device'].replace(' ', '-')}-{meta['date']}.json"
    path.write_text(json.dumps({**meta, "copy_tbps": copy_tbps, "mm_tflops": mm_tflops,
                                "seconds": time.time() - started, "checks": report.rows, "decode": decode_rows},
                               indent=1))
    failed = [r for r in report.rows if not r["ok"]]
    print(f"{len(report.rows) - len(failed)}/{len(report.rows)} checks passed; wrote {path}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
