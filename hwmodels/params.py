"""The hardware model's free parameters: achieved fractions of peak and fixed overheads.

Every number here has a physical meaning, and these are exactly what calibration fits.
``default_params(gpu)`` sets the kernel plateaus and floors from the fitted kernel curves of the
GPU's chip class (``hwmodels.kernels``, ``catalog/kernel_fits.yaml``); the class defaults below
are generic starting values. ``docs/hardware-model.md`` lists each with its source. No
parameter depends on the model or on the batch: the same profile must predict every model and
batch shape on its GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from hwmodels.errors import CatalogError
from hwmodels.kernels.fits import MEASURED_GPU, ChipCurves, curves_for
from hwmodels.specs import GpuSpec, get_gpu



@dataclass(frozen=True, slots=True)
class HwParams:
    """Efficiencies (fractions of the datasheet peak) and overheads (seconds)."""

    # GEMMs: plateau fraction of the 16-bit tensor peak (scales the fitted GEMM curves), and an
    # optional extra ramp: the M (tokens) at which a GEMM would reach half of it (off: tile
    # quantization and the K-loop ramp of the curves describe the measured shapes).
    gemm_eff: float = 0.71
    gemm_m_half_tokens: float = 0.0
    # Low-precision (fp8/int8/fp4) GEMMs' plateau relative to the 16-bit one.
    lowp_gemm_eff_ratio: float = 0.88
    # Weight-only quantized GEMMs (W4A16) pay a dequantization cost when compute bound.
    dequant_eff_ratio: float = 0.85
    # How compute and memory time combine: (c^p + m^p)^(1/p). Large p is the plain roofline
    # max; p = 2 makes a GEMM whose compute and memory times are equal take 1.41x either.
    overlap_p: float = 4.5
    # Streaming from HBM: the 16-bit GEMM weight-streaming fraction (scales the curves), at
    # which elementwise kernels stream too.
    hbm_eff: float = 0.81
    # Attention kernels: prefill compute plateau and decode KV-streaming plateau (scale the
    # fitted attention curves).
    attn_compute_eff: float = 0.55
    attn_bw_eff: float = 0.75
    # Collectives: the 2-GPU NCCL large-message fraction of per-direction link bandwidth and the
    # 2-GPU custom all-reduce latency; they scale every all-reduce curve.
    comm_eff: float = 0.75
    comm_latency_s: float = 8e-6
    # One-way copies: KV swap to host over PCIe (nvbandwidth H2D: 0.88 of Gen5 x16) and KV
    # transfer between GPUs over NVLink (p2pBandwidthLatencyTest: 0.83-0.88 per direction).
    pcie_copy_eff: float = 0.88
    nvlink_copy_eff: float = 0.85
    copy_latency_s: float = 1.0e-5
    # Fixed GPU time per elementwise kernel (launch latency, ramp-up, tail), and the fixed time
    # of a 16-bit GEMM call (scales the fitted GEMM floors).
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
    # The engine prepares the next step on the CPU while the GPU runs this one (SGLang's overlap
    # scheduler, TensorRT-LLM's PyTorch-backend overlap scheduler, vLLM's async scheduling):
    # the host's per-step work then costs only what exceeds the step's GPU (or launch) time.
    host_overlap: bool = False

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


# AMD's software stack reaches less of its peak than NVIDIA's on the same shapes: the catalog's
# best-shape GEMM fractions (MI300X 0.51 against H100 0.80) scale the H100 curves' plateaus;
# attention kernels (CK/Triton flash attention) take the old vendor-typical ratio 0.4 / 0.55.
AMD_ATTN_RATIO = 0.4 / 0.55


def params_from_curves(gpu: GpuSpec, curves: ChipCurves, base: HwParams | None = None) -> HwParams:
    """``base`` with the plateau and floor fields set to the values of ``curves`` (so that the
    curves apply unchanged); see ``hwmodels.kernels.api`` for what each field scales."""
    gemm = curves.gemm["bf16"]
    changes: dict[str, Any] = {
        "gemm_eff": gemm.compute_eff,
        "lowp_gemm_eff_ratio": curves.gemm["fp8"].compute_eff / gemm.compute_eff,
        "gemm_latency_s": gemm.floor_s,
        "gemm_m_half_tokens": 0.0,
        "overlap_p": curves.gemm_overlap_p,
        "hbm_eff": gemm.stream_eff,
        "attn_bw_eff": curves.decode["bf16"].bw_eff,
        "attn_compute_eff": curves.prefill["bf16"].compute_eff,
        "comm_latency_s": curves.allreduce["custom"][2].small_latency_s,
        "comm_eff": curves.allreduce["nccl"][2].large_bw_eff,
    }
    if gpu.vendor == "amd":
        reference = get_gpu(MEASURED_GPU[curves.chip]).gemm_eff_bf16
        ratio = gpu.gemm_eff_bf16 / reference if gpu.gemm_eff_bf16 and reference else 0.55 / 0.71
        changes["gemm_eff"] = gemm.compute_eff * ratio
        changes["attn_compute_eff"] = curves.prefill["bf16"].compute_eff * AMD_ATTN_RATIO
    return (base or HwParams()).updated(**changes)


def default_params(gpu: GpuSpec) -> HwParams:
    """Uncalibrated parameters for ``gpu``: the fitted kernel curves of its chip class
    (``hwmodels.kernels.fits``) applied to its datasheet. The host and launch defaults were
    measured on an H100 (``benchmarks/hw_microbench.py``) and describe software more than
    the chip."""
    return params_from_curves(gpu, curves_for(gpu))
