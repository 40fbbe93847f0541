"""Bad rows of a trace: the errors, and where each bad row goes.

A bad row (a missing field, a length that is not a positive integer, a timestamp earlier than
the one before) is never dropped silently: with ``on_bad_rows="error"`` (the default) the first
one raises ``TraceError`` naming the file, the line and the field; with ``"skip"`` each one is
recorded in ``RowReport.rows`` and a ``TraceWarning`` lists them once the file is read.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class TraceError(ValueError):
    """A trace that cannot be read: one line, ``FILE:LINE: field: problem``."""


class TraceWarning(UserWarning):
    """Bad rows were skipped (``on_bad_rows: skip``); the message lists them with line numbers."""


class BadField(Exception):
    """Raised inside a row parser (``field: problem``); the reader adds the file and line."""


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    message: str


class RowReport:
    """Where bad rows go: raise at the first one (``error``) or keep them all (``skip``)."""

    def __init__(self, path: Path, on_bad_rows: str = "error"):
        if on_bad_rows not in ("error", "skip"):
            raise TraceError(f"workload.on_bad_rows: unknown '{on_bad_rows}'; allowed: error, skip")
        self.path, self.policy = path, on_bad_rows
        self.rows: list[BadRow] = []

    def bad(self, line: int | Callable[[], int], message: str) -> None:
        line_no = line() if callable(line) else line
        if self.policy == "error":
            raise TraceError(f"{self.path}:{line_no}: {message}")
        self.rows.append(BadRow(line_no, message))

    def fail(self, line: int, message: str) -> None:
        """A defect of the whole file (no header, not JSON): no option skips it."""
        raise TraceError(f"{self.path}:{line}: {message}")

    def warn(self) -> None:
        if not self.rows:
            return
        shown = "; ".join(f"line {r.line}: {r.message}" for r in self.rows[:5])
        more = f" (and {len(self.rows) - 5} more)" if len(self.rows) > 5 else ""
        warnings.warn(f"{self.path}: skipped {len(self.rows)} bad rows: {shown}{more}",
                      TraceWarning, stacklevel=3)
