"""Static batching: a batch is formed, then runs until its longest request finishes.

This is request-level batching as in HF ``generate`` or early FasterTransformer serving.
Requests that finish early stay in the batch as padding: their slot still costs a token of
compute every step and their KV stays reserved until the whole batch is done, and new arrivals
wait for the next batch. The first token is streamed when produced, and each request's finish
time is its own last token.
"""

from __future__ import annotations

from core import Batch, Request
from policies.base import QueueingScheduler


class StaticScheduler(QueueingScheduler):
    """Forms a batch from the queue when idle and decodes it to the end of its longest member."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._members: list[Request] = []  # the current batch, finished members included

    def schedule(self, now: float) -> Batch | None:
        if not self._members:
            return self._form_batch(now)
        return Batch(
            list(self._members),
            [1] * len(self._members),
            [r.num_computed_tokens for r in self._members],
            padding=[r.finish_time is not None for r in self._members],
        )

    def _form_batch(self, now: float) -> Batch | None:
        budget = self.max_num_batched_tokens
        while self.waiting and len(self._members) < self.max_num_seqs:
            head = self.waiting.peek()
            if self._members and head.num_tokens > budget:
                break
            # Reserve the final length up front: a static batch is never preempted. A prefix
            # hit (with a caching allocator) still saves its tokens.
            hit = min(self.allocator.lookup_prefix(head), head.num_tokens - 1)
            if not self.allocator.allocate(head, head.max_tokens):
                break
            self.waiting.pop()
            head.first_scheduled_time = now
            head.cached_tokens = head.num_computed_tokens = hit
            self._members.append(head)
            budget -= head.num_tokens
        if not self._members:
            return None
        self.running = list(self._members)
        return Batch(list(self._members), [r.num_new_tokens for r in self._members],
                     [r.num_computed_tokens for r in self._members])

    def _retire(self, finished: list[Request]) -> None:
        """Finished members leave ``running`` but keep their KV until the batch ends."""
        done = {id(r) for r in finished}
        self.running = [r for r in self.running if id(r) not in done]
        if not self.running:  # the whole batch is done: release its KV at once
            for req in self._members:
                self.allocator.free(req)
            self._members = []
