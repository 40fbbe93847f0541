"""The committed sim-versus-real reports (``docs/validation/*.md``) for the validation page.

The dashboard only reads these files; it never runs ``realexec``. Markdown images are split
out so the page can show them with ``st.image`` (Streamlit's markdown does not resolve paths
relative to the report).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPORTS_DIR = Path(__file__).resolve().parents[1] / "docs" / "validation"
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)[^)]*\)")


@dataclass(frozen=True, slots=True)
class Part:
    kind: str  # "markdown" or "image"
    text: str  # markdown text, or the image caption
    path: Path | None = None


def list_reports(folder: Path | None = None) -> list[Path]:
    """The reports, sorted by name; empty when the folder is absent (e.g. a wheel install)."""
    folder = folder or REPORTS_DIR
    return sorted(folder.glob("*.md")) if folder.is_dir() else []


def title_of(report: Path) -> str:
    """The first Markdown heading, else the file name."""
    for line in report.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return report.stem


def split_report(report: Path) -> list[Part]:
    """Markdown text and local images of a report, in order; remote images stay in the text."""
    text = report.read_text(encoding="utf-8")
    parts: list[Part] = []
    pos = 0
    for match in _IMAGE.finditer(text):
        target = match.group(2)
        if target.startswith(("http://", "https://")):
            continue
        path = (report.parent / target).resolve()
        if text[pos:match.start()].strip():
            parts.append(Part("markdown", text[pos:match.start()]))
        parts.append(Part("image", match.group(1), path))
        pos = match.end()
    if text[pos:].strip():
        parts.append(Part("markdown", text[pos:]))
    return parts
