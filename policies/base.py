"""What every scheduler shares: the queues, admission, applying a step's outcome, preemption.

Kept in one small base so the batching policies (static, continuous, chunked) differ only in
``schedule()``, the one decision that makes them different.
"""

from __future__ import annotations

from collections import deque

from sim.core import Batch, KVAllocator, Request, StepResult, advance


class QueueingScheduler:
    """FCFS waiting queue, running list, all-or-nothing admission, recompute preemption."""

    def __init__(self, allocator: KVAllocator, max_num_seqs: int = 256,
                 max_num_batched_tokens: int = 8192, max_waiting: int | None = None):
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError("scheduler: max_num_seqs and max_num_batched_tokens must be >= 1")
        self.allocator = allocator
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_waiting = max_waiting
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def add_request(self, request: Request, now: float) -> bool:
        """Queue a request, or mark it rejected (with the reason) if it can never be served."""
        blocks = -(-request.max_tokens // self.allocator.block_size)
        if blocks > self.allocator.num_blocks_total:
            request.rejected_reason = (
                f"needs {blocks} KV blocks ({request.max_tokens} tokens); "
                f"the pool has {self.allocator.num_blocks_total}")
            return False
        if self.max_waiting is not None and len(self.waiting) >= self.max_waiting:
            request.rejected_reason = f"queue full ({self.max_waiting} waiting)"
            return False
        self.waiting.append(request)
        return True

    def update(self, batch: Batch, result: StepResult, now: float) -> list[Request]:
        """Apply the step's outcome; free and return the requests that finished."""
        accepted = result.accepted_draft_tokens or [0] * len(batch)
        finished = []
        for req, new, draft, acc, pad in zip(batch.requests, batch.new_tokens,
                                             batch.draft_tokens, accepted, batch.padding):
            if pad:
                continue
            advance(req, new, draft, acc, now)
            self.allocator.commit(req)
            if req.finish_time is not None:
                finished.append(req)
        if finished:
            self._retire(finished)
        return finished

    def _retire(self, finished: list[Request]) -> None:
        done = {id(r) for r in finished}
        self.running = [r for r in self.running if id(r) not in done]
        for r in finished:
            self.allocator.free(r)

    def _admit(self, req: Request, now: float) -> int | None:
        """Allocate a waiting request's KV (prefix hit first); return its new tokens or None."""
        hit = 0
        if req.num_computed_tokens == 0:
            hit = min(self.allocator.lookup_prefix(req), req.num_tokens - 1)
        if not self.allocator.allocate(req, req.num_tokens):
            return None
        if req.first_scheduled_time is None:
            req.first_scheduled_time = now
            req.cached_tokens = hit
        req.num_computed_tokens = hit
        return req.num_tokens - hit

    def _preempt(self, req: Request) -> None:
        """Recompute preemption: drop the request's KV and put it back at the queue's head."""
        self.allocator.free(req)
        self.running.remove(req)
        req.num_computed_tokens = 0
        req.preemptions += 1
        self.waiting.appendleft(req)
