"""Validation: the same workload simulated and served on the device; the difference is the error.

Each scenario is one config (policy, allocator, load). ``sim.simulate`` runs it twice on the
same seeded requests: once with the roofline executor under the calibrated profile, once with
``GpuExecutor`` (measured seconds). Both runs use fresh instances of the same policy classes.
The loads are set from the *measured* capacity of the real engine for each policy: a short
saturation probe (a closed loop at full concurrency, ``capacity``) runs on the device first and
the same probe is simulated, so the predicted capacity is compared with the measured one on
identical requests. Scenarios then run at 50%, 80% and 95% of the measured capacity ("p50",
"p80", "p95"); near saturation queueing magnifies any step-time error, and loads set from the
simulator's own estimate would put a 15% capacity error past the real engine's saturation.
(Older results used 35% and 85% of the simulated capacity: "low", "high".)

Raw results (summaries, per-step tables, per-step traces) are saved as JSON so the report
(``realexec/report.py``) can be rebuilt anywhere without a GPU.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import sim
from sim.config import set_dotted

LOAD_FRACTIONS = {"p50": 0.50, "p80": 0.80, "p95": 0.95, "low": 0.35, "high": 0.85}
SUITE_LOADS = ("p50", "p80", "p95")
PROBE_REQUESTS = 256  # requests of the saturation probe (2 x the suite's max_num_seqs)
STATS = ("mean", "median", "p90", "p99")
LATENCIES = ("ttft", "tpot", "itl", "e2el")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One held-out workload: dotted config overrides and a load level."""

    name: str
    overrides: dict[str, Any]
    load: str  # p50 | p80 | p95 (fractions of the measured capacity); low | high (older runs)

    @property
    def policy_key(self) -> tuple:
        """Scenarios differing only in load share one capacity estimate."""
        return tuple(sorted((k, str(v)) for k, v in self.overrides.items()
                            if not k.startswith("workload.")))


# Multi-turn chat sessions: each turn's prompt holds the history, sessions share system
# prompts, so a prefix cache (radix) has something to reuse. Contexts stay under 8k tokens.
SESSIONS = {
    "workload.arrival": "sessions",
    "workload.session": {
        "system_prompt_tokens": 512, "num_system_prompts": 4,
        "turns": {"dist": "uniform", "low": 2, "high": 5},
        "user_tokens": {"dist": "lognormal", "mean": 150, "sigma": 0.7, "min": 8, "max": 1024},
        "output_tokens": {"dist": "lognormal", "mean": 120, "sigma": 0.7, "min": 8, "max": 512},
        "think_time_s": 0.5, "max_context_tokens": 6000},
}


SCENARIO_KINDS = {
    "continuous-paged": {"scheduler.policy": "continuous"},
    "chunked-paged": {"scheduler.policy": "chunked_prefill",
                      "scheduler.max_num_batched_tokens": 512},
    "continuous-radix": {"scheduler.policy": "continuous", "kv_cache.allocator": "radix",
                         **SESSIONS},
    "chunked-radix": {"scheduler.policy": "chunked_prefill",
                      "scheduler.max_num_batched_tokens": 512, "kv_cache.allocator": "radix",
                      **SESSIONS},
    "static-paged": {"scheduler.policy": "static"},
    # speculative verify on the device; n-gram drafting is host-side (nothing to run)
    "continuous-paged-ngram": {"scheduler.policy": "continuous", "speculative.method": "ngram",
                               "speculative.num_draft_tokens": 3},
}


def default_scenarios() -> list[Scenario]:
    """Each policy kind at 50%, 80% and 95% of its measured capacity (issue #22).

    Static, continuous and chunked prefill; paged and radix (radix scenarios serve multi-turn
    sessions, so the prefix cache has something to reuse; the others independent Poisson
    requests); speculative verify. Ordered by kind, so that a run cut short by its time budget
    still has whole load sweeps of the first kinds.
    """
    return [Scenario(f"{kind}-{load}", overrides, load)
            for kind, overrides in SCENARIO_KINDS.items() for load in SUITE_LOADS]


def base_config(model: str, gpu: str, *, profile: str | None, seed: int = 0, tp: int = 1,
                max_num_seqs: int = 128, gpu_memory_utilization: float = 0.75) -> dict:
    """The config every scenario starts from (lengths like a chat workload, short outputs).

    ``gpu_memory_utilization`` below vLLM's 0.9 leaves the real engine room for its graphs and
    activations; both runs share the allocator, so it changes nothing in the comparison.
    """
    return {
        "seed": seed,
        "hardware": {"gpu": gpu, "gpu_memory_utilization": gpu_memory_utilization,
                     "profile": profile or "none", "tp": tp, "num_gpus": tp},
        "model": {"name": model},
        "scheduler": {"policy": "continuous", "max_num_seqs": max_num_seqs,
                      "max_num_batched_tokens": 8192},
        "kv_cache": {"allocator": "paged", "block_size": 16},
        "workload": {"arrival": "poisson", "rate": 1.0, "num_requests": 100,
                     "prompt_tokens": {"dist": "lognormal", "mean": 600, "sigma": 0.7,
                                       "min": 32, "max": 3072},
                     "output_tokens": {"dist": "lognormal", "mean": 160, "sigma": 0.7,
                                       "min": 8, "max": 768}},
    }


# gpu_memory_utilization values tried in order by ``fitting_utilization``: ours, then vLLM's
UTILIZATIONS = (0.75, 0.9)


def fitting_utilization(config: dict) -> float:
    """The first of ``UTILIZATIONS`` at which the config's catalog model has a memory plan.

    Why: a run on fewer layers (``--layers``) is planned as its catalog model (both runs share
    that KV pool), whose weights may not fit at 0.75: Llama-3.1-70B at tp=2 on an H100 needs
    70.6 GB per GPU of the 64.4 GB usable. At vLLM's default 0.9 they fit, and the pool is the
    one the whole model would have on those cards. If none fits, the first is kept and the
    scenario reports the planner's error.
    """
    from sim.build import hardware_model
    from sim.config import load_config as parse_config

    for utilization in UTILIZATIONS:
        cfg = apply(config, {"hardware.gpu_memory_utilization": utilization})
        try:
            hardware_model(parse_config(cfg))
        except ValueError:
            continue
        return utilization
    return UTILIZATIONS[0]


def apply(config: dict, overrides: dict[str, Any]) -> dict:
    cfg = copy.deepcopy(config)
    for key, value in overrides.items():
        set_dotted(cfg, key, value)
    return cfg


class RooflineFactory:
    """The simulated executor of a model run with fewer layers than its catalog entry.

    The config names the catalog model (its memory plan sizes the KV pool, for both runs);
    the roofline then prices the ``num_layers`` the device actually runs.
    """

    def __init__(self, num_layers: int):
        self.num_layers = num_layers

    def roofline(self, config: Any) -> Any:
        from hwmodels import RooflineModel

        hw, m = config.hardware, config.model
        return RooflineModel(hw.gpu, m.name, tp=hw.tp, weight_dtype=m.weight_dtype,
                             kv_dtype=m.kv_dtype, num_layers=self.num_layers,
                             profile=None if hw.profile == "none" else hw.profile)

    def __call__(self, config: Any, scheduler: Any, plan: Any) -> Any:
        from sim.executors import RooflineExecutor

        return RooflineExecutor(self.roofline(config))


def sim_capacity(config: dict, num_requests: int = PROBE_REQUESTS,
                 sim_factory: Callable | None = None) -> tuple[float, float]:
    """Saturation throughput, in requests/s and in the units of ``workload.rate``: simulated,
    or measured when ``sim_factory`` is the device's executor factory (the probe).

    Independent requests: a closed loop with every sequence slot busy. Sessions: session
    starts far faster than served; the rate unit is then sessions/s (requests per session
    come from the same simulated run).
    """
    if config["workload"].get("arrival") == "sessions":
        cfg = apply(config, {"workload.rate": 100.0, "workload.num_requests": num_requests})
        summary = sim.simulate(cfg, executor_factory=sim_factory).summary
        per_session = summary["completed"] / max(1, summary.get("num_sessions", 1))
        return summary["request_throughput"], summary["request_throughput"] / per_session
    slots = config["scheduler"]["max_num_seqs"]
    cfg = apply(config, {"workload.arrival": "closed", "workload.concurrency": slots,
                         "workload.num_requests": num_requests})
    rps = float(sim.simulate(cfg, executor_factory=sim_factory).summary["request_throughput"])
    return rps, rps


def load_config(base: dict, scenario: Scenario, capacity: tuple[float, float], target_s: float,
                min_requests: int = 30, max_requests: int = 600) -> dict:
    """The scenario's config with its arrival rate and ~``target_s`` worth of requests."""
    cfg = apply(base, scenario.overrides)
    rps, rate_capacity = capacity
    fraction = LOAD_FRACTIONS[scenario.load]
    n = int(min(max_requests, max(min_requests, round(fraction * rps * target_s))))
    return apply(cfg, {"workload.rate": round(fraction * rate_capacity, 4),
                       "workload.num_requests": n})


@dataclass
class ScenarioResult:
    """Both runs of one scenario, reduced to what the report needs (JSON-serialisable)."""

    name: str
    config: dict
    capacity_rps: float
    real: dict = field(default_factory=dict)  # summary + kv stats
    sim: dict = field(default_factory=dict)
    # per real step: [seqs, measured_s, predicted_s, host_s, gpu_s, kind, path]
    steps: list = field(default_factory=list)
    wall_s: float = 0.0
    error: str | None = None
    capacity_measured_rps: float = math.nan  # the real engine's, from the saturation probe


def kv_stats(steps) -> dict:
    """KV blocks used over the run: mean over steps and peak."""
    if steps is None or not len(steps):
        return {"kv_blocks_used_mean": math.nan, "kv_blocks_used_max": math.nan}
    used = steps["kv_blocks_used"].to_numpy(dtype=np.float64)
    return {"kv_blocks_used_mean": float(used.mean()), "kv_blocks_used_max": float(used.max()),
            "num_steps": int(len(steps))}


def run_scenario(scenario: Scenario, config: dict, capacity_rps: float, factory: Callable,
                 predict_s: Callable[[list], float] | None = None,
                 sim_factory: Callable | None = None) -> ScenarioResult:
    """Simulate, then serve on the device; keep summaries and the real per-step trace."""
    out = ScenarioResult(scenario.name, config, capacity_rps)
    simulated = sim.simulate(config, executor_factory=sim_factory)
    out.sim = {**simulated.summary, **kv_stats(simulated.steps)}
    start = time.perf_counter()
    real = sim.simulate(config, executor_factory=factory)
    out.wall_s = time.perf_counter() - start
    out.real = {**real.summary, **kv_stats(real.steps)}
    for executor in getattr(factory, "executors", []):
        timings = getattr(executor, "timings", [])
        for i, (seqs, seconds) in enumerate(executor.trace):
            predicted = predict_s(seqs) if predict_s else math.nan
            t = timings[i] if i < len(timings) else None
            extra = [t.host_s, t.gpu_s, t.kind, t.path] if t else []
            out.steps.append([seqs, seconds, predicted, *extra])
    if hasattr(factory, "release"):
        factory.release()
    return out


def metric_names() -> list[str]:
    names = [f"{s}_{m}_ms" for m in LATENCIES for s in STATS]
    return names + ["request_throughput", "output_throughput", "kv_blocks_used_mean",
                    "kv_blocks_used_max", "duration_s"]


def save_results(results: list[ScenarioResult], meta: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "scenarios": [asdict(r) for r in results]}
    path.write_text(json.dumps(payload, default=_jsonable))
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def resimulate(payload: dict, profile: str, command: str) -> dict:
    """The simulated side of saved runs, again, under another profile (no device needed).

    The real runs are kept as measured; each scenario's config (same seed, hence the same
    requests) is simulated with ``profile``, and every recorded real step is predicted again.
    """
    from sim.config import load_config as parse_config

    out = copy.deepcopy(payload)
    layers = payload["meta"].get("num_layers")
    for scn in out["scenarios"]:
        if scn.get("error"):
            continue
        cfg = apply(scn["config"], {"hardware.profile": profile})
        factory = RooflineFactory(layers) if layers else None
        simulated = sim.simulate(cfg, executor_factory=factory)
        scn["config"], scn["sim"] = cfg, {**simulated.summary, **kv_stats(simulated.steps)}
        hw = (factory or RooflineFactory(None)).roofline(parse_config(cfg))
        scn["steps"] = [[seqs, measured, hw.step_time_s([tuple(x) for x in seqs])]
                        for seqs, measured, _ in scn.get("steps", [])]
    out["meta"].update(profile=profile, resimulated=command)
    return out
