"""The bottleneck advisor: which limit binds, and what the matching remedies measurably do.

Four limits are scored as *pressure* (the measured value over its target; 1 or more means the
target is missed): TTFT (p99 against the TTFT SLO), decode throughput (p99 TPOT against the TPOT
SLO), memory (peak KV-cache occupancy; preemptions or rejections count as over 1) and cost ($ per
million output tokens against an optional budget). The binding limit is the one under the most
pressure. Each remedy is a config change that is *re-simulated* on the same requests, and its
effect is reported as measured: a remedy that does not help shows that it does not.

A remedy that cannot change the run is not offered: raising a cap the run never reached (2x
max_num_seqs when fewer sequences than that ever ran at once) leaves every scheduling decision,
and so every number, as it was. ``idle_remedies`` says which were left out and why, and a
re-simulated remedy that measures exactly the current run is marked "no effect".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dashboard.breakdown import _peak_kv_fraction
from dashboard.cost import usd_per_million_tokens
from dashboard.runner import Outcome, with_overrides
from sim.config import Config

MEMORY_FULL = 0.98  # peak KV occupancy at which the pool counts as the limit


@dataclass(frozen=True, slots=True)
class Limit:
    name: str  # TTFT | decode throughput | memory | cost
    metric: str  # the summary key (or derived key) the pressure is computed from
    value: float
    target: float | None
    pressure: float  # value / target; NaN when there is no target
    detail: str


@dataclass(frozen=True, slots=True)
class Remedy:
    name: str
    overrides: dict[str, Any] = field(hash=False)
    why: str = ""
    idle: str = ""  # why it cannot change the run ("": it may)


NO_EFFECT = "no effect: the re-simulated run measures exactly as the current one"


def _ratio(value: float, target: float | None) -> float:
    return value / target if target and not math.isnan(value) else math.nan


def diagnose(outcome: Outcome, gpu_hour_usd: float,
             cost_target_usd: float | None = None) -> list[Limit]:
    """Score the four limits of one completed run."""
    cfg, res = outcome.config, outcome.result
    s, slo = res.summary, cfg.slo
    busy = res.steps["duration"].sum() / max(s["duration_s"], 1e-12) / max(s["num_replicas"], 1)
    queue_share = s["mean_queue_delay_ms"] / s["mean_ttft_ms"] if s["mean_ttft_ms"] else 0.0
    ttft = Limit("TTFT", "p99_ttft_ms", s["p99_ttft_ms"], slo.ttft_ms,
                 _ratio(s["p99_ttft_ms"], slo.ttft_ms),
                 f"p99 TTFT {s['p99_ttft_ms']:,.0f} ms; queueing is {queue_share:.0%} of mean TTFT")
    decode = Limit("decode throughput", "p99_tpot_ms", s["p99_tpot_ms"], slo.tpot_ms,
                   _ratio(s["p99_tpot_ms"], slo.tpot_ms),
                   f"p99 TPOT {s['p99_tpot_ms']:.1f} ms; GPUs busy {busy:.0%} of the run")
    peak = _peak_kv_fraction(res.steps)
    trouble = s["total_preemptions"] + s["rejected"]
    mem_pressure = peak / MEMORY_FULL
    if trouble:
        mem_pressure = max(mem_pressure, 1.0 + trouble / max(s["completed"] + s["rejected"], 1))
    memory = Limit("memory", "peak_kv_fraction", peak, MEMORY_FULL, mem_pressure,
                   f"peak KV occupancy {peak:.0%}; {s['total_preemptions']} preemptions, "
                   f"{s['rejected']} rejected")
    usd = usd_per_million_tokens(s["output_throughput"], cfg.hardware.num_gpus, gpu_hour_usd)
    cost = Limit("cost", "usd_per_m_output_tokens", usd, cost_target_usd,
                 _ratio(usd, cost_target_usd),
                 f"${usd:.3f} per million output tokens on {cfg.hardware.num_gpus} GPU(s)")
    return [ttft, decode, memory, cost]


def binding(limits: list[Limit]) -> Limit | None:
    """The limit under the most pressure if any target is missed, else None."""
    scored = [lim for lim in limits if not math.isnan(lim.pressure)]
    worst = max(scored, key=lambda lim: lim.pressure, default=None)
    return worst if worst is not None and worst.pressure >= 1.0 else None


def peak_sequences(steps: pd.DataFrame | None) -> int | None:
    """Most sequences a replica held at once in the run (in a step, or running after it)."""
    if steps is None or not len(steps):
        return None
    return int(max(steps["num_seqs"].max(), steps["num_running"].max()))


def _seqs_cap_idle(new_cap: int, cap: int, peak: int | None) -> str:
    """Why moving max_num_seqs from ``cap`` to ``new_cap`` cannot change a run that held at
    most ``peak`` sequences at once ("" if it can): the scheduler consults the cap only when
    that many sequences run, so a cap above the peak, before or after, never refused one."""
    if peak is not None and peak < min(cap, new_cap):
        return (f"at most {peak} sequences ran at once, below max_num_seqs {cap} and "
                f"{new_cap}: the cap never bound")
    return ""


def remedies(limit: str, config: Config, steps: pd.DataFrame | None = None) -> list[Remedy]:
    """Config changes that address ``limit``, differ from ``config`` and, judged by the run's
    ``steps`` when given, can change it."""
    return [r for r in candidate_remedies(limit, config, steps) if not r.idle]


def idle_remedies(limit: str, config: Config, steps: pd.DataFrame | None) -> list[Remedy]:
    """The remedies left out because they cannot change this run (``Remedy.idle`` says why)."""
    return [r for r in candidate_remedies(limit, config, steps) if r.idle]


def candidate_remedies(limit: str, config: Config,
                       steps: pd.DataFrame | None = None) -> list[Remedy]:
    """Every config change for ``limit`` that differs from ``config``, each with ``idle`` set
    when the run's ``steps`` show it cannot change the run."""
    hw, m, sc = config.hardware, config.model, config.scheduler
    peak = peak_sequences(steps)
    half_seqs, double_seqs = max(1, sc.max_num_seqs // 2), sc.max_num_seqs * 2
    double = {"hardware.num_gpus": hw.num_gpus * 2}
    more_tp = {"hardware.tp": hw.tp * 2, "hardware.num_gpus": hw.num_gpus * 2}
    fp8_w = {"model.weight_dtype": "fp8"} if m.weight_dtype in ("bf16", "fp16") else None
    fp8_kv = {"model.kv_dtype": "fp8"} if m.kv_dtype in ("bf16", "fp16") else None
    options: dict[str, list[tuple]] = {  # name, overrides, why[, idle]
        "TTFT": [
            ("chunked prefill", None if sc.policy == "chunked_prefill" else
             {"scheduler.policy": "chunked_prefill"}, "long prompts stop stalling the batch"),
            ("2x GPUs (replicas)", double, "half the load per replica: less queueing"),
            ("2x token budget", {"scheduler.max_num_batched_tokens": sc.max_num_batched_tokens * 2},
             "more prompt tokens per iteration"),
            ("FP8 weights", fp8_w, "faster prefill GEMMs where the GPU has FP8"),
        ],
        "decode throughput": [
            ("FP8 weights", fp8_w, "half the weight bytes read per decode step"),
            ("FP8 KV cache", fp8_kv, "half the KV bytes read by decode attention"),
            ("2x tensor parallel", more_tp, "each GPU reads half the weights"),
            ("speculative decoding (EAGLE)", None if config.speculative.method != "none" else
             {"speculative.method": "eagle"}, "several tokens per target step "
             "(acceptance as configured: speculative.acceptance)"),
            ("half max_num_seqs", {"scheduler.max_num_seqs": half_seqs},
             "smaller decode batches: faster steps, less throughput",
             _seqs_cap_idle(half_seqs, sc.max_num_seqs, peak)),
        ],
        "memory": [
            ("FP8 KV cache", fp8_kv, "twice the tokens in the same pool"),
            ("gpu_memory_utilization 0.95", None if hw.gpu_memory_utilization >= 0.95 else
             {"hardware.gpu_memory_utilization": 0.95}, "a bigger KV pool"),
            ("paged KV", {"kv_cache.allocator": "paged"} if config.kv_cache.allocator ==
             "contiguous" else None, "no reservation of each request's maximum length"),
            ("2x tensor parallel", more_tp, "weights split over twice the GPUs"),
            ("FP8 weights", fp8_w, "weight bytes freed for KV"),
        ],
        "cost": [
            ("half the GPUs", {"hardware.num_gpus": hw.num_gpus // 2}
             if hw.num_gpus >= 2 * hw.tp and (hw.num_gpus // 2) % hw.tp == 0 else None,
             "fewer GPUs if they are under-used"),
            ("FP8 weights and KV", {**(fp8_w or {}), **(fp8_kv or {})} or None,
             "more tokens per GPU-second"),
            ("2x max_num_seqs", {"scheduler.max_num_seqs": double_seqs},
             "bigger batches: more throughput per GPU",
             _seqs_cap_idle(double_seqs, sc.max_num_seqs, peak)),
        ],
    }
    return [Remedy(name, overrides, why, *idle) for name, overrides, why, *idle in options[limit]
            if overrides]


def _measure(outcome: Outcome, gpu_hour_usd: float) -> dict[str, float]:
    if not outcome.ok:
        return {}
    s = outcome.result.summary
    return {
        "p99_ttft_ms": s["p99_ttft_ms"],
        "p99_tpot_ms": s["p99_tpot_ms"],
        "output_throughput": s["output_throughput"],
        "goodput": s["goodput"],
        "peak_kv_fraction": _peak_kv_fraction(outcome.result.steps),
        "preemptions": s["total_preemptions"],
        "usd_per_m_output_tokens": usd_per_million_tokens(
            s["output_throughput"], outcome.config.hardware.num_gpus, gpu_hour_usd),
    }


def _same(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Equal measurements (NaN equal to NaN: a metric the run does not have)."""
    return a.keys() == b.keys() and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in ((a[k], b[k]) for k in a))


def evaluate(mapping: Mapping, limit: Limit, gpu_hour_usd: float,
             run: Callable[[Mapping], Outcome]) -> pd.DataFrame:
    """Re-simulate each remedy of ``limit``; one row each with the measured metrics.

    ``change`` is the relative change of the limit's own metric (negative is better for every
    limit's metric), ``error`` the message of a remedy that cannot run (e.g. it does not fit),
    ``note`` says ``NO_EFFECT`` when the remedy's run measured exactly as the current one (such
    rows come last).
    """
    base = run(mapping)
    before = _measure(base, gpu_hour_usd)
    rows = [{"remedy": "(current)", "why": "", **before, "change": 0.0, "error": "", "note": ""}]
    steps = base.result.steps if base.ok else None
    for remedy in remedies(limit.name, base.config, steps):
        outcome = run(with_overrides(mapping, remedy.overrides))
        after = _measure(outcome, gpu_hour_usd)
        value = after.get(limit.metric, math.nan)
        change = (value - before[limit.metric]) / before[limit.metric] \
            if before.get(limit.metric) else math.nan
        rows.append({"remedy": remedy.name, "why": remedy.why, **after, "change": change,
                     "error": outcome.error or "",
                     "note": NO_EFFECT if after and _same(after, before) else ""})
    frame = pd.DataFrame(rows)
    rest = frame.iloc[1:].assign(_idle=lambda f: f["note"] == NO_EFFECT)
    rest = rest.sort_values(["_idle", "change"], na_position="last").drop(columns="_idle")
    return pd.concat([frame.iloc[:1], rest], ignore_index=True)
