"""Attention over the paged KV pool: step metadata and the backends.

Every backend computes the same function: for sequence ``b`` with ``ctx_b`` cached tokens and
``n_b`` new tokens, new token ``j`` attends to positions ``0 .. ctx_b + j`` (causal, aligned to
the bottom right), reading keys and values through the block table. One function covers prefill
(``ctx = 0``), prefill on a cached prefix, a prompt chunk, decode (``n = 1``) and speculative
verify (``n = k + 1``).

Backends, fastest first (``select_backend``):
- ``flash``: flash-attn's paged kernels, when the package imports and the page size suits them;
- ``triton``: our Triton kernel (``triton_attention.py``) on CUDA; decode steps are graph-safe;
- ``torch``: PyTorch SDPA over KV gathered from the pool (CPU, or CUDA without Triton);
- ``reference``: a plain float64 loop, for tests only.
The new keys and values are written into the pool before attention runs (``PagedKVPool.write``).
The step metadata and the Triton work list live in ``attn_metadata.py`` (re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from realexec.attn_metadata import (  # noqa: F401  (re-exported: attention's public names)
    DECODE_BLOCK_M,
    PROMPT_BLOCK_M,
    AttnMetadata,
    block_m_for,
    build_metadata,
    max_tiles,
    work_list,
)

SMALL_Q_TOKENS = 16  # the torch backend batches sequences with at most this many new tokens

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, AttnMetadata], torch.Tensor]


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: int) -> torch.Tensor:
    """Plain attention of one sequence in float64: q ``[n, H, D]``, k/v ``[ctx + n, KVH, D]``."""
    n, heads, dim = q.shape
    group = heads // k.shape[1]
    qd = q.double().transpose(0, 1)  # [H, n, D]
    kd = k.double().repeat_interleave(group, dim=1).transpose(0, 1)  # [H, L, D]
    vd = v.double().repeat_interleave(group, dim=1).transpose(0, 1)
    scores = qd @ kd.transpose(1, 2) / math.sqrt(dim)  # [H, n, L]
    dev = q.device
    allowed = (torch.arange(k.shape[0], device=dev)[None, :]
               <= (ctx + torch.arange(n, device=dev))[:, None])  # [n, L]
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (scores.softmax(-1) @ vd).transpose(0, 1).to(q.dtype)  # [n, H, D]


def _kv_slots(meta: AttnMetadata, seqs: Sequence[int], length: int) -> torch.Tensor:
    """Slots of positions ``0..length-1`` for the given sequences: ``[len(seqs), length]``."""
    pos = torch.arange(length, device=meta.block_tables.device)
    table = meta.block_tables[list(seqs)].long()  # [S, W]
    blocks = table.gather(1, (pos // meta.block_size).clamp(max=table.shape[1] - 1)[None, :]
                          .expand(len(seqs), -1))
    return blocks * meta.block_size + pos % meta.block_size


def reference_attention(q, k_cache, v_cache, meta: AttnMetadata) -> torch.Tensor:
    """Per sequence: gather K/V through the block table, then ``dense_attention``. Tests only."""
    out = torch.empty_like(q)
    k_flat, v_flat = k_cache.flatten(0, 1), v_cache.flatten(0, 1)
    start = 0
    for b, (n, c) in enumerate(zip(meta.q_lens_host, meta.ctx_lens_host, strict=True)):
        slots = _kv_slots(meta, [b], c + n)[0]
        out[start : start + n] = dense_attention(q[start : start + n], k_flat[slots],
                                                 v_flat[slots], c)
        start += n
    return out


def torch_attention(q, k_cache, v_cache, meta: AttnMetadata) -> torch.Tensor:
    """PyTorch SDPA over gathered K/V: short sequences padded into one batch, long ones looped.

    Gathering copies the context once per layer, so this backend moves about three times the KV
    bytes a paged kernel does; it is the portable fallback, not the fast path.
    """
    out = torch.empty_like(q)
    small = [b for b, n in enumerate(meta.q_lens_host) if n <= SMALL_Q_TOKENS]
    if small:
        _sdpa_padded(q, k_cache, v_cache, meta, small, out)
    start = 0
    for b, (n, c) in enumerate(zip(meta.q_lens_host, meta.ctx_lens_host, strict=True)):
        if n > SMALL_Q_TOKENS:
            slots = _kv_slots(meta, [b], c + n)[0]
            k = k_cache.flatten(0, 1)[slots]
            v = v_cache.flatten(0, 1)[slots]
            out[start : start + n] = _sdpa(q[start : start + n][None], k[None], v[None],
                                           _causal_mask(torch.tensor([c], device=q.device),
                                                        n, c + n))[0]
        start += n
    return out


def _causal_mask(ctx: torch.Tensor, q_len: int, kv_len: int) -> torch.Tensor:
    """``[S, 1, q_len, kv_len]`` bool: row j of sequence s sees positions ``<= ctx_s + j``."""
    dev = ctx.device
    limit = ctx[:, None].long() + torch.arange(q_len, device=dev)[None, :]  # [S, q]
    return (torch.arange(kv_len, device=dev)[None, None, :] <= limit[:, :, None])[:, None]


def _sdpa(q, k, v, mask) -> torch.Tensor:
    """q ``[S, n, H, D]``, k/v ``[S, L, KVH, D]``, mask ``[S, 1, n, L]`` -> ``[S, n, H, D]``."""
    group = q.shape[2] // k.shape[2]
    k = k.repeat_interleave(group, dim=2)
    v = v.repeat_interleave(group, dim=2)
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       attn_mask=mask)
    return o.transpose(1, 2)


def _sdpa_padded(q, k_cache, v_cache, meta: AttnMetadata, seqs: list[int], out) -> None:
    """Sequences with few new tokens (decode, verify) as one padded SDPA call."""
    key = ("padded", tuple(seqs))
    if key not in meta.cache:
        n_max = max(meta.q_lens_host[b] for b in seqs)
        kv_max = max(meta.q_lens_host[b] + meta.ctx_lens_host[b] for b in seqs)
        idx = torch.tensor(seqs, device=q.device)
        j = torch.arange(n_max, device=q.device)
        tok = meta.q_start[idx].long()[:, None] + j[None, :]  # [S, n_max]
        valid = j[None, :] < meta.q_lens[idx].long()[:, None]
        tok = torch.where(valid, tok, 0)
        mask = _causal_mask(meta.ctx_lens[idx], n_max, kv_max)
        kv_len = (meta.ctx_lens[idx] + meta.q_lens[idx]).long()
        mask &= (torch.arange(kv_max, device=q.device)[None, :] < kv_len[:, None])[:, None, None]
        meta.cache[key] = (tok, valid, mask, _kv_slots(meta, seqs, kv_max))
    tok, valid, mask, slots = meta.cache[key]
    k = k_cache.flatten(0, 1)[slots]  # [S, L, KVH, D]
    v = v_cache.flatten(0, 1)[slots]
    o = _sdpa(q[tok], k, v, mask)  # [S, n_max, H, D]
    out[tok[valid]] = o[valid]


def flash_available(block_size: int) -> bool:
    """flash-attn's paged kernels need the package and pages of a multiple of 256 tokens."""
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return block_size % 256 == 0


def flash_attention(q, k_cache, v_cache, meta: AttnMetadata) -> torch.Tensor:
    """flash-attn: ``flash_attn_with_kvcache`` for one-token steps, varlen with a block table else.

    Not exercised by the CPU tests or the H100 runs recorded in docs/validation (their image has
    no flash-attn); selected only when the package imports.
    """
    from flash_attn import flash_attn_varlen_func, flash_attn_with_kvcache

    kv_lens = meta.ctx_lens + meta.q_lens
    if meta.max_q == 1:
        o = flash_attn_with_kvcache(q[:, None], k_cache, v_cache, cache_seqlens=kv_lens,
                                    block_table=meta.block_tables, causal=True)
        return o[:, 0]
    cu_q = F.pad(meta.q_lens.cumsum(0, dtype=torch.int32), (1, 0))
    cu_k = F.pad(kv_lens.cumsum(0, dtype=torch.int32), (1, 0))
    return flash_attn_varlen_func(q, k_cache, v_cache, cu_q, cu_k, meta.max_q, meta.max_kv,
                                  causal=True, block_table=meta.block_tables)


BACKENDS = ("auto", "flash", "triton", "torch", "reference")


def select_backend(name: str, device: torch.device, block_size: int) -> tuple[str, AttentionFn]:
    """Resolve ``auto`` to the fastest backend that runs here; return (name, function)."""
    if name not in BACKENDS:
        raise ValueError(f"attention backend: unknown {name!r}; allowed: {', '.join(BACKENDS)}")
    if name == "auto":
        if device.type == "cuda" and flash_available(block_size):
            name = "flash"
        elif device.type == "cuda" and _triton_importable():
            name = "triton"
        else:
            name = "torch"
    if name == "triton":
        from realexec.triton_attention import triton_attention

        return name, triton_attention
    fns = {"flash": flash_attention, "torch": torch_attention, "reference": reference_attention}
    return name, fns[name]


def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
