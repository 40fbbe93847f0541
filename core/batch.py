"""The work of one iteration (``Batch``) and what an executor reports for it (``StepResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.request import Request


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
