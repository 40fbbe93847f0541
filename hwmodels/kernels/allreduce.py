"""All-reduce time over the GPUs of one NVLink domain.

Each protocol costs a latency (which grows with the rank count: more peers to synchronize)
plus its bytes over a fraction of the per-direction link bandwidth, and the library takes the
faster: NCCL switches from its low-latency protocols (LL/LL128: small latency, a fraction of the
bandwidth) to Simple for large messages; custom all-reduce kernels (TensorRT-LLM, vLLM, SGLang)
use one-shot (every GPU reads every peer's whole buffer: (n-1) x bytes) for small messages and
two-shot (reduce-scatter + all-gather: 2 (n-1)/n x bytes) above. A ring all-reduce moves
2 (n-1)/n bytes per byte reduced through each GPU's link.

Two limits of the custom kernels, each a curve field the fit chooses per chip:
- ``max_ctas``: a one-shot kernel launches one CTA per ``ONE_SHOT_CTA_BYTES`` of message (512
  threads loading 16 bytes each from every rank), up to ``max_ctas`` (TensorRT-LLM's
  ``MAX_ALL_REDUCE_BLOCKS`` = 24). Each CTA pulls its peers' data at a rate set by the loads it
  keeps in flight over the NVLink round trip, so a message that fills only some of the CTAs
  reaches that share of the full grid's bandwidth: the time stays flat from 8 KB until the
  grid is full (192 KB), then grows with the bytes.
- ``max_bytes``: the kernels work in a fixed IPC workspace registered at start-up; a message
  larger than it goes to NCCL (TensorRT-LLM's ``ifFallbackToNCCL``).
"""

from __future__ import annotations

import math

from hwmodels.kernels.fits import AllReduceCurve

ONE_SHOT_CTA_BYTES = 512 * 16  # one CTA of 512 threads x one 16-byte vector per rank


def bytes_on_link(impl: str, protocol: str, ranks: int, nbytes: float) -> float:
    """Bytes through one GPU's link for an all-reduce of ``nbytes``."""
    if impl == "custom" and protocol == "small":  # one-shot: read every peer's buffer
        return (ranks - 1) * nbytes
    return 2.0 * (ranks - 1) / ranks * nbytes  # ring / two-shot


def one_shot_ctas(curve: AllReduceCurve, nbytes: float) -> int:
    """CTAs a one-shot kernel launches for ``nbytes``: one per ``ONE_SHOT_CTA_BYTES``, at most
    ``max_ctas``."""
    return min(curve.max_ctas, max(1, math.ceil(nbytes / ONE_SHOT_CTA_BYTES)))


def protocol_time(
    curve: AllReduceCurve, impl: str, protocol: str, ranks: int, nbytes: float, link_bytes_s: float
) -> float:
    moved = bytes_on_link(impl, protocol, ranks, nbytes)
    if protocol == "large":
        return curve.large_latency_s + moved / (link_bytes_s * curve.large_bw_eff)
    seconds = curve.small_latency_s + moved / (link_bytes_s * curve.small_bw_eff)
    if impl == "custom" and curve.max_ctas > 0:  # each byte also waits on its CTA's pulls
        seconds += moved / (one_shot_ctas(curve, nbytes) * curve.cta_bw_eff * link_bytes_s)
    return seconds


def takes(curve: AllReduceCurve, impl: str, nbytes: float) -> bool:
    """Whether ``impl``'s kernels run a message of ``nbytes`` (custom ones only up to their
    workspace, ``max_bytes``; NCCL any)."""
    return impl != "custom" or nbytes <= curve.max_bytes


def allreduce_time(
    curve: AllReduceCurve, impl: str, ranks: int, nbytes: float, link_bytes_s: float
) -> tuple[float, str]:
    """(seconds, protocol) of the faster protocol of ``impl``."""
    small = protocol_time(curve, impl, "small", ranks, nbytes, link_bytes_s)
    large = protocol_time(curve, impl, "large", ranks, nbytes, link_bytes_s)
    return (small, "small") if small <= large else (large, "large")
