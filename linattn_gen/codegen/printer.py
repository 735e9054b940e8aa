"""Print sympy expressions as Triton (inside kernels) or Python (on the host). Never `str(expr)`."""

from __future__ import annotations

import sympy
from sympy.printing.pycode import PythonCodePrinter


class TritonPrinter(PythonCodePrinter):
    """Elementwise fp32 code: exp/log map to `tl.*` (or `torch.*` for the host) and every literal is a float."""

    def __init__(self, names: dict, module: str = "tl"):
        super().__init__({"fully_qualified_modules": False})
        self._names = names
        self._module = module

    def _print_Symbol(self, expr):
        return self._names.get(expr, expr.name)

    def _print_Integer(self, expr):
        return f"{float(expr.p)!r}"

    def _print_Rational(self, expr):
        return f"{float(expr.p) / float(expr.q)!r}"

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_exp(self, expr):
        return f"{self._module}.exp({self._print(expr.args[0])})"

    def _print_log(self, expr):
        return f"{self._module}.log({self._print(expr.args[0])})"

    def _print_Function(self, expr):  # the IR's undefined functions (sympy.Function("elu"))
        if expr.func.__name__ == "elu":
            if self._module != "torch":  # the IR keeps elu out of decays, the only expressions kernels print
                raise ValueError("elu() is printed for the host (torch) only")
            return f"torch.nn.functional.elu({self._print(expr.args[0])})"
        return super()._print_Function(expr)

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if exponent == -1:
            return f"(1.0 / {self.parenthesize(base, 100)})"
        if exponent.is_Integer and 0 < exponent <= 4:
            return "(" + " * ".join([self.parenthesize(base, 100)] * int(exponent)) + ")"
        m = self._module
        return f"{m}.exp({self._print(exponent)} * {m}.log({self._print(base)}))"


def triton_code(expr: sympy.Expr, names: dict) -> str:
    return TritonPrinter(names).doprint(expr)


def torch_code(expr: sympy.Expr, names: dict) -> str:
    """The same elementwise expression on torch tensors, for host-side epilogues."""
    return TritonPrinter(names, module="torch").doprint(expr)


def python_code(expr: sympy.Expr) -> str:
    """Host-side Python using `math`; h and H stay names (the generated code binds them)."""
    return sympy.pycode(expr, fully_qualified_modules=True)
