"""Traces read a row at a time, so large files stream: CSV (Azure, BurstGPT, Vidur) and
Mooncake's JSON Lines.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from core import Request
from sim.traces.fields import (
    TimeOrder,
    parse_hash_ids,
    parse_seconds,
    parse_timestamp_s,
    parse_tokens,
)
from sim.traces.rows import BadField, RowReport

MOONCAKE_BLOCK_TOKENS = 512


def _csv_rows(path: Path, report: RowReport, required: tuple[str, ...]
              ) -> Iterator[tuple[int, dict]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        if missing:
            report.fail(1, f"missing column '{missing[0]}'; found: {', '.join(columns) or 'none'}")
        for row in reader:
            if None in row:
                report.bad(reader.line_num, f"{len(columns) + len(row[None])} fields; the "
                           f"header has {len(columns)}")
                continue
            yield reader.line_num, row


def read_azure(path: Path, report: RowReport) -> Iterator[Request]:
    """Azure LLM inference traces (2023 Splitwise, 2024 DynamoLLM share the column set)."""
    order, t0 = TimeOrder("TIMESTAMP"), None
    for line, row in _csv_rows(path, report, ("TIMESTAMP", "ContextTokens", "GeneratedTokens")):
        try:
            t = parse_timestamp_s(row, "TIMESTAMP")
            prompt = parse_tokens(row, "ContextTokens")
            output = parse_tokens(row, "GeneratedTokens")
            order.check(t, row)
        except BadField as bad:
            report.bad(line, str(bad))
            continue
        t0 = t if t0 is None else t0
        yield Request(line, t - t0, prompt, output)


def read_burstgpt(path: Path, report: RowReport) -> Iterator[Request]:
    """BurstGPT: ``Timestamp`` (s), ``Request tokens``, ``Response tokens`` (+ ``Session ID``).

    BurstGPT logs failed requests with 0 response tokens; they are bad rows (skip them with
    ``on_bad_rows: skip``), since a request that generates nothing is not a serving workload.
    """
    order = TimeOrder("Timestamp")
    for line, row in _csv_rows(path, report, ("Timestamp", "Request tokens", "Response tokens")):
        try:
            t = parse_seconds(row, "Timestamp")
            prompt = parse_tokens(row, "Request tokens")
            output = parse_tokens(row, "Response tokens")
            order.check(t, row)
        except BadField as bad:
            report.bad(line, str(bad))
            continue
        sid = row.get("Session ID")
        session = int(sid) if sid and sid.isdigit() else None
        yield Request(line, t, prompt, output, session_id=session)


def read_vidur(path: Path, report: RowReport) -> Iterator[Request]:
    """Vidur's length CSVs; ``arrived_at`` (s), when the file has it, is the arrival time."""
    timed = has_column(path, "arrived_at")
    order = TimeOrder("arrived_at")
    for line, row in _csv_rows(path, report, ("num_prefill_tokens", "num_decode_tokens")):
        try:
            prompt = parse_tokens(row, "num_prefill_tokens")
            output = parse_tokens(row, "num_decode_tokens")
            t = parse_seconds(row, "arrived_at") if timed else 0.0
            if timed:
                order.check(t, row)
        except BadField as bad:
            report.bad(line, str(bad))
            continue
        yield Request(line, t, prompt, output)


def read_mooncake(path: Path, report: RowReport) -> Iterator[Request]:
    """Mooncake: ``timestamp`` (ms), lengths, and one ``hash_ids`` entry per 512-token block."""
    order = TimeOrder("timestamp")
    with path.open() as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = _json_row(text)
                t = parse_seconds(row, "timestamp", scale=1e-3)
                prompt = parse_tokens(row, "input_length")
                output = parse_tokens(row, "output_length")
                hashes = parse_hash_ids(row, prompt, MOONCAKE_BLOCK_TOKENS, whole_blocks=False)
                order.check(t, row)
            except BadField as bad:
                report.bad(line, str(bad))
                continue
            yield Request(line, t, prompt, output, prefix_hashes=hashes,
                          hash_block_tokens=MOONCAKE_BLOCK_TOKENS)


def _json_row(text: str) -> dict:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadField(f"not valid JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise BadField("not a JSON object")
    return row


def has_column(path: Path, name: str) -> bool:
    with path.open(newline="") as f:
        return name in next(csv.reader(f), [])
