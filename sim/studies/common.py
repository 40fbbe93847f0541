"""Helpers the claim studies share: configs, steady-state latency, condition ranges, KV probes.

Everything here goes through the public API (``sim.simulate``, ``sim.build.hardware_model``,
``hwmodels``); nothing reaches into a policy's internals except through the ``Scheduler`` and
``KVAllocator`` protocols of ``core``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from sim.studies.base import Condition, fmt

H100_USD_PER_HOUR = 2.5  # assumed rental price of one H100 for the cost study (absolute $ only)


def merge(base: Mapping[str, Any], *overrides: Mapping[str, Any]) -> dict:
    """A deep copy of ``base`` with each override merged in, section by section."""
    out = copy.deepcopy(dict(base))
    for over in overrides:
        for key, value in over.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def simulate(config: Mapping[str, Any], **kwargs: Any):
    """``sim.simulate`` (imported late so that importing a study stays cheap)."""
    from sim.api import simulate as _simulate

    return _simulate(dict(config), **kwargs)


def latency_stats(requests: pd.DataFrame, skip_first: int = 0) -> dict[str, float]:
    """TTFT/TPOT/E2E statistics (ms) of completed requests, dropping the first ``skip_first``
    arrivals: a closed loop starts with every client's request at once, a transient the
    steady state never sees again."""
    done = requests[~requests["rejected"]].sort_values("arrival_time").iloc[skip_first:]
    out: dict[str, float] = {"requests_measured": float(len(done))}
    for col in ("ttft", "tpot", "e2el"):
        ms = done[col].dropna().to_numpy(dtype=np.float64) * 1e3
        for name, q in (("mean", None), ("p50", 50), ("p90", 90), ("p99", 99)):
            value = math.nan if not ms.size else float(ms.mean() if q is None
                                                       else np.percentile(ms, q))
            out[f"{name}_{col}_ms"] = value
    if len(done):
        span = float(done["finish_time"].max() - done["arrival_time"].min())
        out["output_throughput"] = float(done["output_tokens"].sum()) / max(span, 1e-12)
    else:
        out["output_throughput"] = math.nan
    return out


def saturated_throughput(requests: pd.DataFrame) -> float:
    """Output tokens/s while the server still had requests waiting to start.

    A finite run ends with a drain: the last long answers decode in small batches, which says
    nothing about capacity (and punishes the policy that finished everything else sooner). The
    window therefore ends when the last request is first scheduled (or, if all started at
    once, when the last one finished); tokens a request emitted by then are interpolated
    linearly between its first and last token.
    """
    done = requests[~requests["rejected"]]
    start = float(done["arrival_time"].min())
    end = float(done["first_scheduled_time"].max())
    if end <= start:  # everything started at once: the whole run is one batch
        end = float(done["finish_time"].max())
    first = done["first_token_time"].to_numpy(dtype=np.float64)
    last = done["finish_time"].to_numpy(dtype=np.float64)
    out = done["output_tokens"].to_numpy(dtype=np.float64)
    span = np.maximum(last - first, 1e-12)
    frac = np.clip((end - first) / span, 0.0, 1.0)
    emitted = np.where(first > end, 0.0, 1 + (out - 1) * frac)
    return float(emitted.sum() / (end - start))


def time_weighted_mean(steps: pd.DataFrame, column: str) -> float:
    """Mean of a per-step column weighted by step duration (e.g. the running batch size)."""
    dur = steps["duration"].to_numpy(dtype=np.float64)
    if not dur.sum():
        return math.nan
    return float((dur * steps[column].to_numpy(dtype=np.float64)).sum() / dur.sum())


def grouped_conditions(label: str, xs: list, values: list[float], passes: list[bool],
                       unit: str) -> list[Condition]:
    """One condition per run of neighbouring sweep points with the same pass/fail.

    Its value is the point of the run nearest the other side (the worst case of a passing run,
    the best case of a failing one), so the verdict detail names ranges, not every point.
    """
    out: list[Condition] = []
    start = 0
    for i in range(1, len(xs) + 1):
        if i < len(xs) and passes[i] == passes[start]:
            continue
        run_xs, run_vals = xs[start:i], values[start:i]
        edge = min(run_vals) if passes[start] else max(run_vals)
        span = f"{run_xs[0]}" if len(run_xs) == 1 else f"{run_xs[0]}-{run_xs[-1]}"
        out.append(Condition(f"{label} {span}", edge, unit, passes[start]))
        start = i
    return out


def ratio_text(value: float) -> str:
    return f"{fmt(value)}x"


# ---- KV occupancy probe -----------------------------------------------------------------------
class KVProbe:
    """Wraps a replica's executor; before each step records the tokens whose KV the running
    requests hold and the tokens the allocator has reserved (``num_blocks_used x block_size``).

    ``slot_tokens``: count each running request as holding a fixed slot of that many tokens
    (an engine that reserves the maximum sequence length per request) instead of asking the
    allocator. Every step goes through ``run`` (the wrapper is not a ``RooflineExecutor``, so
    the engine does not fast-forward decode runs past it).
    """

    def __init__(self, inner: Any, scheduler: Any, slot_tokens: int | None = None):
        self.inner, self.scheduler, self.slot_tokens = inner, scheduler, slot_tokens
        self.held: list[float] = []
        self.reserved: list[float] = []
        self.seconds: list[float] = []

    def run(self, batch):
        result = self.inner.run(batch)
        sched = self.scheduler
        in_batch = {id(r): n for r, n, pad in zip(batch.requests, batch.new_tokens,
                                                  batch.padding, strict=True) if not pad}
        running = list(getattr(sched, "running", batch.requests))
        held = sum(r.num_computed_tokens + in_batch.get(id(r), 0) for r in running)
        if self.slot_tokens is not None:
            reserved = len(running) * self.slot_tokens
        else:
            alloc = sched.allocator
            reserved = alloc.num_blocks_used() * alloc.block_size
        self.held.append(held)
        self.reserved.append(reserved)
        self.seconds.append(result.seconds)
        return result

    def waste(self) -> float:
        """Time-weighted share of reserved KV that holds no token."""
        sec = np.asarray(self.seconds)
        reserved = float((sec * np.asarray(self.reserved)).sum())
        held = float((sec * np.asarray(self.held)).sum())
        return 1 - held / reserved if reserved else math.nan


def probe_factory(probes: list[KVProbe], slot_tokens: int | None = None):
    """An ``executor_factory`` for ``sim.simulate`` that wraps the roofline executor in a
    ``KVProbe`` (appended to ``probes``, one per replica)."""
    from sim.build import hardware_model
    from sim.executors import RooflineExecutor

    def factory(config, scheduler, plan):
        hw, _ = hardware_model(config)
        probe = KVProbe(RooflineExecutor(hw), scheduler, slot_tokens)
        probes.append(probe)
        return probe

    return factory
