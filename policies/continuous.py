"""Continuous (iteration-level) batching, prefill first: Orca, vLLM v0 and SGLang's default.

Every iteration the batch is re-formed. Waiting prompts are admitted as soon as a sequence slot,
the token budget and KV blocks allow, and such an iteration runs the prefills alone (vLLM v0's
default): new requests get their first token quickly, at the cost of stalling the running
decodes for one prefill step. When the KV pool cannot hold the next token of every running
request, the least urgent running request is preempted (recomputed or swapped out).

With ``chunk_size`` set, a prompt longer than the step's remaining budget (or than the chunk
size) is filled over several prefill-only steps, one chunk each, before the decodes resume: this
is SGLang's default (``chunked_prefill_size``, no mixed prefill-decode batches). Without it, a
prompt larger than the whole budget runs alone in one step, so nothing starves.
"""

from __future__ import annotations

from core import Batch, Request
from policies.base import QUEUEING_FAST_PATH, QueueingScheduler, is_prefilling


class ContinuousScheduler(QueueingScheduler):
    """Iteration-level batching with prefill-first admission."""

    FAST_PATH = dict(QUEUEING_FAST_PATH)  # what sim/lane.py mirrors (policies/fastpath.py)

    def schedule(self, now: float) -> Batch | None:
        return self._schedule_prefills(now) or self._schedule_decodes()

    def _schedule_prefills(self, now: float) -> Batch | None:
        reqs: list[Request] = []
        new: list[int] = []
        scheduled: set[int] = set()
        budget = self.max_num_batched_tokens
        chunk = self.chunk_size or budget
        self.preempted_now.clear()
        # Chunked prompts go on. Without a chunk size every prompt is admitted whole (and
        # resumed whole after a preemption), so no running request has prompt left: no scan.
        started = self.running if self.chunk_size is not None else ()
        for req in [r for r in started if is_prefilling(r)]:
            if budget <= 0:
                break
            if id(req) in self.preempted_now:  # preempted to make room for an earlier one
                continue
            n = min(req.num_new_tokens, budget, chunk)
            if self._grow(req, req.num_computed_tokens + n, scheduled):
                reqs.append(req)
                new.append(n)
                scheduled.add(id(req))
                budget -= n
        if not self.preempted_now:  # as vLLM: no admissions in a step that had to preempt
            budget = self._admit(now, reqs, new, budget)
        if not reqs:
            return None
        return Batch(reqs, new, [r.num_computed_tokens for r in reqs])

    def _admit(self, now: float, reqs: list[Request], new: list[int], budget: int) -> int:
        while self.waiting and len(self.running) < self.max_num_seqs and budget > 0:
            head = self.waiting.peek()
            start = self._resume_point(head)
            n = head.num_tokens - start
            if self.chunk_size is not None:
                n = min(n, budget, self.chunk_size)
            elif reqs and head.num_tokens > budget:
                break
            if not self._start(head, now, start, n):
                break
            reqs.append(head)
            new.append(n)
            budget -= n
        return budget

    def _schedule_decodes(self) -> Batch | None:
        reqs: list[Request] = []
        new: list[int] = []
        context: list[int] = []
        self.preempted_now.clear()
        preempted, allocate = self.preempted_now, self.allocator.allocate
        for req in list(self.running):
            if id(req) in preempted:  # preempted to make room for an older one
                continue
            tokens = req.prompt_tokens + req.num_output_tokens  # req.num_tokens, inlined
            # the pool usually has room: the victim search only when it has not
            if allocate(req, tokens) or self._grow(req, tokens, {id(r) for r in reqs}):
                reqs.append(req)
                new.append(tokens - req.num_computed_tokens)
                context.append(req.num_computed_tokens)
        if not reqs:
            return None
        return Batch(reqs, new, context)
