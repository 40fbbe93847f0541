"""A Llama/Qwen-style GQA decoder with random weights, built from a catalog architecture.

Timing needs the real shapes, not trained weights: every weight is drawn from a seeded
generator (no download), scaled by ``1/sqrt(fan_in)`` so activations stay finite through any
depth. Each full weight is drawn on the device and then sliced for this tensor-parallel rank,
so a model split over ``tp`` ranks computes exactly the function of the unsplit one.

Tensor parallelism (Megatron style): q/k/v and gate/up are split by output rows (heads,
intermediate), o and down by input columns, followed by an all-reduce; the LM head is split by
vocabulary rows and greedy sampling merges each rank's best token.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from realexec.arch import ModelArch
from realexec.attention import AttentionFn, AttnMetadata
from realexec.kvcache import PagedKVPool

AllReduce = Callable[[torch.Tensor], None]  # in-place sum over the TP group
# (qkv, positions, cos, sin, k_cache, v_cache, slots, heads, kv_heads) -> q [T, H, D]
RopeStore = Callable[..., torch.Tensor]


@dataclass(slots=True)
class Layer:
    """One decoder layer's weights (this rank's shard), ``[out, in]`` as F.linear takes them."""

    ln_attn: torch.Tensor  # [D]
    w_qkv: torch.Tensor  # [(Hr + 2 KVr) * hd, D]
    b_qkv: torch.Tensor | None  # [(Hr + 2 KVr) * hd]
    q_norm: torch.Tensor | None  # [hd]
    k_norm: torch.Tensor | None  # [hd]
    w_o: torch.Tensor  # [D, Hr * hd]
    ln_mlp: torch.Tensor  # [D]
    w_gate_up: torch.Tensor  # [2 Ir, D]
    w_down: torch.Tensor  # [D, Ir]


class Decoder:
    """The decoder of one TP rank. ``forward`` runs one step over the paged pool."""

    def __init__(
        self,
        arch: ModelArch,
        *,
        dtype: torch.dtype,
        device: torch.device | str,
        seed: int = 0,
        tp_rank: int = 0,
        tp_size: int = 1,
        all_reduce: AllReduce | None = None,
        max_position: int = 32768,
    ) -> None:
        for what, n in (("num_attention_heads", arch.num_heads),
                        ("num_key_value_heads", arch.num_kv_heads),
                        ("intermediate_size", arch.intermediate_size),
                        ("vocab_size", arch.vocab_size)):
            if n % tp_size:
                raise ValueError(f"hardware.tp: {tp_size} does not divide model.{what} {n}")
        if tp_size > 1 and all_reduce is None:
            raise ValueError("Decoder: tp_size > 1 needs an all_reduce function")
        self.arch = arch
        self.device = torch.device(device)
        self.dtype = dtype
        self.tp_rank, self.tp_size = tp_rank, tp_size
        self.all_reduce = all_reduce
        self.heads = arch.num_heads // tp_size
        self.kv_heads = arch.num_kv_heads // tp_size
        self._seed = seed
        self.embed = self._weight("embed", arch.vocab_size, arch.hidden_size, scale=1.0)
        self.layers = [self._layer(i) for i in range(arch.num_layers)]
        self.norm = torch.ones(arch.hidden_size, dtype=dtype, device=self.device)
        self.lm_head = self._shard(self._weight("lm_head", arch.vocab_size, arch.hidden_size), 0)
        self.cos, self.sin = rope_cache(arch, max_position, self.device)
        self._attn_in, self._attn_qkv, self._mlp = attn_in, attn_qkv, mlp  # eager until compiled
        self._compiled_pieces: tuple | None = None
        self.rope_store: RopeStore | None = None  # set by ``fuse_rope_store``

    # -- weights ---------------------------------------------------------------------------
    def _weight(self, name: str, rows: int, cols: int, scale: float | None = None):
        """A full ``[rows, cols]`` weight drawn from a generator seeded by its name."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self._seed * 1_000_003 + _stable_hash(name))
        w = torch.randn(rows, cols, generator=gen, device=self.device, dtype=self.dtype)
        return w.mul_(scale if scale is not None else 1.0 / math.sqrt(cols))

    def _shard(self, w: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's contiguous slice of ``w`` along ``dim`` (a copy, so the full can go)."""
        return w.chunk(self.tp_size, dim=dim)[self.tp_rank].contiguous()

    def _layer(self, i: int) -> Layer:
        a, d, hd = self.arch, self.arch.hidden_size, self.arch.head_dim
        q = self._shard(self._weight(f"{i}.q", a.num_heads * hd, d), 0)
        k = self._shard(self._weight(f"{i}.k", a.num_kv_heads * hd, d), 0)
        v = self._shard(self._weight(f"{i}.v", a.num_kv_heads * hd, d), 0)
        gate = self._shard(self._weight(f"{i}.gate", a.intermediate_size, d), 0)
        up = self._shard(self._weight(f"{i}.up", a.intermediate_size, d), 0)
        bias = None
        if a.attention_bias:
            rows = (a.num_heads + 2 * a.num_kv_heads) * hd
            full = self._weight(f"{i}.bias", 1, rows, scale=0.02)[0]
            qb, kb, vb = full.split([a.num_heads * hd, a.num_kv_heads * hd, a.num_kv_heads * hd])
            bias = torch.cat([self._shard(qb, 0), self._shard(kb, 0), self._shard(vb, 0)])
        ones = torch.ones(d, dtype=self.dtype, device=self.device)
        norm_hd = torch.ones(hd, dtype=self.dtype, device=self.device) if a.qk_norm else None
        return Layer(
            ln_attn=ones,
            w_qkv=torch.cat([q, k, v]),
            b_qkv=bias,
            q_norm=norm_hd,
            k_norm=norm_hd,
            w_o=self._shard(self._weight(f"{i}.o", d, a.num_heads * hd), 1),
            ln_mlp=ones.clone(),
            w_gate_up=torch.cat([gate, up]),
            w_down=self._shard(self._weight(f"{i}.down", d, a.intermediate_size), 1),
        )

    @property
    def weight_bytes(self) -> int:
        """Bytes of this rank's weights that one decode step must read: all but the embedding
        table, of which a step reads only its tokens' rows."""
        tensors = [self.norm, self.lm_head]
        for layer in self.layers:
            tensors += [t for t in vars_of(layer) if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)

    # -- forward ---------------------------------------------------------------------------
    def compile(self, enabled: bool = True) -> None:
        """Run the non-attention pieces of every layer through ``torch.compile`` (inductor).

        Why: eager, a layer is ~15 kernels, and each small one (RMSNorm, residual add, RoPE,
        SiLU-mul) reads and writes the activations again. Inductor fuses each piece into one
        pointwise/reduction kernel around the GEMMs (add+RMSNorm, RoPE, SiLU-mul). The pieces
        take the layer's weights as arguments, so all layers share one compiled graph per
        token-count class (static for the first count seen, then one dynamic in the token
        dimension: ``dynamic=None``); attention and the KV write stay outside, as in vLLM's
        piecewise compilation, so any attention backend runs between them.
        """
        if not enabled:  # back to eager (the compiled pieces are kept for a later ``compile()``)
            self._attn_in, self._attn_qkv, self._mlp = attn_in, attn_qkv, mlp
            return
        if self._compiled_pieces is None:
            import torch._dynamo  # here, not at import: it imports Triton (see the CPU tests)

            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit,
                                                        64)
            self._compiled_pieces = tuple(torch.compile(fn, dynamic=None, fullgraph=True)
                                          for fn in (attn_in, attn_qkv, mlp))
        self._attn_in, self._attn_qkv, self._mlp = self._compiled_pieces

    @property
    def compiled(self) -> bool:
        return self._attn_in is not attn_in

    def fuse_rope_store(self, enabled: bool = True) -> None:
        """Rotate q/k and write K/V into the pool in one Triton kernel per layer
        (``triton_rope_store``) instead of RoPE, a contiguous copy of q and two scatters: the
        Triton attention backend's path on the GPU. Off, the portable path every backend runs."""
        if not enabled:
            self.rope_store = None
            return
        from realexec.triton_rope_store import rope_and_store  # imports Triton

        self.rope_store = rope_and_store

    def forward(
        self,
        input_ids: torch.Tensor,  # [T] int64
        positions: torch.Tensor,  # [T] int64
        meta: AttnMetadata,
        pool: PagedKVPool,
        attention: AttentionFn,
        logit_rows: torch.Tensor,  # [S] int64: rows of [T] whose next token is sampled
    ) -> torch.Tensor:
        """One step: writes this step's K/V into ``pool``; returns logits ``[S, V / tp]``."""
        return self.head(self.hidden(input_ids, positions, meta, pool, attention), logit_rows)

    def hidden(self, input_ids, positions, meta: AttnMetadata, pool: PagedKVPool,
               attention: AttentionFn) -> torch.Tensor:
        """The layers: the last residual stream ``[T, D]`` (the final norm not yet applied)."""
        x = F.embedding(input_ids, self.embed)  # x: [T, D]
        eps, heads, kv_heads = self.arch.rms_norm_eps, self.heads, self.kv_heads
        delta = torch.zeros_like(x)  # what the next layer adds to the residual stream
        cos = sin = None
        if self.rope_store is None:  # cos/sin [T, 1, hd / 2] in the model's dtype, once a step
            cos = self.cos[positions][:, None, :].to(self.dtype)
            sin = self.sin[positions][:, None, :].to(self.dtype)
        if self.compiled:  # one graph for every token count (see ``compile``)
            for t in (x, delta, cos, sin):
                if t is not None:
                    torch._dynamo.maybe_mark_dynamic(t, 0)
        for i, layer in enumerate(self.layers):
            weights = (layer.ln_attn, layer.w_qkv, layer.b_qkv, layer.q_norm, layer.k_norm)
            if self.rope_store is not None:
                x, qkv = self._attn_qkv(x, delta, *weights, heads, kv_heads, eps)
                q = self.rope_store(qkv, positions, self.cos, self.sin, *pool.layer(i),
                                    meta.slots, heads, kv_heads)
            else:
                x, q, k, v = self._attn_in(x, delta, *weights, cos, sin, heads, kv_heads, eps)
                pool.write(i, k, v, meta.slots)
            o = attention(q, *pool.layer(i), meta)  # [T, Hr, hd]
            o = F.linear(o.reshape(o.shape[0], -1), layer.w_o)  # [T, D] (partial sum if tp > 1)
            self._reduce(o)
            if self.compiled:
                torch._dynamo.maybe_mark_dynamic(o, 0)
            x, delta = self._mlp(x, o, layer.ln_mlp, layer.w_gate_up, layer.w_down, eps)
            self._reduce(delta)
        return x + delta

    def head(self, x: torch.Tensor, logit_rows: torch.Tensor) -> torch.Tensor:
        """Logits ``[S, V / tp]`` of the sampled rows of the residual stream ``x``."""
        h = rms_norm(x[logit_rows], self.norm, self.arch.rms_norm_eps)  # [S, D]
        return F.linear(h, self.lm_head)  # [S, V / tp]

    def _reduce(self, t: torch.Tensor) -> None:
        if self.all_reduce is not None and self.tp_size > 1:
            self.all_reduce(t)


def attn_qkv(x, delta, ln, w_qkv, b_qkv, q_norm, k_norm, heads: int, kv_heads: int,
             eps: float):
    """Residual add, RMSNorm, the QKV projection and q/k norms of one layer (RoPE not yet).

    Returns the new residual stream and qkv ``[T, Hr + 2 KVr, hd]``.
    """
    x = x + delta
    h = rms_norm(x, ln, eps)
    qkv = F.linear(h, w_qkv, b_qkv)  # [T, (Hr + 2 KVr) * hd]
    qkv = qkv.view(x.shape[0], heads + 2 * kv_heads, -1)  # [T, Hr + 2 KVr, hd]
    if q_norm is not None:
        qkv = torch.cat([rms_norm(qkv[:, :heads], q_norm, eps),
                         rms_norm(qkv[:, heads : heads + kv_heads], k_norm, eps),
                         qkv[:, heads + kv_heads :]], dim=1)
    return x, qkv


def attn_in(x, delta, ln, w_qkv, b_qkv, q_norm, k_norm, cos, sin, heads: int, kv_heads: int,
            eps: float):
    """``attn_qkv`` and RoPE: the new residual stream, q ``[T, Hr, hd]``, k, v ``[T, KVr, hd]``."""
    x, qkv = attn_qkv(x, delta, ln, w_qkv, b_qkv, q_norm, k_norm, heads, kv_heads, eps)
    qk, v = qkv[:, : heads + kv_heads], qkv[:, heads + kv_heads :]
    qk = apply_rope(qk, cos, sin)  # q and k rotated together: [T, Hr + KVr, hd]
    return x, qk[:, :heads], qk[:, heads:], v


def mlp(x, o, ln, w_gate_up, w_down, eps: float):
    """Residual add of the attention output, RMSNorm, SwiGLU. Returns (residual, MLP output)."""
    x = x + o
    h = rms_norm(x, ln, eps)
    gate, up = F.linear(h, w_gate_up).chunk(2, dim=-1)  # [T, Ir] each
    return x, F.linear(F.silu(gate) * up, w_down)  # [T, D]


def vars_of(layer: Layer) -> list[torch.Tensor | None]:
    return [getattr(layer, name) for name in Layer.__slots__]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim (PyTorch's fused kernel: one launch instead of eight)."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE: x ``[T, heads, hd]``, cos/sin ``[T, 1, hd / 2]`` in x's dtype."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def rope_cache(arch: ModelArch, max_position: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[max_position, hd / 2]`` (float32), with Llama-3 frequency scaling."""
    hd = arch.head_dim
    inv_freq = 1.0 / arch.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    scaling = arch.rope_scaling or {}
    if scaling.get("rope_type") == "llama3":
        inv_freq = _llama3_scaling(inv_freq, scaling)
    angles = torch.arange(max_position, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().float().to(device), angles.sin().float().to(device)


def _llama3_scaling(inv_freq: torch.Tensor, cfg) -> torch.Tensor:
    """Llama 3.1's long-context RoPE: slow frequencies divided by ``factor``, a smooth ramp."""
    factor, low, high = cfg["factor"], cfg["low_freq_factor"], cfg["high_freq_factor"]
    old = cfg["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    ramp = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    return torch.where(medium, ramp, scaled)


def sample_greedy(logits: torch.Tensor, all_gather: Callable | None = None) -> torch.Tensor:
    """Greedy token ids ``[S]`` from logits ``[S, V / tp]``; with TP, merge each rank's best."""
    best, idx = logits.float().max(dim=-1)  # [S]
    if all_gather is None:
        return idx
    vocab_shard = logits.shape[-1]
    pairs = all_gather(torch.stack([best, idx.float()], dim=-1))  # [tp, S, 2]
    rank = pairs[..., 0].argmax(dim=0)  # [S]
    local = pairs[..., 1].gather(0, rank[None])[0].long()
    return rank * vocab_shard + local


def _stable_hash(name: str) -> int:
    """A hash of a weight's name that is the same in every process (unlike ``hash``)."""
    h = 0
    for ch in name.encode():
        h = (h * 131 + ch) % 1_000_000_007
    return h
