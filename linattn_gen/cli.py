"""The `linattn-gen` command line: compile specs, check them against the interpreter, benchmark them on a GPU."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .errors import SpecError

TOLERANCE = {"float32": 2e-3, "float16": 1e-2, "bfloat16": 1e-2}


def _report_spec_error(err: SpecError) -> None:
    source = None
    try:
        source = Path(err.path).read_text()
    except (OSError, UnicodeDecodeError):
        pass
    click.echo(err.format(source), err=True)


class _Main(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SpecError as err:
            _report_spec_error(err)
            ctx.exit(2)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="linattn-gen")
def main():
    """Compile linear-attention recurrence specs into Triton kernels and PyTorch modules."""


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out_dir", default="generated", show_default=True, type=click.Path(file_okay=False),
              help="Folder that receives one package per spec.")
def compile(specs, out_dir):
    """Compile SPECS (YAML files) into OUT_DIR/<name>/ (kernels.py, ops.py, __init__.py)."""
    from .lower import lower, write_package

    failed = False
    for spec in specs:
        try:
            package = write_package(lower(spec), out_dir)
        except SpecError as err:
            _report_spec_error(err)
            failed = True
            continue
        click.echo(f"{spec} -> {package}/")
    if failed:
        sys.exit(2)


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--shape", default="2,100,2,32,64", show_default=True, help="B,T,H,K,V of the check.")
@click.option("--dtype", "dtypes", default="float32", show_default=True,
              help="Comma-separated input dtypes (bfloat16 only on a GPU: the CPU interpreter gets bf16 math wrong).")
@click.option("--device", default=None, help="cuda or cpu (cpu runs the Triton interpreter); default: cuda if present.")
@click.option("--seeds", default=1, show_default=True, help="How many fresh random inputs per spec.")
@click.option("--bounds", is_flag=True,
              help="CPU only: also fail on any kernel load or store outside the tensors of its launch (on a GPU an "
                   "illegal-address fault or silent corruption; the plain interpreter lets it pass).")
def check(specs, shape, dtypes, device, seeds, bounds):
    """Compile SPECS and check chunk() against interpret() in float64: output, final state and every gradient."""
    import contextlib

    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if bounds and device != "cpu":
        raise click.UsageError("--bounds runs in the Triton interpreter: use it with --device cpu")
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # read when the generated kernels are decorated
    from .check import bounds_checked, check_op
    from .loader import load

    B, T, H, K, V = (int(x) for x in shape.split(","))
    failures = 0
    click.echo(f"{'spec':<28} {'dtype':<9} {'shape (B,T,H,K,V)':<22} {'max rel err':>11}  worst")
    for spec in specs:
        module = load(spec)
        for dtype_name in dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            for _ in range(seeds):
                try:
                    with bounds_checked() if bounds else contextlib.nullcontext():
                        result = check_op(module, spec, B, T, H, K, V, dtype=dtype, device=device)
                except Exception as err:
                    overrun = _out_of_bounds(err)
                    if overrun is None:
                        raise
                    failures += 1
                    click.echo(f"{spec:<28} {dtype_name:<9} {(B, T, H, K, V)!s:<22} {'-':>11}  FAIL out of bounds: "
                               f"{overrun}")
                    continue
                worst = max(result.errors, key=result.errors.get)
                ok = result.max_error <= TOLERANCE[dtype_name]
                failures += not ok
                click.echo(f"{spec:<28} {dtype_name:<9} {(B, T, H, K, V)!s:<22} {result.max_error:>11.2e}  {worst}"
                           f"{'' if ok else '  FAIL'}")
    if failures:
        click.echo(f"{failures} check(s) over tolerance", err=True)
        sys.exit(1)
    click.echo("all checks within tolerance")


def _out_of_bounds(err: BaseException):
    """The OutOfBounds behind an error (the interpreter wraps what a kernel raises), or None."""
    from .check import OutOfBounds

    while err is not None and not isinstance(err, OutOfBounds):
        err = err.__cause__ or err.__context__
    return err


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--against", default="fla,sdpa", show_default=True, help="Comma-separated baselines: fla, sdpa, or ''.")
@click.option("--shapes", default="16384:1024,2048,4096,8192,16384,32768;H=16;K=128;V=128", show_default=True,
              help="'TOKENS:T1,T2,..;H=..;K=..;V=..' (B = TOKENS / T), or explicit 'B,T,H,K,V' tuples joined by '/'.")
@click.option("--dtype", default="bfloat16", show_default=True)
@click.option("--out", "out_dir", default="bench/results", show_default=True, type=click.Path(file_okay=False))
@click.option("--check/--no-check", default=True, show_default=True, help="Check every timed shape against interpret.")
def bench(specs, against, shapes, dtype, out_dir, check):
    """Time SPECS on the GPU against baselines; print a table, write JSON and a PNG under OUT."""
    import torch

    if not torch.cuda.is_available():
        raise click.ClickException("bench needs a CUDA GPU")
    from . import bench as bench_mod

    shape_list = _parse_shapes(shapes)
    copy_tbps, mm_tflops = bench_mod.measure_ceilings()
    meta = {**bench_mod.environment(), "copy_TBps": copy_tbps, "mm_TFLOPs": mm_tflops}
    click.echo(f"{meta['device']}: copy {copy_tbps:.2f} TB/s, bf16 matmul {mm_tflops:.0f} TFLOP/s")
    baselines = [b for b in against.split(",") if b]

    def save(row):  # every row is written as soon as it is measured, so an interrupted run keeps its results
        bench_mod.write_results([row], meta, out_dir)

    with click.progressbar(specs, label="benchmarking", file=sys.stderr) as bar:
        for spec in bar:
            try:
                bench_mod.bench_spec(spec, shape_list, baselines, getattr(torch, dtype), copy_tbps, mm_tflops,
                                     check=check, log=lambda m: click.echo(m, err=True), on_row=save)
            except ValueError as err:  # the op refuses a shape (e.g. Based's key size): say so, no traceback
                raise click.ClickException(f"{spec}: {err}") from None
    path = bench_mod.write_results([], meta, out_dir)
    all_rows = bench_mod.load_rows(path)
    png = bench_mod.plot(all_rows, path.with_suffix(".png"))
    click.echo(bench_mod.table(all_rows))
    click.echo(f"wrote {path}" + (f" and {png}" if png else ""))


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--shape", default="4,4096,16,128,128", show_default=True, help="B,T,H,K,V of the profiled call.")
@click.option("--dtype", default="bfloat16", show_default=True)
@click.option("--top", default=12, show_default=True, help="Kernels listed per spec (the JSON has all).")
@click.option("--out", "out_dir", default="bench/results", show_default=True, type=click.Path(file_okay=False))
def profile(specs, shape, dtype, top, out_dir):
    """Profile one forward+backward of each of SPECS on the GPU, CUDA kernel by kernel (PyTorch's own kernels
    included); print the largest and write JSON under OUT."""
    import datetime
    import json

    import torch

    try:
        B, T, H, K, V = (int(x) for x in shape.split(","))
    except ValueError:
        raise click.BadParameter(f"expected five integers B,T,H,K,V, got {shape!r}", param_hint="--shape") from None
    if dtype not in ("bfloat16", "float16", "float32"):
        raise click.BadParameter(f"one of bfloat16, float16, float32, got {dtype!r}", param_hint="--dtype")
    if not torch.cuda.is_available():
        raise click.ClickException("profile needs a CUDA GPU")
    from . import bench as bench_mod

    result = {**bench_mod.environment(), "shape": [B, T, H, K, V], "dtype": dtype, "profiles": {}}
    for spec in specs:
        try:
            profile = bench_mod.profile_spec(spec, B, T, H, K, V, getattr(torch, dtype))
        except ValueError as err:  # the op refuses the shape (e.g. Based's key size): say so, no traceback
            raise click.ClickException(f"{spec}: {err}") from None
        result["profiles"][spec] = profile
        click.echo(f"{spec} B={B} T={T} H={H} K={K} V={V} {dtype}: {profile['fwdbwd_ms']:.3f} ms forward+backward "
                   f"(do_bench median), kernels {profile['kernels_ms']:.3f} ms")
        for name, ms in list(profile["per_kernel_ms"].items())[:top]:
            click.echo(f"  {ms:8.3f} ms  x{profile['launches'][name]:<3} {name}")
        if profile["launch_configs"]:
            click.echo("  launch configs (BK, BV, num_warps, num_stages): " + ", ".join(
                f"{kernel} {tuple(config)}" for kernel, config in profile["launch_configs"].items()))
    path = Path(out_dir) / f"profile-{result['device'].replace(' ', '-')}-{datetime.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    click.echo(f"wrote {path}")


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--steps", default=1000, show_default=True, help="Training steps per model.")
@click.option("--seq-len", default=128, show_default=True)
@click.option("--kv-pairs", default="8,16,32", show_default=True, help="Comma-separated; one model per value.")
@click.option("--dim", default=128, show_default=True, help="Model width.")
@click.option("--layers", default=2, show_default=True)
@click.option("--heads", default=2, show_default=True, help="Heads per layer (head size = dim / heads).")
@click.option("--batch", default=64, show_default=True)
@click.option("--vocab", default=512, show_default=True)
@click.option("--lr", "lrs", default="3e-3", show_default=True,
              help="Comma-separated learning rates; each (spec, kv pairs) reports its best, as Zoology does. "
                   "One rate keeps the default run of three specs under 5 minutes on an H100/H200 (2.5 in run 8).")
@click.option("--short-conv", default=4, show_default=True,
              help="Kernel size of the Layers' causal convolution (0: none).")
@click.option("--output-norm", default="none", show_default=True,
              type=click.Choice(["none", "rms_swish", "group_norm", "spec"]),
              help="The Layers' output norm, the same for every spec; 'spec' keeps each spec's own.")
@click.option("--device", default=None, help="cuda or cpu (cpu runs the Triton interpreter: tiny runs only).")
@click.option("--out", "out_dir", default="bench/results", show_default=True, type=click.Path(file_okay=False))
def mqar(specs, steps, seq_len, kv_pairs, dim, layers, heads, batch, vocab, lrs, short_conv, output_norm, device,
         out_dir):
    """Train tiny models of SPECS on multi-query associative recall; print accuracies, write JSON and a PNG.

    Models that have not yet found the recall circuit sit at chance (loss ln(vocab / 2)) and then drop sharply; when
    that happens depends on the learning rate, so every (spec, kv pairs) is trained at each rate and keeps its best."""
    import datetime
    import json

    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    from .loader import load
    from .mqar import plot_recall, train_recall

    try:
        rates = [float(x) for x in lrs.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {lrs!r}", param_hint="--lr") from None
    best = {}
    jobs = [(spec, int(n), lr) for spec in specs for n in kv_pairs.split(",") for lr in rates]
    with click.progressbar(jobs, label="training", file=sys.stderr) as bar:
        for spec, n, lr in bar:
            result = train_recall(load(spec), Path(spec).stem, kv_pairs=n, seq_len=seq_len, dim=dim, layers=layers,
                                  heads=heads, steps=steps, batch=batch, vocab=vocab, lr=lr, device=device,
                                  short_conv=short_conv, output_norm=None if output_norm == "spec" else output_norm)
            click.echo(f"  {result.spec} kv {n} lr {lr:g}: accuracy {result.accuracy:.3f}", err=True)
            if (spec, n) not in best or result.accuracy > best[spec, n][1].accuracy:
                best[spec, n] = (lr, result)
    click.echo(f"{'spec':<14} {'kv pairs':>8} {'accuracy':>9} {'final loss':>11} {'best lr':>8}")
    for lr, r in best.values():
        click.echo(f"{r.spec:<14} {r.kv_pairs:>8} {r.accuracy:>9.3f} {r.final_loss:>11.3f} {lr:>8g}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"mqar-{device.split(':')[0]}-{datetime.date.today().isoformat()}"
    settings = dict(steps=steps, seq_len=seq_len, dim=dim, layers=layers, heads=heads, batch=batch, vocab=vocab,
                    lrs=rates, short_conv=short_conv, output_norm=output_norm, device=device)
    rows = [{"spec": r.spec, "kv_pairs": r.kv_pairs, "accuracy": r.accuracy, "final_loss": r.final_loss, "lr": lr}
            for lr, r in best.values()]
    stem.with_suffix(".json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
    drew = plot_recall([r for _, r in best.values()], stem.with_suffix(".png"))
    click.echo(f"wrote {stem}.json" + (f" and {stem}.png" if drew else ""))


def _parse_shapes(text: str) -> list[tuple[int, ...]]:
    if ":" not in text:
        return [tuple(int(x) for x in item.split(",")) for item in text.split("/")]
    head, *opts = text.split(";")
    tokens, lengths = head.split(":")
    dims = dict(opt.split("=") for opt in opts)
    H, K, V = int(dims.get("H", 16)), int(dims.get("K", 128)), int(dims.get("V", 128))
    return [(max(1, int(tokens) // int(T)), int(T), H, K, V) for T in lengths.split(",")]


if __name__ == "__main__":
    main()
