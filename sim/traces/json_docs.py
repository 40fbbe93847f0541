"""Traces that are one JSON document, parsed whole (a line is looked up only for a bad row);
ShareGPT conversations.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
from bisect import bisect_left
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from core import Request
from sim.traces.rows import BadField, RowReport

SHAREGPT_CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text and BPE tokenizers


class _Located(dict):
    """A parsed JSON object that remembers the line its ``{`` is on."""

    __slots__ = ("line",)


def _parse_with_lines(text: str) -> Any:
    """Parse JSON keeping each object's line: the pure-Python scanner, used only to name a line."""
    newlines = [i for i, c in enumerate(text) if c == "\n"]
    decoder = json.JSONDecoder()

    def parse_object(s_and_end, *args):
        obj, end = json.decoder.JSONObject(s_and_end, *args)
        located = _Located(obj)
        located.line = bisect_left(newlines, s_and_end[1] - 1) + 1
        return located, end

    decoder.parse_object = parse_object  # type: ignore[attr-defined]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder.decode(text)


class JsonDoc:
    """A whole JSON file: parsed fast; re-parsed with positions only when a row is bad."""

    def __init__(self, path: Path, report: RowReport):
        self.report = report
        self.text = path.read_text()
        self._located: Any = None
        try:
            self.data = json.loads(self.text)
        except json.JSONDecodeError as err:
            report.fail(err.lineno, f"not valid JSON ({err.msg})")

    def line_of(self, *keys: str | int) -> Callable[[], int]:
        def find() -> int:
            if self._located is None:
                self._located = _parse_with_lines(self.text)
            node, line = self._located, 1
            for key in keys:
                node = node[key]
                line = getattr(node, "line", line)
            return line

        return find


def read_sharegpt(path: Path, report: RowReport) -> Iterator[Request]:
    """ShareGPT conversations: the first turn is the prompt, the second the output.

    No tokenizer is available offline, so lengths come from text by a fixed rule: ``ceil(len(text)
    / 4)`` tokens (at least 1), the usual 4-characters-a-token estimate for English.
    """
    doc = JsonDoc(path, report)
    if not isinstance(doc.data, list):
        report.fail(1, "expected a JSON array of conversations")
    for i, entry in enumerate(doc.data):
        try:
            turns = entry.get("conversations") if isinstance(entry, dict) else None
            if not isinstance(turns, list) or len(turns) < 2:
                raise BadField("conversations: needs a prompt and a reply (at least 2 turns)")
            prompt, output = (_text_tokens(turns[k], k) for k in (0, 1))
        except BadField as bad:
            report.bad(doc.line_of(i), f"[{i}].{bad}")
            continue
        yield Request(i, 0.0, prompt, output)


def _text_tokens(turn: Any, k: int) -> int:
    text = turn.get("value") if isinstance(turn, dict) else None
    if not isinstance(text, str) or not text:
        raise BadField(f"conversations[{k}].value: missing or empty text")
    return max(1, -(-len(text) // SHAREGPT_CHARS_PER_TOKEN))
