"""Continuous (iteration-level) batching, prefill first: Orca, and vLLM before chunked prefill.

Every iteration the batch is re-formed. Waiting prompts are admitted as soon as a sequence slot,
the token budget and KV blocks allow, and such an iteration runs the prefills alone (vLLM v0's
default): new requests get their first token quickly, at the cost of stalling the running
decodes for one prefill step. When the KV pool cannot hold the next token of every running
request, the newest running request is preempted and recomputed later.
"""

from __future__ import annotations

from sim.core import Batch, Request

from policies.base import QueueingScheduler


class ContinuousScheduler(QueueingScheduler):
    """Iteration-level batching with prefill-first admission and recompute preemption."""

    def schedule(self, now: float) -> Batch | None:
        return self._schedule_prefills(now) or self._schedule_decodes()

    def _schedule_prefills(self, now: float) -> Batch | None:
        reqs: list[Request] = []
        new: list[int] = []
        budget = self.max_num_batched_tokens
        while self.waiting and len(self.running) < self.max_num_seqs:
            head = self.waiting[0]
            # A prompt larger than the whole budget still runs, alone, so nothing starves.
            if reqs and head.num_tokens > budget:
                break
            n = self._admit(head, now)
            if n is None:
                break
            self.waiting.popleft()
            self.running.append(head)
            reqs.append(head)
            new.append(n)
            budget -= n
        if not reqs:
            return None
        return Batch(reqs, new, [r.num_computed_tokens for r in reqs])

    def _schedule_decodes(self) -> Batch | None:
        reqs: list[Request] = []
        for req in list(self.running):
            if req not in self.running:  # preempted while making room for an older one
                continue
            while not self.allocator.allocate(req, req.num_tokens):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is req:
                    break
            else:
                reqs.append(req)
        if not reqs:
            return None
        return Batch(reqs, [r.num_new_tokens for r in reqs], [r.num_computed_tokens for r in reqs])
