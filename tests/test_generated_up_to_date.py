"""Snapshot test: the committed packages in generated/ are exactly what the compiler emits for specs/ today."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT

from linattn_gen.lower import lower

SPECS = sorted(p.name for p in (ROOT / "specs").glob("*.yaml"))
FIX = "run `linattn-gen compile specs/*.yaml` from the repository root and commit generated/"


@pytest.mark.parametrize("spec", SPECS)
def test_generated_package_is_up_to_date(in_repo_root, spec):
    # a relative path, as the generated headers name it (`generated from specs/<name>.yaml`)
    compiled = lower(f"specs/{spec}")
    package = Path("generated") / compiled.plan.name
    assert package.is_dir(), f"{package}/ is missing; {FIX}"
    on_disk = sorted(p.name for p in package.glob("*.py"))
    assert on_disk == sorted(compiled.files), f"{package}/ holds {on_disk}, the compiler emits {sorted(compiled.files)}"
    for filename, text in compiled.files.items():
        assert (package / filename).read_text() == text, f"{package / filename} is stale; {FIX}"
        assert text.startswith(f"# generated from specs/{spec} "), f"{package / filename}: unexpected header"


def test_every_generated_package_has_a_spec():
    names = {lower(ROOT / "specs" / spec).plan.name for spec in SPECS}
    packages = {p.name for p in (ROOT / "generated").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert packages <= names, f"generated/ has packages without a spec: {sorted(packages - names)}"
