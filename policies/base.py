"""What every scheduler shares: queues, admission control, applying a step's outcome, preemption.

Kept in one small base so the batching policies (static, continuous, chunked) differ only in
``schedule()``, the one decision that makes them different. The knobs here are the ones engines
share: the waiting order (``fcfs`` or ``priority``), what a preemption does (``recompute``: drop
the KV and compute it again; ``swap``: copy it to host memory and back), and admission
(``greedy``: admit while blocks are free now, preempt later if the pool runs out, as vLLM and
SGLang do; ``no_evict``: admit only if every admitted request can reach its final length,
TensorRT-LLM's GUARANTEED_NO_EVICT, so nothing is ever preempted).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from core import Batch, KVAllocator, Request, StepResult, advance
from policies.fastpath import ANY, records_options
from policies.queues import make_queue
from policies.swap import SwapSpace

PREEMPTION_MODES = ("recompute", "swap")
ADMISSION_MODES = ("greedy", "no_evict")

# The options of ``QueueingScheduler`` the compiled lane (sim/lane.py) mirrors, and for which
# values: the start of a subclass's ``FAST_PATH`` (policies/fastpath.py)
QUEUEING_FAST_PATH = {
    "allocator": ANY,  # a policy of its own, with its own declaration
    "max_num_seqs": ANY, "max_num_batched_tokens": ANY, "chunk_size": ANY,
    "max_model_len": ANY,  # too-long requests are rejected before the lane starts
    "max_waiting": (None,), "order": ("fcfs",), "preemption": ("recompute",),
    "swap": ANY,  # read only with preemption "swap", which is not mirrored
    "admission": ("greedy",),
    "priority_aging_per_s": ANY,  # read only by the priority order, which is not mirrored
}


@dataclass(slots=True)
class SchedulerStats:
    """Counts a run's policy events; ``QueueingScheduler.stats()`` reports them with the KV's."""

    preemptions_recompute: int = 0
    preemptions_swap: int = 0
    rejected_too_long: int = 0
    rejected_queue_full: int = 0


def is_prefilling(request: Request) -> bool:
    """True while a request still has prompt (or recomputed) tokens to fill before it decodes."""
    out = request.num_output_tokens  # num_new_tokens > 1, spelled out: a hot path
    return out == 0 or request.prompt_tokens + out - request.num_computed_tokens > 1


class QueueingScheduler:
    """Waiting queue, running list, admission, and preemption; ``schedule()`` is the subclass's."""

    @records_options
    def __init__(self, allocator: KVAllocator, max_num_seqs: int = 256,
                 max_num_batched_tokens: int = 8192, max_waiting: int | None = None, *,
                 order: str = "fcfs", preemption: str = "recompute",
                 swap: SwapSpace | None = None, admission: str = "greedy",
                 chunk_size: int | None = None, max_model_len: int | None = None,
                 priority_aging_per_s: float = 0.0):
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError("scheduler: max_num_seqs and max_num_batched_tokens must be >= 1")
        if preemption not in PREEMPTION_MODES:
            raise ValueError(f"scheduler.preemption: unknown '{preemption}'; "
                             f"allowed: {', '.join(PREEMPTION_MODES)}")
        if preemption == "swap" and swap is None:
            raise ValueError("scheduler.preemption: 'swap' needs a host swap space (SwapSpace)")
        if admission not in ADMISSION_MODES:
            raise ValueError(f"scheduler.admission: unknown '{admission}'; "
                             f"allowed: {', '.join(ADMISSION_MODES)}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"scheduler.chunk_size: must be >= 1 or null (got {chunk_size})")
        self.allocator = allocator
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_waiting = max_waiting
        self.chunk_size = chunk_size
        self.max_model_len = max_model_len  # longest prompt + output the model accepts
        self.waiting = make_queue(order, priority_aging_per_s)  # aging: see PriorityQueue
        self.running: list[Request] = []
        self.swap = swap if preemption == "swap" else None
        self.admission = admission
        self.counts = SchedulerStats()
        self._reserved_blocks = 0  # no_evict: blocks promised to running requests' final lengths
        self.preempted_now: set[int] = set()  # ids preempted while forming the current batch

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def stats(self) -> dict[str, float]:
        """Policy counters of this replica: preemptions, swaps, rejections, prefix-cache hits."""
        out: dict[str, float] = dict(asdict(self.counts))
        if self.swap is not None:
            out.update(asdict(self.swap.stats))
        kv_stats = getattr(self.allocator, "stats", None)
        if kv_stats is not None:
            out.update(asdict(kv_stats))
        return out

    def add_request(self, request: Request, now: float) -> bool:
        """Queue a request, or mark it rejected (with the reason) if it cannot be queued."""
        reason = self.rejection(request)
        if reason is not None:
            request.rejected_reason = reason
            self.counts.rejected_too_long += 1
            return False
        if self.max_waiting is not None and len(self.waiting) >= self.max_waiting:
            request.rejected_reason = f"queue full ({self.max_waiting} waiting)"
            self.counts.rejected_queue_full += 1
            return False
        self.waiting.push(request)
        return True

    def rejection(self, request: Request) -> str | None:
        """Why the request can never be served here (longer than the model or the whole KV
        pool), or None. Depends on the request alone, not on the queue."""
        if self.max_model_len is not None and request.max_tokens > self.max_model_len:
            return (f"{request.max_tokens} tokens (prompt + output) exceed the model's "
                    f"max_model_len {self.max_model_len}")
        blocks = self._final_blocks(request)
        if blocks > self.allocator.num_blocks_total:
            return (f"needs {blocks} KV blocks ({request.max_tokens} tokens); "
                    f"the pool has {self.allocator.num_blocks_total}")
        return None

    def update(self, batch: Batch, result: StepResult, now: float) -> list[Request]:
        """Apply the step's outcome; free and return the requests that finished."""
        accepted = result.accepted_draft_tokens or [0] * len(batch)
        finished = []
        rows = zip(batch.requests, batch.new_tokens, batch.draft_tokens, accepted,
                   batch.padding, strict=True)
        commit = self.allocator.commit
        for req, new, draft, acc, pad in rows:
            if pad:
                continue
            advance(req, new, draft, acc, now)
            commit(req)
            if req.finish_time is not None:
                finished.append(req)
        if finished:
            self._retire(finished)
        return finished

    def _retire(self, finished: list[Request]) -> None:
        if len(finished) == 1:  # the usual case: removed in place (by identity: eq=False)
            self.running.remove(finished[0])
        else:
            done = {id(r) for r in finished}
            self.running = [r for r in self.running if id(r) not in done]
        for r in finished:
            self.allocator.free(r)
            self._release(r)

    # ---- admission ---------------------------------------------------------------------------
    def _resume_point(self, req: Request) -> int:
        """Tokens of a waiting request already in a cache: swapped-out KV, else a prefix hit."""
        if self.swap is not None and self.swap.holds(req):
            return req.num_computed_tokens
        return min(self.allocator.lookup_prefix(req), req.num_tokens - 1)

    def _start(self, req: Request, now: float, start: int, new_tokens: int) -> bool:
        """Move the head of the queue to running with KV for ``start + new_tokens`` tokens."""
        if self.admission == "no_evict" and (
                self._reserved_blocks + self._final_blocks(req) > self.allocator.num_blocks_total):
            return False
        if not self.allocator.allocate(req, start + new_tokens):
            return False
        if self.swap is not None and self.swap.holds(req):
            self.swap.swap_in(req)
        if req.first_scheduled_time is None:
            req.first_scheduled_time = now
            req.cached_tokens = start
        req.num_computed_tokens = start
        self.waiting.pop()
        self.running.append(req)
        if self.admission == "no_evict":
            self._reserved_blocks += self._final_blocks(req)
        return True

    def _final_blocks(self, req: Request) -> int:
        return -(-req.max_tokens // self.allocator.block_size)

    def _release(self, req: Request) -> None:
        if self.admission == "no_evict":
            self._reserved_blocks -= self._final_blocks(req)

    # ---- preemption --------------------------------------------------------------------------
    def _grow(self, req: Request, num_tokens: int, scheduled: set[int]) -> bool:
        """Give a running request KV for ``num_tokens``, preempting others until it fits.

        Victims come from the running requests not yet in this step's batch (``scheduled`` holds
        their ids), least urgent first by the queue's order; if the request itself is the least
        urgent one left, it is the one preempted and False is returned.
        """
        while not self.allocator.allocate(req, num_tokens):
            victim = self._victim(scheduled)
            self._preempt(victim)
            if victim is req:
                return False
        return True

    def _victim(self, scheduled: set[int]) -> Request:
        key = self.waiting.victim_key
        candidates = [(key(r, pos), pos) for pos, r in enumerate(self.running)
                      if id(r) not in scheduled]
        return self.running[max(candidates)[1]]

    def _preempt(self, req: Request) -> None:
        """Swap the request's KV out (if host space allows) or drop it; requeue the request."""
        swapped = self.swap is not None and req.num_computed_tokens > 0 and self.swap.fits(req)
        if swapped:
            self.swap.swap_out(req)
            self.counts.preemptions_swap += 1
        else:
            req.num_computed_tokens = 0
            self.counts.preemptions_recompute += 1
        self.allocator.free(req)
        self._release(req)
        self.running.remove(req)
        self.preempted_now.add(id(req))
        req.preemptions += 1
        self.waiting.push_preempted(req)
