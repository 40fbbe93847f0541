"""The summary ``servesim run`` prints: rows in groups, and a word where a number needs one.

Groups, in a serving benchmark's order: the requests, throughput, latency, the SLO (goodput),
the KV cache and scheduling, then what only some runs have (speculative decoding, sessions,
disaggregation). Three numbers are easy to misread, so the table says what they are:

- goodput without an SLO is shown as n/a: with no target every completed request counts, so it
  would only repeat the request throughput (``summary.json`` keeps that value, with a note);
- the two prefix-cache rates differ in what they count, not only in units: tokens at each
  request's first admission, versus blocks at every admission, re-admissions after a
  preemption included (which find their own blocks still cached: ``sim.units``);
- times are milliseconds here and in ``summary.json``, seconds in the Parquet tables.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from sim.units import PREFIX_BLOCKS_NOTE, PREFIX_TOKENS_NOTE

Row = tuple[str, str, str]  # label, summary key, format

REQUESTS: tuple[Row, ...] = (
    ("Successful requests", "completed", "{:.0f}"),
    ("Rejected requests", "rejected", "{:.0f}"),
    ("Benchmark duration (s)", "duration_s", "{:.2f}"),
)
THROUGHPUT: tuple[Row, ...] = (
    ("Request throughput (req/s)", "request_throughput", "{:.2f}"),
    ("Output token throughput (tok/s)", "output_throughput", "{:.1f}"),
    ("Total token throughput (tok/s)", "total_token_throughput", "{:.1f}"),
)
LATENCIES = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2E latency"))
SCHEDULING: tuple[Row, ...] = (
    ("Mean KV occupancy (of the KV pool)", "mean_kv_occupancy", "{:.1%}"),
    ("Preemptions", "total_preemptions", "{:.0f}"),
    ("Swap preemptions", "preemptions_swap", "{:.0f}"),
    ("Mean waiting requests", "mean_num_waiting", "{:.1f}"),
)
OPTIONAL_GROUPS: tuple[tuple[str, tuple[Row, ...]], ...] = (
    ("Speculative decoding", (
        ("Draft acceptance rate", "spec_draft_acceptance_rate", "{:.1%}"),
        ("Mean acceptance length (tokens/verify)", "spec_mean_acceptance_length", "{:.2f}"),
        ("Tokens per decode step", "spec_tokens_per_step", "{:.2f}"),
        ("Draft memory per GPU (GB)", "draft_gb", "{:.2f}"),
    )),
    ("Sessions", (
        ("Sessions", "num_sessions", "{:.0f}"),
        ("Mean session duration (s)", "mean_session_duration_s", "{:.2f}"),
        ("P99 session duration (s)", "p99_session_duration_s", "{:.2f}"),
        ("Mean session wait on server (s)", "mean_session_wait_s", "{:.2f}"),
    )),
    ("Disaggregation: KV transfer", (
        ("Mean KV transfer (ms)", "mean_kv_transfer_ms", "{:.2f}"),
        ("P90 KV transfer (ms)", "p90_kv_transfer_ms", "{:.2f}"),
    )),
)
UNITS_NOTE = ("Times: ms here and in summary.json; seconds in requests.parquet and "
              "steps.parquet. Each file records its units (Parquet column metadata; "
              "summary.json's \"units\").")


def summary_report(summary: dict, config: Any = None, title: str = "servesim summary") -> Group:
    """The summary as grouped rows, then the numbered notes and the units, for printing.

    ``config``: the run's config (``Result.config``), which says whether an SLO was set and
    whether a prefix cache was on; without it both are read off the numbers."""
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    notes: list[str] = []
    values = {**summary, "draft_gb": summary.get("draft_bytes", math.nan) / 1e9}
    _group(table, "Requests", _rows(values, REQUESTS))
    _group(table, "Throughput", _rows(values, THROUGHPUT))
    _group(table, "Latency (ms)", _latency_rows(summary))
    _group(table, *_slo_rows(summary, config, notes))
    _group(table, "KV cache and scheduling",
           _prefix_rows(summary, config, notes) + _rows(values, SCHEDULING))
    for name, rows in OPTIONAL_GROUPS:
        _group(table, name, _rows(values, rows))
    lines = [*(f"[{i}] {note}" for i, note in enumerate(notes, 1)), UNITS_NOTE]
    return Group(table, Text("\n".join(lines)))


def _group(table: Table, name: str, rows: list[tuple[str, str]]) -> None:
    if not rows:
        return
    if table.row_count:
        table.add_section()
    table.add_row(f"[bold]{name}[/]", "")
    for label, value in rows:
        table.add_row(f"  {label}", value)


def _rows(values: dict, rows: tuple[Row, ...]) -> list[tuple[str, str]]:
    return [(label, fmt.format(values[key])) for label, key, fmt in rows
            if key in values and not _nan(values[key])]


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _latency_rows(summary: dict) -> list[tuple[str, str]]:
    return [(f"{stat.capitalize()} {label} (ms)", f"{summary[f'{stat}_{metric}_ms']:.2f}")
            for metric, label in LATENCIES for stat in ("mean", "median", "p99")]


def _slo_targets(config: Any) -> list[str]:
    slo = getattr(config, "slo", None)
    names = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2el_ms", "E2E latency"))
    return [f"{label} <= {getattr(slo, key):g} ms" for key, label in names
            if slo is not None and getattr(slo, key) is not None]


def _slo_rows(summary: dict, config: Any, notes: list[str]) -> tuple[str, list]:
    targets = _slo_targets(config)
    if config is not None and not targets:
        notes.append("No SLO set (slo.ttft_ms, slo.tpot_ms, slo.e2el_ms): goodput would count "
                     "every completed request and equal the request throughput, so it is not "
                     "shown (summary.json keeps that value).")
        return "SLO and goodput", [(f"Goodput (req/s) [{len(notes)}]", "n/a: no SLO")]
    rows = [("Goodput (req/s): requests meeting every target", f"{summary['goodput']:.2f}")]
    if summary.get("request_throughput"):
        share = summary["goodput"] / summary["request_throughput"]
        rows.append(("Completed requests meeting every target", f"{share:.1%}"))
    return f"SLO: {', '.join(targets)}" if targets else "SLO and goodput", rows


def _prefix_cache_on(summary: dict, config: Any) -> bool:
    kv = getattr(config, "kv_cache", None)
    if kv is None:
        return bool(summary.get("prefix_cache_hit_rate")
                    or summary.get("prefix_cache_block_hit_rate"))
    return kv.allocator == "radix" or bool(kv.enable_prefix_caching)


def _prefix_rows(summary: dict, config: Any, notes: list[str]) -> list[tuple[str, str]]:
    if not _prefix_cache_on(summary, config):
        return [("Prefix cache", "off")]
    rows = []
    for label, key, note in (
            ("Prefix cache hit rate, tokens (first admission)", "prefix_cache_hit_rate",
             PREFIX_TOKENS_NOTE),
            ("Prefix cache hit rate, blocks (every admission)", "prefix_cache_block_hit_rate",
             PREFIX_BLOCKS_NOTE)):
        if key in summary:
            notes.append(note[0].upper() + note[1:] + ".")
            rows.append((f"{label} [{len(notes)}]", f"{summary[key]:.1%}"))
    return rows
