"""GPU specifications: the catalog's datasheet numbers in SI units, plus user what-ifs.

A ``GpuSpec`` holds peaks only (bytes, bytes/s, FLOP/s). What fraction of a peak real kernels
reach is a separate concern (``hwmodels.params``), so that one calibration profile can be
applied to a what-if GPU ("an H100 with twice the bandwidth") without touching its numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from hwmodels.catalog import load_catalog, unwrap
from hwmodels.errors import CatalogError

GB = 1e9
GIB = 2**30
TERA = 1e12

# Short names users type. Each maps to one catalog id; the catalog ids themselves also work.
GPU_ALIASES: dict[str, str] = {
    "a100": "a100-sxm4-80gb",
    "a100-80gb": "a100-sxm4-80gb",
    "a100-40gb": "a100-sxm4-40gb",
    "a100-pcie": "a100-pcie-80gb",
    "h100": "h100-sxm5-80gb",
    "h100-sxm": "h100-sxm5-80gb",
    "h100-pcie": "h100-pcie-80gb",
    "h100-nvl": "h100-nvl-94gb",
    "h200": "h200-sxm-141gb",
    "b200": "b200-sxm-180gb",
    "gb200": "gb200-per-gpu",
    "b300": "b300-sxm-288gb",
    "gb300": "gb300-per-gpu",
    "l40s": "l40s",
    "mi300x": "mi300x",
    "mi325x": "mi325x",
    "mi355x": "mi355x",
}

# Compute precisions a GPU may have a tensor-core peak for (catalog ``tflops_dense`` keys).
COMPUTE_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp6", "fp4")


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One accelerator, per GPU, in SI units (bytes, bytes/s, FLOP/s).

    ``nvlink_bw_bytes_s`` and ``pcie_bw_bytes_s`` are per direction: what one GPU can send
    while it receives as much (ring collectives and one-way copies use this, not the
    bidirectional headline). ``p2p_bw_bytes_s`` is set for point-to-point fabrics (AMD
    Infinity Fabric), where one peer pair gets a single link. ``base_id`` names the catalog
    entry whose calibration profile applies (a what-if GPU keeps its base's profile).
    """

    id: str
    name: str
    vendor: str
    memory_bytes: float
    hbm_bw_bytes_s: float
    peak_flops_s: Mapping[str, float] = field(hash=False)
    nvlink_bw_bytes_s: float | None = None
    pcie_bw_bytes_s: float | None = None
    p2p_bw_bytes_s: float | None = None
    nvlink_max_gpus: int | None = None  # an NVLink bridge joins 2 GPUs; more go over PCIe
    sm_count: int | None = None
    l2_bytes: float | None = None
    architecture: str = ""
    base_id: str = ""
    gemm_eff_bf16: float | None = None  # measured best-shape GEMM fraction of peak (catalog)
    gemm_eff_fp8: float | None = None

    def peak(self, dtype: str) -> float | None:
        """Dense tensor-core FLOP/s for ``dtype`` (fp16 falls back to bf16), None if absent."""
        value = self.peak_flops_s.get(dtype)
        if value is None and dtype == "fp16":
            value = self.peak_flops_s.get("bf16")
        return value

    def has(self, dtype: str) -> bool:
        return self.peak(dtype) is not None

    def link_bw_bytes_s(self, num_gpus: int) -> float:
        """Per-direction bandwidth one GPU gets in a collective over ``num_gpus`` GPUs.

        NVLink/xGMI when the GPU has a scale-up fabric, else PCIe. On a point-to-point fabric a
        GPU reaches its peers over ``num_gpus - 1`` links, so small groups get less.
        """
        bridged_out = self.nvlink_max_gpus is not None and num_gpus > self.nvlink_max_gpus
        if self.nvlink_bw_bytes_s and not bridged_out:
            if self.p2p_bw_bytes_s:
                return min(self.nvlink_bw_bytes_s, self.p2p_bw_bytes_s * max(1, num_gpus - 1))
            return self.nvlink_bw_bytes_s
        if self.pcie_bw_bytes_s:
            return self.pcie_bw_bytes_s
        raise CatalogError(f"gpu {self.id}: no NVLink or PCIe bandwidth known for multi-GPU work")

    @property
    def host_bw_bytes_s(self) -> float | None:
        """Per-direction host link (PCIe) bandwidth, for KV swapping to CPU memory."""
        return self.pcie_bw_bytes_s

    @property
    def memory_gb(self) -> float:
        """The vendor's capacity label (GiB-sized, see the class docstring)."""
        return self.memory_bytes / GIB

    @property
    def short_name(self) -> str:
        """The alias users know it by (``h100``), else its id."""
        for alias, gid in GPU_ALIASES.items():
            if gid == self.base_id and alias == self.base_id.split("-")[0]:
                return alias
        for alias, gid in GPU_ALIASES.items():
            if gid == self.id:
                return alias
        return self.id

    def with_overrides(self, **changes: Any) -> GpuSpec:
        """A what-if copy: ``gpu.with_overrides(hbm_bw_bytes_s=2 * gpu.hbm_bw_bytes_s)``."""
        if "peak_flops_s" in changes:
            changes["peak_flops_s"] = MappingProxyType(dict(changes["peak_flops_s"]))
        changes.setdefault("id", f"{self.id}-whatif")
        return replace(self, **changes)


def _measured_fractions() -> dict[str, dict[str, float]]:
    """Catalog ``measured_efficiency`` GEMM fractions by gpu id: {'bf16': f, 'fp8': f}."""
    out: dict[str, dict[str, float]] = {}
    metrics = {"bf16_gemm_max_achievable": "bf16", "fp8_gemm_max_achievable": "fp8"}
    for entry in load_catalog("gpus")["measured_efficiency"]:
        dtype = metrics.get(entry["metric"])
        if dtype is None:
            continue
        for row in entry["results"]:
            out.setdefault(str(row["gpu"]), {})[dtype] = float(row["fraction"])
    return out


def _gemm_fractions(gpu_id: str) -> dict[str, float]:
    """Measured GEMM fractions of ``gpu_id``; a dtype it lacks is taken from a catalog GPU of
    the same chip and form factor (the H200 SXM has the H100 SXM's GH100 die and clocks)."""
    table = _measured_fractions()
    own = dict(table.get(gpu_id, {}))
    raw = _catalog_gpus().get(gpu_id)
    if raw is None:
        return own
    for other_id, other in _catalog_gpus().items():
        same = (other.get("architecture"), other.get("form_factor")) == (
            raw.get("architecture"),
            raw.get("form_factor"),
        )
        if other_id != gpu_id and same:
            for dtype, fraction in table.get(other_id, {}).items():
                own.setdefault(dtype, fraction)
    return own


def _bridge_gpus(raw: Mapping[str, Any]) -> int | None:
    """GPUs one NVLink bridge joins (``NVLink bridge (2 GPUs)``), None for a switched fabric."""
    kind = str((raw.get("scaleup_interconnect") or {}).get("type") or "")
    found = re.search(r"bridge \((\d+) GPUs\)", kind)
    return int(found.group(1)) if found else None


def _interconnect(raw: Mapping[str, Any]) -> tuple[float | None, float | None, float | None]:
    scaleup = raw.get("scaleup_interconnect") or {}
    nvlink = scaleup.get("bw_gbps_per_direction")
    p2p = scaleup.get("peer_to_peer_gbps_per_direction")
    pcie = raw.get("pcie") or {}
    pcie_bidir = pcie.get("bw_gbps_bidirectional")
    return (
        nvlink * GB if nvlink else None,
        pcie_bidir / 2 * GB if pcie_bidir else None,
        p2p * GB if p2p else None,
    )


def gpu_from_mapping(raw: Mapping[str, Any], gpu_id: str | None = None) -> GpuSpec:
    """Build a spec from a catalog-shaped mapping (``memory_gb``, ``tflops_dense``, ...).

    This is how user-defined GPUs enter: the same field names and units as ``gpus.yaml``.
    """
    raw = unwrap(dict(raw))
    gid = str(gpu_id or raw.get("id") or "custom-gpu")
    for key in ("memory_gb", "memory_bw_gbps", "tflops_dense"):
        if raw.get(key) is None:
            raise CatalogError(f"gpu {gid}: field {key} is required for a user-defined GPU")
    flops = {k: float(v) * TERA for k, v in raw["tflops_dense"].items() if v is not None}
    nvlink, pcie, p2p = _interconnect(raw)
    fractions = _gemm_fractions(str(raw.get("base_id") or gid))
    l2 = raw.get("l2_cache_mb")
    return GpuSpec(
        id=gid,
        name=str(raw.get("name") or gid),
        vendor=str(raw.get("vendor") or "nvidia"),
        memory_bytes=float(raw["memory_gb"]) * GIB,
        hbm_bw_bytes_s=float(raw["memory_bw_gbps"]) * GB,
        peak_flops_s=MappingProxyType(flops),
        nvlink_bw_bytes_s=nvlink,
        pcie_bw_bytes_s=pcie,
        p2p_bw_bytes_s=p2p,
        nvlink_max_gpus=_bridge_gpus(raw),
        sm_count=int(raw["sm_count"]) if raw.get("sm_count") else None,
        l2_bytes=float(l2) * 1e6 if l2 else None,
        architecture=str(raw.get("architecture") or ""),
        base_id=str(raw.get("base_id") or gid),
        gemm_eff_bf16=fractions.get("bf16"),
        gemm_eff_fp8=fractions.get("fp8"),
    )


def _catalog_gpus() -> dict[str, Mapping[str, Any]]:
    return {g["id"]: g for g in load_catalog("gpus")["gpus"]}


def list_gpus() -> list[str]:
    """Every accepted GPU name: short aliases first, then catalog ids."""
    return sorted(GPU_ALIASES) + sorted(set(_catalog_gpus()) - set(GPU_ALIASES))


def resolve_gpu_id(name: str) -> str:
    key = name.strip().lower()
    ids = _catalog_gpus()
    if key in ids:
        return key
    if key in GPU_ALIASES:
        return GPU_ALIASES[key]
    raise CatalogError(f"hardware.gpu: unknown GPU {name!r}; allowed: {', '.join(list_gpus())}")


def get_gpu(gpu: str | GpuSpec | Mapping[str, Any]) -> GpuSpec:
    """A GPU by catalog id, alias, spec, or mapping.

    A mapping with ``base: h100`` starts from that catalog GPU and overrides the fields given
    (catalog names and units: ``memory_bw_gbps: 6700``, ``tflops_dense: {bf16: 2000}``); a
    mapping without ``base`` must give ``memory_gb``, ``memory_bw_gbps`` and ``tflops_dense``.
    """
    if isinstance(gpu, GpuSpec):
        return gpu
    if isinstance(gpu, str):
        gid = resolve_gpu_id(gpu)
        return gpu_from_mapping(_catalog_gpus()[gid], gid)
    if isinstance(gpu, Mapping):
        raw = dict(gpu)
        base = raw.pop("base", None)
        if base is None:
            return gpu_from_mapping(raw)
        base_id = resolve_gpu_id(str(base))
        merged = dict(unwrap(dict(_catalog_gpus()[base_id])))
        if "tflops_dense" in raw:
            merged["tflops_dense"] = {**merged["tflops_dense"], **raw.pop("tflops_dense")}
        merged.update(raw)
        merged["base_id"] = base_id
        merged.setdefault("id", base_id)
        if merged["id"] == base_id and raw:
            merged["id"] = f"{base_id}-whatif"
        return gpu_from_mapping(merged, merged["id"])
    raise CatalogError(f"hardware.gpu: expected a name or a mapping, got {type(gpu).__name__}")
