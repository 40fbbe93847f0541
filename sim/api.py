"""``simulate(config) -> Result``: the Python entry point of the contract."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import simpy

from sim.build import ExecutorFactory, build
from sim.cluster import cluster_summary
from sim.config import Config, load_config
from sim.engine import Engine, closed_loop, gated_open_loop, open_loop, open_loop_with_client
from sim.metrics import SLO, MetricsRecorder, policy_summary, speculative_summary, summarize
from sim.routers import make_router
from sim.sessions import SessionWorkload, session_summary, synthetic_workload
from sim.traces import trace_workload
from sim.units import summary_document, write_parquet
from sim.workload import ClientLatency, ClientSpec, RequestFactory, open_loop_requests


@dataclass
class Result:
    """Per-request and per-step tables and the summary of one simulated run."""

    requests: pd.DataFrame
    steps: pd.DataFrame
    summary: dict
    config: Config
    plan: Any = None
    sessions: pd.DataFrame | None = None  # session workloads: one row per session (latency)
    turns: pd.DataFrame | None = None  # session workloads: which session sent each request

    def save(self, out_dir: str | Path) -> Path:
        """Write ``requests.parquet``, ``steps.parquet`` and ``summary.json`` to ``out_dir``,
        each with its units (``sim.units``: seconds in the tables, ms in the summary)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_parquet(self.requests, out / "requests.parquet")
        write_parquet(self.steps, out / "steps.parquet")
        if self.sessions is not None:
            write_parquet(self.sessions, out / "sessions.parquet")
            write_parquet(self.turns, out / "turns.parquet")
        slo = self.config.slo
        document = summary_document(self.summary, slo_set=any(
            v is not None for v in (slo.ttft_ms, slo.tpot_ms, slo.e2el_ms)))
        (out / "summary.json").write_text(json.dumps(document, indent=2, default=float))
        return out


def workload_process(config: Config) -> Callable[[Engine], Iterator[simpy.Event]]:
    """The arrival process the config asks for, drawing lengths from seeded streams."""
    wl = config.workload
    prompt, output = wl.lengths()
    factory = RequestFactory(prompt, output, config.seed)
    if wl.arrival == "trace":
        return trace_workload(wl, config.seed)
    if wl.arrival == "sessions":
        return synthetic_workload(wl, config.seed)
    client = client_latency(config)  # the config's validators ensured the run ends
    if wl.arrival == "closed":
        return closed_loop(factory.make, wl.concurrency, wl.num_requests, wl.duration_s,
                           client)
    requests = open_loop_requests(factory, wl.arrival, wl.rate, wl.cv, wl.num_requests,
                                  wl.duration_s)
    if wl.concurrency is not None:  # vllm bench serve --request-rate R --max-concurrency N
        return gated_open_loop(requests, wl.concurrency, client)
    return open_loop(requests) if client is None else open_loop_with_client(requests, client)


def client_latency(config: Config) -> ClientLatency | None:
    """The client model of ``workload.client`` for this arrival process, or None when off.

    ``auto`` (the default) models the client in closed loops and in open loops capped by
    ``workload.concurrency``, where its delays decide how requests interleave, and leaves
    uncapped open loops as their arrival process times them. Options an arrival process has
    no place for are refused by ``WorkloadConfig`` itself."""
    wl, cc = config.workload, config.workload.client
    if wl.arrival in ("trace", "sessions"):
        return None
    gated = wl.arrival == "closed" or wl.concurrency is not None
    if cc.mode == "off" or (cc.mode == "auto" and not gated):
        return None
    spec = ClientSpec(latency_s=cc.latency_ms / 1e3, latency_sigma=cc.latency_sigma,
                      frontend_s=cc.frontend_ms / 1e3,
                      frontend_s_per_token=cc.frontend_us_per_token / 1e6,
                      ramp_up_s=cc.ramp_up_s)
    if not spec.adds_latency and not spec.ramp_up_s:
        return None
    return ClientLatency(spec, config.seed)


def warmup_mask(requests: pd.DataFrame, config: Config) -> pd.Series:
    """True for the requests ``workload.client`` leaves out of the summary as warm-up: the
    first ``warmup_requests`` sent (ids count in send order) and those sent before
    ``warmup_s``."""
    cc = config.workload.client
    return (requests["request_id"] < cc.warmup_requests) | (
        requests["arrival_time"] < cc.warmup_s)


def simulate(config: Config | dict | str | Path | None = None, *,
             executor_factory: ExecutorFactory | None = None,
             progress: Callable[[int], None] | None = None) -> Result:
    """Simulate one experiment. ``config`` is a Config, a YAML-shaped mapping or a YAML path."""
    cfg = config if isinstance(config, Config) else load_config(config)
    deployment = build(cfg, executor_factory)
    metrics = MetricsRecorder()
    router = deployment.router or make_router(cfg.cluster.router, cfg.cluster.prefix_load_weight)
    engine = Engine(deployment.replicas, metrics, router=router, on_done=progress)
    if deployment.disaggregation is not None:
        deployment.disaggregation.bind(engine.env)
    workload = workload_process(cfg)
    cc = cfg.workload.client
    if cc.warmup_requests or cc.warmup_s:
        engine.measure_from = (cc.warmup_requests, cc.warmup_s)
        workload.lane_refusal = "warm-up exclusion (workload.client.warmup_*) is on"
    engine.run(workload)
    requests, steps = metrics.requests_frame(), metrics.steps_frame()
    slo = SLO(cfg.slo.ttft_ms, cfg.slo.tpot_ms, cfg.slo.e2el_ms)
    warmup = warmup_mask(requests, cfg)
    measured = requests[~warmup]
    window_start = (float(measured["arrival_time"].min())
                    if warmup.any() and len(measured) else None)
    summary = summarize(measured, metrics.itl, slo, window_start=window_start)
    summary["warmup_requests_excluded"] = int(warmup.sum())
    summary["kv_pool_blocks"] = deployment.plan.kv_pool_blocks
    summary["num_replicas"] = len(deployment.replicas)
    summary["num_gpus"] = deployment.num_gpus or cfg.hardware.num_gpus
    summary.update(policy_summary([r.scheduler for r in deployment.replicas], steps))
    summary.update(cluster_summary(requests, deployment.disaggregation is not None))
    summary.update(speculative_summary(requests, steps, deployment.plan))
    sessions = turns = None
    if isinstance(workload, SessionWorkload):
        turns, sessions = workload.log.frames(requests)
        summary.update(session_summary(sessions))
    # deployment.config is the config as run: with the engine preset applied
    return Result(requests, steps, summary, deployment.config, deployment.plan,
                  sessions=sessions, turns=turns)
