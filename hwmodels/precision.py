"""Number formats: bytes per element of weights and KV cache, and the compute precision used.

Quantized formats carry metadata (group scales, zero points): a 4-bit AWQ/GPTQ weight with a
16-bit scale and a 4-bit zero per 128 weights costs 0.5 + 2.5/128 bytes. The compute precision
decides which tensor-core peak applies: W8A8 FP8 runs FP8 GEMMs where the GPU has them, while
weight-only formats (int4, FP8 on Ampere) dequantize to 16-bit and run 16-bit GEMMs.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwmodels.errors import CatalogError
from hwmodels.specs import GpuSpec


@dataclass(frozen=True, slots=True)
class Format:
    """``bits`` per element plus ``meta_bytes`` of scales/zeros per ``group`` elements.

    ``compute`` is the GEMM precision the format prefers; ``fallback`` is used where the GPU
    has no tensor-core peak for it (weight-only dequantization).
    """

    name: str
    bits: float
    group: int = 1
    meta_bytes: float = 0.0
    compute: str = "bf16"
    fallback: str = "bf16"

    @property
    def bytes_per_elem(self) -> float:
        return self.bits / 8 + (self.meta_bytes / self.group if self.meta_bytes else 0.0)

    def compute_dtype(self, gpu: GpuSpec) -> str:
        return self.compute if gpu.has(self.compute) else self.fallback

    @property
    def weight_only(self) -> bool:
        return self.compute in ("bf16", "fp16")


WEIGHT_FORMATS: dict[str, Format] = {
    "bf16": Format("bf16", 16, compute="bf16"),
    "fp16": Format("fp16", 16, compute="fp16", fallback="fp16"),
    # W8A8 FP8 with per-channel scales (4 bytes per output row: negligible, counted as 0).
    "fp8": Format("fp8", 8, compute="fp8"),
    # W8A8 INT8 (SmoothQuant-style).
    "int8": Format("int8", 8, compute="int8"),
    # W4A16 AWQ/GPTQ: fp16 scale + 4-bit zero per group of 128.
    "int4": Format("int4", 4, group=128, meta_bytes=2.5, compute="bf16"),
    # NVFP4: e2m1 values, one fp8 scale per 16 (plus a per-tensor fp32 scale).
    "nvfp4": Format("nvfp4", 4, group=16, meta_bytes=1.0, compute="fp4"),
    # MXFP4 (OCP microscaling, gpt-oss experts): one e8m0 scale per 32.
    "mxfp4": Format("mxfp4", 4, group=32, meta_bytes=1.0, compute="fp4"),
    # Ternary (BitNet b1.58): 1.58 bits of information packed as 2 bits, int8 activations.
    "ternary": Format("ternary", 2, compute="int8"),
}

KV_FORMATS: dict[str, Format] = {
    "bf16": Format("bf16", 16),
    "fp16": Format("fp16", 16),
    "fp8": Format("fp8", 8),  # per-tensor scale: no per-token metadata
    "int8": Format("int8", 8, group=128, meta_bytes=2.0),  # fp16 scale per head vector
    # KIVI-style asymmetric quantization: fp16 scale + fp16 zero per group of 32.
    "int4": Format("int4", 4, group=32, meta_bytes=4.0),
    "int3": Format("int3", 3, group=32, meta_bytes=4.0),
    "int2": Format("int2", 2, group=32, meta_bytes=4.0),
}
KV_ALIASES = {"4bit": "int4", "3bit": "int3", "2bit": "int2", "kivi4": "int4", "kivi2": "int2"}


def weight_format(name: str) -> Format:
    key = name.strip().lower()
    if key not in WEIGHT_FORMATS:
        allowed = ", ".join(WEIGHT_FORMATS)
        raise CatalogError(f"model.weight_dtype: unknown {name!r}; allowed: {allowed}")
    return WEIGHT_FORMATS[key]


def kv_format(name: str) -> Format:
    key = name.strip().lower()
    key = KV_ALIASES.get(key, key)
    if key not in KV_FORMATS:
        allowed = ", ".join([*KV_FORMATS, *KV_ALIASES])
        raise CatalogError(f"model.kv_dtype: unknown {name!r}; allowed: {allowed}")
    return KV_FORMATS[key]


def activation_dtype(weight: Format) -> str:
    """16-bit type of activations, embeddings and LM head (kept unquantized by every recipe)."""
    return "fp16" if weight.name == "fp16" else "bf16"
