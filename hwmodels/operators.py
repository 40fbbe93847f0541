"""The operators of one step on one GPU, each priced as a roofline: FLOPs, bytes, seconds.

``StepOperators`` is built once per (GPU, model, parallelism, precision) and turns a batch
``[(new_tokens, cached_tokens), ...]`` into a list of ``Op`` rows: per-layer GEMMs (QKV, O,
MLP or MoE experts), attention, norms and elementwise kernels, collectives, embeddings, LM head
and sampling. Rows of identical layers are summed (a row's ``kernels`` says how many launches
it stands for). Each row's time is the roofline of FLOPs / (peak x eff) and bytes / (bandwidth x
eff), combined by ``overlap`` (a soft maximum: compute and memory traffic overlap imperfectly
where they are of similar size), plus a fixed time per kernel. Attention is priced per sequence
and summed, because one varlen kernel serves compute-bound prefill tiles and bandwidth-bound
decode splits on different SMs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwmodels.attention import causal_keys, kv_tokens_read, pad_factor
from hwmodels.errors import CatalogError
from hwmodels.modelspec import ModelSpec
from hwmodels.params import HwParams
from hwmodels.precision import Format, activation_dtype, kv_format, weight_format
from hwmodels.specs import GpuSpec

ACT_BYTES = 2  # activations are 16-bit
LOGIT_BYTES = 4  # logits are upcast to fp32 for sampling


@dataclass(slots=True)
class Op:
    """One operator row of a step: totals over the layers it stands for, on one GPU."""

    name: str
    kind: str  # gemm | attn | mem | comm | host
    flops: float = 0.0
    bytes: float = 0.0
    kernels: int = 0
    compute_s: float = 0.0
    memory_s: float = 0.0
    time_s: float = 0.0

    @property
    def bound(self) -> str:
        if self.kind in ("comm", "host"):
            return self.kind
        return "compute" if self.compute_s >= self.memory_s else "memory"


def overlap1(compute_s: float, memory_s: float, power: float) -> float:
    """Soft maximum (c^p + m^p)^(1/p): the plain roofline max as p grows, and up to 2^(1/p)
    slower than it where compute and memory time are equal (they overlap imperfectly)."""
    top = compute_s if compute_s > memory_s else memory_s
    if power >= 64 or top <= 0.0:
        return top
    return top * ((compute_s / top) ** power + (memory_s / top) ** power) ** (1.0 / power)


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
        self._static_cache: dict[tuple[float, int, HwParams], tuple] = {}
        self._seq_cache: dict[HwParams, dict[tuple[int, int], tuple]] = {}
        self._bf16_peak = gpu.peak("bf16") or 0.0
        self._layer_kinds = [
            (count, window)
            for count, window in ((model.num_full_layers, None),
                                  (model.num_sliding_layers, model.sliding_window))
            if count
        ]

    # ---- pricing helpers ---------------------------------------------------------------
    def _gemm_rate(self, p: HwParams, dtype: str, m: float) -> float:
        peak = self.gpu.peak(dtype) or self.gpu.peak("bf16") or 0.0
        eff = p.gemm_eff * m / (m + p.gemm_m_half_tokens)
        if dtype not in ("bf16", "fp16", "fp32", "tf32"):
            eff *= p.lowp_gemm_eff_ratio
        elif dtype == self.lin_dtype and self.lin_weight_only:
            eff *= p.dequant_eff_ratio
        return peak * eff

    def _price(self, op: Op, p: HwParams, rate_flops: float, bw_eff: float) -> Op:
        op.compute_s = op.flops / rate_flops if op.flops else 0.0
        op.memory_s = op.bytes / (self.gpu.hbm_bw_bytes_s * bw_eff)
        fixed = p.kernel_gap_s + (p.gemm_latency_s if op.kind == "gemm" else 0.0)
        op.time_s = overlap1(op.compute_s, op.memory_s, p.overlap_p) + op.kernels * fixed
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
        is False (embeddings, LM head and routers stay 16-bit)."""
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
        return self._price(op, p, self._gemm_rate(p, dtype, max(m, 1e-9)), p.hbm_eff)

    def mem(self, name: str, p: HwParams, nbytes: float, kernels: int, flops: float = 0.0) -> Op:
        op = Op(name, "mem", flops=flops, bytes=nbytes, kernels=kernels)
        return self._price(op, p, self.gpu.peak("fp32") or 1e15, p.hbm_eff)

    def comm(self, name: str, p: HwParams, nbytes: float, calls: int, gpus: int) -> Op:
        """``calls`` collectives moving ``nbytes`` in total per GPU over ``gpus`` GPUs."""
        if calls <= 0 or gpus <= 1:
            return Op(name, "comm")
        bw = self.gpu.link_bw_bytes_s(gpus) * p.comm_eff
        op = Op(name, "comm", bytes=nbytes, kernels=calls)
        op.memory_s = nbytes / bw
        op.time_s = calls * p.comm_latency_s + op.memory_s
        return op

    # ---- the step ------------------------------------------------------------------------
    def ops(self, seqs: list[tuple[int, int]], p: HwParams) -> tuple[list[Op], int]:
        """Priced operator rows for one step over ``seqs`` = [(new, cached), ...], and the
        step's new tokens."""
        attention, tokens = self.attention_ops(seqs, p)
        before, after = self.static_ops(float(tokens), len(seqs), p)
        return [*before, *attention, *after], tokens

    def attention_ops(self, seqs: list[tuple[int, int]], p: HwParams) -> tuple[list[Op], int]:
        """The attention rows (the only ones that depend on each sequence's shape) and the
        step's new tokens. Sequence costs are memoized: decode shapes recur step after step."""
        cache = self._seq_cache.get(p)
        if cache is None or len(cache) > 500_000:
            if len(self._seq_cache) > 4:
                self._seq_cache.clear()
            cache = self._seq_cache[p] = {}
        cost = self._mla_seq if self.model.mla else self._gqa_seq
        # per row (0: decode/absorbed, 1: prefill/expanded): flops, bytes, time and the MLA
        # up-projection's flops, bytes, time; plain locals because this loop is the hot path
        f0 = b0 = t0 = kf0 = kb0 = kt0 = f1 = b1 = t1 = kf1 = kb1 = kt1 = 0.0
        n0 = n1 = tokens = 0
        for item in seqs:
            if type(item) is not tuple:
                item = tuple(item)
            hit = cache.get(item)
            if hit is None:
                new, cached = item
                if new < 1 or cached < 0:
                    raise ValueError(
                        f"seqs: each sequence needs new_tokens >= 1 and cached >= 0, got {item}"
                    )
                hit = cache[item] = cost(new, cached, p)
            row, f, b, t, kf, kb, kt = hit
            if row:
                f1 += f; b1 += b; t1 += t; kf1 += kf; kb1 += kb; kt1 += kt  # noqa: E702
                n1 += 1
            else:
                f0 += f; b0 += b; t0 += t; kf0 += kf; kb0 += kb; kt0 += kt  # noqa: E702
                n0 += 1
            tokens += item[0]
        share = 1.0 / self.dp  # this GPU's share of the sequences (balanced)
        sums = [[v * share for v in (f0, b0, t0, kf0, kb0, kt0)],
                [v * share for v in (f1, b1, t1, kf1, kb1, kt1)]]
        present = [n0 > 0, n1 > 0]
        if self.model.mla:
            return self._mla_rows(sums, p), tokens
        return self._gqa_rows(sums, present, p), tokens

    def _attn_time(self, flops: float, nbytes: float, p: HwParams) -> float:
        compute = flops / (self._bf16_peak * p.attn_compute_eff)
        memory = nbytes / (self.gpu.hbm_bw_bytes_s * p.attn_bw_eff)
        return overlap1(compute, memory, p.overlap_p)

    def _gqa_seq(self, n: int, c: int, p: HwParams) -> tuple:
        hd, heads = self.model.head_dim, self.heads
        flops_per_key = 4.0 * heads * hd  # QK^T and PV
        kv_per_token = 2 * self.kv_heads * hd * self.kvfmt.bytes_per_elem
        qo = 2 * heads * hd * ACT_BYTES
        group = heads // self.kv_heads
        f = b = t = 0.0
        for count, window in self._layer_kinds:
            if self.naive:  # the whole n x (c + n) score matrix, written to and read from HBM
                rect = n * (c + n)
                fi = flops_per_key * rect
                bi = (c + n) * kv_per_token + n * qo + 4 * heads * rect * ACT_BYTES
            else:
                fi = flops_per_key * causal_keys(n, c, window) * pad_factor(n * group)
                bi = kv_tokens_read(n, c, window) * kv_per_token + n * qo
            f += count * fi
            b += count * bi
            t += count * self._attn_time(fi, bi, p)
        return (0 if n == 1 else 1, f, b, t, 0.0, 0.0, 0.0)

    def _gqa_rows(self, sums: list[list[float]], present: list[bool], p: HwParams) -> list[Op]:
        """Decode (one new token) and prefill rows; the launches go to the first present."""
        out: list[Op] = []
        kernels = self.model.num_layers * (4 if self.naive else 1)
        for label, row, here in zip(("decode", "prefill"), sums, present, strict=True):
            if not here:
                continue
            op = Op(f"attention_{label}", "attn", row[0], row[1])
            op.compute_s = op.flops / (self._bf16_peak * p.attn_compute_eff)
            op.memory_s = op.bytes / (self.gpu.hbm_bw_bytes_s * p.attn_bw_eff)
            op.kernels = kernels if not out else 0
            op.time_s = row[2] + op.kernels * p.kernel_gap_s
            out.append(op)
        return out

    def _mla_seq(self, n: int, c: int, p: HwParams) -> tuple:
        """MLA: the cheaper of the absorbed path (attend over the latent, MQA-like, as decode
        kernels such as FlashMLA do) and the expanded path (up-project the cached latent to
        per-head K/V with kv_b, then ordinary attention, as prefill kernels do)."""
        mla, hq = self.model.mla, self.heads
        assert mla is not None
        kvb = self.kvfmt.bytes_per_elem
        layers = self.model.num_layers
        gemm_rate = (self.gpu.peak(self.lin_dtype) or self._bf16_peak) * p.gemm_eff
        bw = self.gpu.hbm_bw_bytes_s * p.hbm_eff
        keys = causal_keys(n, c, None)
        ctx = c + n
        up = mla.qk_nope_head_dim + mla.v_head_dim
        # absorbed: scores over latent + rope (576), values over the latent (512)
        fa = 2.0 * hq * (mla.latent_dim + mla.kv_lora_rank) * keys * pad_factor(n * hq)
        ba = ctx * mla.latent_dim * kvb + n * hq * (mla.latent_dim + mla.kv_lora_rank) * ACT_BYTES
        kfa = 2.0 * n * hq * mla.kv_lora_rank * up  # q through W_UK, output through W_UV
        ta = self._attn_time(fa, ba, p)
        # expanded: kv_b over the whole context, then attention with head dims 192 / 128
        qkv_dim = mla.qk_head_dim + mla.v_head_dim
        kfe = 2.0 * ctx * mla.kv_lora_rank * hq * up
        kbe = ctx * mla.latent_dim * kvb + ctx * hq * qkv_dim * ACT_BYTES
        fe = 2.0 * hq * qkv_dim * keys * pad_factor(n)
        be = (ctx + n) * hq * qkv_dim * ACT_BYTES
        te = self._attn_time(fe, be, p)
        tke = overlap1(kfe / gemm_rate, kbe / bw, p.overlap_p)
        if ta + kfa / gemm_rate <= te + tke:
            return (0, layers * fa, layers * ba, layers * ta, layers * kfa, 0.0,
                    layers * kfa / gemm_rate)
        return (1, layers * fe, layers * be, layers * te, layers * kfe, layers * kbe, layers * tke)

    def _mla_rows(self, sums: list[list[float]], p: HwParams) -> list[Op]:
        mla, layers = self.model.mla, self.model.num_layers
        assert mla is not None
        gemm_rate = (self.gpu.peak(self.lin_dtype) or self._bf16_peak) * p.gemm_eff
        bw = self.gpu.hbm_bw_bytes_s * p.hbm_eff
        weights = mla.kv_lora_rank * self.heads * (mla.qk_nope_head_dim + mla.v_head_dim)
        weight_bytes = layers * weights * self.wfmt.bytes_per_elem  # read once per step
        kv_b = Op("mla_kv_b", "gemm", kernels=3 * layers)
        kv_b.flops = sums[0][3] + sums[1][3]
        kv_b.bytes = weight_bytes + sums[0][4] + sums[1][4]
        kv_b.compute_s = kv_b.flops / gemm_rate
        kv_b.memory_s = kv_b.bytes / bw
        fixed = kv_b.kernels * (p.kernel_gap_s + p.gemm_latency_s)
        kv_b.time_s = weight_bytes / bw + sums[0][5] + sums[1][5] + fixed
        out = [kv_b]
        for label, row in zip(("absorbed", "expanded"), sums, strict=True):
            op = Op(f"attention_mla_{label}", "attn", row[0], row[1], kernels=layers)
            op.compute_s = op.flops / (self._bf16_peak * p.attn_compute_eff)
            op.memory_s = op.bytes / (self.gpu.hbm_bw_bytes_s * p.attn_bw_eff)
            op.time_s = row[2] + op.kernels * p.kernel_gap_s
            out.append(op)
        return out

    def static_ops(
        self, tokens: float, num_seqs: int, p: HwParams
    ) -> tuple[tuple[Op, ...], tuple[Op, ...]]:
        """Rows before and after attention; they depend on (tokens, sequences) only, so they
        are memoized: a simulation revisits the same batch sizes step after step."""
        key = (tokens, num_seqs, p)
        hit = self._static_cache.get(key)
        if hit is None:
            if len(self._static_cache) > 8192:
                self._static_cache.clear()
            hit = self._static_cache[key] = self._build_static(tokens, num_seqs, p)
        return hit

    def _build_static(
        self, tokens: float, num_seqs: int, p: HwParams
    ) -> tuple[tuple[Op, ...], tuple[Op, ...]]:
        m = self.model
        h = m.hidden_size
        layers = m.num_layers
        routed_tokens = tokens  # every token of the replica is routed to the experts
        tokens, num_seqs = tokens / self.dp, num_seqs / self.dp  # this GPU's share
        before: list[Op] = [self.mem("embedding", p, tokens * h * ACT_BYTES * 2, 1)]
        norm_bytes = tokens * h * ACT_BYTES * 4  # fused residual add + RMSNorm: 2 in, 2 out
        before.append(self.mem("norms", p, 2 * layers * norm_bytes, 2 * layers, 8 * tokens * h))
        before += self._attn_projections(tokens, p)
        o_in = m.attn_out_dim // self.attn_tp
        after = [self.gemm("o_proj", p, tokens, h, o_in, layers)]
        after += self._mlp_block(tokens, routed_tokens, p)
        after += self._comm_block(tokens, num_seqs, p)
        after.append(self.mem("final_norm", p, tokens * h * ACT_BYTES * 2, 1))
        vocab = math.ceil(m.vocab_size / self.attn_tp)
        after.append(self.gemm("lm_head", p, num_seqs, vocab, h, 1, lowp=False))
        sampled = num_seqs * m.vocab_size * LOGIT_BYTES * 3  # logits to fp32, softmax, top-k
        after.append(self.mem("sampler", p, sampled, 3))
        keep = [r for r in before if r.kernels > 0], [r for r in after if r.kernels > 0]
        return tuple(keep[0]), tuple(keep[1])

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
        if self.ep > 1:  # expected max of ep multinomial loads (normal approximation)
            sigma = math.sqrt(mean_load * (1 - 1 / self.ep))
            load = mean_load + math.sqrt(2 * math.log(self.ep)) * sigma
        m_per_expert = load / active
        bias = (2 * inter + h) * ACT_BYTES if moe.expert_bias else 0.0
        wb = self.wfmt.bytes_per_elem
        out = [
            self.gemm("router", p, tokens, e, h, layers, lowp=False),
            # routed outputs written and summed over the top-k: 2 passes of T x k x h
            self.mem("moe_route_permute", p, layers * tokens * h * ACT_BYTES * (2 * k + 1),
                     3 * layers),
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
        return self._price(op, p, self._gemm_rate(p, self.lin_dtype, max(m_e, 1e-9)), p.hbm_eff)

    def _comm_block(self, tokens: float, num_seqs: int, p: HwParams) -> list[Op]:
        m, h, out = self.model, self.model.hidden_size, []
        if self.dp > 1 and m.moe:  # dispatch and combine: all-to-all of the routed tokens
            calls = 2 * m.num_moe_layers
            sent = tokens * m.moe.top_k * h * ACT_BYTES * (self.ep - 1) / self.ep
            out.append(self.comm("ep_all_to_all", p, calls * sent, calls, self.ep))
        elif self.tp > 1:
            payload = tokens * h * ACT_BYTES
            ring = 2 * (self.tp - 1) / self.tp  # bytes each GPU sends per byte reduced
            calls = 2 * m.num_layers
            out.append(self.comm("tp_all_reduce", p, calls * payload * ring, calls, self.tp))
            logits = num_seqs * math.ceil(m.vocab_size / self.tp) * LOGIT_BYTES
            out.append(self.comm("logits_gather", p, logits * (self.tp - 1), 1, self.tp))
        if self.pp > 1:
            out.append(
                self.comm("pp_send", p, (self.pp - 1) * tokens * h * ACT_BYTES, self.pp - 1, 2)
            )
        return out


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
