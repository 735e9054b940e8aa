"""The `linattn-gen` command line: compile writes packages, every command has help, check runs on the CPU."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from helpers import spec_path

from linattn_gen import __version__
from linattn_gen.cli import main


def test_compile_writes_package(tmp_path):
    result = CliRunner().invoke(main, ["compile", str(spec_path("gla")), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    kernels = (tmp_path / "gla" / "kernels.py").read_text()
    assert kernels.startswith(f"# generated from {spec_path('gla')} ")
    assert "@triton.jit" in kernels
    # GLA's plan has the Gluon output pass (gluon_kernels.py, for sm_90)
    assert sorted(p.name for p in (tmp_path / "gla").iterdir()) == ["__init__.py", "gluon_kernels.py", "kernels.py",
                                                                     "layer.py", "ops.py"]
    for name in ("__init__.py", "ops.py", "gluon_kernels.py"):
        assert (tmp_path / "gla" / name).read_text().startswith("# generated from")
    assert f"-> {tmp_path / 'gla'}/" in result.stdout


def test_compile_several_specs(tmp_path):
    specs = [str(spec_path(name)) for name in ("gla", "retnet", "linear_attn")]
    result = CliRunner().invoke(main, ["compile", *specs, "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gla", "linear_attn", "retnet"]


@pytest.mark.parametrize("command", [[], ["compile"], ["check"], ["bench"], ["profile"], ["mqar"]],
                         ids=["main", "compile", "check", "bench", "profile", "mqar"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(command, flag):
    result = CliRunner().invoke(main, [*command, flag])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage:")


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


def test_compile_needs_a_spec():
    result = CliRunner().invoke(main, ["compile"])
    assert result.exit_code == 2 and "Missing argument" in result.stderr


def test_check_on_cpu():
    result = CliRunner().invoke(main, ["check", str(spec_path("linear_attn")), "--shape", "1,20,1,16,32",
                                       "--dtype", "float32,float16", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "all checks within tolerance" in result.stdout
    assert result.stdout.count("linear_attn.yaml") == 2  # one row per dtype


def test_check_with_bounds_on_cpu(monkeypatch):
    """--bounds runs the same check with every kernel access confined to its launch's tensors; a kernel that reads
    past a tensor is reported as a failed check (exit 1), not a traceback."""
    args = ["check", str(spec_path("gla")), "--shape", "1,70,1,16,32", "--device", "cpu", "--bounds"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "all checks within tolerance" in result.stdout

    import triton
    import triton.language as tl

    from linattn_gen import check as check_module

    @triton.jit
    def copy_block(x, y, N: tl.constexpr):
        offsets = tl.arange(0, N)
        tl.store(y + offsets, tl.load(x + offsets))

    def overrunning_check(*_, **__):  # stands in for a generated op whose kernel reads 6 elements past its input
        copy_block[(1,)](torch.randn(10), torch.empty(16), N=16)

    monkeypatch.setattr(check_module, "check_op", overrunning_check)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "FAIL out of bounds: copy_block: load of 6 element(s)" in result.stdout


def test_bounds_needs_the_interpreter():
    result = CliRunner().invoke(main, ["check", str(spec_path("gla")), "--device", "cuda", "--bounds"])
    assert result.exit_code == 2 and "--device cpu" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without a GPU gets")
@pytest.mark.parametrize("command", ["bench", "profile"])
def test_gpu_commands_say_they_need_a_gpu(command):
    result = CliRunner().invoke(main, [command, str(spec_path("gla"))])
    assert result.exit_code == 1 and f"{command} needs a CUDA GPU" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback


def test_profile_rejects_a_malformed_shape():
    result = CliRunner().invoke(main, ["profile", str(spec_path("gla")), "--shape", "4,4096,16"])
    assert result.exit_code == 2 and "--shape" in result.output and "B,T,H,K,V" in result.output


def test_profile_reports_a_shape_the_op_refuses_without_a_traceback(monkeypatch):
    from linattn_gen import bench as bench_mod

    def refuse(spec, *args):
        raise ValueError("K must be 16 or 32 for taylor2 features, got 128")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench_mod, "environment", lambda: {"device": "Fake GPU"})
    monkeypatch.setattr(bench_mod, "profile_spec", refuse)
    result = CliRunner().invoke(main, ["profile", str(spec_path("based"))])
    assert result.exit_code == 1 and "based.yaml: K must be 16 or 32" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_profile_prints_kernels_and_launch_configs_and_writes_json(monkeypatch, tmp_path):
    import json

    from linattn_gen import bench as bench_mod

    def profiled(spec, *args):
        return {"kernels_ms": 1.5, "fwdbwd_ms": 1.6, "per_kernel_ms": {"chunk_bwd_dqkg_kernel": 1.0, "chunk_fwd_o": 0.5},
                "launches": {"chunk_bwd_dqkg_kernel": 1, "chunk_fwd_o": 1},
                "launch_configs": {"fwd_o": [128, 128, 4, 2], "bwd_dqkg": [64, 64, 8, 1]}}

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench_mod, "environment", lambda: {"device": "Fake GPU"})
    monkeypatch.setattr(bench_mod, "profile_spec", profiled)
    result = CliRunner().invoke(main, ["profile", str(spec_path("gla")), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "1.000 ms  x1   chunk_bwd_dqkg_kernel" in result.output
    assert "fwd_o (128, 128, 4, 2), bwd_dqkg (64, 64, 8, 1)" in result.output
    (path,) = tmp_path.glob("profile-Fake-GPU-*.json")
    profile = json.loads(path.read_text())["profiles"][str(spec_path("gla"))]
    assert profile["launch_configs"]["bwd_dqkg"] == [64, 64, 8, 1]
