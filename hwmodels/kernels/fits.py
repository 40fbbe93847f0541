"""Fitted kernel curves: the named physical parameters of GEMM, attention and all-reduce.

``catalog/kernel_fits.yaml`` holds one set per measured chip (``h100_sxm``, ``a100_sxm``),
written by ``python -m hwmodels.fit_kernels`` from ``catalog/kernels/`` (never edited by hand).
``curves_for(gpu)`` picks the set of the GPU's chip class: Ampere GPUs take the A100 fit, every
other GPU the H100 fit, and the datasheet (peak FLOP/s per dtype, HBM and link bandwidth, SM
count) supplies the rest. Fractions and fixed times transfer between chips; peaks do not, and
neither do the curve parameters counted in units of work (``carried_to``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from functools import cache
from importlib import resources
from typing import Any

import yaml

from hwmodels.errors import CatalogError
from hwmodels.specs import GpuSpec, get_gpu

FITS_FILE = "kernel_fits.yaml"
MEASURED_CHIPS = ("h100_sxm", "a100_sxm")
MEASURED_GPU = {"h100_sxm": "h100-sxm5-80gb", "a100_sxm": "a100-sxm4-80gb"}  # catalog entries
GEMM_DTYPES = ("bf16", "fp8")  # measured; other low-precision dtypes take fp8's curve
KV_DTYPES = ("bf16", "fp8")
ALLREDUCE_IMPLS = ("nccl", "custom")
RANKS = (2, 4, 8)


@dataclass(frozen=True, slots=True)
class GemmCurve:
    """One chip's GEMM kernels of one dtype (see ``hwmodels.kernels.gemm``)."""

    floor_s: float  # per call: launch, prologue and epilogue; fp8: plus the quantize kernel
    compute_eff: float  # fraction of the dtype's tensor peak a long mainloop reaches
    k_half: float  # K at which a tile's fixed prologue/epilogue halves the compute efficiency
    stream_eff: float  # fraction of HBM bandwidth weights and activations stream at
    busy_half: float  # output tiles at which the streaming SMs are half occupied
    tile_m: int = 128  # output tile of Hopper/Ampere tensor-core GEMMs (wave quantization)
    tile_n: int = 128


@dataclass(frozen=True, slots=True)
class DecodeCurve:
    """One chip's decode attention (one new token per sequence) for one KV dtype."""

    floor_s: float  # per call (one kernel for the whole batch)
    seq_s: float  # per sequence: block table, Q load, split-KV combine, output
    head_s: float  # per sequence and KV head (one CTA each: Q load, split combine, O write)
    bw_eff: float  # fraction of HBM bandwidth a long KV stream reaches
    overlap_p: float  # how a sequence's fixed work overlaps its KV stream: (f^p + s^p)^(1/p)
    qhead_s: float = 0.0  # per sequence and query head (loading its Q row, writing its O row)
    key_s: float = 0.0  # per call: latency per key of the longest sequence's serial KV loop...
    path_keys: float = 0.0  # ...up to this many keys, beyond which split-KV spreads it over SMs
    split_key_s: float = 0.0  # ...into a capped number of CTAs: per key beyond path_keys
    call_overlap_p: float = 1.0  # how the call's floor and path overlap its sequences' work


@dataclass(frozen=True, slots=True)
class PrefillCurve:
    """One chip's prefill (causal, several new tokens per sequence) attention for one KV dtype."""

    floor_s: float
    seq_s: float  # per sequence
    compute_eff: float  # fraction of the 16-bit tensor peak a long KV loop reaches
    half_keys: float  # mean keys per query at which a tile's mainloop reaches half of that


@dataclass(frozen=True, slots=True)
class AllReduceCurve:
    """One chip's all-reduce over ``ranks`` GPUs of one NVLink domain, one implementation.

    Each protocol costs a latency plus its bytes over a fraction of the link bandwidth; the
    library takes the faster (NCCL: LL/LL128 for small messages, Simple for large ones; custom
    kernels: one-shot for small, two-shot for mid-size, NCCL beyond)."""

    small_latency_s: float
    small_bw_eff: float  # custom one-shot: with its whole CTA grid busy (``max_ctas``)
    large_latency_s: float
    large_bw_eff: float
    # Custom kernels only (chosen per chip by the fit, the same at every rank count):
    max_ctas: int = 0  # one-shot CTAs at most, one per 8 KB (0: the whole grid at any size)
    cta_bw_eff: float = 1.0  # one one-shot CTA's pull rate, a fraction of the link bandwidth
    max_bytes: float = math.inf  # largest message the custom kernel takes; NCCL beyond


@dataclass(frozen=True, slots=True)
class ChipCurves:
    """Every curve of one measured chip."""

    chip: str
    gemm_overlap_p: float  # how GEMM compute and streaming overlap: (c^p + m^p)^(1/p)
    gemm: dict[str, GemmCurve]
    decode: dict[str, DecodeCurve]
    prefill: dict[str, PrefillCurve]
    allreduce: dict[str, dict[int, AllReduceCurve]]

    def __hash__(self) -> int:
        return hash(self.chip)

    def gemm_curve(self, dtype: str) -> GemmCurve:
        """The curve of ``dtype``: its own where the set has one (carried sets do), else the
        16-bit curve for 16/32-bit dtypes and the FP8 curve for every lower precision."""
        own = self.gemm.get(dtype)
        if own is not None:
            return own
        return self.gemm[sixteen_or_fp8(dtype)]

    def decode_curve(self, kv_bytes_per_elem: float, group: int) -> DecodeCurve:
        """The decode kernel's curve for a KV cache of ``kv_bytes_per_elem`` bytes per element
        and ``group`` query heads per KV head. Over an 8-bit KV cache, TensorRT-LLM runs its
        XQA kernel (FP8 tensor cores, one CTA per KV head's query group) only for grouped
        heads; plain multi-head attention (group 1) takes its masked multi-head kernel, which
        dequantizes the cache element by element: its own curve (``fp8_mha``) where fitted."""
        if kv_bytes_per_elem >= 2:
            return self.decode["bf16"]
        if group <= 1 and "fp8_mha" in self.decode:
            return self.decode["fp8_mha"]
        return self.decode["fp8"]

    def prefill_curve(self, kv_bytes_per_elem: float) -> PrefillCurve:
        return self.prefill["bf16" if kv_bytes_per_elem >= 2 else "fp8"]

    def allreduce_curve(self, impl: str, ranks: int) -> AllReduceCurve:
        """The curve of the nearest measured rank count at or above ``ranks`` (8 beyond)."""
        table = self.allreduce[impl]
        for measured in RANKS:
            if ranks <= measured:
                return table[measured]
        return table[RANKS[-1]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "gemm_overlap_p": self.gemm_overlap_p,
            "gemm": {k: asdict(v) for k, v in self.gemm.items()},
            "decode_attention": {k: asdict(v) for k, v in self.decode.items()},
            "prefill_attention": {k: asdict(v) for k, v in self.prefill.items()},
            "allreduce": {
                impl: {int(n): asdict(c) for n, c in table.items()}
                for impl, table in self.allreduce.items()
            },
        }

    @classmethod
    def from_dict(cls, chip: str, raw: dict[str, Any]) -> ChipCurves:
        def build(kind: type, values: dict[str, Any]) -> Any:
            names = {f.name for f in fields(kind)}
            return kind(**{k: v for k, v in values.items() if k in names})

        return cls(
            chip=chip,
            gemm_overlap_p=float(raw["gemm_overlap_p"]),
            gemm={k: build(GemmCurve, v) for k, v in raw["gemm"].items()},
            decode={k: build(DecodeCurve, v) for k, v in raw["decode_attention"].items()},
            prefill={k: build(PrefillCurve, v) for k, v in raw["prefill_attention"].items()},
            allreduce={
                impl: {int(n): build(AllReduceCurve, c) for n, c in table.items()}
                for impl, table in raw["allreduce"].items()
            },
        )


@cache
def load_fits() -> dict[str, ChipCurves]:
    """The committed fits by measured chip."""
    path = resources.files("hwmodels").joinpath("catalog", FITS_FILE)
    if not path.is_file():
        raise CatalogError(
            f"hwmodels/catalog/{FITS_FILE} is missing: run python -m hwmodels.fit_kernels")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {chip: ChipCurves.from_dict(chip, raw["chips"][chip]) for chip in raw["chips"]}


def chip_class(gpu: GpuSpec) -> str:
    """The measured chip whose fractions ``gpu`` takes: the A100's for Ampere, else the H100's
    (Hopper itself; Blackwell, Ada and AMD chips are predictions, see docs/hardware-model.md)."""
    return "a100_sxm" if gpu.architecture.lower().startswith("ampere") else "h100_sxm"


def sixteen_or_fp8(dtype: str) -> str:
    """The measured curve a GEMM dtype takes: ``bf16`` for 16/32-bit, ``fp8`` below."""
    return "bf16" if dtype in ("bf16", "fp16", "fp32", "tf32") else "fp8"


def curves_for(gpu: GpuSpec) -> ChipCurves:
    """The curves that price kernels on ``gpu``: its chip class's fit, carried to its SMs."""
    return carried_to(load_fits()[chip_class(gpu)], gpu)


@cache
def carried_to(curves: ChipCurves, gpu: GpuSpec) -> ChipCurves:
    """``curves`` (fitted on a measured chip) for ``gpu``. Two parameters count work, not
    time, and are carried by the ratio of the chips' SMs:

    - A tile's fixed prologue and epilogue (its first loads, the accumulator's stores) cost
      time, while its K-loop runs at the SM's tensor rate, so on an SM that does r times more
      MMA work per second the same fixed cost is worth r times more K: GEMM ``k_half`` and
      prefill attention's ``half_keys`` scale by the per-SM peak ratio of the dtype (Blackwell
      FP4 at 9 PFLOP/s on 148 SMs against the H100's FP8 at 1.98 on 132: 4.1x), so short
      K-loops reach less of a faster chip's peak.
    - ``busy_half`` (the tiles a GEMM needs in flight to stream at full bandwidth) scales
      with the SM count.

    Fractions of peak, floors and latencies carry unchanged. A GPU whose catalog entry lacks
    its SM count, or the measured chip itself, keeps the curves as fitted."""
    ref = get_gpu(MEASURED_GPU[curves.chip])
    if gpu == ref or not gpu.sm_count or not ref.sm_count:
        return curves

    def per_sm(spec: GpuSpec, dtype: str) -> float | None:
        peak = spec.peak(dtype)
        return peak / spec.sm_count if peak else None

    def reference_rate(dtype: str) -> float:
        """The measured chip's per-SM rate in ``dtype``, else in the dtype its curve was
        fitted on (FP8 for FP4 on an H100; the A100's FP8 curve is its 16-bit one)."""
        for name in (dtype, sixteen_or_fp8(dtype), "bf16"):
            rate = per_sm(ref, name)
            if rate:
                return rate
        raise CatalogError(f"{ref.id} has no bf16 peak")

    sms = gpu.sm_count / ref.sm_count
    gemm = {}
    for dtype in ("bf16", "fp16", "fp8", "int8", "fp6", "fp4"):
        mine, base = per_sm(gpu, dtype), curves.gemm_curve(dtype)
        if mine is None:
            continue
        ratio = mine / reference_rate(dtype)
        gemm[dtype] = replace(base, k_half=base.k_half * ratio, busy_half=base.busy_half * sms)
    attn = (per_sm(gpu, "bf16") or 0.0) / reference_rate("bf16") or 1.0
    prefill = {k: replace(c, half_keys=c.half_keys * attn) for k, c in curves.prefill.items()}
    return replace(curves, gemm={**curves.gemm, **gemm}, prefill=prefill)
