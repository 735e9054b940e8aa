"""Bad specs through the CLI: exit status 2 and one `path:line:col: error: message` naming the right place.

Positions are computed from the bad file's text (the line and column of the offending token), so the tests state what
a user sees in their editor. A small deterministic mutation fuzz of the shipped specs checks that no edit of a spec
makes the compiler crash with a traceback.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner
from helpers import ROOT, SHIPPED_SPECS, spec_path

from linattn_gen.cli import main

GLA = spec_path("gla").read_text()
RWKV6 = spec_path("rwkv6").read_text()
BASED = spec_path("based").read_text()
GLA2D = spec_path("gla2d").read_text()


def compile_spec(path, out_dir):
    result = CliRunner().invoke(main, ["compile", str(path), "-o", str(out_dir)])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"the compiler crashed on {path}:\n{result.stderr}\n{result.exception!r}"
    )
    assert "Traceback" not in result.output
    return result


def position_of(text: str, needle: str, offset: int = 0) -> tuple[int, int]:
    """1-based line and column of the first `needle` in `text`, plus `offset` columns."""
    index = text.index(needle) + offset
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def edit(old: str, new: str, text: str = GLA) -> str:
    assert old in text, f"the shipped gla spec no longer contains {old!r}"
    return text.replace(old, new, 1)


# name -> (spec text, (needle, offset) locating the error, a fragment of the message)
BAD_SPECS = {
    "yaml_syntax": (edit("chunk_size: 64", "chunk_size: 64: 3"), ("64: 3", 2), "YAML syntax error"),
    "unknown_top_level_key": (edit("recurrence:", "recurence:"), ("recurence:", 0), "did you mean 'recurrence'?"),
    "wrong_type": (edit("chunk_size: 64", 'chunk_size: "abc"'), ('"abc"', 0), "hints.chunk_size must be an integer"),
    "expression_syntax": (edit("S + outer(k, v)", "S + * outer(k, v)"), ("* outer", 0),
                          "in recurrence.state: unexpected '*'"),
    "unknown_symbol": (edit("outer(k, v)", "outer(kk, v)"), ("kk", 0), "unknown symbol 'kk'"),
    "decay_kind_mismatch": (edit("kind: data_dependent", "kind: constant"), ("constant", 0),
                            "decay kind is declared 'constant'"),
    "unsupported_normalization": (GLA + "normalization: softmax\n", ("softmax", 0),
                                  "normalization 'softmax' is not supported"),
    "multi_line_expression": (edit('state: "S = exp(g) * S + outer(k, v)"', "state: |\n    S = exp(g) * S\n"
                                   "      + outer(k, vv)"), ("vv", 0), "unknown symbol 'vv'"),
    "empty_file": ("", None, "the spec is empty"),
    "derived_key_of_wrong_kind": (edit("outer(k, v)", "outer(2 * v, v)"), ("outer(2 * v", 0),
                                  "outer(a, b) needs a key-vector and a value-vector, got value-vector and value"),
    "normaliser_with_derived_value": (edit("outer(k, v)", "outer(k, 2 * v)") + "normalization: sum\n",
                                      ("normalization: sum", 15), "normalization: sum needs the value in outer(k, v) to be an input"),
    "elu_in_a_decay": (edit("S = exp(g) * S", "S = elu(g) * S"), ("elu(g)", 0), "elu() cannot appear in a decay"),
    "derived_key_uses_the_head_index": (edit("outer(k, v)", "outer(h * k, v)"), ("h * k", 0),
                                        "'h' cannot appear in a derived key"),
    "derived_key_reads_the_state": (edit("outer(k, v)", "outer(exp(S), v)"), ("exp(S)", 0),
                                    "exp() of the state is not a linear recurrence"),
    "per_head_input_outside_the_bonus": (edit('outer(k, v)"', 'outer(u * k, v)"', RWKV6), ("u: [H, K]", 0),
                                         "input 'u' is [H, K], the same at every step: it may appear only in the "
                                         "bonus key"),
    "bonus_with_another_value": (edit("outer(u * k, v)", "outer(u * k, 2 * v)", RWKV6), ("S_prev + outer", 0),
                                 "with the v of the state update's outer(k, v)"),
    "previous_state_with_normaliser": (RWKV6 + "normalization: sum\n", ("normalization: sum", 15),
                                       "normalization: sum with an output that reads S_prev is not supported yet"),
    "previous_state_needs_no_decay_at_gate_zero": (edit("S = exp(w) * S", "S = exp(w - 1) * S", RWKV6),
                                                   ("scale * (q @ (S_prev", 0),
                                                   "needs a decay that is 1 where the gate is 0"),
    "short_conv_of_one": (edit("output_norm: rms_swish", "output_norm: rms_swish\n  short_conv: 1"), ("short_conv: 1", 12),
                          "layer.short_conv must be 0 (none) or a kernel size >= 2"),
    "gate_bias_not_a_number": (edit("gate_bias: 4", "gate_bias: open"), ("gate_bias: open", 11),
                               "layer.gate_bias must be a number"),
    "gate_bias_infinite": (edit("gate_bias: 4", "gate_bias: .inf"), ("gate_bias: .inf", 11),
                           "layer.gate_bias must be finite"),
    "gate_bias_without_a_gate": (edit("layer:\n", "layer:\n  gate_bias: 4\n", spec_path("linear_attn").read_text()),
                                 ("gate_bias: 4", 0), "layer.gate_bias is set but the recurrence has no gate input"),
    "per_head_input_of_value_size": (edit("u: [H, K]", "u: [H, V]", RWKV6), ("[H, V]", 0),
                                     "or [H, K] (a per-head parameter"),
    "taylor2_on_the_query_only": (edit("outer(taylor2(k), v)", "outer(k, v)", BASED), ("outer(k, v)", 6),
                                  "taylor2() must expand both the query and the key"),
    "taylor2_of_an_expression": (edit("taylor2(q)", "taylor2(2 * q)", BASED), ("2 * q", 0),
                                 "taylor2() must be applied to a [B, T, H, K] input by name"),
    "taylor2_inside_arithmetic": (edit("taylor2(q) @ S", "(2 * taylor2(q)) @ S", BASED), ("2 * taylor2(q)", 0),
                                  "an expanded feature vector (taylor2(x)) may only be the whole query"),
    "taylor2_of_the_value": (edit("outer(taylor2(k), v)", "outer(taylor2(k), taylor2(v))", BASED), ("taylor2(v)", 0),
                             "taylor2() expands a key-vector, got a value-vector"),
    "taylor2_with_a_decay": (edit("kind: none", "kind: constant", edit("S = S +", "S = 0.5 * S +", BASED)),
                             ("0.5 * S", 0), "taylor2() feature maps with a decay are not supported yet"),
    "value_decay_alone": (edit("S = exp(g) * exp(f) * S", "S = exp(f) * S", GLA2D), ("exp(f) * S", 0),
                          "a decay along the value dim alone is not supported yet"),
    "two_dimensional_decay_declared_per_key": (edit("\n  gate: key_value", "\n  gate: key", GLA2D), ("\n  gate: key", 9),
                                               "decay gate is declared 'key' but the decay's gate is key_value"),
    "key_value_declared_for_a_key_decay": (edit("gate: key", "gate: key_value"), ("gate: key_value", 6),
                                           "decay gate is declared 'key_value' but the decay's gate is key"),
    "two_dimensional_decay_that_does_not_factor": (
        edit("exp(g) * exp(f) * S", "(outer(exp(g), exp(f)) + outer(exp(2 * g), exp(2 * f))) * S", GLA2D),
        ("(outer(exp(g)", 1), "must factor as D(g) * D(f)"),
    "two_dimensional_decay_with_two_key_gates": (
        edit("exp(g) * exp(f) * S", "exp(g) * exp(g2) * exp(f) * S",
             edit("  f: [B, T, H, V]\n", "  f: [B, T, H, V]\n  g2: [B, T, H, K]\n",
                  edit("  f: {space: log}\n", "  f: {space: log}\n  g2: {space: log}\n", GLA2D))),
        ("exp(g) * exp(g2)", 0), "exactly one gate of shape [B, T, H, K] and one of shape [B, T, H, V]"),
    "two_dimensional_decay_with_normaliser": (GLA2D + "normalization: sum\n", ("normalization: sum", 15),
                                              "normalization: sum with a decay per value dim is not supported yet"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_reports_position(tmp_path, case):
    text, where, message = BAD_SPECS[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = compile_spec(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    line, column = position_of(text, *where) if where else (1, 1)
    first, *context = result.stderr.splitlines()
    assert re.match(rf"^{re.escape(str(path))}:\d+:\d+: error: ", first), first
    assert first.startswith(f"{path}:{line}:{column}: error: "), f"expected {line}:{column}, got: {first}"
    assert message in first
    if text:  # the offending line is quoted, with a caret under the column
        assert context[0] == "  " + text.splitlines()[line - 1]
        assert context[1] == "  " + " " * (column - 1) + "^"
    assert not (tmp_path / "out").exists()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    result = compile_spec(path, tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"{path}: error: no such file"


def test_unreadable_file(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00name: x\n")
    result = compile_spec(path, tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{path}: error: cannot read spec")


def test_deeply_nested_expression(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(edit("o = scale * (q @ S)", "o = scale * " + "-" * 5000 + "(q @ S)"))
    result = compile_spec(path, tmp_path / "out")
    assert result.exit_code == 2
    assert "nested too deeply" in result.stderr


def test_multi_line_expression_compiles(tmp_path):
    path = tmp_path / "gla.yaml"
    path.write_text(edit('state: "S = exp(g) * S + outer(k, v)"', "state: |\n    S = exp(g) * S\n      + outer(k, v)"))
    result = compile_spec(path, tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert "S = ((exp(g) * S) + outer(k, v))" in (tmp_path / "out" / "gla" / "ops.py").read_text()


def test_one_bad_and_one_good_spec(tmp_path):
    """A bad spec does not stop the others from compiling, but the exit status reports it."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit("outer(k, v)", "outer(kk, v)"))
    result = CliRunner().invoke(main, ["compile", str(bad), str(spec_path("retnet")), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert (tmp_path / "out" / "retnet" / "kernels.py").is_file()


def test_real_process_no_traceback(tmp_path):
    """The installed entry point as a user runs it: status 2 and one diagnostic per bad spec, no traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_SPECS["unknown_symbol"][0])
    missing = tmp_path / "missing.yaml"
    proc = subprocess.run([sys.executable, "-m", "linattn_gen.cli", "compile", str(bad), str(missing), "-o",
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    line, column = position_of(bad.read_text(), "kk")
    assert re.search(rf"^{re.escape(str(bad))}:{line}:{column}: error: unknown symbol 'kk'", proc.stderr, re.MULTILINE)
    assert re.search(rf"^{re.escape(str(missing))}: error: no such file$", proc.stderr, re.MULTILINE)


# --- mutation fuzz -------------------------------------------------------------------------------------------------

FUZZ_SEED = 20261123
FUZZ_COUNT = 40
FUZZ_CHARS = "[]{}:,'\" -#|>*()=+/@^0123456789.abegkqvSBTHKV\t\n"


def _mutants():
    rng = random.Random(FUZZ_SEED)
    out = []
    for i in range(FUZZ_COUNT):
        name = SHIPPED_SPECS[i % len(SHIPPED_SPECS)]
        text = spec_path(name).read_text()
        lines = text.splitlines(keepends=True)
        op = ("delete_line", "duplicate_line", "insert_char", "delete_char")[i % 4]
        if op == "delete_line":
            del lines[rng.randrange(len(lines))]
            text = "".join(lines)
        elif op == "duplicate_line":
            n = rng.randrange(len(lines))
            lines.insert(n, lines[n])
            text = "".join(lines)
        elif op == "insert_char":
            n = rng.randrange(len(text) + 1)
            text = text[:n] + rng.choice(FUZZ_CHARS) + text[n:]
        else:
            n = rng.randrange(len(text))
            text = text[:n] + text[n + 1:]
        out.append(pytest.param(text, id=f"{i:02d}-{name}-{op}"))
    return out


@pytest.mark.parametrize("text", _mutants())
def test_mutated_spec_compiles_or_reports(tmp_path, text):
    path = tmp_path / "mutant.yaml"
    path.write_text(text)
    result = compile_spec(path, tmp_path / "out")
    if result.exit_code == 0:
        assert list((tmp_path / "out").glob("*/kernels.py")), result.output
        return
    assert result.exit_code == 2, result.output
    first = result.stderr.splitlines()[0]
    match = re.match(rf"^{re.escape(str(path))}(?::(\d+):(\d+))?: error: \S", first)
    assert match, first
    if match.group(1):
        assert 1 <= int(match.group(1)) <= text.count("\n") + 1, first
