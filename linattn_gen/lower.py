"""The compiler pipeline in one place: spec file -> Spec -> Recurrence -> ChunkPlan -> generated files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .codegen import render
from .errors import SpecError
from .ir import Recurrence, build_ir
from .plan import ChunkPlan, plan_chunked
from .spec import Spec, parse_spec


@dataclass(frozen=True, kw_only=True)
class Compiled:
    spec: Spec
    recurrence: Recurrence
    plan: ChunkPlan
    files: dict  # file name -> text


def lower(spec_path: str | Path, *, display_path: str | None = None) -> Compiled:
    """Run every pass in order. Raises SpecError for a spec the compiler refuses."""
    shown = display_path or str(spec_path)
    source = None
    if Path(spec_path).is_file():
        try:
            source = Path(spec_path).read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise SpecError(f"cannot read spec: {err}", path=shown) from None
    try:
        spec = parse_spec(shown, source)  # 1. YAML + expressions -> Spec
        recurrence = build_ir(spec)  # 2. type check, sympy decay analysis -> Recurrence
    except RecursionError:  # the expression passes recurse once per nesting level
        raise SpecError("an expression is nested too deeply", path=shown) from None
    plan = plan_chunked(recurrence)  # 3. chunked tensor-core plan -> ChunkPlan
    files = render(plan)  # 4. templates -> Triton kernels and the PyTorch module
    return Compiled(spec=spec, recurrence=recurrence, plan=plan, files=files)


def write_package(compiled: Compiled, out_dir: str | Path) -> Path:
    """Write `out_dir/<name>/`; returns that folder."""
    package = Path(out_dir) / compiled.plan.name
    package.mkdir(parents=True, exist_ok=True)
    for name, text in compiled.files.items():
        (package / name).write_text(text)
    return package
