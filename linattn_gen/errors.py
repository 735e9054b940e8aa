"""Compiler-style diagnostics: every user mistake in a spec becomes one `SpecError` with a position."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Position:
    """A place in a spec file; line and column are 1-based, as editors show them."""

    path: str
    line: int
    column: int

    def shifted(self, *, lines: int = 0, columns: int = 0) -> Position:
        return Position(path=self.path, line=self.line + lines, column=self.column + columns)


class SpecError(Exception):
    """A spec the compiler refuses. `format()` gives `path:line:col: error: message`, the line and a caret."""

    def __init__(self, message: str, position: Position | None = None, *, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.position = position
        self.path = position.path if position else (path or "<spec>")

    def format(self, source: str | None = None) -> str:
        if self.position is None:
            return f"{self.path}: error: {self.message}"
        pos = self.position
        text = f"{pos.path}:{pos.line}:{pos.column}: error: {self.message}"
        if source is not None:
            lines = source.splitlines()
            if 1 <= pos.line <= len(lines):
                line = lines[pos.line - 1].expandtabs(1)
                text += f"\n  {line}\n  {' ' * (pos.column - 1)}^"
        return text

    def __str__(self) -> str:
        return self.format()
