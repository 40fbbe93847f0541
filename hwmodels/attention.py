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
from dataclasses import dataclass

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


@dataclass(slots=True)
class AttnSums:
    """Attention totals for one group of sequences on one kind of layer (full or sliding)."""

    seqs: int = 0
    query_tokens: int = 0
    keys: float = 0.0  # causal query-key pairs
    padded_keys: float = 0.0  # the same with tile padding (what the kernel computes)
    rect_keys: float = 0.0  # n x (c + n): what naive (unmasked) attention computes
    kv_tokens: float = 0.0

    def add(self, new: int, cached: int, window: int | None, rows_per_token: int) -> None:
        keys = causal_keys(new, cached, window)
        self.seqs += 1
        self.query_tokens += new
        self.keys += keys
        self.padded_keys += keys * pad_factor(new * rows_per_token)
        self.rect_keys += new * (cached + new)
        self.kv_tokens += kv_tokens_read(new, cached, window)
