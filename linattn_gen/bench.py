"""GPU benchmarks: generated ops against fla and SDPA flash, each timing paired with a correctness check.

Floors: bytes that must move (every input read once, every output written once) over the measured copy bandwidth,
and the chunk algorithm's FLOPs over the measured bf16 matmul rate; the larger is the floor.
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .check import check_op, random_inputs
from .interpret import recurrence_of
from .loader import load
from .plan import DecayForm, DecaySource, plan_chunked


@dataclass(frozen=True)
class Launch:
    """One launch of a generated module's kernel: its name in `module.ops`, its grid, arguments and keywords."""

    kernel: str
    grid: tuple
    args: tuple
    kwargs: dict


class LaunchRecorder:
    """Stands in for one of a generated module's kernels (`module.ops.<name>`): every `[grid](*args, **kwargs)`
    launches it as asked and appends a Launch to `launches` first."""

    def __init__(self, name: str, kernel, launches: list):
        self.name, self.kernel, self.launches = name, kernel, launches

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append(Launch(self.name, grid, args, kwargs))
            return self.kernel[grid](*args, **kwargs)

        return launch


def record_launches(module, names=None, assign=setattr) -> list:
    """Put a LaunchRecorder in place of each named kernel of `module.ops` (default: every `chunk_*_kernel` and the
    split state pass's scan); returns the list of Launches they fill, in launch order. `assign` may be pytest's
    monkeypatch.setattr, which puts the kernels back after the test. Tests see which kernels a call runs and with
    what grid; bench/ptx_info.py compiles those launches for the GPU; bench/gpu_register_caps.py times them alone."""
    if names is None:
        names = [name for name in dir(module.ops)
                 if name.startswith("chunk_") and name.endswith("_kernel") or name.endswith("segment_scan_kernel")]
    launches = []
    for name in names:
        assign(module.ops, name, LaunchRecorder(name, getattr(module.ops, name), launches))
    return launches


@dataclass(kw_only=True)
class Row:
    op: str
    impl: str
    B: int
    T: int
    H: int
    K: int
    V: int
    dtype: str
    fwd_ms: float | None = None
    fwdbwd_ms: float | None = None
    relerr: float | None = None
    floor_fwd_ms: float | None = None
    floor_fwdbwd_ms: float | None = None
    first_call_s: float | None = None
    note: str = ""
    errors: dict = field(default_factory=dict)
    run: str = ""  # which run of the day measured the row (a day's results file accumulates runs)
    # ours: the (BK, BV, num_warps, num_stages) each chunk kernel launched with in the timed calls (tuned or not)
    launches: dict = field(default_factory=dict)


def measure_ceilings() -> tuple[float, float]:
    """Device-to-device copy bandwidth (TB/s, bytes read + written) and bf16 matmul rate (TFLOP/s)."""
    from triton.testing import do_bench

    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    copy_ms = do_bench(lambda: dst.copy_(src), return_mode="median")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_ms = do_bench(lambda: a @ b, return_mode="median")
    return 2 * src.numel() / copy_ms / 1e9, 2 * 8192**3 / mm_ms / 1e9


def floors(B, T, H, K, V, gate_elems_per_token, elt, copy_tbps, mm_tflops, chunk=64):
    tokens = B * T * H
    fwd_bytes = tokens * (2 * K + 2 * V + gate_elems_per_token) * elt  # q, k, v, o, gate
    bwd_bytes = tokens * (4 * K + 3 * V + 2 * gate_elems_per_token) * elt  # q, k, v, do, g in; dq, dk, dv, dg out
    fwd_flops = tokens * 2 * (chunk * K / 2 + chunk * V / 2 + 2 * K * V)
    bwd_flops = 2.5 * fwd_flops

    def ms(nbytes, flops):
        return max(nbytes / copy_tbps / 1e9, flops / mm_tflops / 1e9)

    return ms(fwd_bytes, fwd_flops), ms(fwd_bytes + bwd_bytes, fwd_flops + bwd_flops)


def _time(fn, grads=None):
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, grad_to_none=grads, return_mode="median")


def _baseline(impl: str, plan, module):
    """A callable (the spec's inputs) -> o for a baseline, chosen by the plan's decay form; or a reason it is absent.

    Baselines take the kernels' operands (q, k, v, *gates): `module.ops.operands` derives them from the inputs, so a
    derived key (HGRN2's 1 - exp(g)) reaches fla as GLA's k, which is how fla runs HGRN2."""
    if impl == "fla" and plan.previous_state_output:  # RWKV: fla's kernel takes the bonus u as well
        try:
            from fla.ops.rwkv6 import chunk_rwkv6
        except ImportError as err:
            return None, f"fla not installed ({err})"
        return (lambda q, k, v, w, u: chunk_rwkv6(q, k, v, w, u)[0]), "fla.ops.rwkv6.chunk_rwkv6"
    fn, note = _baseline_of_operands(impl, plan, module)
    if fn is None:
        return None, note
    return (lambda *inputs: fn(*module.ops.operands(*inputs))), note


def _baseline_of_operands(impl: str, plan, module):
    if impl == "sdpa":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def sdpa(q, k, v, *gates):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

        return sdpa, "causal softmax attention, [B, H, T, D] layout"
    if impl == "fla":
        try:
            import fla.ops as fla_ops  # noqa: F401
        except ImportError as err:
            return None, f"fla not installed ({err})"
        if plan.value_gate_name:
            return None, "fla has no chunked kernel for a 2-D (key x value) gate"
        if plan.features is not None:  # Based: fla's chunked Taylor-feature kernel with its normaliser (K <= 16)
            from fla.ops.based import fused_chunk_based

            return (lambda q, k, v: fused_chunk_based(q, k, v, use_norm=True)), "fla.ops.based.fused_chunk_based"
        if plan.decay_form is DecayForm.SUBCHUNK:
            from fla.ops.gla import chunk_gla

            return (lambda q, k, v, g: chunk_gla(q, k, v, g)[0]), "fla.ops.gla.chunk_gla"
        if plan.decay_form is DecayForm.NONE:
            from fla.ops.linear_attn import chunk_linear_attn

            # a normaliser (Katharopoulos: o / (phi(q) . z)) is fla's normalize=True on the same feature-mapped operands
            normalize = plan.normalizer
            return ((lambda q, k, v: chunk_linear_attn(q, k, v, normalize=normalize)[0]),
                    f"chunk_linear_attn(normalize={normalize})")
        from fla.ops.simple_gla import chunk_simple_gla

        if plan.decay_source is DecaySource.PER_HEAD:
            def simple_gla_gamma(q, k, v):
                return chunk_simple_gla(q, k, v, g_gamma=module.ops.log_decay_per_head(q.shape[2], q.device))[0]

            return simple_gla_gamma, "chunk_simple_gla(g_gamma=log gamma_h)"
        return (lambda q, k, v, g: chunk_simple_gla(q, k, v, g=g)[0]), "chunk_simple_gla(g)"
    raise ValueError(f"unknown baseline '{impl}' (known: fla, sdpa)")


def bench_spec(spec_path, shapes, against, dtype, copy_tbps, mm_tflops, check=True, log=print,
               on_row=lambda row: None) -> list[Row]:
    module = load(spec_path)
    rec = recurrence_of(spec_path)
    plan = plan_chunked(rec)
    rows = []
    elt = torch.empty((), dtype=dtype).element_size()
    for B, T, H, K, V in shapes:
        gate_elems = sum({"key": K, "value": V}.get(g.shape.value, 1) for g in rec.gates)
        floor_fwd, floor_fb = floors(B, T, H, K, V, gate_elems, elt, copy_tbps, mm_tflops, plan.chunk_size)
        base = dict(op=rec.name, B=B, T=T, H=H, K=K, V=V, dtype=str(dtype).replace("torch.", ""),
                    floor_fwd_ms=floor_fwd, floor_fwdbwd_ms=floor_fb)
        inputs, _ = random_inputs(spec_path, B, T, H, K, V, dtype=dtype, device="cuda", seed=T)
        inputs = [x.to(dtype) for x in inputs]
        impls = [("linattn_gen", lambda *xs: module.chunk(*xs)[0], "")]
        for name in against:
            fn, note = _baseline(name, plan, module)
            impls.append((name, fn, note))
        for impl, fn, note in impls:
            row = Row(impl=impl, note=note, **base)
            if fn is None:
                rows.append(row)
                log(f"  {rec.name} {impl}: skipped ({note})")
                continue
            xs = inputs
            if impl == "sdpa":
                if K != V:
                    row.note = "skipped: SDPA flash needs K == V"
                    rows.append(row)
                    continue
                xs = [x.transpose(1, 2).contiguous() for x in module.ops.operands(*inputs)[:3]]
                fn = _baseline_of_operands("sdpa", plan, module)[0]
            leaves = [x.detach().clone().requires_grad_() for x in xs]
            try:
                start = time.time()
                out = fn(*leaves)
                do = torch.randn_like(out)
                out.backward(do)
                torch.cuda.synchronize()
                row.first_call_s = time.time() - start
                launched = getattr(module.ops, "LAST_LAUNCH", {}) if impl == "linattn_gen" else {}
                launched.clear()
                with torch.no_grad():
                    row.fwd_ms = _time(lambda: fn(*xs))
                row.fwdbwd_ms = _time(lambda: fn(*leaves).backward(do), grads=leaves)
                row.launches = {kernel: list(config) for kernel, config in launched.items()}
            except Exception as err:  # noqa: BLE001 - a refusing baseline (fla's Hopper guards) is recorded
                row.note = f"{note}; refused: {type(err).__name__}: {str(err)[:200]}".strip("; ")
                torch.cuda.synchronize()
                with torch.no_grad():
                    try:
                        row.fwd_ms = _time(lambda: fn(*xs))
                    except Exception as fwd_err:  # noqa: BLE001 - recorded, a refusing baseline is data
                        row.note += f"; forward refused too: {type(fwd_err).__name__}"
            if impl == "linattn_gen" and check:
                # the gates in the timed dtype too, so that the kernels checked are the ones timed
                result = check_op(module, spec_path, B, T, H, K, V, dtype=dtype, device="cuda", seed=T + 1,
                                  reference_slice=(1, min(H, 2)), gates_in_dtype=True)
                row.relerr, row.errors = result.max_error, result.errors
            rows.append(row)
            on_row(row)
            log(f"  {rec.name:<12} {impl:<12} B={B} T={T} H={H} K={K} V={V}: fwd {_fmt(row.fwd_ms)} ms, "
                f"fwd+bwd {_fmt(row.fwdbwd_ms)} ms, relerr {_fmt(row.relerr, '.1e')} {row.note}")
    return rows


def profile_spec(spec_path, B, T, H, K, V, dtype, calls=5) -> dict:
    """Where one forward+backward of the spec's chunk op goes, CUDA kernel by kernel, PyTorch's own kernels (copies,
    reductions, autograd's) included: {"kernels_ms", "fwdbwd_ms", "per_kernel_ms", "launches"}, per call, and
    "launch_configs", each chunk kernel's (BK, BV, num_warps, num_stages) in the profiled calls."""
    module = load(spec_path)
    inputs, _ = random_inputs(spec_path, B, T, H, K, V, dtype=dtype, device="cuda", seed=0)
    leaves = [x.to(dtype).detach().requires_grad_() for x in inputs]
    do = torch.randn(B, T, H, V, device="cuda", dtype=dtype)

    def fwdbwd():
        for x in leaves:
            x.grad = None
        module.chunk(*leaves)[0].backward(do)

    fwdbwd()  # compile (and tune) outside the profile
    torch.cuda.synchronize()
    launched = getattr(module.ops, "LAST_LAUNCH", {})
    launched.clear()
    per_kernel, launches = cuda_kernel_times(fwdbwd, calls)
    return {"kernels_ms": sum(per_kernel.values()), "fwdbwd_ms": _time(fwdbwd),
            "per_kernel_ms": {name: round(ms, 4) for name, ms in per_kernel.items()},
            "launches": launches,
            "launch_configs": {kernel: list(config) for kernel, config in launched.items()}}


def cuda_kernel_times(fn, calls=5) -> tuple[dict, dict]:
    """The CUDA kernels that `fn()` runs, profiled over `calls` calls (after a warm call of the caller's): ({kernel
    name: ms per call}, longest first, and {kernel name: launches per call}). Their sum is the GPU's time for one call
    whatever the host's speed, which do_bench's time is not where the host needs longer to issue the call."""
    from collections import defaultdict

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    per_kernel, launches = defaultdict(float), defaultdict(int)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[event.name[:90]] += event.device_time_total / calls / 1000
            launches[event.name[:90]] += 1
    rows = sorted(per_kernel.items(), key=lambda kv: -kv[1])
    return dict(rows), {name: launches[name] // calls for name, _ in rows}


def _fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def environment() -> dict:
    import triton

    props = torch.cuda.get_device_properties(0)
    return {"device": props.name, "sms": props.multi_processor_count, "torch": torch.__version__,
            "triton": triton.__version__, "date": datetime.date.today().isoformat()}


def write_results(rows: list[Row], meta: dict, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gpu = meta["device"].replace(" ", "-").replace("/", "-")
    path = out / f"{gpu}-{meta['date']}.json"
    new_rows = [asdict(r) for r in rows]
    if path.exists():  # runs of one day accumulate; a re-measured row replaces the old one
        keys = {_key(r) for r in new_rows}
        new_rows = [r for r in json.loads(path.read_text())["rows"] if _key(r) not in keys] + new_rows
    path.write_text(json.dumps({**meta, "rows": new_rows}, indent=1))
    return path


def _key(row: dict) -> tuple:
    return tuple(row[k] for k in ("op", "impl", "B", "T", "H", "K", "V", "dtype"))


def load_rows(path: str | Path) -> list[Row]:
    return [Row(**r) for r in json.loads(Path(path).read_text())["rows"]]


def table(rows: list[Row]) -> str:
    """Rows with ratios: baseline time over ours (>1: we are faster) and ours over the floor."""
    ours = {(r.op, r.B, r.T, r.H, r.K, r.V): r for r in rows if r.impl == "linattn_gen"}
    lines = [f"{'op':<12} {'impl':<12} {'B':>3} {'T':>6} {'K':>4} {'V':>4} {'fwd ms':>8} {'f+b ms':>8} "
             f"{'vs ours f+b':>11} {'fwd/floor':>9} {'f+b/floor':>9} {'relerr':>8}"]
    for r in rows:
        mine = ours.get((r.op, r.B, r.T, r.H, r.K, r.V))
        speed = (f"{r.fwdbwd_ms / mine.fwdbwd_ms:.2f}x" if r.impl != "linattn_gen" and mine and r.fwdbwd_ms
                 and mine.fwdbwd_ms else "")
        lines.append(
            f"{r.op:<12} {r.impl:<12} {r.B:>3} {r.T:>6} {r.K:>4} {r.V:>4} {_fmt(r.fwd_ms):>8} {_fmt(r.fwdbwd_ms):>8} "
            f"{speed:>11} {_fmt(r.fwd_ms and r.fwd_ms / r.floor_fwd_ms, '.2f'):>9} "
            f"{_fmt(r.fwdbwd_ms and r.fwdbwd_ms / r.floor_fwdbwd_ms, '.2f'):>9} {_fmt(r.relerr, '.1e'):>8}"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series: dict = {}
    for r in rows:
        if r.fwdbwd_ms and r.K == 128 and r.V == 128:
            series.setdefault((r.op, r.impl), []).append((r.T, r.B * r.T * r.H / r.fwdbwd_ms / 1e6))
    if not series:  # other head shapes only: nothing to draw against T
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for (op, impl), pts in sorted(series.items()):
        pts.sort()
        style = "-" if impl == "linattn_gen" else "--"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=f"{op} / {impl}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length T (B*T fixed)")
    ax.set_ylabel("forward+backward throughput (G head-tokens/s)")
    ax.set_title("K = V = 128, bf16")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
