"""Fitted kernel curves: the named physical parameters of GEMM, attention and all-reduce.

``catalog/kernel_fits.yaml`` holds one set per measured chip (``h100_sxm``, ``a100_sxm``),
written by ``python -m hwmodels.fit_kernels`` from ``catalog/kernels/`` (never edited by hand).
``curves_for(gpu)`` picks the set of the GPU's chip class: Ampere GPUs take the A100 fit, every
other GPU the H100 fit, and the datasheet (peak FLOP/s per dtype, HBM and link bandwidth, SM
count) supplies the rest. Fractions and fixed times transfer between chips; peaks do not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import cache
from importlib import resources
from typing import Any

import yaml

from hwmodels.errors import CatalogError
from hwmodels.specs import GpuSpec

FITS_FILE = "kernel_fits.yaml"
MEASURED_CHIPS = ("h100_sxm", "a100_sxm")
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
    small_bw_eff: float
    large_latency_s: float
    large_bw_eff: float


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
        return self.gemm["bf16" if dtype in ("bf16", "fp16", "fp32", "tf32") else "fp8"]

    def decode_curve(self, kv_bytes_per_elem: float) -> DecodeCurve:
        return self.decode["bf16" if kv_bytes_per_elem >= 2 else "fp8"]

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


def curves_for(gpu: GpuSpec) -> ChipCurves:
    return load_fits()[chip_class(gpu)]
