"""A and B side by side: the metrics shown, their formatting, deltas and SLO attainment.

The app shows exactly ``format_value(summary[key])`` for each headline metric, so a test can
recompute the shown text from ``sim.simulate`` on the same config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dashboard.cost import cost_metrics


@dataclass(frozen=True, slots=True)
class Metric:
    key: str  # summary key
    label: str
    fmt: str
    lower_is_better: bool


HEADLINE = (
    Metric("request_throughput", "Requests/s", "{:.2f}", False),
    Metric("output_throughput", "Output tok/s", "{:,.0f}", False),
    Metric("median_ttft_ms", "Median TTFT (ms)", "{:,.1f}", True),
    Metric("p99_ttft_ms", "P99 TTFT (ms)", "{:,.1f}", True),
    Metric("median_tpot_ms", "Median TPOT (ms)", "{:,.2f}", True),
    Metric("p99_tpot_ms", "P99 TPOT (ms)", "{:,.2f}", True),
    Metric("p99_e2el_ms", "P99 E2E (ms)", "{:,.0f}", True),
    Metric("goodput", "Goodput (req/s)", "{:.2f}", False),
    Metric("usd_per_m_output_tokens", "$ / M output tok", "{:,.3f}", True),
)
TABLE = HEADLINE + (
    Metric("completed", "Completed requests", "{:,.0f}", False),
    Metric("rejected", "Rejected requests", "{:,.0f}", True),
    Metric("duration_s", "Duration (s)", "{:,.2f}", True),
    Metric("total_token_throughput", "Total tok/s", "{:,.0f}", False),
    Metric("mean_ttft_ms", "Mean TTFT (ms)", "{:,.1f}", True),
    Metric("mean_tpot_ms", "Mean TPOT (ms)", "{:,.2f}", True),
    Metric("mean_itl_ms", "Mean ITL (ms)", "{:,.2f}", True),
    Metric("p99_itl_ms", "P99 ITL (ms)", "{:,.2f}", True),
    Metric("median_e2el_ms", "Median E2E (ms)", "{:,.0f}", True),
    Metric("mean_queue_delay_ms", "Mean queue delay (ms)", "{:,.1f}", True),
    Metric("total_preemptions", "Preemptions", "{:,.0f}", True),
    Metric("prefix_cache_hit_rate", "Prefix cache hit rate", "{:.1%}", False),
    Metric("kv_pool_blocks", "KV pool (blocks/replica)", "{:,.0f}", False),
    Metric("usd_per_m_total_tokens", "$ / M total tok", "{:,.3f}", True),
    Metric("usd_per_hour", "$ / hour", "{:,.2f}", True),
)


def format_value(metric: Metric, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return metric.fmt.format(value)


def format_delta(metric: Metric, a: float, b: float) -> str | None:
    """B minus A as shown under B's metric, with the relative change; None if undefined."""
    if any(v is None or math.isnan(v) for v in (a, b)):
        return None
    diff = b - a
    pct = f" ({diff / abs(a):+.1%})" if a else ""
    return f"{'+' if diff >= 0 else '-'}{metric.fmt.format(abs(diff))}{pct}"


def full_summary(summary: dict, num_gpus: int, gpu_hour_usd: float) -> dict:
    """A run's summary plus the dashboard's cost rows."""
    return {**summary, **cost_metrics(summary, num_gpus, gpu_hour_usd)}


def compare_table(a: dict, b: dict) -> pd.DataFrame:
    """One row per metric: A, B, B - A, relative change, and which side is better."""
    rows = []
    for m in TABLE:
        va, vb = float(a.get(m.key, math.nan)), float(b.get(m.key, math.nan))
        diff = vb - va
        rel = diff / abs(va) if va and not math.isnan(va) else math.nan
        better = "" if math.isnan(diff) or diff == 0 else (
            "B" if (diff < 0) == m.lower_is_better else "A")
        rows.append({"metric": m.label, "A": va, "B": vb, "B - A": diff,
                     "change": rel, "better": better})
    return pd.DataFrame(rows)


def slo_attainment(requests: pd.DataFrame, slo: dict) -> pd.DataFrame:
    """Share of completed requests meeting each configured SLO, and all of them at once.

    The same rule as ``sim.metrics`` goodput: a request fails a target only when its value is
    above it (a one-token request has no TPOT and passes that target).
    """
    done = requests[~requests["rejected"]]
    rows = []
    ok_all = np.ones(len(done), dtype=bool)
    for col, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2el", "E2E")):
        target_ms = slo.get(f"{col}_ms")
        if target_ms is None:
            continue
        ok = ~(done[col].to_numpy(dtype=np.float64) * 1e3 > target_ms)
        ok_all &= ok
        met = float(ok.mean()) if len(ok) else 0.0
        rows.append({"slo": f"{label} <= {target_ms:g} ms", "met": met})
    if rows:
        rows.append({"slo": "all", "met": float(ok_all.mean()) if len(done) else 0.0})
    return pd.DataFrame(rows, columns=["slo", "met"])
