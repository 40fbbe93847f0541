"""Capacity search: the cheapest deployment that meets latency SLOs for a workload.

The candidates are aggregated deployments (n replicas of tp GPUs) and disaggregated ones
(prefill and decode pools, each with its own replica count and tp), up to a GPU budget. They
are simulated in order of cost (GPUs), all on the same requests (one seed: common random
numbers), one cost level at a time as a ``sim.sweep`` grid (in parallel where there are
cores), and the search stops after the first cost level at which some candidate meets the
SLOs; among those it keeps the one with the highest goodput. A tp degree at which the model
does not fit (or does not divide its heads) is left out, with the reason.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sim.config import Config, ConfigError, load_config


@dataclass(frozen=True, slots=True)
class Candidate:
    """One deployment to try. Aggregated: ``replicas`` x ``tp``; disaggregated: prefill and
    decode pools of ``prefill_replicas`` x ``prefill_tp`` and ``decode_replicas`` x
    ``decode_tp``."""

    mode: str  # "aggregated" | "disaggregated"
    tp: int = 1
    replicas: int = 0
    prefill_tp: int = 1
    prefill_replicas: int = 0
    decode_tp: int = 1
    decode_replicas: int = 0

    @property
    def num_gpus(self) -> int:
        if self.mode == "aggregated":
            return self.replicas * self.tp
        return self.prefill_replicas * self.prefill_tp + self.decode_replicas * self.decode_tp

    @property
    def label(self) -> str:
        if self.mode == "aggregated":
            return f"{self.replicas}x tp{self.tp}"
        return (f"P {self.prefill_replicas}x tp{self.prefill_tp} + "
                f"D {self.decode_replicas}x tp{self.decode_tp}")

    def tps(self) -> tuple[int, ...]:
        return (self.tp,) if self.mode == "aggregated" else (self.prefill_tp, self.decode_tp)

    def overrides(self) -> dict[str, Any]:
        """The cluster section (and tp) of this deployment, as a config mapping fragment."""
        if self.mode == "aggregated":
            return {"cluster": {"pools": [{"num_gpus": self.num_gpus, "tp": self.tp}]}}
        return {"cluster": {"pools": [
            {"role": "prefill", "num_gpus": self.prefill_replicas * self.prefill_tp,
             "tp": self.prefill_tp},
            {"role": "decode", "num_gpus": self.decode_replicas * self.decode_tp,
             "tp": self.decode_tp}]}}


def candidates(max_gpus: int, tps: Iterable[int] = (1, 2, 4, 8),
               modes: Iterable[str] = ("aggregated", "disaggregated")) -> list[Candidate]:
    """Every deployment up to ``max_gpus`` GPUs, cheapest first (aggregated before
    disaggregated at equal cost: it is the simpler system)."""
    tps, modes = sorted(set(tps)), tuple(modes)
    unknown = set(modes) - {"aggregated", "disaggregated"}
    if unknown:
        raise ConfigError(f"capacity.modes: unknown {sorted(unknown)}; "
                          "allowed: aggregated, disaggregated")
    out: list[Candidate] = []
    if "aggregated" in modes:
        out += [Candidate("aggregated", tp=tp, replicas=n)
                for tp in tps for n in range(1, max_gpus // tp + 1)]
    if "disaggregated" in modes:
        for ptp, dtp in itertools.product(tps, tps):
            for p in range(1, max_gpus // ptp + 1):
                for d in range(1, (max_gpus - p * ptp) // dtp + 1):
                    out.append(Candidate("disaggregated", prefill_tp=ptp, prefill_replicas=p,
                                         decode_tp=dtp, decode_replicas=d))
    order = {"aggregated": 0, "disaggregated": 1}
    return sorted(out, key=lambda c: (c.num_gpus, order[c.mode], c.label))


def meets(summary: Mapping[str, Any], ttft_p90_ms: float | None,
          tpot_p90_ms: float | None) -> bool:
    """Every request served (none rejected) and the p90 TTFT and TPOT within their targets."""
    if summary["rejected"] or not summary["completed"]:
        return False
    if ttft_p90_ms is not None and not summary["p90_ttft_ms"] <= ttft_p90_ms:
        return False
    return tpot_p90_ms is None or summary["p90_tpot_ms"] <= tpot_p90_ms


@dataclass
class SearchResult:
    """The cheapest deployment meeting the SLOs (None if none within the budget), every
    candidate simulated (one row each), and the tp degrees left out with the reason."""

    best: Candidate | None
    table: pd.DataFrame
    skipped_tps: dict[int, str]


def _with(base: Config, candidate: Candidate, ttft_p90_ms: float | None,
          tpot_p90_ms: float | None) -> Config:
    data = base.model_dump()
    data["hardware"].pop("num_gpus", None)
    data["cluster"]["pools"] = candidate.overrides()["cluster"]["pools"]
    data["slo"]["ttft_ms"] = ttft_p90_ms or data["slo"]["ttft_ms"]
    data["slo"]["tpot_ms"] = tpot_p90_ms or data["slo"]["tpot_ms"]
    return load_config(data)


def fitting_tps(base: Config, tps: Iterable[int]) -> tuple[list[int], dict[int, str]]:
    """The tp degrees whose replica holds the model (weights, activations, one KV block)."""
    from sim.build import hardware_model

    ok, skipped = [], {}
    for tp in sorted(set(tps)):
        try:
            hardware_model(load_config(base, [f"hardware.tp={tp}", f"hardware.num_gpus={tp}"]))
            ok.append(tp)
        except ConfigError as exc:
            skipped[tp] = str(exc)
    return ok, skipped


METRICS = ("completed", "rejected", "p90_ttft_ms", "p90_tpot_ms", "goodput",
           "request_throughput")


def _sweep_level(configs: list[Config], jobs: int | None) -> list[dict]:
    """Summaries of one cost level's candidates, run as one ``sim.sweep`` grid (in parallel
    when ``jobs`` allows). A candidate the simulator refuses comes back as its error."""
    from sim.sweep import SweepSpec, run_sweep

    base = configs[0].model_dump()
    base["hardware"].pop("num_gpus", None)
    pools = [[p.model_dump() for p in c.cluster.pools] for c in configs]
    spec = SweepSpec(base=base, grid={"cluster.pools": pools}, seeds=[configs[0].seed],
                     metrics=list(METRICS))
    with tempfile.TemporaryDirectory() as tmp:
        table = run_sweep(spec, Path(tmp) / "level.parquet", jobs=jobs)
    out = []
    for r in table.sort_values("point").to_dict("records"):
        summary = {k: r[k] for k in METRICS}
        summary["completed"], summary["rejected"] = int(r["completed"]), int(r["rejected"])
        out.append({"error": r["error"]} if r["error"] else summary)
    return out


def search(base: Config | Mapping | str | None, *, ttft_p90_ms: float | None,
           tpot_p90_ms: float | None, max_gpus: int, tps: Iterable[int] = (1, 2, 4, 8),
           modes: Iterable[str] = ("aggregated", "disaggregated"), jobs: int | None = None,
           simulate: Callable[[Config], Any] | None = None) -> SearchResult:
    """Simulate candidates cheapest first, one GPU count at a time (a ``sim.sweep`` grid over
    its pool layouts, ``jobs`` processes); stop at the first count where one meets the SLOs.

    ``simulate`` (a ``sim.simulate`` stand-in) runs the candidates one by one in this process
    instead.
    """
    if ttft_p90_ms is None and tpot_p90_ms is None:
        raise ConfigError("capacity: give ttft_p90_ms or tpot_p90_ms (or both)")
    if max_gpus < 1:
        raise ConfigError(f"capacity.max_gpus: must be >= 1 (got {max_gpus})")
    cfg = load_config(base)
    usable, skipped = fitting_tps(cfg, tps)
    rows: list[dict] = []
    best: tuple[float, Candidate] | None = None
    for gpus, level in itertools.groupby(candidates(max_gpus, usable, modes),
                                         key=lambda c: c.num_gpus):
        level = list(level)
        configs = [_with(cfg, c, ttft_p90_ms, tpot_p90_ms) for c in level]
        summaries = ([simulate(c).summary for c in configs] if simulate is not None
                     else _sweep_level(configs, jobs))
        for cand, summary in zip(level, summaries, strict=True):
            ok = "error" not in summary and meets(summary, ttft_p90_ms, tpot_p90_ms)
            rows.append({"deployment": cand.label, "mode": cand.mode, "num_gpus": gpus,
                         "meets_slo": ok, **{k: summary.get(k, math.nan) for k in METRICS[1:]},
                         "error": summary.get("error", "")})
            if ok and (best is None or summary["goodput"] > best[0]):
                best = (summary["goodput"], cand)
        if best is not None:
            break
    return SearchResult(best[1] if best else None, pd.DataFrame(rows), skipped)
