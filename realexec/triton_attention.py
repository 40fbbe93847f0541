"""Paged attention in Triton: one kernel for prefill, chunks, decode and verify.

A program owns one KV head of one sequence, a tile of ``BLOCK_M`` query rows (a row is one new
token x one of the ``group`` query heads sharing that KV head, so K and V are read once for the
whole group), and one of ``num_splits`` slices of the context. Which sequence and which query
tile come from a work list (``tile_seq``, ``tile_m``), one entry per tile that has rows, as
FlashInfer and vLLM plan it: a step of ``T`` tokens over ``S`` sequences has at most ``T * group
/ BLOCK_M + S`` tiles whatever the split of tokens among sequences, so a captured step can
launch that many programs and let the padded entries (sequence -1) do nothing. It walks the
context ``BLOCK_N`` positions at a time, finding each position's slot through the block table,
with an online softmax. With ``num_splits > 1`` (split-KV, "flash decoding") each slice writes
a partial result and ``merge_splits`` (one kernel) merges them: at batch 1 a decode step
otherwise runs only ``kv_heads`` programs and leaves most of the GPU idle.

The grid and every loop bound come from tensors or from the work list's length and the split
count, never from the lengths of a step, so any step is safe to capture in a CUDA graph (the
lengths and the work list change between replays, the launch does not).

On CPU the kernel runs under ``TRITON_INTERPRET=1`` (the tests do this).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from realexec.attn_metadata import DECODE_BLOCK_M, AttnMetadata, block_m_for, work_list
from realexec.triton_rope_store import merge_splits


@triton.jit
def _paged_attn_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, m_ptr, l_ptr,
    tables_ptr, ctx_ptr, qlen_ptr, qstart_ptr, tile_seq_ptr, tile_m_ptr,
    stride_qt, stride_qh, stride_kb, stride_ks, stride_kh,
    stride_ps, stride_pt, stride_ph, stride_table,
    scale,
    GROUP: tl.constexpr, PAGE: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLITS: tl.constexpr,
):
    entry = tl.load(tile_seq_ptr + tl.program_id(0))
    live = entry >= 0  # a padded work-list entry: no rows, no context
    seq = tl.maximum(entry, 0)
    kvh = tl.program_id(1)
    mtile = tl.load(tile_m_ptr + tl.program_id(0))
    split = tl.program_id(2)
    q_len = tl.where(live, tl.load(qlen_ptr + seq), 0)
    ctx = tl.load(ctx_ptr + seq)
    q_start = tl.load(qstart_ptr + seq)

    rows = mtile * BLOCK_M + tl.arange(0, BLOCK_M)  # [M]: row = token * GROUP + head in group
    tok = rows // GROUP
    head = kvh * GROUP + rows % GROUP
    row_ok = rows < q_len * GROUP
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + (q_start + tok)[:, None] * stride_qt + head[:, None] * stride_qh
                + d[None, :], mask=row_ok[:, None], other=0.0)  # [M, D]

    # causal: the tile's last token sees positions < kv_end; this split takes one slice of it
    last_tok = tl.minimum(mtile * BLOCK_M + BLOCK_M - 1, q_len * GROUP - 1) // GROUP
    kv_end = ctx + last_tok + 1
    chunk = tl.cdiv(tl.cdiv(kv_end, SPLITS), BLOCK_N) * BLOCK_N
    lo = split * chunk
    hi = tl.minimum(lo + chunk, kv_end)
    hi = tl.where(mtile * BLOCK_M < q_len * GROUP, hi, lo)  # tile past this sequence: no work

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for start in range(lo, hi, BLOCK_N):
        pos = start + tl.arange(0, BLOCK_N)  # [N]
        pos_ok = pos < hi
        page = tl.load(tables_ptr + seq * stride_table + pos // PAGE, mask=pos_ok, other=0)
        off = page.to(tl.int64) * stride_kb + (pos % PAGE) * stride_ks + kvh * stride_kh  # [N]
        k = tl.load(k_ptr + off[None, :] + d[:, None], mask=pos_ok[None, :], other=0.0)  # [D, N]
        s = tl.dot(q, k) * scale  # [M, N]
        seen = (pos[None, :] <= (ctx + tok)[:, None]) & pos_ok[None, :]
        s = tl.where(seen, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that saw nothing yet
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_ptr + off[:, None] + d[None, :], mask=pos_ok[:, None], other=0.0)  # [N, D]
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    if SPLITS == 1:
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(out_ptr + (q_start + tok)[:, None] * stride_qt + head[:, None] * stride_qh
                 + d[None, :], out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])
    else:  # partial results, merged by _combine: out [S, T, H, D], m/l [S, T, H]
        part = split * stride_ps + (q_start + tok) * stride_pt + head * stride_ph
        tl.store(out_ptr + part[:, None] * HEAD_DIM + d[None, :], acc, mask=row_ok[:, None])
        tl.store(m_ptr + part, m_i, mask=row_ok)
        tl.store(l_ptr + part, l_i, mask=row_ok)


def _combine(acc: torch.Tensor, m: torch.Tensor, den_part: torch.Tensor,
             dtype: torch.dtype) -> torch.Tensor:
    """Merge split-KV partials: acc ``[S, T, H, D]``, m/den ``[S, T, H]`` -> ``[T, H, D]``."""
    m_max = m.amax(0, keepdim=True)
    w = torch.exp(m - torch.where(torch.isinf(m_max), 0.0, m_max))  # [S, T, H]; empty slice: 0
    num = (acc * w[..., None]).sum(0)
    den = (den_part * w).sum(0)
    return (num / torch.where(den == 0, 1.0, den)[..., None]).to(dtype)


def _tiles_of(meta: AttnMetadata, group: int, block_m: int, device) -> torch.Tensor:
    """The step's work list: the captured one if the metadata has it, else built once."""
    if meta.tiles is not None:
        return meta.tiles
    key = ("tiles", block_m)
    if key not in meta.cache:
        meta.cache[key] = torch.from_numpy(work_list(meta.q_lens_host, group, block_m)
                                           ).to(device)
    return meta.cache[key]


def triton_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     meta: AttnMetadata) -> torch.Tensor:
    """q ``[T, H, D]`` over the pool ``[NB, PAGE, KVH, D]`` -> ``[T, H, D]`` (see module doc)."""
    num_tokens, heads, dim = q.shape
    kv_heads = k_cache.shape[2]
    group = heads // kv_heads
    q = q.contiguous()
    block_m = meta.block_m or block_m_for(meta.max_q, group)
    decode_like = block_m == DECODE_BLOCK_M
    block_n = 64 if dim <= 128 else 32
    splits = meta.num_splits if decode_like else 1
    tiles = _tiles_of(meta, group, block_m, q.device)
    grid = (tiles.shape[1], kv_heads, splits)
    if splits == 1:
        out = torch.empty_like(q)
        m = den = out  # unused by the kernel when SPLITS == 1
        strides = (0, 0, 0)
    else:
        out = torch.empty((splits, num_tokens, heads, dim), dtype=torch.float32, device=q.device)
        m = torch.empty((splits, num_tokens, heads), dtype=torch.float32, device=q.device)
        den = torch.empty_like(m)
        strides = (num_tokens * heads, heads, 1)
    _paged_attn_kernel[grid](
        q, k_cache, v_cache, out, m, den,
        meta.block_tables, meta.ctx_lens, meta.q_lens, meta.q_start, tiles[0], tiles[1],
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        *strides, meta.block_tables.stride(0),
        dim ** -0.5,
        GROUP=group, PAGE=k_cache.shape[1], HEAD_DIM=dim,
        BLOCK_M=block_m, BLOCK_N=block_n, SPLITS=splits,
    )
    if splits == 1:
        return out
    if splits & (splits - 1) == 0:  # one Triton program per (token, head)
        return merge_splits(out, m, den, q.dtype)
    return _combine(out, m, den, q.dtype)
