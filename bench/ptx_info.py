"""Registers, spills and shared memory of every chunk kernel a spec launches, compiled ahead of time for Hopper
(sm_90a) on a machine without a GPU: what `ptxas -v` says of each launch config, and how many blocks of it one SM
can hold. A config that spills, or whose blocks leave an SM half empty, shows here before any device time is spent;
so does one whose shared memory no H100/H200 has (227 KiB per block).

The launches are the ones `chunk` makes (forward and backward, the planner's launch table, tuning off), captured
from a run under the Triton interpreter at K = V = 128 in a child process; this process compiles the same kernels for
the GPU target with the captured argument types and constants. `--force` also captures launches the planner's rules
keep off (the carried forward).

usage: python bench/ptx_info.py SPEC... [--dtype bfloat16] [--force carried] [--sass] [--json PATH]
       python bench/ptx_info.py --fwd-o-probes 0,3,13 [--maxnreg 168] [--sass]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_PER_SM = 228 * 1024  # H100/H200: 228 KiB per SM, of which one block may use 227
REGISTERS_PER_SM = 65536
MAX_BLOCKS_PER_SM = 32


def capture(spec: str, dtype: str, force: list[str]) -> list[dict]:
    """Run in the child: forward and backward of `chunk` under the interpreter, recording every kernel launch."""
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ["LINATTN_GEN_AUTOTUNE"] = "0"
    import torch

    sys.path.insert(0, str(ROOT))
    from linattn_gen import load
    from linattn_gen.bench import record_launches
    from linattn_gen.check import random_inputs

    module = load(ROOT / spec)
    # the interpreter has no bf16 arithmetic in every op: a bf16 run is captured in fp16, whose tensors are exactly the
    # ones in the input dtype, and reported as bf16
    run_dtype = "float16" if dtype == "bfloat16" else dtype

    def describe(x):
        if isinstance(x, torch.Tensor):
            name = str(x.dtype).replace("torch.", "")
            return {"tensor": dtype if name == run_dtype else name, "aligned": x.data_ptr() % 16 == 0}
        return {"value": x}

    recorded = record_launches(module)
    if "carried" in force and hasattr(module.ops, "_carries_states"):
        module.ops._carries_states = lambda *args: True
    K = 16 if "based" in spec else 128
    inputs, h0 = random_inputs(ROOT / spec, 1, 130, 2, K, 128, dtype=getattr(torch, run_dtype), seed=0)
    inputs = [x.to(getattr(torch, run_dtype)) for x in inputs]
    leaves = [x.clone().requires_grad_() for x in inputs]
    o, _ = module.chunk(*leaves, initial_state=h0, output_final_state=True)
    o.float().sum().backward()
    launches = [{"kernel": launch.kernel, "args": [describe(a) for a in launch.args],
                 "kwargs": {k: describe(v) for k, v in launch.kwargs.items()}} for launch in recorded]
    unique, seen = [], set()
    for launch in launches:
        key = json.dumps(launch, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(launch)
    return unique


TYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "int32": "i32", "int64": "i64"}


# SASS instruction classes that tell where a kernel's issue slots go: tensor-core products, exponentials (MUFU),
# barriers, shared-memory traffic, spills (STL/LDL: local memory), shuffles, global loads and stores
SASS_CLASSES = ("HGMMA", "MUFU", "BAR", "LDS", "LDSM", "STS", "STL", "LDL", "SHFL", "LDG", "STG", "FMUL", "FADD", "FFMA")


def sass_counts(cubin: bytes) -> dict:
    """How many SASS instructions of each class (SASS_CLASSES, and the total) a compiled kernel holds, from
    Triton's own nvdisasm: static counts, so a branch that never runs counts too."""
    import triton

    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        text = subprocess.run([str(nvdisasm), "-c", str(path)], capture_output=True, text=True, check=True).stdout
    counts = dict.fromkeys(SASS_CLASSES, 0)
    total = 0
    for line in text.splitlines():
        # "/*0120*/  @!P0 LDG.E.128 R4, desc[UR6][R2.64] ;": the opcode follows the address and any predicate
        match = re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
        if match:
            total += 1
            if match.group(1) in counts:
                counts[match.group(1)] += 1
    return {"total": total, **counts}


def compile_launch(fn, launch: dict, ptxas: str, sass: bool = False) -> dict:
    """Compile the Triton function `fn` for one described launch ({"kernel", "args", "kwargs"}, as `capture` records
    them) and report what ptxas and Triton say of it."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    params = fn.params
    bound = dict(zip([p.name for p in params], launch["args"]))
    kwargs = dict(launch["kwargs"])
    warps = kwargs.pop("num_warps", {"value": 4})["value"]
    stages = kwargs.pop("num_stages", {"value": 3})["value"]
    options = {"num_warps": warps, "num_stages": stages}
    cap = kwargs.pop("maxnreg", {"value": None})["value"]  # the planner's register cap, where it set one
    if cap is not None:
        options["maxnreg"] = cap
    bound.update(kwargs)
    # what Triton's JIT specializes on the GPU: a 16-byte aligned tensor and an int divisible by 16 carry
    # tt.divisibility (without it every tile load compiles to 16-bit scalar loads, and the register counts below
    # would be a different kernel's); an int equal to 1 becomes a constant
    signature, constants, attrs = {}, {}, {}
    divisible = [["tt.divisibility", 16]]
    for i, p in enumerate(params):
        arg = bound[p.name]
        if p.is_constexpr:
            signature[p.name] = "constexpr"
            constants[(i,)] = arg["value"]
        elif "tensor" in arg:
            signature[p.name] = "*" + TYPES[arg["tensor"]]
            if arg.get("aligned", True):
                attrs[(i,)] = divisible
        elif arg["value"] is None or arg["value"] == 1 and not isinstance(arg["value"], float):
            signature[p.name] = "constexpr"
            constants[(i,)] = arg["value"]
        elif isinstance(arg["value"], float):
            signature[p.name] = "fp32"
        else:
            signature[p.name] = "i32" if -2**31 <= arg["value"] < 2**31 else "i64"
            if arg["value"] % 16 == 0:
                attrs[(i,)] = divisible
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constants, attrs=attrs),
                              target=GPUTarget("cuda", 90, 32), options=options)
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "kernel.ptx"
        ptx.write_text(compiled.asm["ptx"])
        out = subprocess.run([ptxas, "-v", "--gpu-name", "sm_90a", str(ptx), "-o", str(Path(tmp) / "kernel.o")],
                             capture_output=True, text=True)
    text = out.stderr + out.stdout
    registers = int(text.split("Used ")[1].split(" registers")[0]) if "Used " in text else None
    spills = int(text.split("bytes spill stores")[0].split(",")[-1].strip()) if "spill stores" in text else 0
    shared = compiled.metadata.shared
    threads = 32 * warps
    blocks = MAX_BLOCKS_PER_SM
    if registers:
        blocks = min(blocks, REGISTERS_PER_SM // (registers * threads))
    if shared:
        blocks = min(blocks, SHARED_PER_SM // shared)
    config = {p.name: constants[(i,)] for i, p in enumerate(params) if p.name.startswith(("BK", "BV"))}
    row = {"kernel": launch["kernel"], "config": config, "num_warps": warps, "num_stages": stages, "maxnreg": cap,
           "registers": registers, "spill_store_bytes": spills, "shared_bytes": shared, "blocks_per_sm": blocks,
           "fits": shared <= 227 * 1024}
    if sass:
        row["sass"] = sass_counts(compiled.asm["cubin"])
    return row


def _sass_line(row: dict) -> str:
    """The row's SASS counts as a second, indented line ('' where --sass was not asked)."""
    if "sass" not in row:
        return ""
    return f"\n{'':<14}SASS: " + " ".join(f"{name} {count}" for name, count in row["sass"].items())


def _fwd_o_probe():
    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_fwd_probe import probe_fwd_o

    return probe_fwd_o


def _fwd_o_probe_launch(mode: int, maxnreg) -> dict:
    """probe_fwd_o's launch in gpu_fwd_probe.py at T = 2048, B = 8, H = 16, K = V = 128, bf16, (128, 128, 4, 2)."""
    tensor = {"tensor": "bfloat16", "aligned": True}
    args = [tensor] * 4 + [{"tensor": "float32", "aligned": True}, tensor, tensor,  # q, k, v, g, gcum, h, o
            {"tensor": "int32", "aligned": True}, {"tensor": "float32", "aligned": True},  # flags, bound
            {"value": 128 ** -0.5}, {"value": 2048}, {"value": 32}]  # scale, T, NT
    kwargs = {name: {"value": value} for name, value in
              dict(H=16, K=128, V=128, BT=64, BK=128, BV=128, MODE=mode, num_warps=4, num_stages=2,
                   maxnreg=maxnreg).items()}
    return {"kernel": "probe_fwd_o", "args": args, "kwargs": kwargs}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="*")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--force", default="", help="comma-separated: carried")
    parser.add_argument("--json", default=None)
    parser.add_argument("--sass", action="store_true",
                        help="also count each kernel's SASS instructions by class (tensor-core products, MUFU, "
                             "barriers, shared-memory and local-memory traffic, ...)")
    parser.add_argument("--fwd-o-probes", default="", metavar="MODES",
                        help="also compile bench/gpu_fwd_probe.py's output-pass probe in these modes (comma list, "
                             "e.g. 0,3,13) at GLA's record shape (T = 2048, (128, 128, 4, 2)), with --maxnreg if given")
    parser.add_argument("--maxnreg", type=int, default=None, help="the register cap of the --fwd-o-probes compiles")
    parser.add_argument("--capture", help=argparse.SUPPRESS)  # the child's role: SPEC, prints the launches as JSON
    args = parser.parse_args()
    force = [f for f in args.force.split(",") if f]
    if args.capture:
        print(json.dumps(capture(args.capture, args.dtype, force)))
        return
    # this process compiles for the GPU: kernels defined under the interpreter have nothing to compile (the capture
    # child sets the interpreter for itself)
    os.environ.pop("TRITON_INTERPRET", None)
    sys.path.insert(0, str(ROOT))
    from triton.backends.nvidia.compiler import get_ptxas

    from linattn_gen import load

    ptxas = get_ptxas(90).path
    rows = []
    for spec in args.specs:
        child = subprocess.run([sys.executable, __file__, "--capture", spec, "--dtype", args.dtype,
                                "--force", args.force], capture_output=True, text=True)
        if child.returncode:
            raise SystemExit(f"capturing {spec}'s launches failed:\n{child.stderr[-3000:]}")
        launches = json.loads(child.stdout.strip().splitlines()[-1])
        module = load(ROOT / spec)
        for launch in launches:
            try:
                row = compile_launch(getattr(module.kernels, launch["kernel"]), launch, ptxas, sass=args.sass)
            except Exception as err:  # noqa: BLE001 - a kernel that does not compile for the target is the finding
                row = {"kernel": launch["kernel"], "error": f"{type(err).__name__}: {str(err)[:200]}"}
            row = {"spec": Path(spec).stem, "dtype": args.dtype, **row}
            rows.append(row)
            if "error" in row:
                print(f"{row['spec']:<12} {row['kernel']:<30} ERROR {row['error']}", flush=True)
                continue
            print(f"{row['spec']:<12} {row['kernel']:<30} {str(row['config']):<44} w{row['num_warps']} "
                  f"s{row['num_stages']}  {row['registers']:>3} regs  spills {row['spill_store_bytes']:>5} B  "
                  f"smem {row['shared_bytes'] // 1024:>3} KiB  {row['blocks_per_sm']} blocks/SM"
                  + ("" if row["fits"] else "  DOES NOT FIT") + _sass_line(row), flush=True)
    for mode in [int(m) for m in args.fwd_o_probes.split(",") if m]:
        row = {"spec": "gla", "dtype": "bfloat16", "probe_mode": mode,
               **compile_launch(_fwd_o_probe(), _fwd_o_probe_launch(mode, args.maxnreg), ptxas, sass=args.sass)}
        rows.append(row)
        print(f"probe_fwd_o mode {mode:<3} maxnreg {args.maxnreg}: {row['registers']} regs  spills "
              f"{row['spill_store_bytes']} B  smem {row['shared_bytes'] // 1024} KiB" + _sass_line(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
