"""The operators of one step on one GPU, each priced as a roofline: FLOPs, bytes, seconds.

``StepOperators`` is built once per (GPU, model, parallelism, precision) and turns a batch
``[(new_tokens, cached_tokens), ...]`` into a list of ``Op`` rows: per-layer GEMMs (QKV, O,
MLP or MoE experts), attention, norms and elementwise kernels, collectives, embeddings, LM head
and sampling. Rows of identical layers are summed (a row's ``kernels`` says how many launches
it stands for). GEMM and all-reduce rows are priced by the fitted kernel curves of
``hwmodels.kernels`` (the functions behind ``hwmodels.gemm_time_ms`` and
``allreduce_time_ms``): per-call floors plus efficiency curves; attention rows come from
``hwmodels.attention`` (the same curves); elementwise kernels are a soft roofline of FLOPs and
bytes plus a fixed gap per kernel.
"""

from __future__ import annotations

import functools
import math

from hwmodels.attention import AttentionModel
from hwmodels.errors import CatalogError
from hwmodels.kernels.api import allreduce_cost, collective_latency_eff, gemm_cost
from hwmodels.kernels.fits import curves_for
from hwmodels.kernels.gemm import KernelTime
from hwmodels.modelspec import ModelSpec
from hwmodels.op import ACT_BYTES, LOGIT_BYTES, Op, overlap1
from hwmodels.params import HwParams
from hwmodels.precision import Format, activation_dtype, kv_format, weight_format
from hwmodels.specs import GpuSpec


class StepOperators:
    """Per-GPU operator shapes of a model under tensor/pipeline/expert parallelism."""

    def __init__(
        self,
        gpu: GpuSpec,
        model: ModelSpec,
        *,
        tp: int = 1,
        pp: int = 1,
        ep: int = 1,
        weight_dtype: str = "bf16",
        kv_dtype: str = "bf16",
        attention_impl: str = "flash",
        dp_attention: bool = False,
    ) -> None:
        validate_parallelism(model, tp, pp, ep, dp_attention)
        if attention_impl not in ("flash", "naive"):
            raise CatalogError(
                f"hardware.attention_impl: unknown {attention_impl!r}; allowed: flash, naive"
            )
        self.gpu, self.model = gpu, model
        self.tp, self.pp, self.ep = tp, pp, ep
        self.naive = attention_impl == "naive"
        self.wfmt: Format = weight_format(weight_dtype)
        self.kvfmt: Format = kv_format(kv_dtype)
        self.act_dtype = activation_dtype(self.wfmt)
        self.lin_dtype = self.wfmt.compute_dtype(gpu)
        self.lin_weight_only = self.lin_dtype in ("bf16", "fp16") and self.wfmt.bits < 16
        # DP attention (DeepSeek/SGLang style): each of the tp GPUs runs attention, dense layers
        # and the LM head unsharded for its own 1/tp of the sequences; experts are spread over
        # the ep = tp GPUs and tokens reach them through all-to-all dispatch and combine.
        self.dp = tp if dp_attention else 1
        self.attn_tp = 1 if dp_attention else tp
        self.heads = model.num_heads // self.attn_tp
        self.kv_heads = max(1, model.num_kv_heads // self.attn_tp)
        # memos of static rows, by parameters: (by (tokens, sequences), by tokens, by sequences)
        self._memos_by_params: dict[HwParams, tuple[dict, dict, dict]] = {}
        self._last_memos: tuple[HwParams, tuple[dict, dict, dict]] | None = None
        self.curves = curves_for(gpu)
        self.attention = AttentionModel(
            gpu,
            model,
            heads=self.heads,
            kv_heads=self.kv_heads,
            kvfmt=self.kvfmt,
            wfmt=self.wfmt,
            lin_dtype=self.lin_dtype,
            naive=self.naive,
            dp=self.dp,
        )

    # ---- pricing helpers ---------------------------------------------------------------
    def _price(self, op: Op, p: HwParams, rate_flops: float, bw_eff: float) -> Op:
        """A memory-bound kernel (norms, RoPE, activations, sampling): a soft roofline plus
        the per-kernel gap (no measured curve: ``kernel_gap_s`` is the H100 microbenchmark's)."""
        op.compute_s = op.flops / rate_flops if op.flops else 0.0
        op.memory_s = op.bytes / (self.gpu.hbm_bw_bytes_s * bw_eff)
        op.floor_s = op.kernels * p.kernel_gap_s
        op.time_s = overlap1(op.compute_s, op.memory_s, p.overlap_p) + op.floor_s
        ideal = max(op.flops / rate_flops, op.bytes / self.gpu.hbm_bw_bytes_s)
        op.eff = ideal / op.time_s if op.time_s > 0 else 0.0
        return op

    def _gemm_op(self, op: Op, cost: KernelTime) -> Op:
        op.compute_s, op.memory_s = cost.compute_s, cost.memory_s
        op.time_s, op.floor_s, op.eff = cost.time_s, cost.floor_s, cost.eff
        return op

    def gemm(
        self,
        name: str,
        p: HwParams,
        m: float,
        n: int,
        k: int,
        layers: int,
        *,
        weight_bytes: float | None = None,
        lowp: bool = True,
        weights: float | None = None,
    ) -> Op:
        """``layers`` GEMMs of [m, k] x [k, n]; weights in the linear format unless ``lowp``
        is False (embeddings, LM head and routers stay 16-bit). Priced by the fitted GEMM
        curve (``hwmodels.kernels.api.gemm_cost``, as ``hwmodels.gemm_time_ms``)."""
        if layers <= 0 or n <= 0:
            return Op(name, "gemm")
        wb = self.wfmt.bytes_per_elem if lowp else ACT_BYTES
        w = (weights if weights is not None else n * k) * wb
        if weight_bytes is not None:
            w = weight_bytes
        op = Op(
            name,
            "gemm",
            flops=2.0 * m * n * k * layers,
            bytes=layers * (w + m * (k + n) * ACT_BYTES),
            kernels=layers,
        )
        dtype = self.lin_dtype if lowp else self.act_dtype
        cost = gemm_cost(self.gpu, max(m, 1e-9), n, k, dtype, p, curves=self.curves,
                         weight_bytes=w, calls=layers,
                         dequantize=lowp and self.lin_weight_only)
        return self._gemm_op(op, cost)

    def mem(self, name: str, p: HwParams, nbytes: float, kernels: int, flops: float = 0.0) -> Op:
        op = Op(name, "mem", flops=flops, bytes=nbytes, kernels=kernels)
        return self._price(op, p, self.gpu.peak("fp32") or 1e15, p.hbm_eff)

    def comm(self, name: str, p: HwParams, nbytes: float, calls: int, gpus: int) -> Op:
        """``calls`` collectives other than all-reduce (gathers, all-to-all, pipeline sends)
        moving ``nbytes`` in total per GPU over ``gpus`` GPUs: NCCL's small-message latency at
        that rank count, then the bytes at the all-reduce's large-message link fraction."""
        if calls <= 0 or gpus <= 1:
            return Op(name, "comm")
        latency, bw_eff = collective_latency_eff(self.gpu, gpus, p, self.curves)
        op = Op(name, "comm", bytes=nbytes, kernels=calls)
        op.memory_s = nbytes / (self.gpu.link_bw_bytes_s(gpus) * bw_eff)
        op.floor_s = calls * latency
        op.time_s = op.floor_s + op.memory_s
        op.eff = nbytes / self.gpu.link_bw_bytes_s(gpus) / op.time_s
        return op

    def all_reduce(self, name: str, p: HwParams, nbytes: float, calls: int, gpus: int) -> Op:
        """``calls`` all-reduces of ``nbytes`` each over ``gpus`` GPUs, priced by the fitted
        curves (``hwmodels.kernels.api.allreduce_cost``, as ``hwmodels.allreduce_time_ms``)."""
        if calls <= 0 or gpus <= 1:
            return Op(name, "comm")
        ring = 2 * (gpus - 1) / gpus  # bytes each GPU sends per byte reduced (shown)
        op = Op(name, "comm", bytes=calls * nbytes * ring, kernels=calls)
        cost = allreduce_cost(self.gpu, gpus, nbytes, p, curves=self.curves, calls=calls)
        op.memory_s, op.time_s, op.floor_s, op.eff = (
            cost.memory_s, cost.time_s, cost.floor_s, cost.eff)
        return op

    # ---- the step ------------------------------------------------------------------------
    def ops(self, seqs: list[tuple[int, int]], p: HwParams) -> tuple[list[Op], int]:
        """Priced operator rows for one step over ``seqs`` = [(new, cached), ...], and the
        step's new tokens."""
        attention, tokens = self.attention.rows(seqs, p)
        before, after = self.static_ops(float(tokens), len(seqs), p)
        return [*before, *attention, *after], tokens

    def static_ops(
        self, tokens: float, num_seqs: int, p: HwParams
    ) -> tuple[tuple[Op, ...], tuple[Op, ...]]:
        """Rows before and after attention; they depend on (tokens, sequences) only, so they
        are memoized: a simulation revisits the same batch sizes step after step."""
        cache = self._memos(p)[0]
        key = (tokens, num_seqs)
        hit = cache.get(key)
        if hit is None:
            if len(cache) > 8192:
                cache.clear()
            hit = cache[key] = self._build_static(tokens, num_seqs, p)
        return hit

    def _memos(self, p: HwParams) -> tuple[dict, dict, dict]:
        """The static-row memos of parameters ``p``: found by identity while ``p`` is the
        object last asked for (hashing the parameters on every step costs more than the
        lookup saves), else by value."""
        last = self._last_memos
        if last is not None and last[0] is p:
            return last[1]
        memos = self._memos_by_params.get(p)
        if memos is None:
            if len(self._memos_by_params) > 4:
                self._memos_by_params.clear()
            memos = self._memos_by_params[p] = ({}, {}, {})
        self._last_memos = (p, memos)
        return memos

    def _build_static(
        self, tokens: float, num_seqs: int, p: HwParams
    ) -> tuple[tuple[Op, ...], tuple[Op, ...]]:
        """The rows of ``static_ops`` in their order, from the rows that depend on the tokens
        and those that depend on the sequences, each memoized on its own: a simulation meets
        thousands of token counts but only as many batch sizes as it allows, and a step of
        each pair."""
        before, mid, pipe, final = self._token_rows(tokens, p)
        gather, head = self._sequence_rows(num_seqs, p)
        after = [*mid, *gather, *pipe, *final, *head]
        keep = [r for r in before if r.kernels > 0], [r for r in after if r.kernels > 0]
        return tuple(keep[0]), tuple(keep[1])

    def _token_rows(self, tokens: float, p: HwParams) -> tuple[list[Op], ...]:
        """Rows that depend on the step's tokens: before attention; after it up to the
        collectives; the pipeline send; the final norm."""
        cache = self._memos(p)[1]
        hit = cache.get(tokens)
        if hit is not None:
            return hit
        m = self.model
        h = m.hidden_size
        layers = m.num_layers
        routed_tokens = tokens  # every token of the replica is routed to the experts
        tokens = tokens / self.dp  # this GPU's share
        before: list[Op] = [self.mem("embedding", p, tokens * h * ACT_BYTES * 2, 1)]
        norm_bytes = tokens * h * ACT_BYTES * 4  # fused residual add + RMSNorm: 2 in, 2 out
        before.append(self.mem("norms", p, 2 * layers * norm_bytes, 2 * layers, 8 * tokens * h))
        before += self._attn_projections(tokens, p)
        o_in = m.attn_out_dim // self.attn_tp
        mid = [self.gemm("o_proj", p, tokens, h, o_in, layers)]
        mid += self._mlp_block(tokens, routed_tokens, p)
        mid += self._token_collectives(tokens, p)
        pipe = []
        if self.pp > 1:
            pipe.append(
                self.comm("pp_send", p, (self.pp - 1) * tokens * h * ACT_BYTES, self.pp - 1, 2)
            )
        final = [self.mem("final_norm", p, tokens * h * ACT_BYTES * 2, 1)]
        if len(cache) > 8192:
            cache.clear()
        hit = cache[tokens] = (before, mid, pipe, final)
        return hit

    def _sequence_rows(self, num_seqs: int, p: HwParams) -> tuple[list[Op], list[Op]]:
        """Rows that depend on the step's sequences: the logits' gather over tensor-parallel
        GPUs, the LM head and the sampler (one position per sequence)."""
        cache = self._memos(p)[2]
        hit = cache.get(num_seqs)
        if hit is not None:
            return hit
        m = self.model
        seqs = num_seqs / self.dp  # this GPU's share
        gather = []
        if not (self.dp > 1 and m.moe) and self.tp > 1:
            logits = seqs * math.ceil(m.vocab_size / self.tp) * LOGIT_BYTES
            gather.append(self.comm("logits_gather", p, logits * (self.tp - 1), 1, self.tp))
        vocab = math.ceil(m.vocab_size / self.attn_tp)
        head = [self.gemm("lm_head", p, seqs, vocab, m.hidden_size, 1, lowp=False)]
        sampled = seqs * m.vocab_size * LOGIT_BYTES * 3  # logits to fp32, softmax, top-k
        head.append(self.mem("sampler", p, sampled, 3))
        if len(cache) > 4096:
            cache.clear()
        hit = cache[num_seqs] = (gather, head)
        return hit

    def _attn_projections(self, tokens: float, p: HwParams) -> list[Op]:
        """Q/K/V (or MLA down/up) projections, RoPE and the KV-cache write."""
        m, layers, h = self.model, self.model.num_layers, self.model.hidden_size
        kvb = self.kvfmt.bytes_per_elem
        out: list[Op] = []
        if m.mla:
            mla = m.mla
            if mla.q_lora_rank:
                fused = mla.q_lora_rank + mla.latent_dim
                out.append(self.gemm("qkv_a_proj", p, tokens, fused, h, layers))
                q_dim = self.heads * mla.qk_head_dim
                out.append(self.gemm("q_b_proj", p, tokens, q_dim, mla.q_lora_rank, layers))
            else:
                out.append(self.gemm("kv_a_proj", p, tokens, mla.latent_dim, h, layers))
                out.append(self.gemm("q_proj", p, tokens, self.heads * mla.qk_head_dim, h, layers))
            rope = tokens * (self.heads + 1) * mla.qk_rope_head_dim * ACT_BYTES * 2
            cache = tokens * mla.latent_dim * (ACT_BYTES + kvb)
        else:
            hd = m.head_dim
            qkv = (self.heads + 2 * self.kv_heads) * hd
            bias = qkv * ACT_BYTES if m.qkv_bias else 0.0
            w = qkv * h * self.wfmt.bytes_per_elem + bias
            out.append(self.gemm("qkv_proj", p, tokens, qkv, h, layers, weight_bytes=w))
            rope = tokens * (self.heads + self.kv_heads) * hd * ACT_BYTES * 2
            cache = tokens * 2 * self.kv_heads * hd * (ACT_BYTES + kvb)
        out.append(self.mem("rope_kv_write", p, layers * (rope + cache), 2 * layers))
        return out

    def _mlp_block(self, tokens: float, routed_tokens: float, p: HwParams) -> list[Op]:
        m, h, tp = self.model, self.model.hidden_size, self.attn_tp
        out: list[Op] = []
        dense = m.num_dense_layers
        if dense:
            inter = m.intermediate_size // tp
            out.append(self.gemm("gate_up_proj", p, tokens, 2 * inter, h, dense))
            out.append(self.mem("act_silu_mul", p, dense * tokens * inter * ACT_BYTES * 3, dense))
            out.append(self.gemm("down_proj", p, tokens, h, inter, dense))
        if m.moe and m.num_moe_layers:
            out += self._moe_block(tokens, routed_tokens, p)
        return out

    def _moe_block(self, tokens: float, routed_tokens: float, p: HwParams) -> list[Op]:
        """Routed experts as a grouped GEMM: weights read only for the experts some token is
        routed to; the busiest expert-parallel rank sets the pace. ``tokens`` are this GPU's
        (router, shared experts); ``routed_tokens`` the replica's, which reach the experts."""
        m, h = self.model, self.model.hidden_size
        moe = m.moe
        assert moe is not None
        layers = m.num_moe_layers
        e, k = moe.num_experts, moe.top_k
        inter = moe.expert_intermediate * self.ep // self.tp  # expert TP inside each EP rank
        local_experts = e // self.ep
        hit = 1.0 - (1.0 - k / e) ** routed_tokens  # P(an expert gets at least one token)
        active = max(local_experts * hit, 1e-9)
        mean_load = routed_tokens * k / self.ep
        load = mean_load
        if self.ep > 1:  # the busiest rank sets the pace
            load = mean_load + busiest_rank_excess(routed_tokens, e, k, self.ep)
        m_per_expert = load / active
        bias = (2 * inter + h) * ACT_BYTES if moe.expert_bias else 0.0
        wb = self.wfmt.bytes_per_elem
        out = [
            self.gemm("router", p, tokens, e, h, layers, lowp=False),
            # routed outputs written and summed over the top-k: 2 passes of T x k x h
            self.mem(
                "moe_route_permute", p, layers * tokens * h * ACT_BYTES * (2 * k + 1), 3 * layers
            ),
            self._expert_gemm(
                "experts_gate_up",
                p,
                m_per_expert,
                active,
                2 * inter,
                h,
                layers,
                active * (2 * inter * h * wb + bias),
            ),
            self.mem("experts_act", p, layers * load * inter * ACT_BYTES * 3, layers),
            self._expert_gemm(
                "experts_down", p, m_per_expert, active, h, inter, layers, active * inter * h * wb
            ),
        ]
        if moe.shared_intermediate:
            si = moe.shared_intermediate // self.attn_tp
            out.append(self.gemm("shared_gate_up", p, tokens, 2 * si, h, layers))
            out.append(self.mem("shared_act", p, layers * tokens * si * ACT_BYTES * 3, layers))
            out.append(self.gemm("shared_down", p, tokens, h, si, layers))
        return out

    def _expert_gemm(
        self,
        name: str,
        p: HwParams,
        m_e: float,
        active: float,
        n_dim: int,
        k_dim: int,
        layers: int,
        weight_bytes: float,
    ) -> Op:
        """``active`` experts' GEMMs of ``m_e`` rows each, as one grouped kernel per layer."""
        op = Op(
            name,
            "gemm",
            flops=2.0 * m_e * active * n_dim * k_dim * layers,
            bytes=layers * (weight_bytes + m_e * active * (n_dim + k_dim) * ACT_BYTES),
            kernels=layers,
        )
        cost = gemm_cost(self.gpu, max(m_e, 1e-9), n_dim, k_dim, self.lin_dtype, p,
                         curves=self.curves, weight_bytes=weight_bytes, groups=active,
                         calls=layers, dequantize=self.lin_weight_only)
        return self._gemm_op(op, cost)

    def _token_collectives(self, tokens: float, p: HwParams) -> list[Op]:
        """The per-layer collectives: expert all-to-all (DP attention) or the TP all-reduce."""
        m, h, out = self.model, self.model.hidden_size, []
        if self.dp > 1 and m.moe:  # dispatch and combine: all-to-all of the routed tokens
            calls = 2 * m.num_moe_layers
            sent = tokens * m.moe.top_k * h * ACT_BYTES * (self.ep - 1) / self.ep
            out.append(self.comm("ep_all_to_all", p, calls * sent, calls, self.ep))
        elif self.tp > 1:
            payload = tokens * h * ACT_BYTES  # one all-reduce after attention, one after the MLP
            out.append(self.all_reduce("tp_all_reduce", p, payload, 2 * m.num_layers, self.tp))
        return out


def busiest_rank_excess(tokens: float, experts: int, top_k: int, ranks: int) -> float:
    """Expected load of the busiest of ``ranks`` expert-parallel ranks above the mean, under
    uniform top-k routing of ``tokens`` tokens.

    A token's k distinct experts fall on one rank as a hypergeometric draw, so over many tokens
    the ranks' loads are jointly normal and sum to T k: they are ``Y_r - mean(Y)`` with Y iid
    of variance s^2 = T k / n (e - k) / (e - 1), and the busiest exceeds the mean by
    E[max of n iid N(0, 1)] x s (the maximal bound sqrt(2 ln n) x sd would overstate it by
    36-52 % for n = 2..8).
    """
    spread = tokens * top_k / ranks * (experts - top_k) / max(experts - 1, 1)
    return _expected_max_std_normal(ranks) * math.sqrt(max(spread, 0.0))


@functools.cache
def _expected_max_std_normal(n: int) -> float:
    """E[max of n iid N(0, 1)] = integral of x n phi(x) Phi(x)^(n-1) dx (Tippett 1925: 0.5642
    for 2, 1.0294 for 4, 1.4236 for 8), by the trapezoid rule on [-10, 10] (error < 1e-9)."""
    steps, lo, hi = 8000, -10.0, 10.0
    dx = (hi - lo) / steps
    total = 0.0
    for i in range(steps + 1):
        x = lo + i * dx
        pdf = math.exp(-x * x / 2) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1 + math.erf(x / math.sqrt(2)))
        total += (0.5 if i in (0, steps) else 1.0) * x * n * pdf * cdf ** (n - 1)
    return total * dx


def validate_parallelism(
    model: ModelSpec, tp: int, pp: int, ep: int, dp_attention: bool = False
) -> None:
    """One-line errors for parallel degrees the model's shape cannot be split by."""
    if dp_attention:
        if model.moe is None or ep != tp or tp < 2:
            raise CatalogError(
                "hardware.dp_attention: needs an MoE model and ep == tp >= 2 "
                f"(got {model.id}, tp={tp}, ep={ep})"
            )
        tp = 1  # attention and dense layers are not sharded
    if tp < 1 or pp < 1 or ep < 1:
        raise CatalogError(f"hardware.tp/pp/ep: must be >= 1, got tp={tp} pp={pp} ep={ep}")
    if model.num_heads % tp:
        raise CatalogError(
            f"hardware.tp: {tp} does not divide {model.id}'s {model.num_heads} attention heads"
        )
    kv = model.num_kv_heads
    if not model.mla and kv % tp and tp % kv:
        raise CatalogError(f"hardware.tp: {tp} and {model.id}'s {kv} KV heads do not divide")
    if pp > model.num_layers:
        raise CatalogError(f"hardware.pp: {pp} exceeds {model.id}'s {model.num_layers} layers")
    if ep > 1 and not dp_attention:
        if model.moe is None:
            raise CatalogError(f"hardware.ep: {model.id} has no experts to spread (use ep=1)")
        if tp % ep or model.moe.num_experts % ep:
            raise CatalogError(
                f"hardware.ep: {ep} must divide tp={tp} and {model.id}'s "
                f"{model.moe.num_experts} experts"
            )
