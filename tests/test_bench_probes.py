"""The GPU probe scripts stay runnable as the generated kernels change: each one's --smoke runs every step once on
the CPU under the Triton interpreter (a toy size, float32), and every probe variant that computes what the generated
kernels compute agrees with them. (The variants without a span test are lower bounds: the smoke gives them a chunk
past the span limit on purpose, so their error is not checked.)"""

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

PROBES = {
    "gpu_fwd_probe.py": "fwd-probe-T128.json",
    "gpu_bwd_probe.py": "bwd-probe-T128.json",
    "gpu_fwd_persistent.py": "fwd-persistent-T192.json",
    "gpu_fwd_stride.py": "fwd-stride-T300.json",
    "gpu_register_caps.py": "register-caps-gla-T128.json",
}


@pytest.mark.parametrize("script", sorted(PROBES))
def test_probe_smoke_runs_and_agrees_with_the_generated_kernels(script, tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / PROBES[script]).read_text())["rows"]
    assert rows and not [row for row in rows if "error" in row]
    checked = [row for row in rows if "relerr_vs_generated" in row and "span test off" not in row["label"]]
    assert checked
    for row in checked:
        errors = row["relerr_vs_generated"]
        worst = max(errors.values()) if isinstance(errors, dict) else errors
        assert worst <= 1e-4, (row["label"], errors)


def test_gluon_output_pass_compiles_for_hopper():
    """Gluon has no interpreter, so the CPU can only compile bench/gpu_gluon_fwd.py's kernel (for sm_90a, through
    ptxas); its numbers are checked on the GPU. Every variant the GPU step times must compile, without spills."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_gluon_fwd.py"), "--compile-only"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_gluon_fwd import VARIANTS
    compiled = [line for line in done.stdout.splitlines() if ": compiled," in line]
    assert len(compiled) == len(VARIANTS), done.stdout
    for line in compiled:
        assert "0 bytes spill stores" in line, line
