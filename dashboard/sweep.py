"""Throughput against latency across loads: the same config re-simulated at scaled load.

Open-loop workloads scale ``workload.rate``; closed-loop ones scale ``workload.concurrency``.
Every point uses the same seed, so the points differ only in load. Points run through the
dashboard's cache, so the current load's point is the main run itself when the request counts
agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from dashboard.runner import Outcome, with_overrides
from sim.config import load_config

LOAD_FACTORS = (0.25, 0.5, 1.0, 1.5, 2.0)
SWEEP_COLUMNS = ("config", "load", "output_throughput", "request_throughput", "median_ttft_ms",
                 "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "goodput", "error")


def load_points(mapping: Mapping, factors: Sequence[float] = LOAD_FACTORS,
                num_requests: int | None = None) -> list[tuple[float, dict]]:
    """(load value, config mapping) for each factor; ``ValueError`` for trace replay."""
    wl = load_config(mapping).workload
    if wl.arrival == "trace":
        raise ValueError("load sweep: trace replay has its own arrival times; "
                         "use poisson, gamma or closed arrivals")
    points = []
    for factor in factors:
        if wl.arrival == "closed":
            load: float = max(1, round((wl.concurrency or 1) * factor))
            overrides: dict = {"workload.concurrency": int(load)}
        else:
            load = wl.rate * factor
            overrides = {"workload.rate": load}
        if num_requests is not None:
            overrides["workload.num_requests"] = num_requests
        points.append((load, with_overrides(mapping, overrides)))
    return points


def run_sweep(mappings: Mapping[str, Mapping], run: Callable[[Mapping], Outcome],
              factors: Sequence[float] = LOAD_FACTORS,
              num_requests: int | None = None) -> pd.DataFrame:
    """One row per config and load: throughput and latency, or the error of that point."""
    rows = []
    for label, mapping in mappings.items():
        for load, point in load_points(mapping, factors, num_requests):
            outcome = run(point)
            row = {"config": label, "load": load, "error": outcome.error or ""}
            for key in SWEEP_COLUMNS[2:-1]:
                row[key] = outcome.result.summary[key] if outcome.ok else math.nan
            rows.append(row)
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))
