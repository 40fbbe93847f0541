"""RoPE and the KV-cache write fused into one Triton kernel, and the split-KV merge in one more.

Why: after the QKV projection a layer used to launch a RoPE kernel (inductor's), a copy making
q contiguous for attention, and two scatters writing K and V into the paged pool: four small
kernels per layer, ~130 per decode step of Llama-3.1-8B, each costing a few microseconds of
launch and tail at batch 1 where the whole step is ~6 ms of weight streaming. Here one program
per (token tile, head) reads its head's row of ``qkv`` once, rotates q and k by the cos/sin of
the token's position (looked up from the float32 table in the kernel: no per-step gather),
writes q into a contiguous ``[T, H, D]`` tensor, and k and v straight into their slots of the
pool. vLLM and SGLang fuse the same steps (``rotary_embedding`` + ``reshape_and_cache``).

The merge of split-KV partials (``merge_splits``) is likewise one kernel, one program per
(token, head), instead of inductor's reduction kernels.

The rotation runs in float32 and rounds once to the model's dtype (the eager ``apply_rope``
rounds the cos/sin table and each product to the model's dtype first): in bf16 the two differ
by rounding only. Both kernels take every size from tensors and strides, so a captured step
replays them for any lengths. On CPU they run under ``TRITON_INTERPRET=1`` (the tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

TOKENS_PER_PROGRAM = 16


@triton.jit
def _rope_store_kernel(
    qkv_ptr, q_out_ptr, k_cache_ptr, v_cache_ptr, slots_ptr, pos_ptr, cos_ptr, sin_ptr,
    num_tokens, stride_t, stride_h, stride_qo_t, stride_qo_h, stride_slot, stride_kvh,
    stride_rope,
    HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HALF: tl.constexpr, BLOCK_T: tl.constexpr,
):
    head = tl.program_id(1)  # 0..HEADS-1: q; then KV_HEADS of k; then KV_HEADS of v
    tok = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # [T]
    ok = tok < num_tokens
    d = tl.arange(0, HALF)  # [HALF]
    row = qkv_ptr + tok[:, None] * stride_t + head * stride_h + d[None, :]
    x1 = tl.load(row, mask=ok[:, None], other=0.0)
    x2 = tl.load(row + HALF, mask=ok[:, None], other=0.0)
    a, b = x1.to(tl.float32), x2.to(tl.float32)
    if head < HEADS + KV_HEADS:  # q and k rotate: (a, b) -> (a c - b s, b c + a s)
        pos = tl.load(pos_ptr + tok, mask=ok, other=0)
        angle = pos[:, None] * stride_rope + d[None, :]
        c = tl.load(cos_ptr + angle, mask=ok[:, None], other=0.0)
        s = tl.load(sin_ptr + angle, mask=ok[:, None], other=0.0)
        a, b = a * c - b * s, b * c + a * s
    a = a.to(q_out_ptr.dtype.element_ty)
    b = b.to(q_out_ptr.dtype.element_ty)
    if head < HEADS:
        dst = q_out_ptr + tok[:, None] * stride_qo_t + head * stride_qo_h + d[None, :]
        tl.store(dst, a, mask=ok[:, None])
        tl.store(dst + HALF, b, mask=ok[:, None])
    else:
        slot = tl.load(slots_ptr + tok, mask=ok, other=0)
        if head < HEADS + KV_HEADS:
            dst = k_cache_ptr + slot[:, None] * stride_slot + (head - HEADS) * stride_kvh
        else:
            kvh = head - HEADS - KV_HEADS
            dst = v_cache_ptr + slot[:, None] * stride_slot + kvh * stride_kvh
        tl.store(dst + d[None, :], a, mask=ok[:, None])
        tl.store(dst + HALF + d[None, :], b, mask=ok[:, None])


def rope_and_store(qkv: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor,
                   sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   slots: torch.Tensor, heads: int, kv_heads: int) -> torch.Tensor:
    """Rotate q and k of ``qkv`` ``[T, H + 2 KVH, D]`` (D contiguous) by their positions, write
    k and v into the pool ``[blocks, page, KVH, D]`` at ``slots`` ``[T]``; returns q
    ``[T, H, D]`` contiguous. ``cos``/``sin``: ``[max_position, D / 2]`` float32."""
    num_tokens, _, dim = qkv.shape
    if (qkv.stride(2) != 1 or k_cache.stride(3) != 1 or dim % 2
            or k_cache.stride(0) != k_cache.shape[1] * k_cache.stride(1)
            or k_cache.stride() != v_cache.stride()):
        raise ValueError("rope_and_store: needs an even, contiguous head dimension and K/V "
                         "pools whose pages are contiguous and laid out alike")
    q = torch.empty((num_tokens, heads, dim), dtype=qkv.dtype, device=qkv.device)
    grid = (triton.cdiv(num_tokens, TOKENS_PER_PROGRAM), heads + 2 * kv_heads)
    _rope_store_kernel[grid](
        qkv, q, k_cache, v_cache, slots, positions, cos, sin,
        num_tokens, qkv.stride(0), qkv.stride(1), q.stride(0), q.stride(1),
        k_cache.stride(1), k_cache.stride(2), cos.stride(0),
        HEADS=heads, KV_HEADS=kv_heads, HALF=dim // 2, BLOCK_T=TOKENS_PER_PROGRAM,
    )
    return q


@triton.jit
def _merge_kernel(acc_ptr, m_ptr, l_ptr, out_ptr, stride_split, stride_row,
                  SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr):
    r = tl.program_id(0)  # one (token, head) row
    s = tl.arange(0, SPLITS)
    d = tl.arange(0, HEAD_DIM)
    m = tl.load(m_ptr + s * stride_split + r)  # [S]
    den = tl.load(l_ptr + s * stride_split + r)
    m_max = tl.max(m, 0)
    m_safe = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.exp(m - m_safe)  # an empty slice (m = -inf) weighs 0
    acc = tl.load(acc_ptr + (s * stride_split + r)[:, None] * HEAD_DIM + d[None, :])  # [S, D]
    num = tl.sum(acc * w[:, None], 0)
    total = tl.sum(den * w, 0)
    total = tl.where(total == 0.0, 1.0, total)
    tl.store(out_ptr + r * stride_row + d, (num / total).to(out_ptr.dtype.element_ty))


def merge_splits(acc: torch.Tensor, m: torch.Tensor, den: torch.Tensor,
                 dtype: torch.dtype) -> torch.Tensor:
    """Merge split-KV partials: acc ``[S, T, H, D]``, m/den ``[S, T, H]`` (float32,
    contiguous, S a power of two) -> ``[T, H, D]`` in ``dtype``."""
    splits, num_tokens, heads, dim = acc.shape
    out = torch.empty((num_tokens, heads, dim), dtype=dtype, device=acc.device)
    rows = num_tokens * heads
    if rows:
        _merge_kernel[(rows,)](acc, m, den, out, rows, dim, SPLITS=splits, HEAD_DIM=dim)
    return out
