"""The shared vocabulary of servesim: requests, batches, step results and the protocols.

Everything else builds on this module, and it imports nothing from the project. The scheduler
and KV allocator (``policies/``) and the executors (``hwmodels/`` roofline, ``realexec/`` GPU)
only ever exchange the objects defined here, which is what lets one policy object drive both a
simulated and a real GPU.

Progress of a request is one counter, ``num_computed_tokens`` (tokens whose KV is in the cache),
as in vLLM v1. There is no prefill/decode flag: a step schedules ``num_tokens -
num_computed_tokens`` new tokens (a whole prompt, a chunk of one, or the single last sampled
token), a prefix-cache hit starts the counter ahead, and speculative decoding advances it by the
accepted drafts only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


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


@dataclass(slots=True)
class Batch:
    """The work of one iteration: per sequence, new tokens on top of cached context.

    ``context_tokens[i]`` is ``requests[i].num_computed_tokens`` when the batch was formed.
    ``draft_tokens[i]`` are speculative tokens verified on top of the one real new token (they
    are included in ``new_tokens[i]``). ``padding[i]`` marks a finished sequence that static
    batching still carries through the step (it costs compute, produces nothing).
    """

    requests: list[Request]
    new_tokens: list[int]
    context_tokens: list[int]
    draft_tokens: list[int] = field(default_factory=list)
    padding: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.requests)
        if not self.draft_tokens:
            self.draft_tokens = [0] * n
        if not self.padding:
            self.padding = [False] * n
        if not (len(self.new_tokens) == len(self.context_tokens) == n):
            raise ValueError("Batch: requests, new_tokens and context_tokens differ in length")

    def __len__(self) -> int:
        return len(self.requests)

    def seqs(self) -> list[tuple[int, int]]:
        """The batch as ``(new_tokens, cached_context_tokens)`` pairs: what executors consume."""
        return list(zip(self.new_tokens, self.context_tokens, strict=True))

    @property
    def num_tokens(self) -> int:
        return sum(self.new_tokens)

    def decode_mask(self) -> list[bool]:
        """Which sequences generate (decode or verify) rather than fill a prompt."""
        return [
            pad or (r.num_output_tokens > 0 and n == 1 + d)
            for r, n, d, pad in zip(self.requests, self.new_tokens, self.draft_tokens, self.padding,
                                    strict=True)
        ]

    def token_split(self) -> tuple[int, int]:
        """(prefill tokens, decode tokens) of this step, for the per-step metrics."""
        prefill = decode = 0
        for n, is_decode in zip(self.new_tokens, self.decode_mask(), strict=True):
            if is_decode:
                decode += n
            else:
                prefill += n
        return prefill, decode


@dataclass(slots=True)
class StepResult:
    """What an executor reports for one batch.

    ``accepted_draft_tokens[i]`` is how many of ``batch.draft_tokens[i]`` were accepted (empty
    when nothing was speculated). Each sequence that completed its new tokens then emits
    ``1 + accepted`` tokens.
    """

    seconds: float
    accepted_draft_tokens: list[int] = field(default_factory=list)


@runtime_checkable
class HardwareModel(Protocol):
    """Predicts the duration of one iteration from its shape."""

    def step_time_s(self, seqs: list[tuple[int, int]]) -> float: ...


@runtime_checkable
class Executor(Protocol):
    """Runs a batch: on a roofline model (simulated seconds) or a GPU (measured seconds)."""

    def run(self, batch: Batch) -> StepResult: ...


@runtime_checkable
class KVAllocator(Protocol):
    """Owns the KV-cache blocks of one replica.

    ``allocate`` is all-or-nothing: it either grows the request's holding to cover
    ``num_tokens`` tokens and returns True, or changes nothing and returns False.
    ``lookup_prefix`` has no side effect; the hit is taken by the first ``allocate``.
    ``commit`` tells a caching allocator that the request's computed blocks may now be shared.
    """

    block_size: int
    num_blocks_total: int

    def num_blocks_used(self) -> int: ...

    def lookup_prefix(self, request: Request) -> int: ...

    def allocate(self, request: Request, num_tokens: int) -> bool: ...

    def commit(self, request: Request) -> None: ...

    def free(self, request: Request) -> None: ...

    def block_table(self, request: Request) -> list[int]: ...


@runtime_checkable
class Scheduler(Protocol):
    """Decides each iteration's batch. Pure Python: no clock of its own, ``now`` is passed in."""

    allocator: KVAllocator

    def add_request(self, request: Request, now: float) -> bool: ...

    def schedule(self, now: float) -> Batch | None: ...

    def update(self, batch: Batch, result: StepResult, now: float) -> list[Request]: ...

    def has_unfinished(self) -> bool: ...

    @property
    def num_waiting(self) -> int: ...

    @property
    def num_running(self) -> int: ...


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
