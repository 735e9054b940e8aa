"""bench/ptx_info.py compiles kernels for the H100/H200 (sm_90a) on a machine without a GPU and reports registers,
spills, shared memory and SASS instruction counts. It must compile what Triton's JIT would: with the 16-byte
divisibility of aligned tensors, a [64, 128] bf16 tile loads in 128-bit vectors, and without it in 16-bit scalars
(every tile load of run 10's counts)."""

import json
import subprocess
import sys

from helpers import ROOT


def test_the_output_pass_probe_compiles_as_on_the_gpu(tmp_path):
    out = tmp_path / "ptx.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "ptx_info.py"), "--fwd-o-probes", "3", "--sass",
                           "--maxnreg", "200", "--json", str(out)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["kernel"] == "probe_fwd_o" and row["maxnreg"] == 200 and row["fits"]
    assert 0 < row["registers"] <= 200  # the cap reached ptxas: uncapped, this probe takes 255
    sass = row["sass"]
    assert sass["HGMMA"] > 0  # the products run on Hopper's tensor cores
    # q, k, g, h and v tiles over 128 threads: about 50 loads of 16 bytes each, not 384 of 2 bytes
    assert 0 < sass["LDG"] <= 64, sass
    assert sass["MUFU"] > 0 and sass["total"] > sass["HGMMA"] + sass["LDG"]  # the gate's exponentials
