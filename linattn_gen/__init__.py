"""linattn-gen: compile a declarative linear-attention recurrence into Triton kernels and PyTorch modules.

Pipeline: spec (YAML + lark) -> ir (typed recurrence) -> plan (chunked tensor-core plan) -> codegen (templates).
"""

__version__ = "0.1.0"

from .interpret import interpret  # noqa: E402
from .loader import load  # noqa: E402

__all__ = ["__version__", "interpret", "load"]
