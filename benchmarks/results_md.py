"""``benchmarks/RESULTS.md``: each benchmark script owns one section between its own markers."""

from __future__ import annotations

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
