"""Chunked prefill: one token budget per step, decodes first, prompt chunks fill the rest.

Sarathi-Serve and vLLM v1 (``enable_chunked_prefill``, always on in v1): every step carries at
most ``max_num_batched_tokens`` tokens. The running decodes take one token each first, so a long
prompt never stalls them for a whole prefill step (the stall that sets p99 TPOT under prefill-
first batching); then prompts already started continue, then waiting prompts are admitted, each
cut to what is left of the budget (and to ``chunk_size``, vLLM's long_prefill_token_threshold).

With ``split_prompts=False`` prompts are never cut: a prompt that does not fit the remaining
budget waits for a later step (TensorRT-LLM's in-flight batching without chunked context, and
the mixed batches of Orca). A prompt larger than the whole budget still runs, in a step with no
other prompt, so nothing starves.

With ``budget_counts_decodes=False`` the budget is for prompt tokens only and every running
decode rides on top: a step carries at most ``max_num_batched_tokens`` prompt tokens plus one
token per decoding sequence. That is how a whole-prompt engine must be sized to admit a prompt
as long as its budget while others decode (trtllm-bench raises TensorRT-LLM's max_num_tokens to
the longest prompt plus max_batch_size when chunked context is off); counting decodes, a
budget-long prompt would wait until no request decodes.
"""

from __future__ import annotations

from core import Batch, Request
from policies.base import QUEUEING_FAST_PATH, QueueingScheduler, is_prefilling
from policies.fastpath import records_options


class ChunkedPrefillScheduler(QueueingScheduler):
    """Mixed prefill-decode batches under one token budget (Sarathi / vLLM v1)."""

    # What sim/lane.py mirrors (policies/fastpath.py): the shared options, and prompts split
    # under a budget that counts decodes
    FAST_PATH = {**QUEUEING_FAST_PATH,
                 "split_prompts": (True,), "budget_counts_decodes": (True,)}

    @records_options
    def __init__(self, *args, split_prompts: bool = True, budget_counts_decodes: bool = True,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.split_prompts = split_prompts
        self.budget_counts_decodes = budget_counts_decodes

    def schedule(self, now: float) -> Batch | None:
        reqs: list[Request] = []
        new: list[int] = []
        self.preempted_now.clear()
        budget = self.max_num_batched_tokens
        decodes: list[Request] = []
        prefills: list[Request] = []
        for r in self.running:  # decodes first, then prompts already started
            (prefills if is_prefilling(r) else decodes).append(r)
        preempted, allocate = self.preempted_now, self.allocator.allocate
        chunk = self.chunk_size or budget
        free = 0 if self.budget_counts_decodes else len(decodes)  # decodes outside the budget
        for i, req in enumerate(decodes + prefills):
            if budget <= 0 and i >= free:
                break
            if id(req) in preempted:  # preempted to make room for an earlier one
                continue
            n = min(req.prompt_tokens + req.num_output_tokens - req.num_computed_tokens, budget,
                    chunk)
            tokens = req.num_computed_tokens + n
            # the pool usually has room: the victim search only when it has not
            if allocate(req, tokens) or self._grow(req, tokens, {id(r) for r in reqs}):
                reqs.append(req)
                new.append(n)
                if i >= free:
                    budget -= n
        if not self.preempted_now:  # as vLLM v1: no admissions in a step that had to preempt
            self._admit(now, reqs, new, budget)
        if not reqs:
            return None
        return Batch(reqs, new, [r.num_computed_tokens for r in reqs])

    def _admit(self, now: float, reqs: list[Request], new: list[int], budget: int) -> None:
        # whether the step carries a prompt already: only whole prompts (no split) ask
        prompt_in_step = not self.split_prompts and any(is_prefilling(r) for r in reqs)
        while self.waiting and len(self.running) < self.max_num_seqs and budget > 0:
            head = self.waiting.peek()
            start = self._resume_point(head)
            n = head.num_tokens - start
            if self.split_prompts:
                n = min(n, budget, self.chunk_size or budget)
            elif n > budget and (n <= self.max_num_batched_tokens or prompt_in_step):
                break  # waits for a step with room; an oversized one for a step of its own
            if not self._start(head, now, start, n):
                break
            reqs.append(head)
            new.append(n)
            budget -= n
            prompt_in_step = True
