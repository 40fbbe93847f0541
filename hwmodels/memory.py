"""Memory planning: what one GPU of a replica holds, and how much KV cache is left.

Like vLLM, the planner budgets ``gpu_memory_utilization x memory`` and fills it with weights
(by weight format, sharded by tensor and pipeline parallelism), the peak activations of a
forward pass over ``max_num_batched_tokens`` tokens, a runtime reserve (CUDA context, cuBLAS
workspace, NCCL buffers, CUDA graphs) and a draft model; what remains is the KV pool, counted in
blocks of ``block_size`` tokens. Under tensor parallelism every GPU holds the same number of
blocks (each holds its heads' share of every token), so the per-GPU pool is the replica's pool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hwmodels.errors import DoesNotFitError
from hwmodels.modelspec import ModelSpec, get_model
from hwmodels.op import ACT_BYTES, LOGIT_BYTES
from hwmodels.operators import validate_parallelism
from hwmodels.precision import Format, kv_format, weight_format
from hwmodels.specs import GB, GpuSpec, get_gpu

RUNTIME_RESERVED_BYTES = 1.0e9  # CUDA context, cuBLAS/NCCL workspaces, captured graphs


def weight_bytes(
    model: ModelSpec,
    weight_dtype: str = "bf16",
    tp: int = 1,
    pp: int = 1,
    dp_attention: bool = False,
) -> float:
    """Bytes of weights on the most loaded GPU (linears in ``weight_dtype``; embeddings, LM
    head, norms and routers in 16 bits, as quantization recipes keep them). Under DP attention
    only the routed experts are spread over the ``tp`` GPUs; everything else is replicated."""
    fmt = weight_format(weight_dtype)
    wb, h = fmt.bytes_per_elem, model.hidden_size
    counts = model.param_counts()
    experts_share = tp
    if dp_attention:
        tp = 1
    embed = counts["embedding"] * ACT_BYTES / tp
    head = counts["lm_head"] * ACT_BYTES / tp
    layers = (
        _attention_bytes(model, fmt, tp)
        + counts["norms"] * ACT_BYTES / (2 * model.num_layers + 1) * 2 * model.num_layers
        + counts["dense_mlp"] * wb / tp
        + counts["experts"] * wb / experts_share
        + counts["shared_experts"] * wb / tp
        + counts["router"] * ACT_BYTES
    )
    if pp == 1:
        return embed + head + layers + h * ACT_BYTES
    per_stage = layers * math.ceil(model.num_layers / pp) / model.num_layers
    return per_stage + max(embed, head + h * ACT_BYTES)


def _attention_bytes(model: ModelSpec, fmt: Format, tp: int) -> float:
    """All layers' attention weights on one GPU: heads shard; MLA down-projections and KV
    heads fewer than ``tp`` are replicated."""
    wb = fmt.bytes_per_elem
    per_layer = 0.0
    for name, count in model.attention_params().items():
        if name in ("q_a", "kv_a", "qk_norm", "sinks"):
            per_layer += count * (wb if name in ("q_a", "kv_a") else ACT_BYTES)
        elif name in ("k", "v"):
            per_layer += count * wb * max(1, model.num_kv_heads // tp) / model.num_kv_heads
        else:
            per_layer += count * wb / tp
    return per_layer * model.num_layers


def kv_bytes_per_token_layer(model: ModelSpec, kv_dtype: str = "bf16", tp: int = 1) -> float:
    """KV bytes one token adds to one layer on one GPU (MLA latents are not sharded)."""
    fmt = kv_format(kv_dtype)
    if model.mla:
        return model.mla.latent_dim * fmt.bytes_per_elem
    heads = max(1, model.num_kv_heads // tp)
    return 2 * heads * model.head_dim * fmt.bytes_per_elem


def activation_bytes(
    model: ModelSpec,
    tp: int,
    max_num_batched_tokens: int,
    max_num_seqs: int = 256,
    naive_attention: bool = False,
) -> float:
    """Peak transient memory of one forward pass over ``max_num_batched_tokens`` tokens."""
    t, h = max_num_batched_tokens, model.hidden_size
    qkv = (model.q_dim + 2 * model.num_kv_heads * model.head_dim) / tp
    attn = t * (2 * h + qkv + model.attn_out_dim / tp)
    mlp = t * (2 * h + 3 * model.intermediate_size / tp) if model.num_dense_layers else 0.0
    if model.moe:
        routed = t * model.moe.top_k
        mlp = max(mlp, t * 2 * h + routed * (2 * h + 3 * model.moe.expert_intermediate / tp))
    peak = max(attn, mlp) * ACT_BYTES
    if naive_attention:
        peak += model.num_heads / tp * t * t * ACT_BYTES * 2  # scores and probabilities
    logits = min(max_num_seqs, t) * model.vocab_size * LOGIT_BYTES * 2
    return peak + logits


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """Per-GPU memory budget of one replica. Bytes unless named otherwise."""

    gpu_memory_bytes: float
    usable_bytes: float
    weights_bytes: float
    activation_bytes: float
    runtime_bytes: float
    draft_bytes: float
    kv_bytes_per_token: float  # all layers of this GPU (pipeline stage), draft included
    kv_pool_bytes: float
    kv_pool_tokens: int
    kv_pool_blocks: int  # per replica
    block_size: int
    sliding_window: int | None = None
    sliding_fraction: float = 0.0  # of kv_bytes_per_token that stops growing at the window

    def kv_bytes_for_context(self, tokens: int) -> float:
        """Bytes one sequence of ``tokens`` tokens holds, in whole blocks, windows capped."""
        blocks = math.ceil(tokens / self.block_size)
        full = blocks * self.block_size * self.kv_bytes_per_token * (1 - self.sliding_fraction)
        if self.sliding_window is None or not self.sliding_fraction:
            return full
        capped = min(blocks * self.block_size, self.sliding_window + self.block_size)
        return full + capped * self.kv_bytes_per_token * self.sliding_fraction

    def max_concurrent(self, context_tokens: int) -> int:
        """Sequences of ``context_tokens`` tokens the pool holds at once."""
        return int(self.kv_pool_bytes // self.kv_bytes_for_context(context_tokens))

    @property
    def max_context_tokens(self) -> int:
        """Longest single sequence the pool holds (without sliding-window savings)."""
        return self.kv_pool_tokens


def plan_memory(
    gpu: str | GpuSpec | Mapping[str, Any],
    model: str | ModelSpec | Mapping[str, Any],
    tp: int = 1,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
    gpu_memory_utilization: float = 0.9,
    max_num_batched_tokens: int = 8192,
    block_size: int = 16,
    draft: str | ModelSpec | Mapping[str, Any] | None = None,
    *,
    pp: int = 1,
    ep: int = 1,
    max_num_seqs: int = 256,
    attention_impl: str = "flash",
    runtime_bytes: float = RUNTIME_RESERVED_BYTES,
    dp_attention: bool = False,
) -> MemoryPlan:
    """Plan one replica's per-GPU memory; ``DoesNotFitError`` (one line, in GB) if it can't.

    Under ``dp_attention`` each of the ``tp`` GPUs keeps the KV of its own sequences with all
    heads, so the replica's pool (``kv_pool_*``) is the sum over its GPUs.
    """
    g, m = get_gpu(gpu), get_model(model)
    validate_parallelism(m, tp, pp, ep, dp_attention)
    dp = tp if dp_attention else 1
    attn_tp = 1 if dp_attention else tp
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization: must be in (0, 1], got {gpu_memory_utilization}")
    if block_size < 1 or max_num_batched_tokens < 1:
        raise ValueError("block_size and max_num_batched_tokens: must be >= 1")
    usable = g.memory_bytes * gpu_memory_utilization
    weights = weight_bytes(m, weight_dtype, tp, pp, dp_attention)
    where = f"{m.id} in {weight_dtype} needs {weights / GB:.1f} GB of weights per GPU at tp={tp}"
    if pp > 1:
        where += f", pp={pp}"
    budget = (
        f"{g.short_name} has {usable / GB:.1f} GB usable "
        f"({g.memory_gb:g} GiB = {g.memory_bytes / GB:.1f} GB x gpu_memory_utilization "
        f"{gpu_memory_utilization:g})"
    )
    if weights > usable:
        raise DoesNotFitError(f"{where}; {budget}")
    layers = math.ceil(m.num_layers / pp)
    kv_tok = kv_bytes_per_token_layer(m, kv_dtype, attn_tp) * layers
    draft_bytes = 0.0
    if draft is not None:
        d = get_model(draft)
        draft_bytes = weight_bytes(d, weight_dtype, attn_tp, 1)
        kv_tok += kv_bytes_per_token_layer(d, kv_dtype, attn_tp) * d.num_layers
    acts = activation_bytes(
        m, attn_tp, max(1, max_num_batched_tokens // dp), max_num_seqs, attention_impl == "naive"
    )
    pool = usable - weights - acts - runtime_bytes - draft_bytes
    if pool < kv_tok * block_size:
        raise DoesNotFitError(
            f"{where} + {acts / GB:.1f} GB of activations (max_num_batched_tokens="
            f"{max_num_batched_tokens}) + {(runtime_bytes + draft_bytes) / GB:.1f} GB runtime"
            f"{' and draft' if draft is not None else ''}, leaving no room for one KV block; "
            f"{budget}"
        )
    tokens = int(pool // kv_tok)
    blocks = tokens // block_size * dp
    sliding = m.num_sliding_layers / m.num_layers if m.sliding_window else 0.0
    return MemoryPlan(
        gpu_memory_bytes=g.memory_bytes,
        usable_bytes=usable,
        weights_bytes=weights,
        activation_bytes=acts,
        runtime_bytes=runtime_bytes,
        draft_bytes=draft_bytes,
        kv_bytes_per_token=kv_tok,
        kv_pool_bytes=blocks * block_size * kv_tok,
        kv_pool_tokens=blocks * block_size,
        kv_pool_blocks=blocks,
        block_size=block_size,
        sliding_window=m.sliding_window,
        sliding_fraction=sliding,
    )
