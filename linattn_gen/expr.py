"""The recurrence expression language: a lark grammar (`recurrence.lark`) mapped to frozen AST nodes.

Every node keeps the line and column of its first character inside the expression string (1-based), so that the
spec loader can turn them into positions in the YAML file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import lark


@dataclass(frozen=True, kw_only=True)
class Node:
    line: int
    column: int


@dataclass(frozen=True, kw_only=True)
class Number(Node):
    value: float
    text: str


@dataclass(frozen=True, kw_only=True)
class Symbol(Node):
    name: str


@dataclass(frozen=True, kw_only=True)
class Call(Node):
    function: str
    args: tuple[Node, ...]


@dataclass(frozen=True, kw_only=True)
class BinOp(Node):
    op: str  # one of + - * / @ **
    left: Node
    right: Node


@dataclass(frozen=True, kw_only=True)
class Neg(Node):
    operand: Node


@dataclass(frozen=True, kw_only=True)
class Assignment(Node):
    target: str
    value: Node


class ExpressionSyntaxError(Exception):
    """A syntax error inside one expression string; line/column are relative to that string."""

    def __init__(self, message: str, line: int, column: int):
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


_BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/", "matmul": "@", "pow": "**"}


class _ToAst(lark.Transformer):
    def start(self, children):
        name, value = children
        return Assignment(target=str(name), value=value, line=name.line, column=name.column)

    def number(self, children):
        (tok,) = children
        return Number(value=float(tok), text=str(tok), line=tok.line, column=tok.column)

    def symbol(self, children):
        (tok,) = children
        return Symbol(name=str(tok), line=tok.line, column=tok.column)

    def call(self, children):
        name, *args = children
        args = tuple(a for a in args if a is not None)
        return Call(function=str(name), args=args, line=name.line, column=name.column)

    def neg(self, children):
        sign, operand = children
        return Neg(operand=operand, line=sign.line, column=sign.column)


def _binary(op):
    def build(self, children):
        left, right = (c for c in children if not isinstance(c, lark.Token))
        return BinOp(op=op, left=left, right=right, line=left.line, column=left.column)

    return build


for _rule, _op in _BINARY.items():
    setattr(_ToAst, _rule, _binary(_op))


@functools.cache
def _parser() -> lark.Lark:
    grammar = (Path(__file__).parent / "recurrence.lark").read_text()
    return lark.Lark(grammar, parser="lalr", propagate_positions=True, transformer=_ToAst())


def parse_assignment(text: str) -> Assignment:
    """Parse `target = expression`; raises ExpressionSyntaxError with a position inside `text`."""
    try:
        return _parser().parse(text)
    except lark.UnexpectedCharacters as err:
        raise ExpressionSyntaxError(f"unexpected character {text[err.pos_in_stream]!r}", err.line, err.column) from None
    except lark.UnexpectedToken as err:
        if err.token.type == "$END":
            line = text.count("\n") + 1
            column = len(text.rsplit("\n", 1)[-1]) + 1
            return_msg = "unexpected end of expression"
            raise ExpressionSyntaxError(return_msg, line, column) from None
        expected = ", ".join(sorted(_pretty(t) for t in err.expected))
        raise ExpressionSyntaxError(
            f"unexpected {err.token.value!r}; expected one of: {expected}", err.line, err.column
        ) from None
    except lark.UnexpectedEOF:
        line = text.count("\n") + 1
        raise ExpressionSyntaxError("unexpected end of expression", line, len(text.rsplit("\n", 1)[-1]) + 1) from None


_TOKEN_NAMES = {
    "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "AT": "'@'", "LPAR": "'('", "RPAR": "')'",
    "COMMA": "','", "EQUAL": "'='", "NAME": "a name", "NUMBER": "a number", "__ANON_0": "'**'", "CIRCUMFLEX": "'^'",
}


def _pretty(token_type: str) -> str:
    return _TOKEN_NAMES.get(token_type, token_type.lower())


def walk(node: Node):
    """Yield every node of an expression tree, parents first."""
    yield node
    if isinstance(node, BinOp):
        yield from walk(node.left)
        yield from walk(node.right)
    elif isinstance(node, Neg):
        yield from walk(node.operand)
    elif isinstance(node, Call):
        for arg in node.args:
            yield from walk(arg)
    elif isinstance(node, Assignment):
        yield from walk(node.value)


def render(node: Node) -> str:
    """Print an expression back as text (fully parenthesised where it matters)."""
    if isinstance(node, Number):
        return node.text
    if isinstance(node, Symbol):
        return node.name
    if isinstance(node, Call):
        return f"{node.function}({', '.join(render(a) for a in node.args)})"
    if isinstance(node, Neg):
        return f"-{render(node.operand)}"
    if isinstance(node, BinOp):
        return f"({render(node.left)} {node.op} {render(node.right)})"
    if isinstance(node, Assignment):
        return f"{node.target} = {render(node.value)}"
    raise TypeError(node)
