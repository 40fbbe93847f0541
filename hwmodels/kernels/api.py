"""The op-level API: one function per kernel, in milliseconds, and the seconds-level functions
the roofline's operator rows are priced with (one implementation for both).

Parameters: the GPU's datasheet (``GpuSpec``), its chip class's fitted curves (``fits``) and a
``HwParams`` whose plateau fields scale the curves: ``gemm_eff`` (the 16-bit GEMM plateau,
``lowp_gemm_eff_ratio`` the low-precision one relative to it), ``gemm_latency_s`` (the 16-bit
GEMM floor), ``hbm_eff`` (the 16-bit GEMM weight-streaming fraction, which elementwise kernels
also stream at), ``attn_bw_eff`` (decode KV streaming plateau), ``attn_compute_eff`` (prefill
plateau), ``comm_latency_s`` (the 2-GPU all-reduce latency) and ``comm_eff`` (the 2-GPU NCCL
bus-bandwidth fraction). ``default_params(gpu)`` sets them to the fitted values, so the curves
apply unchanged; a calibrated profile moves each curve by the ratio of its value to the fit's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from hwmodels.errors import CatalogError
from hwmodels.kernels.allreduce import allreduce_time, takes
from hwmodels.kernels.attention import (
    decode_call_s,
    decode_path_s,
    decode_seq_time,
    gqa_shape,
    prefill_seq_time,
)
from hwmodels.kernels.fits import ALLREDUCE_IMPLS, ChipCurves, curves_for
from hwmodels.kernels.gemm import LOW_PRECISION, KernelTime, gemm_time
from hwmodels.params import HwParams, default_params
from hwmodels.precision import kv_format
from hwmodels.specs import GpuSpec, get_gpu

GEMM_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "tf32": 4.0, "fp8": 1.0, "int8": 1.0,
              "fp6": 0.75, "fp4": 0.5}


def _gpu(gpu: str | GpuSpec | Mapping[str, Any]) -> GpuSpec:
    return get_gpu(gpu)


def _positive(name: str, value: float, minimum: float = 1) -> None:
    if not value >= minimum:
        raise CatalogError(f"{name}: must be >= {minimum}, got {value!r}")


# ---- GEMM ----------------------------------------------------------------------------------
def gemm_cost(
    gpu: GpuSpec,
    m: float,
    n: float,
    k: float,
    dtype: str,
    p: HwParams,
    *,
    curves: ChipCurves | None = None,
    weight_bytes: float | None = None,
    groups: float = 1.0,
    calls: float = 1.0,
    dequantize: bool = False,
) -> KernelTime:
    """``calls`` GEMM launches of ``groups`` problems [m, k] x [k, n] in ``dtype`` each (weights
    of ``weight_bytes`` per launch, default n x k in ``dtype``). ``dequantize``: weight-only
    quantized weights expanded to 16-bit inside the kernel (``p.dequant_eff_ratio``)."""
    curves = curves or curves_for(gpu)
    peak = gpu.peak(dtype)
    if peak is None:
        raise CatalogError(f"gemm dtype: {gpu.id} has no {dtype!r} tensor peak; "
                           f"allowed: {', '.join(d for d in GEMM_BYTES if gpu.has(d))}")
    base = curves.gemm["bf16"]
    curve = curves.gemm_curve(dtype)
    lowp = dtype in LOW_PRECISION
    plateau = p.gemm_eff * (p.lowp_gemm_eff_ratio if lowp else 1.0)
    if p.gemm_m_half_tokens:
        plateau *= m / (m + p.gemm_m_half_tokens)
    if dequantize:
        plateau *= p.dequant_eff_ratio
    floor = curve.floor_s * (p.gemm_latency_s / base.floor_s)
    stream = curve.stream_eff * (p.hbm_eff / base.stream_eff)
    if weight_bytes is None:
        weight_bytes = groups * n * k * GEMM_BYTES.get(dtype, 2.0)
    return gemm_time(curve, peak, gpu.hbm_bw_bytes_s, max(m, 1e-9), n, k,
                     weight_bytes=weight_bytes, quantize=lowp, groups=groups, calls=calls,
                     overlap_p=p.overlap_p, compute_eff=plateau, floor_s=floor,
                     stream_eff=stream)


def gemm_time_ms(gpu: str | GpuSpec | Mapping[str, Any], m: int, n: int, k: int,
                 dtype: str = "bf16") -> float:
    """Milliseconds of one ``C[m, n] = A[m, k] @ W[k, n]`` on ``gpu`` in ``dtype`` (bf16, fp16,
    fp8, int8, fp4 where the GPU has it; low precision includes quantizing A)."""
    spec = _gpu(gpu)
    for name, value in (("m", m), ("n", n), ("k", k)):
        _positive(name, value)
    if dtype not in GEMM_BYTES:
        raise CatalogError(f"dtype: unknown {dtype!r}; allowed: {', '.join(GEMM_BYTES)}")
    return gemm_cost(spec, m, n, k, dtype, default_params(spec)).time_s * 1e3


# ---- attention -----------------------------------------------------------------------------
def attention_plateaus(curves: ChipCurves, p: HwParams, kv_bytes: float,
                       group: int) -> tuple[float, float]:
    """(decode KV-stream plateau, prefill compute plateau) for a KV cache of ``kv_bytes`` per
    element and ``group`` query heads per KV head, the curves' values moved by the profile's
    ratio to the fit."""
    decode = curves.decode_curve(kv_bytes, group).bw_eff * (
        p.attn_bw_eff / curves.decode["bf16"].bw_eff)
    prefill = curves.prefill_curve(kv_bytes).compute_eff * (
        p.attn_compute_eff / curves.prefill["bf16"].compute_eff)
    return decode, prefill


def attention_floor_s(curves: ChipCurves, kv_bytes: float, decode: bool, group: int) -> float:
    """Fixed seconds of one attention call (one layer, whole batch). A prefill call's floor is
    at least a decode call's: it does the same setup and more."""
    floor = curves.decode_curve(kv_bytes, group).floor_s
    if not decode:
        floor = max(floor, curves.prefill_curve(kv_bytes).floor_s)
    return floor


def attention_path_s(curves: ChipCurves, kv_bytes: float, longest_context: float,
                     group: int) -> float:
    """Seconds one attention call adds for its longest decode sequence (``longest_context``
    keys; 0 without decode sequences): ``hwmodels.kernels.attention.decode_path_s``."""
    return decode_path_s(curves.decode_curve(kv_bytes, group), longest_context)


def attention_seq_time(
    gpu: GpuSpec,
    curves: ChipCurves,
    p: HwParams,
    flops: float,
    kv_bytes: float,
    other_bytes: float,
    keys_per_query: float,
    kv_heads: int,
    kv_bytes_per_elem: float,
    decode: bool,
    context: float,
    heads: int,
) -> tuple[float, float, float]:
    """(seconds, compute s, memory s) of one sequence in one attention call, the call's own
    part (floor, longest path) excluded, from its FLOPs (padded to tiles), KV bytes, other
    bytes (Q, O), mean keys per query, its ``context`` (cached + new tokens) and its query
    ``heads``. A prefill chunk costs at least what decoding its last token would (it streams
    the same KV), so a step never gets cheaper by a token."""
    peak = gpu.peak("bf16") or 0.0
    group = max(1, heads // max(1, kv_heads))
    bw_plateau, compute_plateau = attention_plateaus(curves, p, kv_bytes_per_elem, group)
    dec = decode_seq_time(curves.decode_curve(kv_bytes_per_elem, group), peak, compute_plateau,
                          gpu.hbm_bw_bytes_s, flops if decode else 0.0,
                          kv_bytes + other_bytes, kv_heads, heads, bw_eff=bw_plateau)
    if decode:
        return dec
    pre = prefill_seq_time(curves.prefill_curve(kv_bytes_per_elem), peak, gpu.hbm_bw_bytes_s,
                           bw_plateau, flops, kv_bytes + other_bytes, keys_per_query,
                           compute_eff=compute_plateau)
    return pre if pre[0] >= dec[0] else (dec[0], pre[1], pre[2])


def attention_cost(
    gpu: GpuSpec,
    batch: int,
    new_tokens: int,
    kv_tokens: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    kv_bytes_per_elem: float,
    p: HwParams,
    *,
    curves: ChipCurves | None = None,
    window: int | None = None,
) -> KernelTime:
    """One attention call over ``batch`` equal sequences (see ``attention_time_ms``)."""
    curves = curves or curves_for(gpu)
    decode = new_tokens == 1
    flops, kv, qo, keys = gqa_shape(new_tokens, kv_tokens, num_heads, num_kv_heads, head_dim,
                                    kv_bytes_per_elem, window)
    seq_s, compute_s, memory_s = attention_seq_time(
        gpu, curves, p, flops, kv, qo, keys, num_kv_heads, kv_bytes_per_elem, decode,
        kv_tokens + new_tokens, num_heads)
    group = num_heads // num_kv_heads
    floor = attention_floor_s(curves, kv_bytes_per_elem, decode, group)
    if decode:
        floor += attention_path_s(curves, kv_bytes_per_elem, kv_tokens + new_tokens, group)
    work = batch * seq_s
    if decode:
        total = decode_call_s(floor, work, curves.decode_curve(kv_bytes_per_elem,
                                                               group).call_overlap_p)
    else:
        total = floor + work
    ideal = batch * max(flops / (gpu.peak("bf16") or 1.0), (kv + qo) / gpu.hbm_bw_bytes_s)
    return KernelTime(total, batch * compute_s, batch * memory_s, floor, ideal / total)


def attention_time_ms(
    gpu: str | GpuSpec | Mapping[str, Any],
    batch: int,
    new_tokens: int,
    kv_tokens: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int = 128,
    kv_dtype: str = "bf16",
) -> float:
    """Milliseconds of one attention kernel call on ``gpu``: ``batch`` sequences, each with
    ``new_tokens`` new tokens (1 = decode) over ``kv_tokens`` tokens cached before this step;
    ``num_heads`` and ``num_kv_heads`` per GPU (after tensor parallelism)."""
    spec = _gpu(gpu)
    _positive("batch", batch)
    _positive("new_tokens", new_tokens)
    _positive("kv_tokens", kv_tokens, 0)
    _positive("num_kv_heads", num_kv_heads)
    _positive("head_dim", head_dim)
    if num_heads < num_kv_heads or num_heads % num_kv_heads:
        raise CatalogError(f"num_heads: {num_heads} must be a multiple of num_kv_heads "
                           f"{num_kv_heads}")
    kvb = kv_format(kv_dtype).bytes_per_elem
    return attention_cost(spec, batch, new_tokens, kv_tokens, num_heads, num_kv_heads, head_dim,
                          kvb, default_params(spec)).time_s * 1e3


# ---- all-reduce ----------------------------------------------------------------------------
def allreduce_cost(
    gpu: GpuSpec,
    num_gpus: int,
    nbytes: float,
    p: HwParams,
    *,
    impl: str = "auto",
    curves: ChipCurves | None = None,
    calls: float = 1.0,
) -> KernelTime:
    """``calls`` all-reduces of ``nbytes`` each over ``num_gpus`` GPUs. ``impl``: ``nccl``,
    ``custom`` (one-shot/two-shot kernels up to their workspace, ``max_bytes``, NCCL beyond)
    or ``auto`` (the faster of the two where the custom kernel takes the message, as vLLM,
    SGLang and TensorRT-LLM choose)."""
    if num_gpus <= 1 or calls <= 0:
        return KernelTime(0.0, 0.0, 0.0, 0.0, 0.0)
    if impl not in ("auto", *ALLREDUCE_IMPLS):
        raise CatalogError(f"impl: unknown {impl!r}; allowed: auto, {', '.join(ALLREDUCE_IMPLS)}")
    curves = curves or curves_for(gpu)
    link = gpu.link_bw_bytes_s(num_gpus)
    nccl2 = curves.allreduce["nccl"][2]
    custom2 = curves.allreduce["custom"][2]
    lat_scale = p.comm_latency_s / custom2.small_latency_s
    bw_scale = p.comm_eff / nccl2.large_bw_eff
    custom = curves.allreduce_curve("custom", num_gpus)
    names = ("nccl", "custom") if impl != "nccl" and takes(custom, "custom", nbytes) else ("nccl",)
    best = None
    for name in names:
        c = curves.allreduce_curve(name, num_gpus)
        scaled = replace(c, small_latency_s=c.small_latency_s * lat_scale,
                         small_bw_eff=c.small_bw_eff * bw_scale,
                         large_latency_s=c.large_latency_s * lat_scale,
                         large_bw_eff=c.large_bw_eff * bw_scale,
                         cta_bw_eff=c.cta_bw_eff * bw_scale)
        seconds, protocol = allreduce_time(scaled, name, num_gpus, nbytes, link)
        latency = scaled.small_latency_s if protocol == "small" else scaled.large_latency_s
        if best is None or seconds < best[0]:
            best = (seconds, latency)
    assert best is not None
    seconds, latency = best
    ideal = 2.0 * (num_gpus - 1) / num_gpus * nbytes / link
    return KernelTime(calls * seconds, 0.0, calls * (seconds - latency), calls * latency,
                      ideal / seconds if seconds > 0 else 0.0)


def collective_latency_eff(gpu: GpuSpec, num_gpus: int, p: HwParams,
                           curves: ChipCurves | None = None) -> tuple[float, float]:
    """(latency per call, link-bandwidth fraction) for collectives other than all-reduce
    (all-gather, all-to-all, pipeline sends): NCCL's small-message all-reduce latency at that
    rank count and its large-message bandwidth fraction, moved by the profile like the
    all-reduce's (no curve of their own is fitted)."""
    curves = curves or curves_for(gpu)
    c = curves.allreduce_curve("nccl", num_gpus)
    lat_scale = p.comm_latency_s / curves.allreduce["custom"][2].small_latency_s
    bw_scale = p.comm_eff / curves.allreduce["nccl"][2].large_bw_eff
    return c.small_latency_s * lat_scale, c.large_bw_eff * bw_scale


def allreduce_time_ms(gpu: str | GpuSpec | Mapping[str, Any], num_gpus: int, nbytes: float,
                      impl: str = "auto") -> float:
    """Milliseconds of one all-reduce of ``nbytes`` over ``num_gpus`` GPUs of one NVLink (or
    PCIe) domain."""
    spec = _gpu(gpu)
    _positive("num_gpus", num_gpus)
    _positive("nbytes", nbytes, 0)
    return allreduce_cost(spec, num_gpus, nbytes, default_params(spec), impl=impl).time_s * 1e3
