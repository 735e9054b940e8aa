"""Stage 4: render a `ChunkPlan` through the Jinja templates in the top-level `templates/` folder.

Rendering makes no decisions: every value a template prints is a plan field (or plain formatting of one).
"""

from __future__ import annotations

import functools
import importlib.resources
from pathlib import Path

import jinja2

from ..plan import ChunkPlan

TEMPLATES = {
    "__init__.py": "init.py.jinja", "kernels.py": "kernels.py.jinja", "ops.py": "ops.py.jinja",
    "layer.py": "layer.py.jinja",
}


def templates_dir() -> Path:
    """The templates: the repository's `templates/` in a checkout, `linattn_gen/templates` in a wheel."""
    source_tree = Path(__file__).resolve().parents[2] / "templates"
    if (source_tree / "kernels.py.jinja").is_file():
        return source_tree
    return Path(str(importlib.resources.files("linattn_gen") / "templates"))


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(plan: ChunkPlan) -> dict[str, str]:
    """File name -> text of the generated package for one plan."""
    gate_names = [name for name in (plan.gate_name, plan.value_gate_name) if name]
    context = {
        "plan": plan,
        "form": plan.decay_form.value,
        "source": plan.decay_source.value,
        "gate_names": gate_names,
        "arg_list": ", ".join([plan.query, plan.key, plan.value, *gate_names]),  # the kernels' operands
        "input_list": ", ".join(plan.inputs),  # the public ops' positional arguments, in spec order
        "n_inputs": 3 + len(gate_names),
        "gate_grads": "dg, df, " if plan.value_gate_name else "dg, ",  # the backward's gate gradients, in order
        "all_names": [plan.query, plan.key, plan.value, *gate_names],
        "typed_arg_list": ", ".join(f"{n}: torch.Tensor" for n in [plan.query, plan.key, plan.value, *gate_names]),
    }
    env = _environment()
    templates = dict(TEMPLATES)
    if plan.gluon_output_pass.exists:
        templates["gluon_kernels.py"] = "gluon_kernels.py.jinja"
    return {name: env.get_template(template).render(**context) for name, template in templates.items()}
