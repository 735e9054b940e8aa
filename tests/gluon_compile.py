"""Compile the generated Gluon kernels for sm_90a on this machine and print what the tests check, as JSON.

    python tests/gluon_compile.py SPEC...

Run by the tests in a process of its own: Gluon has no interpreter, and a process that has run Triton kernels under
it (TRITON_INTERPRET=1, as the tests do) can leave triton.language patched with the interpreter's builder, which
then breaks Gluon's compiler. Compiles from the committed generated/ packages (tests/test_generated_up_to_date.py
keeps them equal to what the templates render)."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402
from triton.experimental.gluon._runtime import GluonASTSource  # noqa: E402

from linattn_gen.lower import lower  # noqa: E402


def _desc(shape):
    layout = gl.NVMMASharedLayout.get_default_for(shape, gl.bfloat16)
    return f"tensordesc<bf16[{shape[0]}, {shape[1]}],{layout!r}>"


def _compiled(fn, signature, constexprs, num_warps) -> dict:
    signature = {**signature, **{name: "constexpr" for name in constexprs}}
    compiled = triton.compile(GluonASTSource(fn=fn, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    ptx = compiled.asm["ptx"]
    return {"shared": compiled.metadata.shared, "wgmma": ptx.count("wgmma.mma_async"),
            "tma": ptx.count("cp.async.bulk.tensor")}


def compile_spec(spec: str) -> dict:
    plan = lower(ROOT / "specs" / f"{spec}.yaml").plan
    kernels = importlib.import_module(f"generated.{spec}.gluon_kernels")
    BT = plan.chunk_size
    out = {}
    for (K, V), config in plan.gluon_output_pass.configs.items():
        BV = config.block_v
        signature = {"q_desc": _desc([BT, K]), "k_desc": _desc([BT, K]), "g_desc": _desc([BT, K]),
                     "v_desc": _desc([BT, BV]), "h_desc": _desc([K, BV]), "o_desc": _desc([BT, BV]), "g": "*bf16",
                     "span_flag": "*i32", "scale": "fp32", "T": "i32", "NT": "i32", "n_tiles": "i32"}
        constexprs = {"H": 16, "HK": 4, "K": K, "BV": BV, "NV": V // BV, "BT": BT, "SPAN_LIMIT": 75.0,
                      "NUM_STAGES": config.num_stages, "num_warps": config.num_warps}
        out[f"output_pass {K}x{V}"] = _compiled(kernels.chunk_fwd_o_gluon_kernel, signature, constexprs,
                                                config.num_warps)
    for (K, V), config in plan.gluon_carried_forward.configs.items():
        signature = {"q_desc": _desc([BT, K]), "k_desc": _desc([BT, K]), "g_desc": _desc([BT, K]),
                     "v_desc": _desc([BT, V]), "o_desc": _desc([BT, V]), "h_desc": _desc([K, V]), "g": "*bf16",
                     "h0": "*fp32", "ht": "*fp32", "span_flag": "*i32", "scale": "fp32", "T": "i32", "NT": "i32",
                     "SEG": "i32", "NS": "i32", "H0_SEGMENTS": "i32", "H0_STEP": "i32"}
        for store_states in (False, True):
            constexprs = {"H": 16, "HK": 4, "K": K, "V": V, "BT": BT, "SPAN_LIMIT": 75.0, "USE_INITIAL_STATE": True,
                          "STORE_FINAL_STATE": True, "STORE_STATES": store_states,
                          "NUM_STAGES": config.num_stages, "num_warps": config.num_warps}
            out[f"carried {K}x{V} store_states={store_states}"] = _compiled(
                kernels.chunk_fwd_carried_gluon_kernel, signature, constexprs, config.num_warps)
    if plan.gluon_carried_forward.gluon_state_pass is not None:
        num_warps, num_stages = plan.gluon_carried_forward.gluon_state_pass
        for (K, V) in plan.gluon_carried_forward.configs:
            signature = {"k_desc": _desc([BT, K]), "g_desc": _desc([BT, K]), "v_desc": _desc([BT, V]),
                         "ends": "*fp32", "totals": "*fp32", "T": "i32", "NT": "i32", "SEG": "i32", "NS": "i32",
                         "USED": "i32"}
            constexprs = {"H": 16, "HK": 4, "K": K, "V": V, "BT": BT, "NUM_STAGES": num_stages,
                          "num_warps": num_warps}
            out[f"segment ends {K}x{V}"] = _compiled(kernels.chunk_segment_ends_gluon_kernel, signature, constexprs,
                                                     num_warps)
    return out


if __name__ == "__main__":
    print(json.dumps({spec: compile_spec(spec) for spec in sys.argv[1:]}))
