"""Opening a trace: its format from the file, and ``TraceReader`` (requests or sessions,
with the bad rows of every file read).
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from core import Request
from sim.sessions import Session
from sim.traces.agentic import read_agentic
from sim.traces.fields import NAMESPACE_BITS
from sim.traces.json_docs import read_sharegpt
from sim.traces.row_formats import (
    has_column,
    read_azure,
    read_burstgpt,
    read_mooncake,
    read_vidur,
)
from sim.traces.rows import BadRow, RowReport, TraceError

FORMATS = ("azure", "mooncake", "agentic", "vidur", "burstgpt", "sharegpt")


_CSV_SIGNATURES = (
    ("azure", ("TIMESTAMP", "ContextTokens", "GeneratedTokens")),
    ("vidur", ("num_prefill_tokens", "num_decode_tokens")),
    ("burstgpt", ("Request tokens", "Response tokens")),
)


def detect_format(path: Path) -> str:
    """The format of a trace from its extension and first bytes (the table in ``sim.traces``)."""
    if path.is_dir():
        return "agentic"
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "mooncake"
    if suffix == ".json":
        with path.open() as f:
            head = f.read(4096).lstrip()
        return "sharegpt" if head.startswith("[") else "agentic"
    if suffix == ".csv":
        with path.open(newline="") as f:
            columns = next(csv.reader(f), [])
        for fmt, needed in _CSV_SIGNATURES:
            if all(c in columns for c in needed):
                return fmt
        raise TraceError(f"workload.trace_format: cannot tell the format of '{path}' from its "
                         f"columns ({', '.join(columns)}); allowed: {', '.join(FORMATS)}")
    raise TraceError(f"workload.trace_format: cannot tell the format of '{path}' from its "
                     f"extension; allowed: {', '.join(FORMATS)}")


@contextmanager
def unreadable_as_trace_error(path: Path) -> Iterator[None]:
    """A file that cannot be read as text (binary, a NUL byte, a folder, no permission) is a
    one-line ``TraceError`` naming it, not a codec's or the OS's message about no file."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise TraceError(f"workload.trace: '{path}' is not a text file (byte {exc.start}: "
                         f"{exc.reason})") from None
    except csv.Error as exc:
        raise TraceError(f"workload.trace: '{path}' is not a CSV text file ({exc})") from None
    except OSError as exc:
        raise TraceError(f"workload.trace: cannot read '{path}' ({exc.strerror or exc})"
                         ) from None


_READERS: dict[str, Callable[[Path, RowReport], Iterator[Request]]] = {
    "azure": read_azure,
    "mooncake": read_mooncake,
    "vidur": read_vidur,
    "burstgpt": read_burstgpt,
    "sharegpt": read_sharegpt,
}


class TraceReader:
    """One trace file (or a folder of agentic sessions), its format, and its bad rows."""

    def __init__(self, path: str | Path, fmt: str = "auto", on_bad_rows: str = "error"):
        self.path = Path(path)
        if not self.path.exists():
            raise TraceError(f"workload.trace: no such file or folder '{self.path}'")
        if not (self.path.is_file() or self.path.is_dir()):  # a device or pipe: read forever
            raise TraceError(f"workload.trace: '{self.path}' is not a regular file or folder")
        if fmt not in ("auto", *FORMATS):
            raise TraceError(f"workload.trace_format: unknown '{fmt}'; "
                             f"allowed: auto, {', '.join(FORMATS)}")
        with unreadable_as_trace_error(self.path):
            self.format = detect_format(self.path) if fmt == "auto" else fmt
        self.on_bad_rows = on_bad_rows
        self.bad_rows: list[tuple[Path, BadRow]] = []
        self._sessions: list[Session] | None = None

    @property
    def is_sessions(self) -> bool:
        return self.format == "agentic"

    @property
    def timed(self) -> bool:
        """False for length-only traces: pair them with a synthetic arrival process."""
        if self.format == "vidur":
            return has_column(self.path, "arrived_at")
        return self.format != "sharegpt"

    def files(self) -> list[Path]:
        if not self.path.is_dir():
            return [self.path]
        found = sorted(self.path.glob("*.json"))
        if not found:
            raise TraceError(f"workload.trace: no *.json session files in '{self.path}'")
        return found

    def requests(self) -> Iterator[Request]:
        """Every request in arrival order (sessions: each on its own trace clock from 0)."""
        if self.is_sessions:
            rows = [(t, r) for s in self.sessions() for t, r in s.trace_requests()]
            rows.sort(key=lambda x: x[0])
            for i, (_, req) in enumerate(rows):
                req.request_id = i
                yield req
            return
        report = RowReport(self.path, self.on_bad_rows)
        try:
            with unreadable_as_trace_error(self.path):
                yield from _READERS[self.format](self.path, report)
        finally:
            self._done(report)

    def sessions(self) -> list[Session]:
        """The sessions of an agentic trace, one per file, each in its own hash namespace."""
        if not self.is_sessions:
            raise TraceError(f"workload.trace: '{self.path}' ({self.format}) has no sessions")
        if self._sessions is not None:
            return self._sessions
        out = []
        for i, f in enumerate(self.files()):
            report = RowReport(f, self.on_bad_rows)
            with unreadable_as_trace_error(f):
                session = read_agentic(f, report, namespace=i + 1)
            self._done(report)
            if session is not None:
                out.append(session)
        self._sessions = out  # read once: sessions are replayed by reference, never changed
        return out

    def cycled_sessions(self, num_sessions: int | None) -> Iterator[Session]:
        """The sessions in file order, then again as new users (fresh hash namespaces)."""
        base = self.sessions()
        if not base:
            raise TraceError(f"workload.trace: '{self.path}' holds no usable session")
        for n in itertools.count() if num_sessions is None else range(num_sessions):
            copy, i = divmod(n, len(base))
            if num_sessions is None and copy:
                return
            yield base[i] if not copy else base[i].shifted(
                (copy * len(self.files())) << NAMESPACE_BITS, f"#{copy}")

    def _done(self, report: RowReport) -> None:
        self.bad_rows.extend((report.path, r) for r in report.rows)
        report.warn()
