"""Host time against GPU time per call, ours and fla's, where a forward+backward's kernels take under a millisecond.

`do_bench` (the bench's timer) flushes L2 before every call and times each call alone, so where the host needs
longer to issue a call's kernels than the GPU needs to run them, it times the host. Run 11 found linear attention's
and RetNet's forward+backward up to 1.9x slower than run 9 with unchanged kernels, and the profiler's kernel sum
(0.556 ms at T = 2048) well under do_bench's 0.926. This script measures, per op and shape:
- host_ms: the host's time to issue one call, taken while the GPU is held busy by a long sleep kernel queued first,
  so that nothing the host does waits on the GPU (a call that synchronizes would show the sleep: flagged);
- kernels_ms: the CUDA kernels' summed time (profiler);
- do_bench_ms: the bench's median;
- back_to_back_ms: 30 calls in a row between two events, per call (the host's issue overlaps the GPU's work);
- the host's top functions by own time (cProfile) for ours.

usage: python bench/gpu_host_overhead.py [--launch-only] [--cache-on-off]; writes $OUT/host-overhead.json
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

import torch
from triton.testing import do_bench

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from linattn_gen import load  # noqa: E402
from linattn_gen.bench import _baseline, environment  # noqa: E402
from linattn_gen.check import random_inputs  # noqa: E402
from linattn_gen.interpret import recurrence_of  # noqa: E402
from linattn_gen.plan import plan_chunked  # noqa: E402

CALLS = 30
SLEEP_CYCLES = 1_000_000_000  # about 0.5 s at the H200's clock: longer than issuing CALLS calls


def host_ms(fn):
    torch.cuda.synchronize()
    torch.cuda._sleep(SLEEP_CYCLES)
    start = time.perf_counter()
    for _ in range(CALLS):
        fn()
    issued = time.perf_counter() - start
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    # issuing took most of the wall time: a call waited on the GPU (the sleep), so this is not host time
    return issued / CALLS * 1e3, issued > 0.8 * total


def back_to_back_ms(fn):
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(CALLS):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / CALLS


def kernels_ms(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
    return sum(e.device_time_total for e in prof.events()
               if e.device_type == torch.autograd.DeviceType.CUDA) / 5 / 1000


def _inputs(spec, B, T, H=16, K=128, V=128):
    """The spec's path, its generated module and bf16 inputs at the shape, on the GPU."""
    path = ROOT / "specs" / f"{spec}.yaml"
    inputs, _ = random_inputs(path, B, T, H, K, V, dtype=torch.bfloat16, device="cuda", seed=0)
    return path, load(path), [x.to(torch.bfloat16) for x in inputs]


def _calls(fn, inputs):
    """fn's inference forward and its forward+backward (with a fixed random cotangent), as argument-free calls; fn
    maps the spec's inputs to o."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    with torch.no_grad():
        do = torch.randn_like(fn(*inputs))

    def fwdbwd():
        for x in leaves:
            x.grad = None
        fn(*leaves).backward(do)

    def fwd():
        with torch.no_grad():
            fn(*inputs)

    return fwd, fwdbwd


def launch_paths(rows):
    """Host time of one output-pass launch through Triton's JIT entry (`kernel[grid](...)`, which binds and
    specializes every argument and looks up its cache on each call) against the compiled kernel it returns, launched
    directly (`compiled[grid](*args)`): what a launch cache in the generated ops would save per launch."""
    module = load(ROOT / "specs" / "gla.yaml")
    B, T, H, K, V, BT = 8, 2048, 16, 128, 128, 64
    NT = T // BT
    q, k, v = (torch.randn(B, T, H, K, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, K, device="cuda")).to(torch.bfloat16)
    h = q.new_zeros(B, NT, H, K, V)
    o = torch.empty_like(v)
    kernel = module.kernels.chunk_fwd_o_kernel
    grid = (1, NT, B * H)
    constexprs = dict(H=H, HK=H, K=K, V=V, BT=BT, BC=16, BK=K, BV=V, IS_VARLEN=False, SPAN_LIMIT=75.0,
                      DOT_PRECISION="tf32")
    args = (q, k, v, g, h, o, None, None, K ** -0.5, T, NT)

    def jit_entry():
        kernel[grid](*args, **constexprs, num_warps=4, num_stages=2)

    compiled = kernel[grid](*args, **constexprs, num_warps=4, num_stages=2)
    params = [p.name for p in kernel.params]
    bound = dict(zip(params, args)) | constexprs
    values = [bound[name] for name in params]
    runner = compiled[grid]

    def direct():
        runner(*values)

    row = {"op": "gla chunk_fwd_o_kernel launch", "impl": "host only", "B": B, "T": T}
    for name, call in (("jit_entry", jit_entry), ("compiled_direct", direct)):
        row[f"{name}_host_ms"], row[f"{name}_host_waited"] = host_ms(call)
    rows.append(row)
    print(f"one fwd_o launch, host: Triton's JIT entry {row['jit_entry_host_ms'] * 1e3:.1f} us, the compiled kernel "
          f"launched directly {row['compiled_direct_host_ms'] * 1e3:.1f} us", flush=True)


def cache_on_off(rows):
    """The same calls in one process with the generated ops' launch cache on and off (each _CachedLaunch's `cached`
    flag), interleaved twice: host time and do_bench per call, forward and forward+backward."""
    for spec, B, T in (("linear_attn", 8, 2048), ("retnet", 8, 2048), ("gla", 8, 2048), ("gla", 1, 16384)):
        _, module, inputs = _inputs(spec, B, T)
        launchers = [x for x in vars(module.ops).values() if isinstance(x, module.ops._CachedLaunch)]
        fwd, fwdbwd = _calls(lambda *xs: module.chunk(*xs)[0], inputs)
        best = {}
        for _ in range(2):
            for cached in (True, False):
                for launcher in launchers:
                    launcher.cached = cached
                for name, call in (("fwd", fwd), ("fwdbwd", fwdbwd)):
                    call()
                    host, _ = host_ms(call)
                    timed = do_bench(call, warmup=25, rep=100, return_mode="median")
                    best_host, best_timed = best.get((name, cached), (float("inf"), float("inf")))
                    best[(name, cached)] = (min(best_host, host), min(best_timed, timed))
        row = {"op": spec, "impl": "linattn_gen, launch cache on/off", "B": B, "T": T}
        for (name, cached), (host, timed) in best.items():
            row[f"{name}_{'cache' if cached else 'entry'}_host_ms"] = host
            row[f"{name}_{'cache' if cached else 'entry'}_do_bench_ms"] = timed
        rows.append(row)
        print(f"{spec:12} B={B} T={T}: " + "; ".join(
            f"{name} host {row[f'{name}_cache_host_ms']:.3f} cached / {row[f'{name}_entry_host_ms']:.3f} entry, "
            f"do_bench {row[f'{name}_cache_do_bench_ms']:.3f} / {row[f'{name}_entry_do_bench_ms']:.3f}"
            for name in ("fwd", "fwdbwd")), flush=True)


def main():
    rows = []
    if "--cache-on-off" in sys.argv:
        cache_on_off(rows)
    launch_paths(rows)
    shapes = (("linear_attn", 8, 2048), ("linear_attn", 2, 8192), ("retnet", 8, 2048), ("retnet", 2, 8192),
              ("gla", 8, 2048))
    # --launch-only and --cache-on-off: the per-op host and kernel times below are not taken
    for spec, B, T in shapes if not {"--launch-only", "--cache-on-off"} & set(sys.argv) else ():
        path, module, inputs = _inputs(spec, B, T)
        fla_fn, _ = _baseline("fla", plan_chunked(recurrence_of(path)), module)
        for impl, fn in (("linattn_gen", lambda *xs: module.chunk(*xs)[0]), ("fla", fla_fn)):
            if fn is None:
                continue
            fwd, fwdbwd = _calls(fn, inputs)
            fwdbwd()
            fwd()
            row = {"op": spec, "impl": impl, "B": B, "T": T}
            for name, call in (("fwd", fwd), ("fwdbwd", fwdbwd)):
                row[f"{name}_host_ms"], row[f"{name}_host_waited"] = host_ms(call)
                row[f"{name}_kernels_ms"] = kernels_ms(call)
                row[f"{name}_do_bench_ms"] = do_bench(call, warmup=25, rep=100, return_mode="median")
                row[f"{name}_back_to_back_ms"] = back_to_back_ms(call)
            if impl == "linattn_gen":
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(CALLS):
                    fwdbwd()
                profiler.disable()
                torch.cuda.synchronize()
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
                row["host_profile"] = text.getvalue()[-3000:]
            rows.append(row)
            print(f"{spec:12} {impl:12} B={B} T={T}: " + ", ".join(
                f"{name} host {row[f'{name}_host_ms']:.3f}{' (waited)' if row[f'{name}_host_waited'] else ''} "
                f"kernels {row[f'{name}_kernels_ms']:.3f} do_bench {row[f'{name}_do_bench_ms']:.3f} "
                f"back-to-back {row[f'{name}_back_to_back_ms']:.3f}" for name in ("fwd", "fwdbwd")), flush=True)
    print(next((row["host_profile"] for row in rows if "host_profile" in row), ""))
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "host-overhead.json").write_text(json.dumps({"environment": environment(), "rows": rows}, indent=1))
    print(f"wrote {out / 'host-overhead.json'}")


if __name__ == "__main__":
    main()
