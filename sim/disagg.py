"""Disaggregated prefill/decode: the prefill stage, the decode replicas' KV inbox, the hand-off.

Disaggregated serving (DistServe, Splitwise, vLLM's disaggregated prefill) splits the replicas
into a prefill pool and a decode pool. A request is prefilled on a prefill replica, which keeps
its KV until the KV has crossed the interconnect (``sim.interconnect``) to a decode replica;
only then may the decode replica admit it. As in vLLM (the proxy sends the prompt with
``max_tokens=1`` to a prefill instance, then the request to a decode instance that loads the KV
and recomputes only the last prompt token), the client's first token comes from the decode
replica: TTFT includes the prefill, the transfer (with any wait for a busy link) and the decode
replica's admission wait.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import simpy

from core import Batch, KVAllocator, Request, Scheduler, StepResult
from sim.engine import Replica, Router
from sim.interconnect import Interconnect


def admitted_for_decode(request: Request) -> bool:
    """A prefilled request restarts at zero computed tokens; the decode replica's admission
    sets them to the transferred KV."""
    return request.num_computed_tokens > 0 or request.is_finished


def _blocks(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


class KVInbox:
    """A decode replica's allocator, plus the KV that arrived from prefill replicas.

    The scheduler admits a waiting request by asking ``lookup_prefix`` how much of it is
    already cached: for a transferred request that is its whole prompt (the scheduler caps it
    one token short, which the decode replica then computes to sample the first token). The
    arrival is forgotten at its first successful allocation, so a later recompute preemption
    really recomputes. Transferred KV continues the prefix this replica's own cache held when
    the transfer began; if memory pressure evicted that prefix since, the transferred part is
    useless and only what is still cached counts (the rest is recomputed here).
    """

    def __init__(self, inner: KVAllocator):
        self.inner = inner
        self.block_size = inner.block_size
        self.num_blocks_total = inner.num_blocks_total
        self._arrived: dict[int, tuple[int, int]] = {}  # id -> (tokens, cached prefix)

    def __getattr__(self, name: str) -> Any:  # the inner allocator's extras (stats, ...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def deliver(self, request: Request, tokens: int, cached_prefix: int = 0) -> None:
        """The prompt's first ``tokens`` are here: ``cached_prefix`` of them from this replica's
        own cache (when the transfer began), the rest over the link."""
        self._arrived[request.request_id] = (tokens, cached_prefix)

    def num_blocks_used(self) -> int:
        return self.inner.num_blocks_used()

    def lookup_prefix(self, request: Request) -> int:
        hit = self.inner.lookup_prefix(request)
        tokens, prefix = self._arrived.get(request.request_id, (0, 0))
        return max(hit, tokens) if hit >= prefix else hit

    def allocate(self, request: Request, num_tokens: int) -> bool:
        if not self.inner.allocate(request, num_tokens):
            return False
        self._arrived.pop(request.request_id, None)
        return True

    def commit(self, request: Request) -> None:
        self.inner.commit(request)

    def free(self, request: Request) -> None:
        self.inner.free(request)

    def block_table(self, request: Request) -> list[int]:
        return self.inner.block_table(request)


class CountedKVInbox(KVInbox):
    """A KVInbox over an allocator whose growth is known (plain paged or contiguous): it says
    how many blocks a request holds, which lets the engine fast-forward runs of decode steps.
    Deliveries do not change the pool and always wake the replica, which ends any run."""

    def __init__(self, inner: KVAllocator, held: Callable[[Request], int]):
        super().__init__(inner)
        self._held = held

    def blocks_held(self, request: Request) -> int:
        return self._held(request)


def make_inbox(allocator: KVAllocator) -> KVInbox:
    """The inbox for a decode replica's allocator (counted where its growth is known)."""
    from policies.kv_contiguous import ContiguousAllocator
    from policies.kv_paged import PagedAllocator

    if getattr(type(allocator), "blocks_held", None) is not None:
        return CountedKVInbox(allocator, allocator.blocks_held)  # type: ignore[attr-defined]
    if type(allocator) in (PagedAllocator, ContiguousAllocator):
        return CountedKVInbox(allocator, lambda r: len(allocator.block_table(r)))
    return KVInbox(allocator)


class PrefillStage:
    """A prefill replica's scheduler: serves a request to its first token, then hands it off.

    The handed-off request leaves the running list at once but keeps its KV blocks until the
    transfer ends. A request that wants one output token is finished here and goes nowhere.
    Needs a scheduler with a ``running`` list (every ``policies.base.QueueingScheduler``).
    """

    def __init__(self, inner: Scheduler, index: int, disaggregation: Disaggregation):
        if not isinstance(getattr(inner, "running", None), list):
            raise TypeError(f"{type(inner).__name__}: a prefill stage needs a 'running' list")
        self.inner, self.index, self._disagg = inner, index, disaggregation
        self.allocator = inner.allocator

    def __getattr__(self, name: str) -> Any:  # the inner scheduler's extras (stats(), ...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def num_waiting(self) -> int:
        return self.inner.num_waiting

    @property
    def num_running(self) -> int:
        return self.inner.num_running

    def has_unfinished(self) -> bool:
        return self.inner.has_unfinished()

    def add_request(self, request: Request, now: float) -> bool:
        if not self._disagg.fits_decode(request):
            request.rejected_reason = (f"needs {request.max_tokens} tokens of KV; no decode "
                                       "replica's pool holds that many")
            return False
        return self.inner.add_request(request, now)

    def schedule(self, now: float) -> Batch | None:
        return self.inner.schedule(now)

    def update(self, batch: Batch, result: StepResult, now: float) -> list[Request]:
        finished = self.inner.update(batch, result, now)
        for req, pad in zip(batch.requests, batch.padding, strict=True):
            if not pad and req.num_output_tokens and req.finish_time is None:
                self.inner.running.remove(req)  # type: ignore[attr-defined]
                self._disagg.hand_off(req, self.index)
        return finished


def restart_for_decode(request: Request) -> None:
    """Forget the prefill replica's sampled token: the decode replica samples the first one."""
    request.num_computed_tokens = 0
    request.num_output_tokens = 0
    request.first_token_time = None
    request.last_token_time = None


def wake(replica: Replica) -> None:
    """Wake a replica's serve loop if it is idle (new work, or KV blocks were freed)."""
    if replica.wakeup is not None and not replica.wakeup.triggered:
        replica.wakeup.succeed()


class Disaggregation:
    """Moves prefilled requests to the decode pool over the interconnect."""

    def __init__(self, interconnect: Interconnect, decode_router: Router):
        self.interconnect, self.decode_router = interconnect, decode_router
        self.prefill: dict[int, Replica] = {}
        self.decode: list[Replica] = []
        self._inbox: dict[int, KVInbox] = {}
        self.env: simpy.Environment | None = None

    def add_prefill(self, replica: Replica) -> None:
        self.prefill[replica.index] = replica

    def add_decode(self, replica: Replica) -> None:
        """Register a decode replica; its allocator is wrapped so it can receive KV."""
        inbox = make_inbox(replica.scheduler.allocator)
        replica.scheduler.allocator = inbox  # type: ignore[misc]
        self._inbox[replica.index] = inbox
        self.decode.append(replica)

    def bind(self, env: simpy.Environment) -> None:
        """Attach to the engine's clock (call once the Engine exists, before it runs)."""
        self.env = env
        self.interconnect.bind(env)

    def _fitting(self, request: Request) -> list[Replica]:
        return [d for d in self.decode
                if _blocks(request.max_tokens, d.scheduler.allocator.block_size)
                <= d.scheduler.allocator.num_blocks_total]

    def fits_decode(self, request: Request) -> bool:
        return bool(self._fitting(request))

    def hand_off(self, request: Request, src: int) -> None:
        if self.env is None:
            raise RuntimeError("Disaggregation.bind(env) was not called before the run")
        self.env.process(self._transfer(request, self.prefill[src]))

    def _transfer(self, req: Request, src: Replica) -> Iterator[simpy.Event]:
        env, start = self.env, self.env.now
        restart_for_decode(req)
        dst = self.decode_router.route(req, self._fitting(req))
        inbox = self._inbox[dst.index]
        # Only what the decode replica does not already cache crosses the link (as vLLM's NIXL
        # connector pulls only the blocks missing locally).
        cached = inbox.inner.lookup_prefix(req)
        tokens = max(0, req.prompt_tokens - cached)
        yield from self.interconnect.move(src.index, dst.index, tokens)
        req.kv_transfer_time += env.now - start
        src.scheduler.allocator.free(req)
        wake(src)
        inbox.deliver(req, req.prompt_tokens, cached)
        if not dst.scheduler.add_request(req, env.now):
            raise RuntimeError(f"decode replica {dst.index} refused request {req.request_id}: "
                               f"{req.rejected_reason}")
        wake(dst)
