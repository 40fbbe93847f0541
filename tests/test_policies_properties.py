"""Invariants of every scheduler x allocator x knob combination over random workloads.

At every step: no block is leaked, held twice or freed twice, ref counts match the block tables
(so never go negative), and no locked radix node has been evicted (checked at each eviction).
At the end: every request finished with all its tokens, or was rejected with a reason, and the
pool holds nothing.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.base import is_prefilling
from policies.chunked import ChunkedPrefillScheduler
from policies.continuous import ContinuousScheduler
from policies.kv_contiguous import ContiguousAllocator
from policies.kv_paged import PagedAllocator, PrefixCachingAllocator
from policies.kv_radix import RadixAllocator
from policies.static import StaticScheduler
from policies.swap import SwapSpace, SwapTimeExecutor
from sim.core import Request
from sim.engine import Engine, Replica, open_loop
from sim.executors import RooflineExecutor
from sim.metrics import MetricsRecorder
from tests.helpers import LinearHardware


class CheckedRadix(RadixAllocator):
    """After every eviction, every running request's locked path is still in the tree."""

    def _evict_one(self) -> None:
        super()._evict_one()
        for held in self._held.values():
            node = held.node
            while node is not self.root:
                assert node.parent is not None and node.lock_ref > 0, "a locked node was evicted"
                node = node.parent


SCHEDULERS = {"static": StaticScheduler, "continuous": ContinuousScheduler,
              "chunked": ChunkedPrefillScheduler}
ALLOCATORS = {"contiguous": ContiguousAllocator, "paged": PagedAllocator,
              "prefix": PrefixCachingAllocator, "radix": CheckedRadix}


class CheckingHardware(LinearHardware):
    """Checks the pool and the batch shape at every step."""

    def __init__(self, scheduler, budget_holds: bool):
        super().__init__()
        self.scheduler, self.budget_holds = scheduler, budget_holds

    def step_time_s(self, seqs):
        alloc = self.scheduler.allocator
        alloc.check()
        assert 0 <= alloc.num_blocks_used() <= alloc.num_blocks_total
        assert all(n >= 1 and c >= 0 for n, c in seqs)
        assert len(seqs) <= self.scheduler.max_num_seqs
        if self.budget_holds:
            assert sum(n for n, _ in seqs) <= self.scheduler.max_num_batched_tokens
        return super().step_time_s(seqs)


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    span = draw(st.sampled_from([2, 4, 8, 16]))
    gaps = rng.exponential(1.0 / draw(st.floats(1.0, 200.0)), size=n)
    requests = []
    for i, t in enumerate(np.cumsum(gaps)):
        prompt = int(rng.integers(1, draw(st.integers(2, 300)) + 1))
        blocks = -(-prompt // span)
        group = int(rng.integers(0, 3))  # a few shared "system prompts", then unique content
        shared = int(rng.integers(0, blocks + 1))
        hashes = tuple(group * 1000 + j for j in range(shared)) + tuple(
            (i + 1) * 100_000 + j for j in range(blocks - shared))
        if rng.random() < 0.2:
            hashes = ()
        requests.append(Request(i, float(t), prompt, int(rng.integers(1, 60)),
                                prefix_hashes=hashes, hash_block_tokens=span,
                                priority=int(rng.integers(0, 3))))
    return dict(
        requests=requests,
        scheduler=draw(st.sampled_from(sorted(SCHEDULERS))),
        allocator=draw(st.sampled_from(sorted(ALLOCATORS))),
        num_blocks=draw(st.integers(1, 80)),
        block_size=draw(st.sampled_from([1, 2, 4, 16])),
        max_num_seqs=draw(st.integers(1, 16)),
        max_tokens=draw(st.integers(1, 512)),
        chunk_size=draw(st.one_of(st.none(), st.integers(1, 64))),
        split_prompts=draw(st.booleans()),
        order=draw(st.sampled_from(["fcfs", "priority"])),
        preemption=draw(st.sampled_from(["recompute", "swap"])),
        swap_tokens=draw(st.integers(0, 400)),
        admission=draw(st.sampled_from(["greedy", "no_evict"])),
    )


def simulate(s):
    allocator = ALLOCATORS[s["allocator"]](s["num_blocks"], s["block_size"])
    swap = SwapSpace(s["swap_tokens"] * 10.0, 10.0, 1e6) if s["preemption"] == "swap" else None
    kwargs = dict(order=s["order"], preemption=s["preemption"], swap=swap,
                  admission=s["admission"], chunk_size=s["chunk_size"])
    if s["scheduler"] == "chunked":
        kwargs["split_prompts"] = s["split_prompts"]
    scheduler = SCHEDULERS[s["scheduler"]](allocator, s["max_num_seqs"], s["max_tokens"],
                                           **kwargs)
    budget_holds = s["scheduler"] == "chunked" and s["split_prompts"]  # decodes count too
    executor = RooflineExecutor(CheckingHardware(scheduler, budget_holds))
    if swap is not None:
        executor = SwapTimeExecutor(executor, swap)
    requests = [Request(r.request_id, r.arrival_time, r.prompt_tokens, r.output_tokens,
                        prefix_hashes=r.prefix_hashes, hash_block_tokens=r.hash_block_tokens,
                        priority=r.priority) for r in s["requests"]]
    metrics = MetricsRecorder()
    Engine([Replica(0, scheduler, executor)], metrics).run(open_loop(requests))
    return metrics, scheduler, requests


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_request_finishes_or_is_rejected_and_nothing_leaks(s):
    metrics, scheduler, requests = simulate(s)
    alloc = scheduler.allocator
    alloc.check()
    assert alloc.num_blocks_used() == 0
    df = metrics.requests_frame()
    assert sorted(df["request_id"]) == [r.request_id for r in requests]
    for r in requests:
        if r.rejected_reason is None:
            assert r.finish_time is not None and r.num_output_tokens == r.output_tokens
            assert r.cached_tokens <= r.prompt_tokens - 1 or r.prompt_tokens == 1
        else:
            assert r.rejected_reason and r.finish_time is None
    stats = scheduler.stats()
    assert stats["rejected_too_long"] == int(df["rejected"].sum())
    assert stats["preemptions_recompute"] + stats.get("preemptions_swap", 0) == sum(
        r.preemptions for r in requests)
    if swap := scheduler.swap:
        assert swap.used_bytes == 0 and stats["swap_outs"] == stats["swap_ins"]
    if s["admission"] == "no_evict":
        assert sum(r.preemptions for r in requests) == 0


@settings(max_examples=25, deadline=None)
@given(scenarios())
def test_same_inputs_give_identical_results(s):
    first, _, _ = simulate(s)
    second, _, _ = simulate(s)
    assert first.requests_frame().equals(second.requests_frame())
    assert first.steps_frame().equals(second.steps_frame())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_unchunked_continuous_batching_never_leaves_a_prompt_half_filled(s):
    """Continuous batching without a chunk size does not look for started prompts among the
    running requests; what makes that exact: before every ``schedule()``, whatever the pool,
    preemptions (recompute or swap), prefix hits and admission, no running request has prompt
    tokens left."""
    s = {**s, "scheduler": "continuous", "chunk_size": None}
    before: list[bool] = []
    schedule = ContinuousScheduler.schedule

    def checked(self, now):
        before.append(not any(is_prefilling(r) for r in self.running))
        return schedule(self, now)

    with mock.patch.object(ContinuousScheduler, "schedule", checked):
        simulate(s)
    assert before and all(before)
