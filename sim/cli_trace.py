"""``servesim trace stats FILE``: what a trace holds, before you simulate it.

Arrival rate (``(rows - 1) / span``), burstiness (coefficient of variation of the gaps: 1 is
Poisson, above 1 burstier), length distributions, and the prefix-sharing potential: the fraction
of hashed prompt blocks that an unbounded prefix cache would find, walking the requests in
arrival order and counting, for each request, its leading blocks already seen (a block counts
only if every block before it matched too, as in vLLM's and SGLang's caches).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from core import Request
from sim.cli_output import fail
from sim.traces import FORMATS, TraceReader, TraceWarning

trace_app = typer.Typer(no_args_is_help=True, help="Inspect workload traces.")
console = Console()


@dataclass
class TraceStats:
    """Statistics of one trace; ``None`` where the trace has no such information."""

    path: str
    format: str
    requests: int
    span_s: float | None
    rate: float | None  # req/s
    gap_cv: float | None
    prompt_tokens: dict
    output_tokens: dict
    hash_block_tokens: int | None
    block_refs: int
    distinct_blocks: int
    prefix_hit_fraction: float | None
    sessions: dict | None = None
    bad_rows: list[str] = field(default_factory=list)


def distribution(values: Iterable[float]) -> dict:
    """mean, p50, p90, p99 (linear interpolation) and max."""
    a = np.asarray(list(values), dtype=np.float64)
    if not a.size:
        return {k: math.nan for k in ("mean", "p50", "p90", "p99", "max")}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"mean": float(a.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "max": float(a.max())}


def prefix_hits(requests: Iterable[Request]) -> tuple[int, int, int]:
    """(leading-prefix block hits, block references, distinct blocks) for an unbounded cache.

    The cache is a trie of block hashes, so a block matches only under the same prefix.
    """
    trie: dict[tuple[int, int], int] = {}
    hits = refs = 0
    distinct: set[int] = set()
    for req in requests:
        node, matching = 0, True
        for h in req.prefix_hashes:
            refs += 1
            distinct.add(h)
            child = trie.get((node, h))
            if child is None:
                matching = False
                child = trie[(node, h)] = len(trie) + 1
            elif matching:
                hits += 1
            node = child
    return hits, refs, len(distinct)


def _arrivals(times: np.ndarray) -> tuple[float | None, float | None, float | None]:
    if times.size < 2 or times[-1] <= times[0]:
        return None, None, None
    span = float(times[-1] - times[0])
    gaps = np.diff(times)
    return span, (times.size - 1) / span, float(gaps.std() / gaps.mean())


def trace_stats(path: str | Path, fmt: str = "auto", on_bad_rows: str = "error") -> TraceStats:
    """Load a trace (every row checked) and compute its statistics."""
    reader = TraceReader(path, fmt, on_bad_rows)
    requests = list(reader.requests())
    sessions = _session_stats(reader) if reader.is_sessions else None
    times = np.array([r.arrival_time for r in requests])
    span, rate, cv = _arrivals(times) if reader.timed and not sessions else (None, None, None)
    hits, refs, distinct = prefix_hits(requests)
    return TraceStats(
        path=str(path), format=reader.format, requests=len(requests), span_s=span, rate=rate,
        gap_cv=cv, prompt_tokens=distribution(r.prompt_tokens for r in requests),
        output_tokens=distribution(r.output_tokens for r in requests),
        hash_block_tokens=requests[0].hash_block_tokens if refs else None, block_refs=refs,
        distinct_blocks=distinct, prefix_hit_fraction=hits / refs if refs else None,
        sessions=sessions, bad_rows=[f"{p}:{b.line}: {b.message}" for p, b in reader.bad_rows])


def _session_stats(reader: TraceReader) -> dict:
    """Per-session numbers: hits within a session, spans, think and server times."""
    fractions, spans, rates = [], [], []
    turns, subagents = [], 0
    for session in reader.sessions():
        timed = session.trace_requests()
        hits, refs, _ = prefix_hits(r for _, r in timed)
        fractions.append(hits / refs if refs else math.nan)
        span = timed[-1][0] - timed[0][0]
        spans.append(span)
        rates.append((len(timed) - 1) / span if span > 0 else math.nan)
        all_turns = list(session.root.all_turns())
        turns += all_turns
        subagents += sum(len(t.children) for t in all_turns)
    return {
        "sessions": len(spans), "subagents": subagents,
        "mean_within_session_hit_fraction": float(np.nanmean(fractions)),
        "min_within_session_hit_fraction": float(np.nanmin(fractions)),
        "span_s": {**distribution(spans), "min": min(spans)},
        "rate_per_session": float(np.nanmean(rates)),
        "think_time_s": distribution(t.think_time_s for t in turns if t.think_time_s is not None),
        "api_time_s": distribution(t.api_time_s for t in turns if t.api_time_s is not None),
    }


def _fmt(x: float | None, spec: str = ",.0f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def stats_table(s: TraceStats) -> Table:
    table = Table(title=f"{s.path} ({s.format})", show_header=True)
    table.add_column("statistic")
    table.add_column("value", justify="right")
    table.add_row("Requests", _fmt(s.requests))
    table.add_row("Span (s)", _fmt(s.span_s, ",.1f"))
    table.add_row("Arrival rate (req/s)", _fmt(s.rate, ".2f"))
    table.add_row("Burstiness (CV of gaps)", _fmt(s.gap_cv, ".2f"))
    for label, dist in (("Prompt tokens", s.prompt_tokens), ("Output tokens", s.output_tokens)):
        table.add_row(f"{label}: mean / p50 / p90 / p99 / max",
                      " / ".join(_fmt(v, ",.1f" if k == "mean" else ",.0f")
                                 for k, v in dist.items()))
    if s.prefix_hit_fraction is None:
        table.add_row("Prefix-cache hit fraction", "n/a (no block hashes)")
    else:
        table.add_row(f"Blocks ({s.hash_block_tokens} tokens): refs / distinct",
                      f"{s.block_refs:,} / {s.distinct_blocks:,}")
        table.add_row("Prefix-cache hit fraction (unbounded)", f"{s.prefix_hit_fraction:.1%}")
    if s.sessions:
        ss = s.sessions
        table.add_row("Sessions (sub-agents)", f"{ss['sessions']} ({ss['subagents']})")
        table.add_row("Hit fraction in a session: mean / min",
                      f"{ss['mean_within_session_hit_fraction']:.1%} / "
                      f"{ss['min_within_session_hit_fraction']:.1%}")
        table.add_row("Session span (s): p50 / min / max", "{p50:,.0f} / {min:,.0f} / {max:,.0f}"
                      .format(**ss["span_s"]))
        table.add_row("Requests per second per session", f"{ss['rate_per_session']:.3f}")
        table.add_row("Think time (s): p50 / p90 / max", "{p50:,.1f} / {p90:,.1f} / {max:,.0f}"
                      .format(**ss["think_time_s"]))
        table.add_row("API time (s): mean / p50", "{mean:.2f} / {p50:.2f}"
                      .format(**ss["api_time_s"]))
    return table


@trace_app.command("stats")
def stats(
    file: Annotated[Path, typer.Argument(help="trace file (or folder of agentic sessions)")],
    format: Annotated[str, typer.Option(
        "--format", help=f"auto, {', '.join(FORMATS)}")] = "auto",
    on_bad_rows: Annotated[str, typer.Option(help="error (stop at the first) or skip")] = "error",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Arrival rate, burstiness, length distributions and prefix-sharing potential of a trace."""
    try:
        with warnings.catch_warnings():  # skipped rows are listed below, one a line
            warnings.simplefilter("ignore", TraceWarning)
            s = trace_stats(file, format, on_bad_rows)
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(asdict(s), indent=2))
        return
    console.print(stats_table(s))
    for line in s.bad_rows:
        console.print(f"skipped {line}", highlight=False, soft_wrap=True)
