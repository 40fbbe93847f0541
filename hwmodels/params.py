"""The hardware model's free parameters: achieved fractions of peak and fixed overheads.

Every number here has a physical meaning, and these are exactly what calibration fits. The
defaults come from public measurements (``catalog/gpus.yaml`` ``measured_efficiency``, the
FlashAttention-3 and FlashMLA papers/READMEs, NCCL tests); ``docs/hardware-model.md`` lists
each with its source. No parameter depends on the model or on the batch: the same profile
must predict every model and batch shape on its GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from hwmodels.errors import CatalogError
from hwmodels.specs import GpuSpec


@dataclass(frozen=True, slots=True)
class HwParams:
    """Efficiencies (fractions of the datasheet peak) and overheads (seconds)."""

    # GEMMs: large-shape fraction of the 16-bit tensor peak, and the M (tokens) at which a GEMM
    # would reach half of it. Measured H100 GEMMs need no such ramp (the fit drives it to zero:
    # the soft roofline below describes the transition), so it is off unless calibrated.
    gemm_eff: float = 0.71
    gemm_m_half_tokens: float = 0.0
    # Low-precision (fp8/int8/fp4) GEMMs reach a smaller fraction of their (2x) peak.
    lowp_gemm_eff_ratio: float = 0.88
    # Weight-only quantized GEMMs (W4A16) pay a dequantization cost when compute bound.
    dequant_eff_ratio: float = 0.85
    # How compute and memory time combine: (c^p + m^p)^(1/p). Large p is the plain roofline
    # max; p = 2 makes a GEMM whose compute and memory times are equal take 1.41x either.
    overlap_p: float = 4.5
    # Streaming from HBM (weights, activations, elementwise kernels).
    hbm_eff: float = 0.81
    # Attention kernels (FlashAttention-style): compute and KV streaming fractions.
    attn_compute_eff: float = 0.55
    attn_bw_eff: float = 0.75
    # Collectives: achieved fraction of per-direction link bandwidth, and a fixed latency.
    comm_eff: float = 0.75
    comm_latency_s: float = 8e-6
    # One-way copies: KV swap to host over PCIe (nvbandwidth H2D: 0.88 of Gen5 x16) and KV
    # transfer between GPUs over NVLink (p2pBandwidthLatencyTest: 0.83-0.88 per direction).
    pcie_copy_eff: float = 0.88
    nvlink_copy_eff: float = 0.85
    copy_latency_s: float = 1.0e-5
    # Fixed GPU time per kernel (launch latency, ramp-up, tail), with or without graphs, and
    # the extra a GEMM pays to fill its load/compute pipeline and drain its epilogue.
    kernel_gap_s: float = 1.2e-6
    gemm_latency_s: float = 1.8e-6
    # CPU time per kernel in eager mode (framework dispatch + launch); the GPU starves when
    # the CPU falls behind.
    launch_cpu_s: float = 1.0e-5
    # Host work per step (scheduling, input preparation, sampling, output copy) and per
    # sequence in the batch.
    step_overhead_s: float = 3.0e-4
    seq_overhead_s: float = 4.0e-6
    # Steps with at most this many tokens replay a CUDA graph (no CPU launch cost); 0 = eager.
    cuda_graph_max_tokens: int = 512
    # "all": any small step is graphed (vLLM v1 piecewise graphs); "decode": only steps where
    # every sequence has one new token (classic decode graphs, as realexec captures them).
    cuda_graph_mode: str = "all"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def updated(self, **changes: Any) -> HwParams:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            allowed = ", ".join(f.name for f in fields(self))
            raise CatalogError(
                f"hardware parameters: unknown {sorted(unknown)}; allowed: {allowed}"
            )
        return replace(self, **changes)


# Parameters calibration fits, with physical bounds.
FIT_BOUNDS: dict[str, tuple[float, float]] = {
    "gemm_eff": (0.2, 1.0),
    "gemm_m_half_tokens": (0.0, 2048.0),
    "overlap_p": (1.0, 64.0),
    "hbm_eff": (0.3, 1.0),
    "attn_compute_eff": (0.1, 1.0),
    "attn_bw_eff": (0.1, 1.0),
    "comm_eff": (0.1, 1.1),  # NVLink SHARP all-reduce can exceed the wire rate
    "comm_latency_s": (1e-6, 1e-3),
    "kernel_gap_s": (0.0, 5e-5),
    "gemm_latency_s": (0.0, 5e-5),
    "launch_cpu_s": (0.0, 1e-4),
    "step_overhead_s": (0.0, 0.05),
    "seq_overhead_s": (0.0, 1e-3),
}


# Model-shaped GEMMs (Llama-8B linears, M = 1..8192) reached 0.757 of the bf16 peak on an H100
# where the catalog's best-shape search (MAMF) reached 0.803: typical shapes get 0.943 of the
# best one (benchmarks/hw_fit_microbench.py on benchmarks/data/h100_microbench.json).
TYPICAL_SHAPE_RATIO = 0.943


def default_params(gpu: GpuSpec) -> HwParams:
    """Uncalibrated parameters for ``gpu``: its measured GEMM fractions where the catalog has
    them (derated from the best shape to typical shapes), else vendor-typical values (AMD's
    software stack reaches less of its peak). The other defaults were measured on an H100
    (``benchmarks/hw_microbench.py``) and describe kernels and software more than the chip."""
    base = HwParams()
    changes: dict[str, Any] = {}
    if gpu.gemm_eff_bf16 is not None:
        changes["gemm_eff"] = gpu.gemm_eff_bf16 * TYPICAL_SHAPE_RATIO
    elif gpu.vendor == "amd":
        changes["gemm_eff"] = 0.55
    if gpu.gemm_eff_fp8 is not None and gpu.gemm_eff_bf16 is not None:
        changes["lowp_gemm_eff_ratio"] = min(1.0, gpu.gemm_eff_fp8 / gpu.gemm_eff_bf16)
    if gpu.vendor == "amd":
        changes["attn_compute_eff"] = 0.4
    return base.updated(**changes)
