"""The spec in docs/prototyping.md compiles and its chunk op matches its own recurrence (the docs stay true)."""

import re

import torch
from helpers import ROOT, import_package, write_package

from linattn_gen.check import check_op
from linattn_gen.lower import lower


def test_prototyping_walkthrough_spec(tmp_path):
    text = (ROOT / "docs" / "prototyping.md").read_text()
    spec = tmp_path / "my_gate.yaml"
    spec.write_text(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    compiled = lower(spec)
    assert compiled.plan.decay_form.value == "mask"
    assert compiled.plan.dlog_decay_of_gate == "0.5"
    module = import_package(write_package(compiled.files, tmp_path / "my_gate"))
    result = check_op(module, spec, 1, 70, 2, 16, 32, dtype=torch.float32, seed=5)
    assert result.max_error <= 1e-3, result.errors
