"""Attention work of one step, summed over sequences: keys attended, KV read, padding.

Each sequence adds ``n`` new tokens on top of ``c`` cached ones; new token ``i`` (1-based)
attends to ``c + i`` keys (causal), or to at most ``window`` keys on sliding-window layers.
Attention kernels process query rows in tiles of ``ATTN_TILE_ROWS``; a decode step of a GQA
model packs the ``group`` query heads that share a KV head into one tile (FlashAttention-3
PackGQA, FlashInfer, FlashMLA), so a tile holds ``n x group`` rows and the rest is padding that
costs compute but no memory traffic.
"""

from __future__ import annotations

import math

ATTN_TILE_ROWS = 64  # smallest query tile of Hopper/Blackwell attention kernels (wgmma M=64)


def causal_keys(new: int, cached: int, window: int | None) -> int:
    """Sum over the ``new`` query tokens of the keys each attends to."""
    if window is None or cached + new <= window:
        return new * cached + new * (new + 1) // 2
    growing = max(0, min(new, window - cached))  # tokens that still see fewer than window keys
    return growing * cached + growing * (growing + 1) // 2 + (new - growing) * window


def kv_tokens_read(new: int, cached: int, window: int | None) -> int:
    """Distinct cached+new tokens whose K/V the step touches."""
    if window is None:
        return cached + new
    return min(cached + new, window + new - 1)


def pad_factor(rows: int) -> float:
    """Computed rows / useful rows when ``rows`` query rows fill whole tiles."""
    return math.ceil(rows / ATTN_TILE_ROWS) * ATTN_TILE_ROWS / rows
