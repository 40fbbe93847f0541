"""Routers on hand-traced sequences: each expected replica below is worked out step by step
from the router's documented rule, with replicas whose load and cache are set by hand."""

from dataclasses import dataclass, field

import pytest

from sim.core import Request
from sim.engine import Replica, RoundRobinRouter
from sim.routers import (
    LeastKVLoadRouter,
    LeastOutstandingRouter,
    PrefixAwareRouter,
    SessionAffinityRouter,
)


@dataclass
class StubAllocator:
    num_blocks_total: int = 100
    used: int = 0
    cached: dict[int, int] = field(default_factory=dict)  # request id -> cached prompt tokens
    block_size: int = 16

    def num_blocks_used(self) -> int:
        return self.used

    def lookup_prefix(self, request: Request) -> int:
        return self.cached.get(request.request_id, 0)


@dataclass
class StubScheduler:
    num_running: int = 0
    allocator: StubAllocator = field(default_factory=StubAllocator)


def _replicas(*schedulers: StubScheduler) -> list[Replica]:
    return [Replica(i, s, executor=None) for i, s in enumerate(schedulers)]


def _route(router, replicas, requests) -> list[int]:
    return [router.route(r, replicas).index for r in requests]


def _req(i: int, prompt: int = 320, **kw) -> Request:
    return Request(i, 0.0, prompt, 10, **kw)


def test_round_robin_takes_replicas_in_turn():
    reps = _replicas(StubScheduler(), StubScheduler(), StubScheduler())
    assert _route(RoundRobinRouter(), reps, [_req(i) for i in range(7)]) == [0, 1, 2, 0, 1, 2, 0]


def test_least_outstanding_counts_running_plus_routed_and_not_yet_admitted():
    reps = _replicas(StubScheduler(2), StubScheduler(0), StubScheduler(1))
    router = LeastOutstandingRouter()
    reqs = [_req(i) for i in range(5)]
    # outstanding [2,0,1] -> 1; [2,1,1] -> 1 (tie: lowest index); [2,2,1] -> 2; [2,2,2] -> 0;
    # [3,2,2] -> 1
    assert _route(router, reps, reqs) == [1, 1, 2, 0, 1]
    # the first two sent to replica 1 are admitted and have finished: it has 0 running and
    # one queued (request 4); outstanding [3, 1, 2] -> 1
    reqs[0].first_scheduled_time = reqs[1].first_scheduled_time = 1.0
    assert router.outstanding(reps[1]) == 1
    fifth = _req(5)
    assert _route(router, reps, [fifth]) == [1]
    # replica 1's queue is [4, 5]: 5 admitted out of turn still counts until 4 is (the
    # documented head-of-queue drain); then both leave it
    fifth.first_scheduled_time = 2.0
    assert router.outstanding(reps[1]) == 2
    reqs[4].first_scheduled_time = 2.0
    assert router.outstanding(reps[1]) == 0


def test_least_kv_load_counts_used_and_queued_blocks():
    """Pools of 100 and 200 blocks, 50 used each (load 0.5 and 0.25); each 320-token prompt
    claims 20 blocks: replica 1 goes 0.25 -> 0.35 -> 0.45 -> 0.55, then replica 0 (0.5)."""
    reps = _replicas(StubScheduler(0, StubAllocator(100, 50)),
                     StubScheduler(0, StubAllocator(200, 50)))
    router = LeastKVLoadRouter()
    assert _route(router, reps, [_req(i) for i in range(4)]) == [1, 1, 1, 0]
    assert router.kv_load(reps[1]) == pytest.approx(110 / 200)
    assert router.kv_load(reps[0]) == pytest.approx(70 / 100)


def test_least_kv_load_breaks_ties_by_outstanding_requests():
    reps = _replicas(StubScheduler(3, StubAllocator(100, 10)),
                     StubScheduler(1, StubAllocator(100, 10)))
    # equal load 0.1: fewer outstanding (1 < 3) wins; a 17-token prompt claims 2 blocks
    assert _route(LeastKVLoadRouter(), reps, [_req(0, prompt=17)]) == [1]


def test_prefix_aware_scores_cache_against_load():
    """score = cached / prompt - w (load - least load) / (mean load + 1)."""
    hashes = tuple(range(32))
    req = _req(0, prompt=512, prefix_hashes=hashes)

    def pick(weight, running, cached):
        reps = _replicas(*(StubScheduler(n, StubAllocator(cached={0: c}))
                           for n, c in zip(running, cached, strict=True)))
        return PrefixAwareRouter(weight).route(req, reps).index

    # equal loads: the longer cached prefix wins (384/512 over 256/512)
    assert pick(1.0, [0, 0], [256, 384]) == 1
    # loads [3, 0]: scale 1.5 + 1 = 2.5; replica 0: 0.5 - 3 / 2.5 = -0.7 < replica 1: 0
    assert pick(1.0, [3, 0], [256, 0]) == 1
    # weight 0.2: 0.5 - 0.2 x 1.2 = 0.26 > 0
    assert pick(0.2, [3, 0], [256, 0]) == 0
    # loads [1, 0]: scale 1.5; 0.5 - 1 / 1.5 = -0.17 < 0
    assert pick(1.0, [1, 0], [256, 0]) == 1
    # loads [1, 0], the whole prompt cached: 1 - 1 / 1.5 = 0.33 > 0
    assert pick(1.0, [1, 0], [512, 0]) == 0
    # no prefix hashes: no cache is consulted; equal scores go to the less loaded
    plain = _req(1, prompt=512)
    reps = _replicas(StubScheduler(2, StubAllocator(cached={1: 500})), StubScheduler(1))
    assert PrefixAwareRouter(0.0).route(plain, reps).index == 1


def test_session_affinity_keeps_a_session_where_it_started():
    reps = _replicas(StubScheduler(0), StubScheduler(5))
    router = SessionAffinityRouter()
    first = _req(0, session_id=7)
    assert _route(router, reps, [first]) == [0]  # least outstanding
    reps[0].scheduler.num_running = 10
    # session 7 stays on 0 however loaded; session 8 and a session-less request go to the
    # least outstanding (replica 0: 10 running + 2 queued; replica 1: 5, then 6)
    assert _route(router, reps, [_req(1, session_id=7), _req(2, session_id=8), _req(3)]) == [
        0, 1, 1]
    assert _route(router, reps, [_req(4, session_id=8)]) == [1]  # 8's home is now 1
