"""Attention kernel time on one GPU, per sequence, so that a batch of any mix of lengths is the
sum of its sequences plus one per-call part (``hwmodels.attention`` sums them that way).

Decode (one new token per sequence, ``DecodeCurve``): streaming the sequence's KV cache at a
fraction of HBM bandwidth, overlapped (soft maximum) with a fixed cost per sequence, per KV
head (block-table walk, combining split-KV partial results) and per query head (loading its Q
row, writing its O row). Compute (4 x heads x head_dim FLOPs per key, padded to tiles)
overlaps the stream and matters only with many query heads per KV head. Per call: a floor,
plus the critical path of the longest sequence (``decode_path_s``): a CTA walks its keys
serially, one memory round trip per tile, until the kernel splits long sequences over several
SMs (split-KV / multi-block), so the path grows with the longest context up to
``path_keys`` keys and then stays.

Prefill (``PrefillCurve``): tensor-core FLOPs (padded to whole query tiles) at a fraction of
the 16-bit peak that grows with the keys each query tile loops over (a tile's fixed
prologue/epilogue against its mainloop), plus a fixed cost per sequence.
"""

from __future__ import annotations

import math

from hwmodels.kernels.fits import DecodeCurve, PrefillCurve
from hwmodels.op import overlap1 as soft_max

ATTN_OVERLAP_P = 8.0  # attention kernels overlap compute and loads well (software pipelining)
ATTN_TILE_ROWS = 64  # smallest query tile of Hopper/Blackwell attention kernels (wgmma M=64)
ACT_BYTES = 2


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
    """Computed rows / useful rows when ``rows`` query rows fill whole tiles. A GQA kernel
    packs the ``group`` query heads that share a KV head into one tile (FlashAttention-3
    PackGQA, FlashInfer, FlashMLA), so a decode tile holds ``group`` useful rows."""
    return math.ceil(rows / ATTN_TILE_ROWS) * ATTN_TILE_ROWS / rows


def gqa_shape(
    new: int, cached: int, heads: int, kv_heads: int, head_dim: int, kv_bytes_per_elem: float,
    window: int | None = None,
) -> tuple[float, float, float, float]:
    """(FLOPs padded to whole tiles, KV bytes, Q/O bytes, mean keys per query) of one
    sequence's attention in one layer of ``heads`` query and ``kv_heads`` KV heads."""
    keys = causal_keys(new, cached, window)
    flops = 4.0 * heads * head_dim * keys * pad_factor(new * (heads // kv_heads))
    kv_bytes = kv_tokens_read(new, cached, window) * 2 * kv_heads * head_dim * kv_bytes_per_elem
    qo_bytes = new * 2 * heads * head_dim * ACT_BYTES
    return flops, kv_bytes, qo_bytes, keys / new


def decode_seq_time(
    curve: DecodeCurve,
    peak_flops_s: float,
    compute_eff: float,
    hbm_bytes_s: float,
    flops: float,
    kv_bytes: float,
    kv_heads: float,
    heads: float,
    *,
    bw_eff: float | None = None,
) -> tuple[float, float, float]:
    """(seconds, compute seconds, memory seconds) of one sequence's decode attention in one
    layer, the call's part (``decode_path_s``) excluded: its fixed work overlapped with its KV
    stream. ``bw_eff`` overrides the curve's plateau (a calibrated profile)."""
    plateau = curve.bw_eff if bw_eff is None else bw_eff
    memory_s = kv_bytes / (hbm_bytes_s * plateau)
    compute_s = flops / (peak_flops_s * compute_eff)
    fixed = curve.seq_s + curve.head_s * kv_heads + curve.qhead_s * heads
    stream = soft_max(compute_s, memory_s, ATTN_OVERLAP_P)
    return soft_max(fixed, stream, curve.overlap_p), compute_s, memory_s


def decode_path_s(curve: DecodeCurve, longest_context: float) -> float:
    """Seconds one decode call adds for its longest sequence (``longest_context`` keys, cached
    plus new; 0 when the call has no decode sequence): the serial walk of one CTA over its keys
    (``key_s`` per key) up to ``path_keys``, beyond which split-KV spreads the sequence over a
    capped number of CTAs, each still walking its share (``split_key_s`` per key). It grows
    with the longest context only, so adding a sequence or a token never makes a call
    cheaper."""
    return (curve.key_s * min(longest_context, curve.path_keys)
            + curve.split_key_s * max(0.0, longest_context - curve.path_keys))


def decode_call_s(call_s: float, work_s: float, power: float) -> float:
    """Seconds of a decode-only call: its latency chain (``call_s``: floor and longest path)
    and its sequences' work (``work_s``, summed over the CTAs) overlap imperfectly, a soft
    maximum (c^p + w^p)^(1/p) with ``power`` >= 1 (the curve's ``call_overlap_p``): at 1 they
    add (no overlap); as it grows the longer hides the shorter (a small batch's CTAs run while
    the call's launch and its longest walk take their time)."""
    if power == 1.0:
        return work_s + call_s
    return soft_max(call_s, work_s, power)


def prefill_seq_time(
    curve: PrefillCurve,
    peak_flops_s: float,
    hbm_bytes_s: float,
    bw_eff: float,
    flops: float,
    nbytes: float,
    keys_per_query: float,
    *,
    compute_eff: float | None = None,
) -> tuple[float, float, float]:
    """(seconds, compute seconds, memory seconds) of one sequence's prefill attention in one
    layer, floor excluded; ``flops`` already padded to whole tiles."""
    plateau = curve.compute_eff if compute_eff is None else compute_eff
    eff = plateau * keys_per_query / (keys_per_query + curve.half_keys)
    compute_s = flops / (peak_flops_s * eff)
    memory_s = nbytes / (hbm_bytes_s * bw_eff)
    return curve.seq_s + soft_max(compute_s, memory_s, ATTN_OVERLAP_P), compute_s, memory_s
