"""All-reduce time over the GPUs of one NVLink domain.

Each protocol costs a latency (which grows with the rank count: more peers to synchronize)
plus its bytes over a fraction of the per-direction link bandwidth, and the library takes the
faster: NCCL switches from its low-latency protocols (LL/LL128: small latency, a fraction of the
bandwidth) to Simple for large messages; custom all-reduce kernels (TensorRT-LLM, vLLM, SGLang)
use one-shot (every GPU reads every peer's whole buffer: (n-1) x bytes) for small messages and
two-shot (reduce-scatter + all-gather: 2 (n-1)/n x bytes) above, and hand large messages to NCCL.
A ring all-reduce moves 2 (n-1)/n bytes per byte reduced through each GPU's link.
"""

from __future__ import annotations

from hwmodels.kernels.fits import AllReduceCurve


def bytes_on_link(impl: str, protocol: str, ranks: int, nbytes: float) -> float:
    """Bytes through one GPU's link for an all-reduce of ``nbytes``."""
    if impl == "custom" and protocol == "small":  # one-shot: read every peer's buffer
        return (ranks - 1) * nbytes
    return 2.0 * (ranks - 1) / ranks * nbytes  # ring / two-shot


def protocol_time(
    curve: AllReduceCurve, impl: str, protocol: str, ranks: int, nbytes: float, link_bytes_s: float
) -> float:
    latency, eff = (
        (curve.small_latency_s, curve.small_bw_eff)
        if protocol == "small"
        else (curve.large_latency_s, curve.large_bw_eff)
    )
    return latency + bytes_on_link(impl, protocol, ranks, nbytes) / (link_bytes_s * eff)


def allreduce_time(
    curve: AllReduceCurve, impl: str, ranks: int, nbytes: float, link_bytes_s: float
) -> tuple[float, str]:
    """(seconds, protocol) of the faster protocol of ``impl``."""
    small = protocol_time(curve, impl, "small", ranks, nbytes, link_bytes_s)
    large = protocol_time(curve, impl, "large", ranks, nbytes, link_bytes_s)
    return (small, "small") if small <= large else (large, "large")
