"""Moving KV cache: swapping to host memory and shipping it to another GPU.

Used by the cluster simulation (disaggregated prefill/decode hands a request's KV to a decode
GPU) and by preemption by swapping. A copy costs a fixed latency plus bytes over the link's
per-direction bandwidth times its achieved fraction. Across nodes the link is the network: one
400 Gb/s NIC per GPU (ConnectX-7, as on HGX H100/H200) unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hwmodels.errors import CatalogError
from hwmodels.params import HwParams, default_params
from hwmodels.specs import GpuSpec, get_gpu

NIC_GBPS = 400.0  # gigabits per second per GPU
NIC_EFF = 0.8  # RDMA one-way copy fraction of line rate (large messages)
LINKS = ("nvlink", "pcie", "network")


def swap_time_s(
    gpu: str | GpuSpec | Mapping[str, Any], nbytes: float, params: HwParams | None = None
) -> float:
    """Seconds to copy ``nbytes`` of KV between GPU and host memory (either direction)."""
    g = get_gpu(gpu)
    p = params or default_params(g)
    if not g.pcie_bw_bytes_s:
        raise CatalogError(f"gpu {g.id}: no PCIe bandwidth known for swapping")
    return p.copy_latency_s + nbytes / (g.pcie_bw_bytes_s * p.pcie_copy_eff)


def transfer_time_s(
    gpu: str | GpuSpec | Mapping[str, Any],
    nbytes: float,
    link: str = "nvlink",
    *,
    params: HwParams | None = None,
    network_gbps: float = NIC_GBPS,
) -> float:
    """Seconds to send ``nbytes`` of KV to another GPU over ``link`` (nvlink, pcie, network).

    ``nvlink`` falls back to PCIe on GPUs without a scale-up fabric.
    """
    g = get_gpu(gpu)
    p = params or default_params(g)
    if link == "nvlink":
        if g.nvlink_bw_bytes_s:
            return p.copy_latency_s + nbytes / (g.link_bw_bytes_s(2) * p.nvlink_copy_eff)
        link = "pcie"
    if link == "pcie":
        return swap_time_s(g, nbytes, p)
    if link == "network":
        return p.copy_latency_s + nbytes / (network_gbps / 8 * 1e9 * NIC_EFF)
    raise CatalogError(f"kv transfer link: unknown {link!r}; allowed: {', '.join(LINKS)}")
