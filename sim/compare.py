"""Paired comparison of two configurations on the same requests, with bootstrap intervals.

Both configurations are simulated with the same seeds. The workload's random streams (arrival
gaps, prompt and output lengths) are seeded apart from anything a policy does, so request ``i``
of seed ``s`` is the same request in both runs (common random numbers): its latency difference
is the effect of the configuration alone, and the noise that comes from which requests happened
to arrive cancels out.

For each latency (TTFT, TPOT, E2E) the difference B - A of the mean and of the p99 gets a
percentile-bootstrap confidence interval. Requests of one run are not independent (a burst
queues many of them together), so whole blocks of consecutive requests are resampled (a
circular block bootstrap within each seed), always the same blocks for A and B. An interval
that contains zero is reported as "not significant".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.config import Config, load_config

METRICS = ("ttft", "tpot", "e2el")
STATISTICS = ("mean", "p99")


class CompareError(ValueError):
    """A comparison option that cannot be used; the message is one line naming the field."""


@dataclass
class Comparison:
    """The paired per-request latencies and the table of differences (B - A)."""

    pairs: pd.DataFrame  # seed, request_id, <metric>_a, <metric>_b (seconds)
    table: pd.DataFrame  # metric, statistic, a_ms, b_ms, diff_ms, ci_low_ms, ci_high_ms, ...
    confidence: float

    def report(self) -> str:
        """One line per metric and statistic, saying whether the difference is significant."""
        lines = [f"paired comparison on {len(self.pairs)} requests (B - A, "
                 f"{self.confidence:.0%} bootstrap CI):"]
        for row in self.table.itertuples():
            lines.append(
                f"  {row.statistic} {row.metric}: A {row.a_ms:.3f} ms, B {row.b_ms:.3f} ms, "
                f"diff {row.diff_ms:+.3f} ms [{row.ci_low_ms:+.3f}, {row.ci_high_ms:+.3f}] "
                f"-> {row.verdict}")
        return "\n".join(lines)


def compare(config_a: Config | Mapping | str | Path, config_b: Config | Mapping | str | Path,
            *, seeds: Sequence[int] = (0,), n_boot: int = 2000, confidence: float = 0.95,
            block_size: int | None = None, rng_seed: int = 0) -> Comparison:
    """Simulate A and B on the same seeds and compare their per-request latencies."""
    from sim.api import simulate

    if not seeds:
        raise CompareError("seeds: give at least one seed")
    if n_boot < 100:
        raise CompareError(f"n_boot: at least 100 bootstrap resamples (got {n_boot})")
    if not 0.5 <= confidence < 1:
        raise CompareError(f"confidence: between 0.5 and 1 (got {confidence})")
    frames = []
    for seed in seeds:
        a = simulate(_with_seed(config_a, seed)).requests
        b = simulate(_with_seed(config_b, seed)).requests
        frames.append(paired_requests(a, b).assign(seed=seed))
    pairs = pd.concat(frames, ignore_index=True)
    table = paired_table(pairs, n_boot=n_boot, confidence=confidence, block_size=block_size,
                         rng_seed=rng_seed)
    return Comparison(pairs, table, confidence)


def _with_seed(config: Config | Mapping | str | Path, seed: int) -> Config:
    return load_config(config, [f"seed={seed}"])


def paired_requests(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Requests completed in both runs, matched by id, with each run's latencies."""
    keep = ["request_id", *METRICS]
    done_a = a.loc[~a["rejected"], keep]
    done_b = b.loc[~b["rejected"], keep]
    return done_a.merge(done_b, on="request_id", suffixes=("_a", "_b")).sort_values(
        "request_id", kind="stable").reset_index(drop=True)


def paired_table(pairs: pd.DataFrame, *, n_boot: int = 2000, confidence: float = 0.95,
                 block_size: int | None = None, rng_seed: int = 0) -> pd.DataFrame:
    """Differences of means and p99s with block-bootstrap intervals, per latency metric."""
    if pairs.empty:
        raise CompareError("compare: no request completed in both configurations")
    groups = [g for _, g in pairs.groupby("seed", sort=True)] if "seed" in pairs else [pairs]
    rng = np.random.default_rng(rng_seed)
    index = _block_resamples(groups, n_boot, block_size, rng)  # [n_boot, n] row numbers
    flat = pd.concat(groups, ignore_index=True)
    alpha = (1 - confidence) / 2
    rows = []
    for metric in METRICS:
        a = flat[f"{metric}_a"].to_numpy(dtype=np.float64)
        b = flat[f"{metric}_b"].to_numpy(dtype=np.float64)
        ok = ~(np.isnan(a) | np.isnan(b))  # TPOT is undefined for one-token outputs
        if not ok.any():
            continue
        for stat in STATISTICS:
            point_a, point_b = _stat(a[ok], stat), _stat(b[ok], stat)
            boot = _boot_diffs(a, b, ok, index, stat)
            low, high = np.quantile(boot, [alpha, 1 - alpha])
            significant = bool(low > 0 or high < 0)
            rows.append({
                "metric": metric, "statistic": stat, "a_ms": point_a * 1e3,
                "b_ms": point_b * 1e3, "diff_ms": (point_b - point_a) * 1e3,
                "ci_low_ms": low * 1e3, "ci_high_ms": high * 1e3,
                "rel_diff": (point_b - point_a) / point_a if point_a else math.nan,
                "n": int(ok.sum()), "significant": significant,
                "verdict": "significant" if significant else "not significant",
            })
    return pd.DataFrame(rows)


def _stat(values: np.ndarray, stat: str, axis: int | None = None) -> Any:
    if stat == "mean":
        return np.mean(values, axis=axis)
    return np.percentile(values, 99, axis=axis)


def _block_resamples(groups: list[pd.DataFrame], n_boot: int, block_size: int | None,
                     rng: np.random.Generator) -> np.ndarray:
    """Row numbers of ``n_boot`` circular block-bootstrap resamples, seed by seed."""
    parts, offset = [], 0
    for group in groups:
        n = len(group)
        size = block_size or max(1, math.ceil(math.sqrt(n)))
        size = min(size, n)
        blocks = math.ceil(n / size)
        starts = rng.integers(0, n, size=(n_boot, blocks))
        rows = (starts[:, :, None] + np.arange(size)) % n  # circular: wrap at the end
        parts.append(rows.reshape(n_boot, -1)[:, :n] + offset)
        offset += n
    return np.concatenate(parts, axis=1)


def _boot_diffs(a: np.ndarray, b: np.ndarray, ok: np.ndarray, index: np.ndarray,
                stat: str, chunk: int = 200) -> np.ndarray:
    """The statistic of B minus that of A over each resample (NaN rows left out)."""
    out = np.empty(len(index))
    for lo in range(0, len(index), chunk):
        rows = index[lo:lo + chunk]
        sa = np.where(ok[rows], a[rows], np.nan)
        sb = np.where(ok[rows], b[rows], np.nan)
        if stat == "mean":
            out[lo:lo + chunk] = np.nanmean(sb, axis=1) - np.nanmean(sa, axis=1)
        else:
            out[lo:lo + chunk] = (np.nanpercentile(sb, 99, axis=1)
                                  - np.nanpercentile(sa, 99, axis=1))
    return out
