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

import numpy as np

from hwmodels.attention import ATTN_TILE_ROWS
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


def overlap(compute_s, memory_s, power: float):
    """Soft maximum (c^p + m^p)^(1/p): the plain roofline max as p grows, and up to 2^(1/p)
    slower than it where compute and memory time are equal (they overlap imperfectly)."""
    if power >= 64:
        return np.maximum(compute_s, memory_s)
    peak = np.maximum(np.maximum(compute_s, memory_s), 1e-30)
    return peak * ((compute_s / peak) ** power + (memory_s / peak) ** power) ** (1.0 / power)


def _pad(rows: np.ndarray) -> np.ndarray:
    return np.ceil(rows / ATTN_TILE_ROWS) * ATTN_TILE_ROWS / rows


def _keys(n: np.ndarray, c: np.ndarray, window: int | None) -> np.ndarray:
    if window is None:
        return n * c + n * (n + 1) / 2
    grow = np.clip(np.minimum(n, window - c), 0, None)
    return grow * c + grow * (grow + 1) / 2 + (n - grow) * window


def _kv_tokens(n: np.ndarray, c: np.ndarray, window: int | None) -> np.ndarray:
    return c + n if window is None else np.minimum(c + n, window + n - 1)


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
    ) -> None:
        validate_parallelism(model, tp, pp, ep)
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
        self.heads = model.num_heads // tp
        self.kv_heads = max(1, model.num_kv_heads // tp)
        self._static_cache: dict[tuple[float, int, HwParams], tuple] = {}

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
        op.time_s = overlap(op.compute_s, op.memory_s, p.overlap_p) + op.kernels * p.kernel_gap_s
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
    def ops(self, n: np.ndarray, c: np.ndarray, p: HwParams) -> list[Op]:
        """Priced operator rows for one step: ``n[i]`` new tokens on ``c[i]`` cached ones."""
        before, after = self.static_ops(float(n.sum()), len(n), p)
        return [*before, *self.attention_ops(n, c, p), *after]

    def attention_ops(self, n: np.ndarray, c: np.ndarray, p: HwParams) -> list[Op]:
        """The attention kernels proper: the only rows that depend on each sequence's shape."""
        if self.model.mla:
            return self._mla_attention(n, c, p)
        return self._gqa_attention(n, c, p)

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
        before: list[Op] = [self.mem("embedding", p, tokens * h * ACT_BYTES * 2, 1)]
        norm_bytes = tokens * h * ACT_BYTES * 4  # fused residual add + RMSNorm: 2 in, 2 out
        before.append(self.mem("norms", p, 2 * layers * norm_bytes, 2 * layers, 8 * tokens * h))
        before += self._attn_projections(tokens, p)
        o_in = m.attn_out_dim // self.tp
        after = [self.gemm("o_proj", p, tokens, h, o_in, layers)]
        after += self._mlp_block(tokens, p)
        after += self._comm_block(tokens, num_seqs, p)
        after.append(self.mem("final_norm", p, tokens * h * ACT_BYTES * 2, 1))
        vocab = math.ceil(m.vocab_size / self.tp)
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

    def _attn_seq_time(self, flops: np.ndarray, nbytes: np.ndarray, p: HwParams) -> np.ndarray:
        peak = self.gpu.peak("bf16") or 0.0
        compute = flops / (peak * p.attn_compute_eff)
        memory = nbytes / (self.gpu.hbm_bw_bytes_s * p.attn_bw_eff)
        return overlap(compute, memory, p.overlap_p)

    def _gqa_attention(self, n: np.ndarray, c: np.ndarray, p: HwParams) -> list[Op]:
        m = self.model
        hd = m.head_dim
        group = self.heads // self.kv_heads
        flops_per_key = 2.0 * self.heads * 2 * hd  # QK^T and PV
        kv_bytes_per_token = 2 * self.kv_heads * hd * self.kvfmt.bytes_per_elem
        qo_bytes = 2 * self.heads * hd * ACT_BYTES
        flops = np.zeros_like(n)
        nbytes = np.zeros_like(n)
        time = np.zeros_like(n)
        for count, window in ((m.num_full_layers, None), (m.num_sliding_layers, m.sliding_window)):
            if count == 0:
                continue
            if self.naive:  # the whole n x (c + n) score matrix, written to and read from HBM
                rect = n * (c + n)
                f = flops_per_key * rect
                b = (c + n) * kv_bytes_per_token + n * qo_bytes + 4 * self.heads * rect * ACT_BYTES
            else:
                f = flops_per_key * _keys(n, c, window) * _pad(n * group)
                b = _kv_tokens(n, c, window) * kv_bytes_per_token + n * qo_bytes
            flops += count * f
            nbytes += count * b
            time += count * self._attn_seq_time(f, b, p)
        kernels = m.num_layers * (4 if self.naive else 1)
        return self._split_rows("attention", n, flops, nbytes, time, kernels, p)

    def _split_rows(
        self,
        name: str,
        n: np.ndarray,
        flops: np.ndarray,
        nbytes: np.ndarray,
        time: np.ndarray,
        kernels: int,
        p: HwParams,
    ) -> list[Op]:
        """Decode (one new token) and prefill rows; the launches go to the first present."""
        out = []
        for label, mask in (("decode", n == 1), ("prefill", n > 1)):
            if not mask.any():
                continue
            peak = self.gpu.peak("bf16") or 0.0
            op = Op(f"{name}_{label}", "attn", float(flops[mask].sum()), float(nbytes[mask].sum()))
            op.compute_s = op.flops / (peak * p.attn_compute_eff)
            op.memory_s = op.bytes / (self.gpu.hbm_bw_bytes_s * p.attn_bw_eff)
            op.kernels = kernels if not out else 0
            op.time_s = float(time[mask].sum()) + op.kernels * p.kernel_gap_s
            out.append(op)
        return out

    def _mla_attention(self, n: np.ndarray, c: np.ndarray, p: HwParams) -> list[Op]:
        """MLA: per sequence, the cheaper of the absorbed path (attend over the latent, MQA-like,
        what decode kernels such as FlashMLA do) and the expanded path (up-project the cached
        latent to per-head K/V with kv_b, then ordinary attention, what prefill kernels do)."""
        mla, layers = self.model.mla, self.model.num_layers
        assert mla is not None
        hq = self.heads
        kvb = self.kvfmt.bytes_per_elem
        peak = self.gpu.peak(self.lin_dtype) or self.gpu.peak("bf16") or 0.0
        gemm_rate = peak * p.gemm_eff
        bw = self.gpu.hbm_bw_bytes_s * p.hbm_eff
        keys = _keys(n, c, None)
        ctx = c + n
        # absorbed: scores over latent+rope (576), values over latent (512), shared by heads
        fa = 2.0 * hq * (mla.latent_dim + mla.kv_lora_rank) * keys * _pad(n * hq)
        ba = ctx * mla.latent_dim * kvb + n * hq * (mla.latent_dim + mla.kv_lora_rank) * ACT_BYTES
        kvb_fa = 2.0 * n * hq * mla.kv_lora_rank * (mla.qk_nope_head_dim + mla.v_head_dim)
        ta_attn = self._attn_seq_time(fa, ba, p)
        ta = ta_attn + kvb_fa / gemm_rate
        # expanded: kv_b over the whole context, then MHA with head dims 192 / 128
        qkv_dim = mla.qk_head_dim + mla.v_head_dim
        kvb_fe = 2.0 * ctx * mla.kv_lora_rank * hq * (mla.qk_nope_head_dim + mla.v_head_dim)
        kvb_be = ctx * mla.latent_dim * kvb + ctx * hq * qkv_dim * ACT_BYTES
        fe = 2.0 * hq * qkv_dim * keys * _pad(n)
        be = ctx * hq * qkv_dim * ACT_BYTES + n * hq * qkv_dim * ACT_BYTES
        te_attn = self._attn_seq_time(fe, be, p)
        te_kvb = overlap(kvb_fe / gemm_rate, kvb_be / bw, p.overlap_p)
        te = te_attn + te_kvb
        absorbed = ta <= te
        w = mla.kv_lora_rank * hq * (mla.qk_nope_head_dim + mla.v_head_dim)
        kv_b = Op("mla_kv_b", "gemm", kernels=3 * layers)
        kv_b.flops = layers * float(np.where(absorbed, kvb_fa, kvb_fe).sum())
        kv_b.bytes = layers * (w * self.wfmt.bytes_per_elem + float(kvb_be[~absorbed].sum()))
        kv_b.compute_s = kv_b.flops / gemm_rate
        weights_s = w * self.wfmt.bytes_per_elem / bw
        kv_b.memory_s = kv_b.bytes / bw
        kv_b_seq = np.where(absorbed, kvb_fa / gemm_rate, te_kvb)
        kv_b.time_s = layers * (weights_s + float(kv_b_seq.sum())) + kv_b.kernels * p.kernel_gap_s
        out = [kv_b]
        for label, mask, f, b, t in (
            ("absorbed", absorbed, fa, ba, ta_attn),
            ("expanded", ~absorbed, fe, be, te_attn),
        ):
            op = Op(
                f"attention_mla_{label}",
                "attn",
                layers * float(f[mask].sum()),
                layers * float(b[mask].sum()),
                kernels=layers,
            )
            op.compute_s = op.flops / ((self.gpu.peak("bf16") or 0.0) * p.attn_compute_eff)
            op.memory_s = op.bytes / (self.gpu.hbm_bw_bytes_s * p.attn_bw_eff)
            op.time_s = layers * float(t[mask].sum()) + op.kernels * p.kernel_gap_s
            out.append(op)
        return out

    def _mlp_block(self, tokens: float, p: HwParams) -> list[Op]:
        m, h, tp = self.model, self.model.hidden_size, self.tp
        out: list[Op] = []
        dense = m.num_dense_layers
        if dense:
            inter = m.intermediate_size // tp
            out.append(self.gemm("gate_up_proj", p, tokens, 2 * inter, h, dense))
            out.append(self.mem("act_silu_mul", p, dense * tokens * inter * ACT_BYTES * 3, dense))
            out.append(self.gemm("down_proj", p, tokens, h, inter, dense))
        if m.moe and m.num_moe_layers:
            out += self._moe_block(tokens, p)
        return out

    def _moe_block(self, tokens: float, p: HwParams) -> list[Op]:
        """Routed experts as a grouped GEMM: weights read only for the experts some token is
        routed to; the busiest expert-parallel rank sets the pace."""
        m, h = self.model, self.model.hidden_size
        moe = m.moe
        assert moe is not None
        layers = m.num_moe_layers
        e, k = moe.num_experts, moe.top_k
        inter = moe.expert_intermediate * self.ep // self.tp  # expert TP inside each EP rank
        local_experts = e // self.ep
        hit = 1.0 - (1.0 - k / e) ** tokens  # P(an expert gets at least one token)
        active = max(local_experts * hit, 1e-9)
        mean_load = tokens * k / self.ep
        load = mean_load
        if self.ep > 1:  # expected max of ep multinomial loads (normal approximation)
            sigma = math.sqrt(mean_load * (1 - 1 / self.ep))
            load = mean_load + math.sqrt(2 * math.log(self.ep)) * sigma
        m_per_expert = load / active
        bias = (2 * inter + h) * ACT_BYTES if moe.expert_bias else 0.0
        wb = self.wfmt.bytes_per_elem
        out = [
            self.gemm("router", p, tokens, e, h, layers, lowp=False),
            self.mem("moe_route_permute", p, layers * tokens * k * h * ACT_BYTES * 4, 3 * layers),
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
            si = moe.shared_intermediate // self.tp
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
        if self.tp > 1:
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


def validate_parallelism(model: ModelSpec, tp: int, pp: int, ep: int) -> None:
    """One-line errors for parallel degrees the model's shape cannot be split by."""
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
    if ep > 1:
        if model.moe is None:
            raise CatalogError(f"hardware.ep: {model.id} has no experts to spread (use ep=1)")
        if tp % ep or model.moe.num_experts % ep:
            raise CatalogError(
                f"hardware.ep: {ep} must divide tp={tp} and {model.id}'s "
                f"{model.moe.num_experts} experts"
            )
