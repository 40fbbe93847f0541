"""KV transfer links between replicas (disaggregated prefill and decode).

Each replica has a ``LinkEnd`` (its GPUs, their KV bytes per token and link bandwidth); the
``Interconnect`` holds links as SimPy resources so concurrent transfers queue. A link's
bandwidth and latency come from ``cluster.interconnect``, else from ``hwmodels``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import simpy

from sim.config import ClusterConfig, ConfigError


@dataclass(frozen=True, slots=True)
class LinkEnd:
    """One replica's side of a KV transfer. Every TP rank moves its own KV shard over its own
    link, so a transfer takes tokens x per-GPU KV bytes / per-GPU bandwidth."""

    num_gpus: int
    kv_bytes_per_token: float  # per GPU (TP shards GQA heads; MLA latents are replicated)
    bandwidth_bytes_s: float  # per GPU, per direction

    def seconds_per_token(self) -> float:
        return self.kv_bytes_per_token / self.bandwidth_bytes_s


class Interconnect:
    """KV transfer links as SimPy resources, so concurrent transfers queue (contention).

    Per-replica links (default): a transfer holds its source's egress and its destination's
    ingress for ``latency + tokens x max(src, dst seconds per token)``; one transfer at a time
    per link at full bandwidth, which moves bytes at the same rate as sharing it. Always
    acquired egress first, and an ingress holder never waits, so no cycle can form.
    With ``shared_bandwidth_bytes_s`` every transfer queues for one link of that bandwidth
    (pools on two nodes joined by one NIC, say).
    """

    def __init__(self, ends: dict[int, LinkEnd], latency_s: float,
                 shared_bandwidth_bytes_s: float | None = None):
        self.ends, self.latency_s, self.shared_bw = ends, latency_s, shared_bandwidth_bytes_s
        self._links: dict[tuple[str, int], simpy.Resource] = {}
        self.env: simpy.Environment | None = None

    def bind(self, env: simpy.Environment) -> None:
        self.env = env
        self._links = {}

    def seconds(self, src: int, dst: int, tokens: int) -> float:
        """Time on the wire for ``tokens`` tokens of KV, queueing excluded."""
        a, b = self.ends[src], self.ends[dst]
        if self.shared_bw is not None:
            total = max(a.kv_bytes_per_token * a.num_gpus, b.kv_bytes_per_token * b.num_gpus)
            return self.latency_s + tokens * total / self.shared_bw
        return self.latency_s + tokens * max(a.seconds_per_token(), b.seconds_per_token())

    def _link(self, side: str, index: int) -> simpy.Resource:
        key = ("shared", 0) if self.shared_bw is not None else (side, index)
        if key not in self._links:
            self._links[key] = simpy.Resource(self.env, capacity=1)
        return self._links[key]

    def move(self, src: int, dst: int, tokens: int) -> Iterator[simpy.Event]:
        """A SimPy sub-process: wait for the links, then hold them for the transfer."""
        links = [self._link("out", src)]
        if self.shared_bw is None:
            links.append(self._link("in", dst))
        held = []
        for link in links:
            claim = link.request()
            yield claim
            held.append((link, claim))
        yield self.env.timeout(self.seconds(src, dst, tokens))
        for link, claim in held:
            link.release(claim)


def link_defaults(kind: str, gpu: str) -> tuple[float, float]:
    """Achieved per-GPU, per-direction bandwidth (bytes/s) and per-transfer latency (s) of a KV
    link, from ``hwmodels``: NVLink and PCIe from the GPU catalog times their measured one-way
    copy fractions; InfiniBand and RoCE as one 400 Gb/s NIC per GPU (HGX H100/H200) at its RDMA
    fraction; the fixed copy latency for all."""
    import hwmodels
    from hwmodels.transfer import NIC_EFF, NIC_GBPS

    g = hwmodels.get_gpu(gpu)
    p = hwmodels.default_params(g)
    if kind == "nvlink":
        bw = g.link_bw_bytes_s(2) * p.nvlink_copy_eff if g.nvlink_bw_bytes_s else None
    elif kind == "pcie":
        bw = g.pcie_bw_bytes_s * p.pcie_copy_eff if g.pcie_bw_bytes_s else None
    else:
        bw = NIC_GBPS / 8 * 1e9 * NIC_EFF
    if not bw:
        raise ConfigError(f"cluster.interconnect.kind: {gpu} has no {kind} bandwidth in the "
                          "catalog; set cluster.interconnect.bandwidth_gb_s")
    return bw, p.copy_latency_s


def link_of(cluster: ClusterConfig, gpu: str) -> tuple[float, float]:
    """The KV link on ``gpu``: (bytes/s per GPU per direction, latency s), config first."""
    ic = cluster.interconnect
    if ic.bandwidth_gb_s is not None and ic.latency_us is not None:
        return ic.bandwidth_gb_s * 1e9, ic.latency_us * 1e-6
    bw, latency = link_defaults(ic.kind, gpu)
    return (bw if ic.bandwidth_gb_s is None else ic.bandwidth_gb_s * 1e9,
            latency if ic.latency_us is None else ic.latency_us * 1e-6)
