"""``benchmarks/RESULTS.md``: each benchmark script owns one section between its own markers."""

from __future__ import annotations

import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(text: str, start: str, end: str, path: Path = RESULTS) -> None:
    """Replace the section between ``start`` and ``end`` with ``text`` (append it if absent)."""
    old = path.read_text() if path.is_file() else "# Benchmark results\n"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    if start in old and end in old:
        new = old[:old.index(start)] + block + old[old.index(end) + len(end) + 1:]
    else:
        new = old.rstrip() + "\n\n" + block
    path.write_text(new)


def median_row(name: str, values: list[float]) -> str:
    """A table row: the name, the median, then every run (runs vary on a shared machine)."""
    return f"| {name} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |"


def publish(text: str, start: str, end: str, write: bool) -> None:
    """Print a benchmark's section and, unless told not to, write it into RESULTS.md."""
    print(text)
    if write:
        write_section(text, start, end)
        print(f"\nwrote {RESULTS.name} ({RESULTS})")
