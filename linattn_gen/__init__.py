"""linattn-gen: compile a declarative linear-attention recurrence into Triton kernels and PyTorch modules.

Pipeline: spec (YAML + lark) -> ir (typed recurrence) -> plan (chunked tensor-core plan) -> codegen (templates).
"""

__version__ = "0.1.0"

from .interpret import interpret
from .loader import load

__all__ = ["__version__", "interpret", "load"]
