"""Speculative decoding in the simulator: what drafting and verifying cost, and its memory.

The policy side (acceptance models, draft lengths, the scheduler wrapper) is in
``policies/speculative.py``. Here the executor wrapper prices a step: the verify batch (each
sequence's real token plus its drafts) on the target's hardware model, the logits of every
verified position, and the drafting work of the method:

- ``draft_model``: a separate small model, with its own roofline step time, weights and KV. It
  runs ``k`` forward passes per step (the first also catches up on tokens it has not seen) and
  prefills every prompt alongside the target.
- ``eagle`` / ``mtp``: an autoregressive head (one decoder layer of the target's shape) on the
  target's hidden states: ``k`` cheap passes, one layer of KV, embeddings and LM head shared.
- ``medusa``: ``k`` parallel heads on the last hidden state, fused into the verify step: no KV,
  no extra passes, each head a residual block plus its own LM head.
- ``ngram``: prompt lookup on the host; nothing on the GPU.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache
from typing import Any

from core import Batch, Executor, HardwareModel, Scheduler, StepResult
from policies.speculative import (
    AcceptanceModel,
    DecayAcceptance,
    DisableAbove,
    DraftLengthPolicy,
    FixedDepth,
    GoodputDepth,
    IIDAcceptance,
    PerRequestAcceptance,
    Proposer,
    ReplayAcceptance,
    SpeculationError,
    SpeculativeScheduler,
    accepted_counts,
)
from sim.config import Config, ConfigError

ACT_BYTES = 2  # heads and LM heads stay in 16 bits, as quantization recipes keep them
LOGIT_BYTES = 4
_PRUNE_EVERY_STEPS = 4096


# ---- drafting cost ----------------------------------------------------------------------------
class ModelDrafter:
    """An autoregressive drafter (separate model or EAGLE/MTP head) priced by its roofline.

    It keeps, per request, how many tokens its own KV holds. A step's first pass processes
    everything it has not seen up to the real token (1 token normally, 2 after a fully accepted
    draft, a prompt chunk during prefill); passes 2..k process one level of candidates each.
    An ``eager`` drafter computes every token the target computes, speculating or not: a head
    must (it reads the target's hidden states, gone after the step), and vLLM runs its draft
    model so (``_run_no_spec`` keeps the draft's KV in sync). A lazy one computes only for
    sequences it drafts for, catching up on everything it skipped (the prompt included) the next
    time it drafts: switched off under load it costs nothing.
    """

    def __init__(self, hardware: HardwareModel, eager: bool):
        self.hardware, self.eager = hardware, eager
        self._kv: dict[int, tuple[Any, int]] = {}  # request_id -> (request, tokens in draft KV)
        self._steps = 0

    def seconds(self, batch: Batch, proposer: Proposer) -> float:
        first: list[tuple[int, int]] = []
        levels: list[list[tuple[int, int]]] = []
        for req, n, ctx, d, pad in zip(batch.requests, batch.new_tokens, batch.context_tokens,
                                       batch.draft_tokens, batch.padding, strict=True):
            if pad or (not d and not self.eager):
                continue
            have = min(self._kv.get(req.request_id, (req, 0))[1], ctx)  # rejected/preempted: gone
            depth = proposer.depth_of(d)
            end = ctx + (n - d)  # through the real token(s) of this step
            first.append((end - have, have))
            for j in range(1, depth):
                if len(levels) < j:
                    levels.append([])
                levels[j - 1].append((proposer.width, end + (j - 1) * proposer.width))
            # a chain's draft KV stays valid up to the first rejection; a tree's branches don't
            kept = end + (depth - 1 if depth and proposer.width == 1 else 0)
            self._kv[req.request_id] = (req, kept)
        self._prune()
        passes = [first, *levels] if first else levels
        return sum(self.hardware.step_time_s(p) for p in passes)

    def estimate_s(self, batch_size: int, depth: int, context: int, width: int) -> float:
        """Drafting seconds of a decode-only step (for planning policies)."""
        if depth == 0:
            return self.hardware.step_time_s([(1, context)] * batch_size) if self.eager else 0.0
        t = self.hardware.step_time_s([(1, context)] * batch_size)
        return t + (depth - 1) * self.hardware.step_time_s([(width, context)] * batch_size)

    def _prune(self) -> None:
        self._steps += 1
        if self._steps % _PRUNE_EVERY_STEPS == 0:
            self._kv = {k: v for k, v in self._kv.items() if not v[0].is_finished}


class HeadsDrafter:
    """Medusa-style parallel heads on the last hidden state, fused into the verify step.

    Per speculating sequence and head: a residual block (hidden x hidden) and an LM head
    (hidden x vocab), priced as GEMMs of the target's operator model."""

    def __init__(self, target: Any, num_heads: int):
        self.ops, self.params, self.tp = target.operators, target.params, target.tp
        self.num_heads = num_heads

    def _cost(self, rows: int, heads: int) -> float:
        if rows == 0 or heads == 0:
            return 0.0
        m = self.ops.model
        h, vocab = m.hidden_size, math.ceil(m.vocab_size / self.tp)
        ops = (self.ops.gemm("medusa_resblock", self.params, rows, h // self.tp, h, heads,
                             lowp=False),
               self.ops.gemm("medusa_lm_head", self.params, rows, vocab, h, heads, lowp=False),
               self.ops.mem("medusa_topk", self.params, rows * heads * vocab * LOGIT_BYTES, heads))
        return sum(op.time_s for op in ops)

    def seconds(self, batch: Batch, proposer: Proposer) -> float:
        pairs = zip(batch.draft_tokens, batch.padding, strict=True)
        depths = [proposer.depth_of(d) for d, pad in pairs if d and not pad]
        return self._cost(len(depths), max(depths, default=0))

    def estimate_s(self, batch_size: int, depth: int, context: int, width: int) -> float:
        return self._cost(batch_size if depth else 0, depth)


class NgramDrafter:
    """Prompt lookup: a host-side search of the text for the last n-gram, per sequence."""

    def __init__(self, lookup_s: float):
        self.lookup_s = lookup_s

    def seconds(self, batch: Batch, proposer: Proposer) -> float:
        return self.lookup_s * sum(1 for d in batch.draft_tokens if d)

    def estimate_s(self, batch_size: int, depth: int, context: int, width: int) -> float:
        return self.lookup_s * batch_size if depth else 0.0


def logits_extra_s(target: Any, base_rows: int, extra_rows: int) -> float:
    """LM head and sampling for the draft positions a verify step also scores.

    The roofline prices logits for one position per sequence (what plain decoding samples);
    verification needs them at every drafted position too. Hardware models without operator
    rows (test doubles) get no surcharge."""
    ops = getattr(target, "operators", None)
    if ops is None or extra_rows == 0:
        return 0.0
    m, p = ops.model, target.params
    vocab = math.ceil(m.vocab_size / target.tp)

    def cost(rows: int) -> float:
        return (ops.gemm("lm_head", p, rows, vocab, m.hidden_size, 1, lowp=False).time_s
                + ops.mem("sampler", p, rows * m.vocab_size * LOGIT_BYTES * 3, 3).time_s)

    return cost(base_rows + extra_rows) - cost(base_rows)


# ---- the executor wrapper ---------------------------------------------------------------------
class SpeculativeExecutor:
    """Times a verify step (inner executor) plus drafting; draws each sequence's accepted drafts.

    The accepted counts come from the acceptance model alone (never from the hardware model),
    so a GPU run that uses the same model draws the same counts."""

    def __init__(self, inner: Executor, target: Any, drafter: Any, proposer: Proposer,
                 acceptance: AcceptanceModel):
        self.inner, self.target, self.drafter = inner, target, drafter
        self.proposer, self.acceptance = proposer, acceptance

    def run(self, batch: Batch) -> StepResult:
        verify_s = self.inner.run(batch).seconds
        extra = sum(d for d, pad in zip(batch.draft_tokens, batch.padding, strict=True) if not pad)
        verify_s += logits_extra_s(self.target, len(batch), extra)
        draft_s = self.drafter.seconds(batch, self.proposer)
        return StepResult(verify_s + draft_s, accepted_counts(batch, self.acceptance,
                                                              self.proposer))


def step_cost_fn(target: HardwareModel, drafter: Any, width: int, bucket_tokens: int = 256):
    """``(batch_size, depth, context) -> seconds`` of a decode step, for planning policies;
    memoized with the context rounded to ``bucket_tokens``."""

    @lru_cache(maxsize=1 << 14)
    def cost(batch_size: int, depth: int, ctx_bucket: int) -> float:
        ctx = ctx_bucket * bucket_tokens
        verify = target.step_time_s([(1 + width * depth, ctx)] * batch_size)
        verify += logits_extra_s(target, batch_size, batch_size * width * depth)
        return verify + drafter.estimate_s(batch_size, depth, ctx, width)

    return lambda b, k, ctx: cost(b, k, round(ctx / bucket_tokens))


# ---- from the config --------------------------------------------------------------------------
def enabled(config: Config) -> bool:
    return config.speculative.method != "none"


def acceptance_from_config(config: Config) -> AcceptanceModel:
    """The acceptance model the config asks for, seeded by ``config.seed`` (realexec uses it)."""
    a, seed = config.speculative.acceptance, config.seed
    try:
        if a.model == "iid":
            return IIDAcceptance(a.rate, seed)
        if a.model == "decay":
            return DecayAcceptance(a.rate, a.decay, a.rates, seed)
        if a.model == "per_request":
            if a.dataset is not None:
                return PerRequestAcceptance.for_dataset(a.dataset, seed)
            return PerRequestAcceptance(a.rate, a.concentration, seed)
        if a.file is None:
            raise ConfigError("speculative.acceptance.file: the replay model needs a file of "
                              "accepted lengths")
        depth = a.recorded_depth or config.speculative.num_draft_tokens
        return ReplayAcceptance.from_file(a.file, depth, seed)
    except SpeculationError as exc:
        raise ConfigError(str(exc)) from None


def proposer_from_config(config: Config) -> Proposer:
    s = config.speculative
    if s.method == "ngram" and s.tree_width != 1:
        raise ConfigError("speculative.tree_width: n-gram lookup proposes one chain; allowed: 1")
    match = s.ngram_match_prob if s.method == "ngram" else 1.0
    return Proposer(s.num_draft_tokens, s.tree_width, match, config.seed)


def head_spec(target: Any, vocab_size: int) -> Any:
    """One decoder layer of the target's shape (an EAGLE head; DeepSeek's MTP module keeps
    the target's MoE layer), with the LM head it computes logits with."""
    spec = target.with_layers(1)
    if spec.moe is not None:
        spec = replace(spec, moe=replace(spec.moe, first_dense_layers=0))
    return replace(spec, vocab_size=vocab_size)


def draft_memory(config: Config, target: Any) -> tuple[Any, float]:
    """(model spec whose weights and KV the planner reserves, extra weight bytes per GPU).

    A head shares the target's embedding (and its LM head unless ``draft_vocab_size`` gives it
    a smaller one of its own, as EAGLE-3), so its spec carries one vocabulary matrix at most.
    """
    import hwmodels

    s, tp, h = config.speculative, config.hardware.tp, target.hidden_size
    if s.method == "draft_model":
        if s.draft_model is None:
            raise ConfigError("speculative.draft_model: the draft_model method needs a model "
                              "catalog id (e.g. llama-3.2-1b, llama-3.1-8b)")
        spec = hwmodels.get_model(s.draft_model)
        if spec.vocab_size != target.vocab_size:
            raise ConfigError(f"speculative.draft_model: {spec.id} has vocabulary "
                              f"{spec.vocab_size}, the target {target.vocab_size}; they must match")
        return spec, 0.0
    if s.method in ("eagle", "mtp"):
        own_vocab = s.draft_vocab_size or 1
        spec = replace(head_spec(target, own_vocab), tie_embeddings=True)
        return spec, 2 * h * h * ACT_BYTES / tp  # the fc fusing token and hidden state
    if s.method == "medusa":
        per_head = h * h + h + target.vocab_size * h
        return None, s.num_draft_tokens * per_head * ACT_BYTES / tp
    return None, 0.0


def plan_replica_memory(config: Config, gpu: Any, model: Any, **kwargs: Any) -> Any:
    """``hwmodels.plan_memory`` with the speculation method's weights and KV reserved.

    Extra bytes the planner has no field for (heads without KV) are reserved as runtime memory
    and then reported as ``draft_bytes``, so the summary shows all the method takes."""
    import hwmodels
    from hwmodels.memory import RUNTIME_RESERVED_BYTES

    if not enabled(config):
        return hwmodels.plan_memory(gpu, model, **kwargs)
    spec, extra = draft_memory(config, hwmodels.get_model(model))
    plan = hwmodels.plan_memory(gpu, model, draft=spec,
                                runtime_bytes=RUNTIME_RESERVED_BYTES + extra, **kwargs)
    return replace(plan, runtime_bytes=RUNTIME_RESERVED_BYTES,
                   draft_bytes=plan.draft_bytes + extra)


def make_drafter(config: Config, target: Any) -> Any:
    import hwmodels

    s, hw, m = config.speculative, config.hardware, config.model
    if s.method == "ngram":
        return NgramDrafter(s.ngram_lookup_s)
    if s.method == "medusa":
        return HeadsDrafter(target, s.num_draft_tokens)
    if s.method == "draft_model":
        spec = draft_memory(config, target.model)[0]
    else:
        spec = head_spec(target.model, s.draft_vocab_size or target.model.vocab_size)
    # Draft passes run inside the engine step: the host's per-step work (scheduling, inputs,
    # sampling, output) is paid once, by the verify step; a pass adds its GPU time and launches.
    draft_hw = hwmodels.RooflineModel(hw.gpu, spec, tp=hw.tp, weight_dtype=m.weight_dtype,
                                      kv_dtype=m.kv_dtype, profile=target.profile,
                                      params={"step_overhead_s": 0.0, "seq_overhead_s": 0.0})
    return ModelDrafter(draft_hw, eager=s.method != "draft_model" or s.draft_sync == "eager")


def make_policy(config: Config, target: Any, drafter: Any,
                acceptance: AcceptanceModel) -> DraftLengthPolicy:
    s = config.speculative
    if s.policy == "goodput":
        policy: DraftLengthPolicy = GoodputDepth(
            s.num_draft_tokens, step_cost_fn(target, drafter, s.tree_width),
            acceptance.prior_rate, s.tree_width)
    else:
        policy = FixedDepth(s.num_draft_tokens)
    if s.disable_above_batch_size is not None or s.disable_above_waiting is not None:
        policy = DisableAbove(policy, s.disable_above_batch_size, s.disable_above_waiting)
    return policy


def speculative_replica(config: Config, scheduler: Scheduler, executor: Executor | None,
                        target: Any) -> tuple[Scheduler, Executor | None]:
    """Wrap one replica's scheduler (always) and its simulated executor (when given).

    An executor from a factory (realexec) is left alone: it verifies for real and draws its
    accepted counts from ``acceptance_from_config`` itself."""
    acceptance = acceptance_from_config(config)
    proposer = proposer_from_config(config)
    drafter = make_drafter(config, target)
    policy = make_policy(config, target, drafter, acceptance)
    wrapped = SpeculativeScheduler(scheduler, proposer, policy)
    if executor is None:
        return wrapped, None
    return wrapped, SpeculativeExecutor(executor, target, drafter, proposer, acceptance)
