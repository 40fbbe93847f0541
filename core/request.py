"""A request and its progress: ``Request`` and ``advance``, the one rule that moves it on.

Progress is one counter, ``num_computed_tokens`` (see the package docstring); ``advance`` applies
one step's outcome to it, for every scheduler (the compiled lane, ``sim/lane_kernel.py``, mirrors
it statement by statement).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class Request:
    """One inference request and its progress through a replica.

    ``prefix_hashes`` name the prompt's content block by block (``hash_block_tokens`` tokens each,
    e.g. Mooncake's 512-token ``hash_ids``): equal leading hashes mean an identical, reusable
    prefix. An empty tuple means the prompt shares nothing with anyone.
    """

    request_id: int
    arrival_time: float  # s
    prompt_tokens: int
    output_tokens: int  # tokens this request will generate (its output length)
    prefix_hashes: tuple[int, ...] = ()
    hash_block_tokens: int = 16
    priority: int = 0  # lower is served first by priority schedulers
    session_id: int | None = None
    client_id: int | None = None  # closed-loop client that sent it

    # progress, owned by the scheduler
    num_computed_tokens: int = 0
    num_output_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from a prefix cache (at first schedule)
    preemptions: int = 0
    first_scheduled_time: float | None = None  # s
    first_token_time: float | None = None  # s
    last_token_time: float | None = None  # s
    finish_time: float | None = None  # s
    rejected_reason: str | None = None
    kv_transfer_time: float = 0.0  # s spent moving KV (disaggregated serving, swaps)
    accepted_draft_tokens: int = 0  # speculative decoding: drafts accepted over the request
    proposed_draft_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        """Tokens the request holds now: prompt plus what it has generated so far."""
        return self.prompt_tokens + self.num_output_tokens

    @property
    def num_new_tokens(self) -> int:
        """Tokens whose KV still has to be computed before the next token can be sampled."""
        return self.prompt_tokens + self.num_output_tokens - self.num_computed_tokens

    @property
    def max_tokens(self) -> int:
        """Tokens the request will hold at its end (its KV footprint when finished)."""
        return self.prompt_tokens + self.output_tokens

    @property
    def is_finished(self) -> bool:
        return self.finish_time is not None or self.rejected_reason is not None

    @property
    def is_decoding(self) -> bool:
        """True once the prompt (and any recomputed output) is in the cache."""
        return self.num_output_tokens > 0 and self.num_new_tokens == 1


def advance(request: Request, new_tokens: int, draft_tokens: int, accepted: int, now: float) -> int:
    """Apply one step's outcome to a request's progress; return the tokens it emitted.

    The step computed ``new_tokens`` KV entries, ``draft_tokens`` of which were speculative. Only
    ``accepted`` drafts stay in the cache: the rejected ones are given back. A request emits
    tokens only when the step reached the end of what it holds (a prompt chunk emits nothing).
    """
    if accepted > draft_tokens:
        raise ValueError(f"accepted drafts {accepted} exceed drafted {draft_tokens}")
    request.num_computed_tokens += new_tokens - (draft_tokens - accepted)
    if request.num_computed_tokens < request.prompt_tokens + request.num_output_tokens:
        return 0  # (request.num_tokens, inlined: once per sequence and step)
    emitted = min(1 + accepted, request.output_tokens - request.num_output_tokens)
    request.num_output_tokens += emitted
    request.accepted_draft_tokens += accepted
    request.proposed_draft_tokens += draft_tokens
    if request.first_token_time is None:
        request.first_token_time = now
    request.last_token_time = now
    if request.num_output_tokens >= request.output_tokens:
        request.finish_time = now
    return emitted
