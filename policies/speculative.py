"""Speculative decoding as policy: acceptance models, draft-length policies, a scheduler wrapper.

Speculation is layered on any batching policy: ``SpeculativeScheduler`` takes the inner
scheduler's batch and gives each decoding sequence ``width x depth`` draft tokens to verify on
top of its one real token (a chain when ``width`` is 1, a tree of ``width`` candidates per level
otherwise). The executor then reports how many drafts were accepted; ``core.advance`` keeps
only those in the KV.

Acceptance models are pure and stateless: the draws of a verify step are a hash of (seed,
request, output position), not the next value of a shared generator. The simulator and the GPU
executor therefore draw identical accepted counts for the same request at the same point, however
their batches happen to be composed, and no per-request state has to be kept or freed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from core import Batch, Request, StepResult

_MASK64 = (1 << 64) - 1
STREAM_ACCEPT, STREAM_RATE, STREAM_MATCH, STREAM_REPLAY = 1, 2, 3, 4

# Per-request acceptance rates by kind of text, as Beta(mean, concentration). Assumed values:
# drafts agree with the target far more on code (repetitive, predictable) than on open chat, as
# the EAGLE/Medusa evaluations show on HumanEval vs MT-bench; calibrate against your own traces.
DATASET_RATES: dict[str, tuple[float, float]] = {"chat": (0.70, 8.0), "code": (0.85, 8.0)}


class SpeculationError(ValueError):
    """A speculative-decoding setting that cannot be used; the message names the field."""


def _mix(x: int) -> int:
    """splitmix64's finalizer: a cheap, well-spread 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _key(seed: int, *parts: int) -> int:
    h = _mix(seed & _MASK64)
    for part in parts:
        h = _mix(h ^ (part & _MASK64))
    return h


def uniform(seed: int, stream: int, request_id: int, position: int, index: int = 0) -> float:
    """A reproducible uniform in [0, 1) keyed by what it is for, not by draw order."""
    return (_key(seed, stream, request_id, position, index) >> 11) * 2.0**-53


def expected_tokens(rate: float, depth: int, width: int = 1) -> float:
    """Mean tokens one verify step emits: (1 - p^(k+1)) / (1 - p), p = per-level acceptance."""
    p = 1.0 - (1.0 - rate) ** width
    if p >= 1.0:
        return depth + 1.0
    return (1.0 - p ** (depth + 1)) / (1.0 - p)


# ---- acceptance models ------------------------------------------------------------------------
class AcceptanceModel(Protocol):
    """Draws how many of a sequence's drafts the target accepts in one verify step."""

    prior_rate: float  # a per-token acceptance guess, for policies that must plan ahead

    def accepted(self, request: Request, depth: int, width: int = 1) -> int: ...


class _ChainAcceptance:
    """Accept level by level until the first miss; level i passes with rate_i (any of ``width``
    candidates matching, taken as independent: optimistic, as top-w candidates are correlated)."""

    seed: int
    _base: int | None = None  # the hash of (seed, stream), computed once

    def position_rate(self, request: Request, level: int) -> float:
        raise NotImplementedError

    def accepted(self, request: Request, depth: int, width: int = 1) -> int:
        # keyed by output position, unique per verify step (each step emits >= 1 token); the
        # level's draw is uniform(seed, STREAM_ACCEPT, request_id, position, level)
        if self._base is None:
            self._base = _key(self.seed, STREAM_ACCEPT)
        step = _mix(_mix(self._base ^ request.request_id) ^ request.num_output_tokens)
        for level in range(depth):
            p = 1.0 - (1.0 - self.position_rate(request, level)) ** width
            if (_mix(step ^ level) >> 11) * 2.0**-53 >= p:
                return level
        return depth


class IIDAcceptance(_ChainAcceptance):
    """Every draft token is accepted with the same probability ``rate``."""

    def __init__(self, rate: float, seed: int = 0):
        _check_rate("speculative.acceptance.rate", rate)
        self.rate, self.seed, self.prior_rate = rate, seed, rate

    def position_rate(self, request: Request, level: int) -> float:
        return self.rate


class DecayAcceptance(_ChainAcceptance):
    """Acceptance falls with the draft position: ``rate x decay^i``, or one rate per position
    (Medusa's heads: each head predicts further ahead and is right less often)."""

    def __init__(self, rate: float = 0.8, decay: float = 1.0, rates: Sequence[float] = (),
                 seed: int = 0):
        self.rates = tuple(rates)
        _check_rate("speculative.acceptance.rate", rate)
        for r in self.rates:
            _check_rate("speculative.acceptance.rates", r)
        if not 0 < decay <= 1:
            raise SpeculationError(f"speculative.acceptance.decay: must be in (0, 1] (got {decay})")
        self.rate, self.decay, self.seed = rate, decay, seed
        self.prior_rate = self.rates[0] if self.rates else rate

    def position_rate(self, request: Request, level: int) -> float:
        if self.rates:
            return self.rates[min(level, len(self.rates) - 1)]
        return self.rate * self.decay**level


class PerRequestAcceptance(_ChainAcceptance):
    """Each request has its own rate, drawn once from Beta(mean, concentration): how well a
    draft follows the target depends on the text (code vs chat), not only on the models."""

    def __init__(self, mean: float, concentration: float = 8.0, seed: int = 0):
        _check_rate("speculative.acceptance.mean", mean)
        if concentration <= 0:
            raise SpeculationError("speculative.acceptance.concentration: must be > 0 "
                                   f"(got {concentration})")
        self.alpha, self.beta = mean * concentration, (1 - mean) * concentration
        self.seed, self.prior_rate = seed, mean
        self._rate = lru_cache(maxsize=1 << 16)(self._draw_rate)  # bounded: no per-run growth

    @classmethod
    def for_dataset(cls, dataset: str, seed: int = 0) -> PerRequestAcceptance:
        if dataset not in DATASET_RATES:
            raise SpeculationError(f"speculative.acceptance.dataset: unknown '{dataset}'; "
                                   f"allowed: {', '.join(DATASET_RATES)}")
        mean, conc = DATASET_RATES[dataset]
        return cls(mean, conc, seed)

    def _draw_rate(self, request_id: int) -> float:
        key = int(uniform(self.seed, STREAM_RATE, request_id, 0) * 2.0**53)
        return random.Random(key).betavariate(self.alpha, self.beta)

    def request_rate(self, request: Request) -> float:
        return self._rate(request.request_id)

    def position_rate(self, request: Request, level: int) -> float:
        return self._rate(request.request_id)


class ReplayAcceptance:
    """Resamples accepted lengths observed on a real system (one integer per line of a file,
    ``#`` comments allowed), recorded at draft length ``recorded_depth``. A shorter draft keeps
    ``min(observed, depth)``, which is exact for a chain; a longer one cannot be replayed."""

    def __init__(self, lengths: Sequence[int], recorded_depth: int, seed: int = 0):
        if not lengths or min(lengths) < 0 or max(lengths) > recorded_depth:
            raise SpeculationError("speculative.acceptance.file: needs accepted lengths in "
                                   f"[0, recorded_depth={recorded_depth}]")
        self.lengths, self.recorded_depth, self.seed = tuple(lengths), recorded_depth, seed
        stops = sum(1 for n in self.lengths if n < recorded_depth)
        self.prior_rate = sum(self.lengths) / max(sum(self.lengths) + stops, 1)

    @classmethod
    def from_file(cls, path: str | Path, recorded_depth: int, seed: int = 0) -> ReplayAcceptance:
        p = Path(path)
        if not p.is_file():
            raise SpeculationError(f"speculative.acceptance.file: no such file '{p}'")
        rows = (line.split("#")[0].strip() for line in p.read_text().splitlines())
        try:
            return cls([int(r) for r in rows if r], recorded_depth, seed)
        except ValueError as exc:
            if isinstance(exc, SpeculationError):
                raise
            raise SpeculationError(f"speculative.acceptance.file: {p} must hold one integer a "
                                   "line") from None

    def accepted(self, request: Request, depth: int, width: int = 1) -> int:
        if depth > self.recorded_depth:
            raise SpeculationError(f"speculative.num_draft_tokens: {depth} exceeds the draft "
                                   f"length {self.recorded_depth} the replay file was recorded at")
        u = uniform(self.seed, STREAM_REPLAY, request.request_id, request.num_output_tokens)
        return min(self.lengths[int(u * len(self.lengths))], depth)


def _check_rate(field: str, rate: float) -> None:
    if not 0 <= rate < 1:
        raise SpeculationError(f"{field}: must be in [0, 1) (got {rate})")


# ---- draft-length policies --------------------------------------------------------------------
class DraftLengthPolicy(Protocol):
    """Chooses each decoding sequence's draft depth for the coming step."""

    def depths(self, requests: list[Request], num_waiting: int) -> list[int]: ...

    def observe(self, request: Request, depth: int, accepted: int) -> None: ...

    def forget(self, request: Request) -> None: ...


class FixedDepth:
    """Always ``k`` drafts (vLLM's ``num_speculative_tokens``)."""

    def __init__(self, k: int):
        self.k = k

    def depths(self, requests: list[Request], num_waiting: int) -> list[int]:
        return [self.k] * len(requests)

    def observe(self, request: Request, depth: int, accepted: int) -> None:
        """A fixed policy learns nothing."""

    def forget(self, request: Request) -> None:
        """Nothing kept."""


class GoodputDepth:
    """Picks the step's depth k in 0..k_max that maximizes expected tokens per second.

    Tokens are ``sum_i E(a_i, k)`` with ``a_i`` each request's estimated acceptance, seconds
    come from ``step_cost_s(batch_size, k, mean_context)`` (verify plus drafting, from a hardware
    model). At low load verification is memory bound, so extra tokens are nearly free and a deep
    draft wins; as the batch grows the verify step turns compute bound, every rejected draft
    costs real time and the best k falls to 0: speculation turns itself off (SmartSpec's idea).
    """

    def __init__(self, k_max: int, step_cost_s: Callable[[int, int, int], float],
                 prior_rate: float, width: int = 1, prior_weight: float = 4.0):
        self.k_max, self.width, self.step_cost_s = k_max, width, step_cost_s
        self.prior_rate, self.prior_weight = prior_rate, prior_weight
        self._stats: dict[int, tuple[int, int]] = {}  # request_id -> (accepted, misses)

    def rate(self, request: Request) -> float:
        """Per-token acceptance estimate: accepted / (accepted + misses), shrunk to the prior.

        Each step that stops early is one miss; counting proposed-but-unreached drafts as
        misses instead would bias the estimate low."""
        acc, miss = self._stats.get(request.request_id, (0, 0))
        w = self.prior_weight
        return (acc + w * self.prior_rate) / (acc + miss + w)

    def depths(self, requests: list[Request], num_waiting: int) -> list[int]:
        # level j adds sum_i p_i^j expected tokens, p_i the per-level acceptance of request i
        level_tokens = [0.0] * (self.k_max + 1)
        for r in requests:
            p, x = 1.0 - (1.0 - self.rate(r)) ** self.width, 1.0
            for j in range(self.k_max + 1):
                level_tokens[j] += x
                x *= p
        ctx = sum(r.num_tokens for r in requests) // max(len(requests), 1)
        best_k, best, tokens = 0, -1.0, 0.0
        for k in range(self.k_max + 1):
            tokens += level_tokens[k]
            value = tokens / self.step_cost_s(len(requests), k, ctx)
            if value > best * (1 + 1e-9):  # ties go to the shorter draft
                best_k, best = k, value
        return [best_k] * len(requests)

    def observe(self, request: Request, depth: int, accepted: int) -> None:
        acc, miss = self._stats.get(request.request_id, (0, 0))
        self._stats[request.request_id] = (acc + accepted, miss + (accepted < depth))

    def forget(self, request: Request) -> None:
        self._stats.pop(request.request_id, None)


class DisableAbove:
    """Turns speculation off for the whole step above a batch size or a queue length (vLLM's
    ``speculative_disable_by_batch_size``): under load the GPU is busy anyway, so rejected
    drafts would only steal compute from other requests."""

    def __init__(self, inner: DraftLengthPolicy, max_batch_size: int | None = None,
                 max_waiting: int | None = None):
        self.inner, self.max_batch_size, self.max_waiting = inner, max_batch_size, max_waiting

    def depths(self, requests: list[Request], num_waiting: int) -> list[int]:
        if (self.max_batch_size is not None and len(requests) > self.max_batch_size) or (
                self.max_waiting is not None and num_waiting > self.max_waiting):
            return [0] * len(requests)
        return self.inner.depths(requests, num_waiting)

    def observe(self, request: Request, depth: int, accepted: int) -> None:
        self.inner.observe(request, depth, accepted)

    def forget(self, request: Request) -> None:
        self.inner.forget(request)


# ---- the scheduler wrapper --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Proposer:
    """The shape of what a method proposes: up to ``k_max`` levels of ``width`` candidates.

    ``match_prob`` < 1 is for n-gram/prompt lookup, which proposes nothing when the recent
    tokens do not occur earlier in the text.
    """

    k_max: int
    width: int = 1
    match_prob: float = 1.0
    seed: int = 0

    def draft_tokens(self, depth: int) -> int:
        """Tokens verified on top of the real one: one per candidate node of the tree."""
        return self.width * depth

    def depth_of(self, draft_tokens: int) -> int:
        return draft_tokens // self.width

    def finds_candidate(self, request: Request) -> bool:
        if self.match_prob >= 1.0:
            return True
        u = uniform(self.seed, STREAM_MATCH, request.request_id, request.num_output_tokens)
        return u < self.match_prob


def accepted_counts(batch: Batch, acceptance: AcceptanceModel, proposer: Proposer) -> list[int]:
    """The accepted drafts of every sequence of a verify batch (what an executor reports)."""
    return [acceptance.accepted(r, proposer.depth_of(d), proposer.width) if d and not pad else 0
            for r, d, pad in zip(batch.requests, batch.draft_tokens, batch.padding, strict=True)]


class SpeculativeScheduler:
    """Wraps a scheduler: its batch, plus drafts for each decoding sequence.

    Draft KV slots are allocated before the step (rejected ones are given back by ``advance``);
    a sequence whose slots cannot be had, or that would overrun the token budget, is not
    speculated this step rather than preempting anyone for a guess. Drafts never reach past the
    request's output length: engines cap them by ``max_tokens`` the same way.
    """

    def __init__(self, inner, proposer: Proposer, policy: DraftLengthPolicy):
        self.inner, self.proposer, self.policy = inner, proposer, policy
        self.allocator = inner.allocator

    def add_request(self, request: Request, now: float) -> bool:
        return self.inner.add_request(request, now)

    def has_unfinished(self) -> bool:
        return self.inner.has_unfinished()

    @property
    def num_waiting(self) -> int:
        return self.inner.num_waiting

    @property
    def num_running(self) -> int:
        return self.inner.num_running

    def __getattr__(self, name: str):
        if name == "inner":  # not yet set (copy, unpickling): do not recurse
            raise AttributeError(name)
        return getattr(self.inner, name)  # queues and knobs of the inner policy, read-only use

    def can_fast_forward(self, batch: Batch) -> bool:
        """Never: every step's drafts are chosen, and their outcome observed, one by one."""
        return False

    def schedule(self, now: float) -> Batch | None:
        batch = self.inner.schedule(now)
        if batch is None:
            return None
        mask = zip(batch.decode_mask(), batch.padding, strict=True)
        idx = [i for i, (dec, pad) in enumerate(mask) if dec and not pad]
        if not idx:
            return batch
        reqs = [batch.requests[i] for i in idx]
        wanted = self.policy.depths(reqs, self.inner.num_waiting)
        limit = getattr(self.inner, "max_num_batched_tokens", None)
        budget = (limit - batch.num_tokens) if limit is not None else 1 << 62
        new, drafts = list(batch.new_tokens), list(batch.draft_tokens)
        # no_evict reserved each request's final length: a tree's drafts (width > 1 can reach
        # past it) stay inside that reservation, else they take blocks promised to another
        # request and force the preemption no_evict exists to rule out
        no_evict = getattr(self.inner, "admission", None) == "no_evict"
        bs = self.allocator.block_size
        for i, req, k in zip(idx, reqs, wanted, strict=True):
            k = min(k, self.proposer.k_max, req.output_tokens - req.num_output_tokens - 1)
            if k > 0 and not self.proposer.finds_candidate(req):
                k = 0
            n = self.proposer.draft_tokens(k)
            room = -(-req.max_tokens // bs) * bs if no_evict else 1 << 62
            while k > 0 and (n > budget or req.num_tokens + n > room
                             or not self.allocator.allocate(req, req.num_tokens + n)):
                k -= 1
                n = self.proposer.draft_tokens(k)
            new[i] += n
            drafts[i] = n
            budget -= n
        return Batch(batch.requests, new, batch.context_tokens, drafts, batch.padding)

    def update(self, batch: Batch, result: StepResult, now: float) -> list[Request]:
        accepted = result.accepted_draft_tokens or [0] * len(batch)
        for req, d, acc in zip(batch.requests, batch.draft_tokens, accepted, strict=True):
            if d:
                self.policy.observe(req, self.proposer.depth_of(d), acc)
        finished = self.inner.update(batch, result, now)
        for req in finished:
            self.policy.forget(req)
        return finished
