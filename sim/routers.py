"""Routers: which replica serves an arriving request.

Round robin is ``sim.engine.RoundRobinRouter`` (the default); these look at load, at the prefix
cache or at the session. A router picks among the replicas it is handed, so the same classes
route arrivals to a prefill pool and prefilled requests to a decode pool; there the
``admitted`` predicate (``sim.disagg.admitted_for_decode``) says when a routed request stops
counting as queued.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from core import Request
from sim.config import ConfigError
from sim.engine import Replica, RoundRobinRouter, Router

Admitted = Callable[[Request], bool]


def scheduled_here(request: Request) -> bool:
    """A request has left an aggregated/prefill replica's queue once it was first scheduled."""
    return request.first_scheduled_time is not None or request.is_finished


def _blocks(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


class LoadAwareRouter:
    """Base of the routers that look at load.

    A replica's scheduler only knows what it admitted; requests the router sent that are still
    queued (or, for a decode replica, still in KV transfer) are tracked here, in routing order,
    until ``admitted`` says they were taken in. The queue drains from its head, O(1) amortized
    per request; under FCFS admission that is exact, and with a priority order a request
    admitted out of turn still counts until those routed before it are admitted.
    """

    def __init__(self, admitted: Admitted = scheduled_here):
        self._admitted = admitted
        self._queued: dict[int, deque[tuple[Request, int]]] = {}
        self._queued_blocks: dict[int, int] = {}

    def route(self, request: Request, replicas: list[Replica]) -> Replica:
        replica = self.pick(request, replicas)
        blocks = _blocks(request.num_tokens, replica.scheduler.allocator.block_size)
        self._queued.setdefault(replica.index, deque()).append((request, blocks))
        self._queued_blocks[replica.index] = self._queued_blocks.get(replica.index, 0) + blocks
        return replica

    def pick(self, request: Request, replicas: list[Replica]) -> Replica:
        raise NotImplementedError

    def _drain(self, index: int) -> deque[tuple[Request, int]]:
        queue = self._queued.setdefault(index, deque())
        while queue and self._admitted(queue[0][0]):
            self._queued_blocks[index] -= queue.popleft()[1]
        return queue

    def outstanding(self, replica: Replica) -> int:
        """Requests running on the replica plus those sent to it and not yet admitted."""
        return replica.scheduler.num_running + len(self._drain(replica.index))

    def kv_load(self, replica: Replica) -> float:
        """Fraction of the KV pool in use or claimed by queued prompts (may exceed 1)."""
        self._drain(replica.index)
        alloc = replica.scheduler.allocator
        queued = self._queued_blocks.get(replica.index, 0)
        return (alloc.num_blocks_used() + queued) / alloc.num_blocks_total


class LeastOutstandingRouter(LoadAwareRouter):
    """Fewest outstanding requests (ties: lowest index), as load balancers' least-request."""

    def pick(self, request: Request, replicas: list[Replica]) -> Replica:
        return min(replicas, key=self.outstanding)


class LeastKVLoadRouter(LoadAwareRouter):
    """Lowest KV pool load (used + queued), then fewest outstanding: fits long contexts and
    heterogeneous pools, where a request count says little about memory pressure."""

    def pick(self, request: Request, replicas: list[Replica]) -> Replica:
        return min(replicas, key=lambda r: (self.kv_load(r), self.outstanding(r)))


class PrefixAwareRouter(LoadAwareRouter):
    """The replica holding the longest cached prefix of the prompt, with a load-balance term.

    score = cached fraction of the prompt - ``load_weight`` x (outstanding - least outstanding)
    / (mean outstanding + 1). With equal loads the longest cached prefix wins; a replica busier
    than the least loaded by the mean load loses a whole prompt's worth of cache, so hot
    prefixes cannot pile every request onto one replica. The cache is read through the
    allocators' side-effect-free ``lookup_prefix``: only what is cached now counts.
    """

    def __init__(self, load_weight: float = 1.0, admitted: Admitted = scheduled_here):
        super().__init__(admitted)
        self.load_weight = load_weight

    def pick(self, request: Request, replicas: list[Replica]) -> Replica:
        loads = [self.outstanding(r) for r in replicas]
        low, scale = min(loads), sum(loads) / len(loads) + 1.0
        prompt = max(1, request.prompt_tokens)
        best, best_key = replicas[0], (-math.inf, 0)
        for replica, load in zip(replicas, loads, strict=True):
            hit = replica.scheduler.allocator.lookup_prefix(request) if request.prefix_hashes else 0
            key = (hit / prompt - self.load_weight * (load - low) / scale, -load)
            if key > best_key:
                best, best_key = replica, key
        return best


class SessionAffinityRouter(LeastOutstandingRouter):
    """Every request of a session goes where its first one went (its KV is likely still
    cached there); first requests and requests without a session go to the least loaded."""

    def __init__(self, admitted: Admitted = scheduled_here):
        super().__init__(admitted)
        self._home: dict[int, int] = {}

    def pick(self, request: Request, replicas: list[Replica]) -> Replica:
        sid = request.session_id
        if sid is not None and sid in self._home:
            for replica in replicas:
                if replica.index == self._home[sid]:
                    return replica
        replica = super().pick(request, replicas)
        if sid is not None:
            self._home[sid] = replica.index
        return replica


def make_router(name: str, prefix_load_weight: float = 1.0,
                admitted: Admitted = scheduled_here) -> Router:
    """A router by its config name (``cluster.router``)."""
    if name == "round_robin":
        return RoundRobinRouter()
    if name == "least_outstanding":
        return LeastOutstandingRouter(admitted)
    if name == "least_kv":
        return LeastKVLoadRouter(admitted)
    if name == "prefix_aware":
        return PrefixAwareRouter(prefix_load_weight, admitted)
    if name == "session_affinity":
        return SessionAffinityRouter(admitted)
    raise ConfigError(f"cluster.router: unknown '{name}'; allowed: round_robin, "
                      "least_outstanding, least_kv, prefix_aware, session_affinity")


class PoolRouter:
    """Routes arrivals within one pool (the prefill pool), whatever list the engine passes."""

    def __init__(self, inner: Router, pool: list[Replica]):
        self.inner, self.pool = inner, pool

    def route(self, request: Request, replicas: list[Replica]) -> Replica:
        return self.inner.route(request, self.pool)
