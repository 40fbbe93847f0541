"""Test doubles shared by the tests: a linear hardware model and a one-call engine run."""

from __future__ import annotations

from dataclasses import dataclass

from sim.engine import Engine, Replica, open_loop
from sim.executors import RooflineExecutor
from sim.metrics import MetricsRecorder


@dataclass
class LinearHardware:
    """Step time = base + per_token x new tokens + per_context x cached context tokens (s)."""

    base_s: float = 0.005
    per_token_s: float = 1e-5
    per_context_s: float = 1e-8

    def step_time_s(self, seqs: list[tuple[int, int]]) -> float:
        new = sum(n for n, _ in seqs)
        ctx = sum(c for _, c in seqs)
        return self.base_s + self.per_token_s * new + self.per_context_s * ctx


def run_requests(scheduler, requests, hardware=None) -> MetricsRecorder:
    """Serve ``requests`` (open loop, at their arrival times) on one replica; return the metrics."""
    metrics = MetricsRecorder()
    replica = Replica(0, scheduler, RooflineExecutor(hardware or LinearHardware()))
    Engine([replica], metrics).run(open_loop(requests))
    return metrics
