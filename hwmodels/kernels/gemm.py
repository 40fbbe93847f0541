"""GEMM time on one GPU: a per-call floor plus a soft roofline of tensor-core compute and HBM
streaming, plus, for FP8/FP4, the kernel that quantizes the activations.

Physics in the curve (``GemmCurve``):
- ``floor_s``: what any call costs (launch in a CUDA graph, prologue, epilogue, tail); a
  1024 x 1024 bf16 GEMV on an H100 takes 4 us where streaming its 2 MB takes 0.7 us.
- Tile quantization: the M dimension is computed in whole ``tile_m`` rows (a 129-token GEMM
  computes 256 rows), so compute time steps up at tile boundaries; below one tile, small-M
  kernels swap the operands and pad M to 8 only.
- ``compute_eff * k / (k + k_half)``: each output tile runs a K-loop (the useful work) plus a
  fixed prologue/epilogue worth ``k_half`` of K; short K-loops reach less of the peak.
- ``stream_eff``: weights and activations stream at this fraction of HBM bandwidth (a GEMV
  with M = 1 is pure weight streaming; fp8 GEMVs stream below bf16's fraction).
- Low-precision GEMMs first quantize their bf16 activations (read 2 bytes, write 1 per
  element), a separate memory-bound kernel that does not overlap with the GEMM.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from hwmodels.kernels.fits import GemmCurve
from hwmodels.op import overlap1 as soft_max

ACT_BYTES = 2  # activations and outputs are 16-bit
LOW_PRECISION = ("fp8", "int8", "fp6", "fp4")


class KernelTime(NamedTuple):
    """One kernel's (or ``calls`` identical kernels') seconds and their parts."""

    time_s: float  # total, floors included
    compute_s: float  # tensor-core time at the achieved compute fraction
    memory_s: float  # HBM (or link) time at the achieved bandwidth fraction
    floor_s: float  # fixed per-call seconds included in time_s
    eff: float  # achieved fraction of the binding datasheet peak, floors included


SWAP_AB_ROWS = 8  # MMA N granularity: a GEMM with fewer rows than a tile swaps A and B


def padded_rows(m: float, tile_m: int) -> float:
    """Rows a GEMM computes: whole tiles of ``tile_m``; below one tile, kernels swap A and B
    (CUTLASS/TensorRT-LLM small-M kernels, GEMV-like) so the few rows fill the MMA's N side,
    padded to 8."""
    if m <= 0:
        return 0.0
    step = SWAP_AB_ROWS if m < tile_m else tile_m
    return math.ceil(m / step) * step


def gemm_time(
    curve: GemmCurve,
    peak_flops_s: float,
    hbm_bytes_s: float,
    m: float,
    n: float,
    k: float,
    *,
    weight_bytes: float,
    quantize: bool,
    groups: float = 1.0,
    calls: float = 1.0,
    overlap_p: float,
    compute_eff: float | None = None,
    floor_s: float | None = None,
    stream_eff: float | None = None,
) -> KernelTime:
    """``calls`` launches, each of ``groups`` problems [m, k] x [k, n] (a grouped MoE GEMM has
    one per active expert) reading ``weight_bytes`` of weights in all per launch.
    ``overlap_p`` is the chip's compute/memory soft-maximum exponent; ``compute_eff``,
    ``floor_s`` and ``stream_eff`` override the curve's (a calibrated profile)."""
    stream = curve.stream_eff if stream_eff is None else stream_eff
    plateau = curve.compute_eff if compute_eff is None else compute_eff
    eff = plateau * k / (k + curve.k_half)
    rows = padded_rows(m, curve.tile_m)
    compute_s = 2.0 * rows * n * k * groups / (peak_flops_s * eff)
    act_in = 1.0 if quantize else ACT_BYTES  # the GEMM reads the quantized activations
    moved = weight_bytes + groups * m * (k * act_in + n * ACT_BYTES)
    tiles = groups * math.ceil(m / curve.tile_m) * math.ceil(n / curve.tile_n)
    memory_s = moved / (hbm_bytes_s * stream) * (1.0 + curve.busy_half / tiles)
    quant_s = groups * m * k * 3.0 / (hbm_bytes_s * stream) if quantize else 0.0
    floor = curve.floor_s if floor_s is None else floor_s
    one = floor + soft_max(compute_s, memory_s, overlap_p) + quant_s
    ideal = max(2.0 * m * n * k * groups / peak_flops_s, moved / hbm_bytes_s)
    return KernelTime(
        time_s=calls * one,
        compute_s=calls * compute_s,
        memory_s=calls * (memory_s + quant_s),
        floor_s=calls * floor,
        eff=ideal / one if one > 0 else 0.0,
    )
