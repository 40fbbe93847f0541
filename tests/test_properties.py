"""Invariants of the engine and the core policies over random workloads (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.continuous import ContinuousScheduler
from policies.kv_contiguous import ContiguousAllocator
from policies.kv_paged import PagedAllocator
from policies.static import StaticScheduler
from sim.core import Request
from sim.engine import Engine, Replica, open_loop
from sim.executors import RooflineExecutor
from sim.metrics import MetricsRecorder
from tests.helpers import LinearHardware

SCHEDULERS = {"static": StaticScheduler, "continuous": ContinuousScheduler}
ALLOCATORS = {"paged": PagedAllocator, "contiguous": ContiguousAllocator}


class CheckingHardware(LinearHardware):
    """A hardware model that also checks, at every step, the invariants of the batch it gets."""

    def __init__(self, allocator):
        super().__init__()
        self.allocator = allocator
        self.steps = 0
        self.tokens_computed = 0  # what the GPU was asked to run, counted on its side

    def step_time_s(self, seqs):
        used = self.allocator.num_blocks_used()
        assert 0 <= used <= self.allocator.num_blocks_total
        assert all(n >= 1 and c >= 0 for n, c in seqs)
        self.steps += 1
        self.tokens_computed += sum(n for n, _ in seqs)
        return super().step_time_s(seqs)


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    gaps = rng.exponential(1.0 / draw(st.floats(0.5, 200.0)), size=n)
    prompts = rng.integers(1, draw(st.integers(2, 600)), size=n)
    outputs = rng.integers(1, draw(st.integers(2, 200)), size=n)
    requests = [Request(i, float(t), int(p), int(o))
                for i, (t, p, o) in enumerate(zip(np.cumsum(gaps), prompts, outputs, strict=True))]
    return dict(
        requests=requests,
        scheduler=draw(st.sampled_from(sorted(SCHEDULERS))),
        allocator=draw(st.sampled_from(sorted(ALLOCATORS))),
        num_blocks=draw(st.integers(1, 120)),
        block_size=draw(st.sampled_from([1, 4, 16])),
        max_num_seqs=draw(st.integers(1, 32)),
        max_tokens=draw(st.integers(1, 2048)),
    )


def simulate(s):
    allocator = ALLOCATORS[s["allocator"]](s["num_blocks"], s["block_size"])
    scheduler = SCHEDULERS[s["scheduler"]](allocator, s["max_num_seqs"], s["max_tokens"])
    hardware = CheckingHardware(allocator)
    metrics = MetricsRecorder()
    requests = [Request(r.request_id, r.arrival_time, r.prompt_tokens, r.output_tokens)
                for r in s["requests"]]
    Engine([Replica(0, scheduler, RooflineExecutor(hardware))], metrics).run(open_loop(requests))
    return metrics, allocator, requests, hardware


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_request_finishes_or_is_rejected_and_no_block_leaks(s):
    metrics, allocator, requests, hardware = simulate(s)
    df = metrics.requests_frame()
    assert sorted(df["request_id"]) == [r.request_id for r in requests]
    rejected = df[df["rejected"]]
    assert (rejected["rejected_reason"].str.len() > 0).all()
    done = df[~df["rejected"]]
    # the GPU ran every prompt token and every generated token but the last (never fed back);
    # a recompute preemption runs some again, static batching pads finished sequences, and a
    # rejected request runs nothing
    needed = int((done["prompt_tokens"] + done["output_tokens"] - 1).sum())
    if s["scheduler"] == "continuous" and done["preemptions"].sum() == 0:
        assert hardware.tokens_computed == needed
    else:
        assert hardware.tokens_computed >= needed
    assert allocator.num_blocks_used() == 0
    steps = metrics.steps_frame()
    assert (steps["kv_blocks_used"] <= steps["kv_blocks_total"]).all()
    # time never goes backwards, and each request's timestamps are ordered
    assert (np.diff(steps["start_time"]) >= 0).all()
    assert (done["arrival_time"] <= done["first_scheduled_time"]).all()
    assert (done["first_scheduled_time"] < done["first_token_time"]).all()
    assert (done["first_token_time"] <= done["finish_time"]).all()
    for r in requests:
        if r.rejected_reason is None:
            assert r.num_output_tokens == r.output_tokens


@settings(max_examples=30, deadline=None)
@given(scenarios())
def test_same_inputs_give_identical_results(s):
    first, _, _, _ = simulate(s)
    second, _, _, _ = simulate(s)
    assert first.requests_frame().equals(second.requests_frame())
    assert first.steps_frame().equals(second.steps_frame())
