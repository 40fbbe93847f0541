"""Cluster serving: routers over replicas; disaggregated prefill/decode pools with KV transfer.

Every replica has its own scheduler, KV pool and hardware, and pools may differ (GPU, TP,
batching policy). A router picks the replica of each arriving request.

Disaggregated serving (DistServe, Splitwise, vLLM's disaggregated prefill) splits the replicas
into a prefill pool and a decode pool. A request is prefilled on a prefill replica, which keeps
its KV until the KV has crossed the interconnect to a decode replica; only then may the decode
replica admit it. As in vLLM (the proxy sends the prompt with ``max_tokens=1`` to a prefill
instance, then the request to a decode instance that loads the KV and recomputes only the last
prompt token), the client's first token comes from the decode replica: TTFT includes the prefill,
the transfer (with any wait for a busy link) and the decode replica's admission wait.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import simpy

from sim.config import ClusterConfig, Config, ConfigError, PoolConfig
from sim.core import Batch, KVAllocator, Request, Scheduler, StepResult
from sim.engine import Replica, RoundRobinRouter, Router

Admitted = Callable[[Request], bool]


def scheduled_here(request: Request) -> bool:
    """A request has left an aggregated/prefill replica's queue once it was first scheduled."""
    return request.first_scheduled_time is not None or request.is_finished


def admitted_for_decode(request: Request) -> bool:
    """A prefilled request restarts at zero computed tokens; the decode replica's admission
    sets them to the transferred KV."""
    return request.num_computed_tokens > 0 or request.is_finished


def _blocks(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


# ---- routers -------------------------------------------------------------------------------


class LoadAwareRouter:
    """Base of the routers that look at load.

    A replica's scheduler only knows what it admitted; requests the router sent that are still
    queued (or, for a decode replica, still in KV transfer) are tracked here, in routing order,
    until ``admitted`` says they were taken in. The queue drains from its head, O(1) amortized
    per request; under FCFS admission that is exact, and with a priority order a request
    admitted out of turn still counts until those routed before it are admitted.
    """

    def __init__(self, admitted: Admitted = scheduled_here):
        self._admitted = admitted
        self._queued: dict[int, deque[tuple[Request, int]]] = {}
        self._queued_blocks: dict[int, int] = {}

    def route(self, request: Request, replicas: list[Replica]) -> Replica:
        replica = self.pick(request, replicas)
        blocks = _blocks(request.num_tokens, replica.scheduler.allocator.block_size)
        self._queued.setdefault(replica.index, deque()).append((request, blocks))
        self._queued_blocks[replica.index] = self._queued_blocks.get(replica.index, 0) + blocks
        return replica

    def pick(self, request: Request, replicas: list[Replica]) -> Replica:
        raise NotImplementedError

    def _drain(self, index: int) -> deque[tuple[Request, int]]:
        queue = self._queued.setdefault(index, deque())
        while queue and self._admitted(queue[0][0]):
            self._queued_blocks[index] -= queue.popleft()[1]
        return queue

    def outstanding(self, replica: Replica) -> int:
        """Requests running on the replica plus those sent to it and not yet admitted."""
        return replica.scheduler.num_running + len(self._drain(replica.index))

    def kv_load(self, replica: Replica) -> float:
        """Fraction of the KV pool in use or claimed by queued prompts (may exceed 1)."""
        self._drain(replica.index)
        alloc = replica.scheduler.allocator
        queued = self._queued_blocks.get(replica.index, 0)
        return (alloc.num_blocks_used() + queued) / alloc.num_blocks_total


class LeastOutstandingRouter(LoadAwareRouter):
    """Fewest outstanding requests (ties: lowest index), as load balancers' least-request."""

    def pick(self, request: Request, replicas: list[Replica]) -> Replica:
        return min(replicas, key=self.outstanding)


class LeastKVLoadRouter(LoadAwareRouter):
    """Lowest KV pool load (used + queued), then fewest outstanding: fits long contexts and
    heterogeneous pools, where a request count says little about memory pressure."""

    def pick(self, request: Request, replicas: list[Replica]) -> Replica:
        return min(replicas, key=lambda r: (self.kv_load(r), self.outstanding(r)))


class PrefixAwareRouter(LoadAwareRouter):
    """The replica holding the longest cached prefix of the prompt, with a load-balance term.

    score = cached fraction of the prompt - ``load_weight`` x (outstanding - least outstanding)
    / (mean outstanding + 1). With equal loads the longest cached prefix wins; a replica busier
    than the least loaded by the mean load loses a whole prompt's worth of cache, so hot
    prefixes cannot pile every request onto one replica. The cache is read through the
    allocators' side-effect-free ``lookup_prefix``: only what is cached now counts.
    """

    def __init__(self, load_weight: float = 1.0, admitted: Admitted = scheduled_here):
        super().__init__(admitted)
        self.load_weight = load_weight

    def pick(self, request: Request, replicas: list[Replica]) -> Replica:
        loads = [self.outstanding(r) for r in replicas]
        low, scale = min(loads), sum(loads) / len(loads) + 1.0
        prompt = max(1, request.prompt_tokens)
        best, best_key = replicas[0], (-math.inf, 0)
        for replica, load in zip(replicas, loads, strict=True):
            hit = replica.scheduler.allocator.lookup_prefix(request) if request.prefix_hashes else 0
            key = (hit / prompt - self.load_weight * (load - low) / scale, -load)
            if key > best_key:
                best, best_key = replica, key
        return best


class SessionAffinityRouter(LeastOutstandingRouter):
    """Every request of a session goes where its first one went (its KV is likely still
    cached there); first requests and requests without a session go to the least loaded."""

    def __init__(self, admitted: Admitted = scheduled_here):
        super().__init__(admitted)
        self._home: dict[int, int] = {}

    def pick(self, request: Request, replicas: list[Replica]) -> Replica:
        sid = request.session_id
        if sid is not None and sid in self._home:
            for replica in replicas:
                if replica.index == self._home[sid]:
                    return replica
        replica = super().pick(request, replicas)
        if sid is not None:
            self._home[sid] = replica.index
        return replica


def make_router(name: str, prefix_load_weight: float = 1.0,
                admitted: Admitted = scheduled_here) -> Router:
    """A router by its config name (``cluster.router``)."""
    if name == "round_robin":
        return RoundRobinRouter()
    if name == "least_outstanding":
        return LeastOutstandingRouter(admitted)
    if name == "least_kv":
        return LeastKVLoadRouter(admitted)
    if name == "prefix_aware":
        return PrefixAwareRouter(prefix_load_weight, admitted)
    if name == "session_affinity":
        return SessionAffinityRouter(admitted)
    raise ConfigError(f"cluster.router: unknown '{name}'; allowed: round_robin, "
                      "least_outstanding, least_kv, prefix_aware, session_affinity")


class PoolRouter:
    """Routes arrivals within one pool (the prefill pool), whatever list the engine passes."""

    def __init__(self, inner: Router, pool: list[Replica]):
        self.inner, self.pool = inner, pool

    def route(self, request: Request, replicas: list[Replica]) -> Replica:
        return self.inner.route(request, self.pool)


# ---- disaggregation ------------------------------------------------------------------------


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


class KVInbox:
    """A decode replica's allocator, plus the KV that arrived from prefill replicas.

    The scheduler admits a waiting request by asking ``lookup_prefix`` how much of it is
    already cached: for a transferred request that is its whole prompt (the scheduler caps it
    one token short, which the decode replica then computes to sample the first token). The
    arrival is forgotten at its first successful allocation, so a later recompute preemption
    really recomputes.
    """

    def __init__(self, inner: KVAllocator):
        self.inner = inner
        self.block_size = inner.block_size
        self.num_blocks_total = inner.num_blocks_total
        self._arrived: dict[int, int] = {}

    def __getattr__(self, name: str) -> Any:  # the inner allocator's extras (stats, ...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def deliver(self, request: Request, tokens: int) -> None:
        self._arrived[request.request_id] = tokens

    def num_blocks_used(self) -> int:
        return self.inner.num_blocks_used()

    def lookup_prefix(self, request: Request) -> int:
        return max(self.inner.lookup_prefix(request), self._arrived.get(request.request_id, 0))

    def allocate(self, request: Request, num_tokens: int) -> bool:
        if not self.inner.allocate(request, num_tokens):
            return False
        self._arrived.pop(request.request_id, None)
        return True

    def commit(self, request: Request) -> None:
        self.inner.commit(request)

    def free(self, request: Request) -> None:
        self.inner.free(request)

    def block_table(self, request: Request) -> list[int]:
        return self.inner.block_table(request)


class CountedKVInbox(KVInbox):
    """A KVInbox over an allocator whose growth is known (plain paged or contiguous): it says
    how many blocks a request holds, which lets the engine fast-forward runs of decode steps.
    Deliveries do not change the pool and always wake the replica, which ends any run."""

    def __init__(self, inner: KVAllocator, held: Callable[[Request], int]):
        super().__init__(inner)
        self._held = held

    def blocks_held(self, request: Request) -> int:
        return self._held(request)


def make_inbox(allocator: KVAllocator) -> KVInbox:
    """The inbox for a decode replica's allocator (counted where its growth is known)."""
    from policies.kv_contiguous import ContiguousAllocator
    from policies.kv_paged import PagedAllocator

    if getattr(type(allocator), "blocks_held", None) is not None:
        return CountedKVInbox(allocator, allocator.blocks_held)  # type: ignore[attr-defined]
    if type(allocator) in (PagedAllocator, ContiguousAllocator):
        return CountedKVInbox(allocator, lambda r: len(allocator.block_table(r)))
    return KVInbox(allocator)


class PrefillStage:
    """A prefill replica's scheduler: serves a request to its first token, then hands it off.

    The handed-off request leaves the running list at once but keeps its KV blocks until the
    transfer ends. A request that wants one output token is finished here and goes nowhere.
    Needs a scheduler with a ``running`` list (every ``policies.base.QueueingScheduler``).
    """

    def __init__(self, inner: Scheduler, index: int, disaggregation: Disaggregation):
        if not isinstance(getattr(inner, "running", None), list):
            raise TypeError(f"{type(inner).__name__}: a prefill stage needs a 'running' list")
        self.inner, self.index, self._disagg = inner, index, disaggregation
        self.allocator = inner.allocator

    def __getattr__(self, name: str) -> Any:  # the inner scheduler's extras (stats(), ...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def num_waiting(self) -> int:
        return self.inner.num_waiting

    @property
    def num_running(self) -> int:
        return self.inner.num_running

    def has_unfinished(self) -> bool:
        return self.inner.has_unfinished()

    def add_request(self, request: Request, now: float) -> bool:
        if not self._disagg.fits_decode(request):
            request.rejected_reason = (f"needs {request.max_tokens} tokens of KV; no decode "
                                       "replica's pool holds that many")
            return False
        return self.inner.add_request(request, now)

    def schedule(self, now: float) -> Batch | None:
        return self.inner.schedule(now)

    def update(self, batch: Batch, result: StepResult, now: float) -> list[Request]:
        finished = self.inner.update(batch, result, now)
        for req, pad in zip(batch.requests, batch.padding, strict=True):
            if not pad and req.num_output_tokens and req.finish_time is None:
                self.inner.running.remove(req)  # type: ignore[attr-defined]
                self._disagg.hand_off(req, self.index)
        return finished


def restart_for_decode(request: Request) -> None:
    """Forget the prefill replica's sampled token: the decode replica samples the first one."""
    request.num_computed_tokens = 0
    request.num_output_tokens = 0
    request.first_token_time = None
    request.last_token_time = None


def wake(replica: Replica) -> None:
    """Wake a replica's serve loop if it is idle (new work, or KV blocks were freed)."""
    if replica.wakeup is not None and not replica.wakeup.triggered:
        replica.wakeup.succeed()


class Disaggregation:
    """Moves prefilled requests to the decode pool over the interconnect."""

    def __init__(self, interconnect: Interconnect, decode_router: Router):
        self.interconnect, self.decode_router = interconnect, decode_router
        self.prefill: dict[int, Replica] = {}
        self.decode: list[Replica] = []
        self._inbox: dict[int, KVInbox] = {}
        self.env: simpy.Environment | None = None

    def add_prefill(self, replica: Replica) -> None:
        self.prefill[replica.index] = replica

    def add_decode(self, replica: Replica) -> None:
        """Register a decode replica; its allocator is wrapped so it can receive KV."""
        inbox = make_inbox(replica.scheduler.allocator)
        replica.scheduler.allocator = inbox  # type: ignore[misc]
        self._inbox[replica.index] = inbox
        self.decode.append(replica)

    def bind(self, env: simpy.Environment) -> None:
        """Attach to the engine's clock (call once the Engine exists, before it runs)."""
        self.env = env
        self.interconnect.bind(env)

    def _fitting(self, request: Request) -> list[Replica]:
        return [d for d in self.decode
                if _blocks(request.max_tokens, d.scheduler.allocator.block_size)
                <= d.scheduler.allocator.num_blocks_total]

    def fits_decode(self, request: Request) -> bool:
        return bool(self._fitting(request))

    def hand_off(self, request: Request, src: int) -> None:
        if self.env is None:
            raise RuntimeError("Disaggregation.bind(env) was not called before the run")
        self.env.process(self._transfer(request, self.prefill[src]))

    def _transfer(self, req: Request, src: Replica) -> Iterator[simpy.Event]:
        env, start = self.env, self.env.now
        restart_for_decode(req)
        dst = self.decode_router.route(req, self._fitting(req))
        inbox = self._inbox[dst.index]
        # Only what the decode replica does not already cache crosses the link (as vLLM's NIXL
        # connector pulls only the blocks missing locally).
        tokens = max(0, req.prompt_tokens - inbox.inner.lookup_prefix(req))
        yield from self.interconnect.move(src.index, dst.index, tokens)
        req.kv_transfer_time += env.now - start
        src.scheduler.allocator.free(req)
        wake(src)
        inbox.deliver(req, req.prompt_tokens)
        if not dst.scheduler.add_request(req, env.now):
            raise RuntimeError(f"decode replica {dst.index} refused request {req.request_id}: "
                               f"{req.rejected_reason}")
        wake(dst)


# ---- building a cluster from the config ----------------------------------------------------

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


def pool_config(config: Config, pool: PoolConfig) -> Config:
    """The config one replica of ``pool`` is built from: the top level with the pool's values."""
    data = config.model_dump()
    hw, sched = data["hardware"], data["scheduler"]
    hw["gpu"] = pool.gpu or hw["gpu"]
    hw["tp"] = pool.tp or hw["tp"]
    hw["num_gpus"] = hw["tp"]
    for key in ("policy", "max_num_seqs", "max_num_batched_tokens"):
        if getattr(pool, key) is not None:
            sched[key] = getattr(pool, key)
    if pool.role == "decode":
        sched["max_waiting"] = None  # the queue limit applies at the front door, the prefill pool
    data["cluster"] = {}
    return Config.model_validate(data)


def check_pools(config: Config) -> None:
    """Pool roles and GPU counts that make sense, else a one-line ConfigError."""
    pools = config.cluster.pools
    roles = {p.role for p in pools}
    if roles & {"prefill", "decode"} and roles != {"prefill", "decode"}:
        raise ConfigError("cluster.pools: disaggregated serving needs prefill and decode pools "
                          f"and no 'both' pool (got roles {sorted(roles)})")
    for i, pool in enumerate(pools):
        tp = pool.tp or config.hardware.tp
        if pool.num_gpus % tp:
            raise ConfigError(f"cluster.pools.{i}.num_gpus: {pool.num_gpus} is not a multiple "
                              f"of tp={tp}")
    total = sum(p.num_gpus for p in pools)
    if "num_gpus" in config.hardware.model_fields_set and config.hardware.num_gpus != total:
        raise ConfigError(f"hardware.num_gpus: {config.hardware.num_gpus} disagrees with "
                          f"cluster.pools ({total} GPUs); leave it unset or make it {total}")


def build_pools(config: Config, executor_factory: Any = None) -> Any:
    """Build the replicas of ``cluster.pools``, the router and, if any, the disaggregation."""
    from sim.build import Deployment, hardware_model, make_replica

    check_pools(config)
    cl = config.cluster
    disaggregated = any(p.role == "prefill" for p in cl.pools)
    decode_router = make_router(cl.decode_router, cl.prefix_load_weight, admitted_for_decode)
    ends: dict[int, LinkEnd] = {}
    # The link of the first pool's GPU sets the latency (and the bandwidth of a shared link).
    shared_bw, latency_s = None, 0.0
    if disaggregated:
        shared_bw, latency_s = link_of(cl, cl.pools[0].gpu or config.hardware.gpu)
    disagg = Disaggregation(
        Interconnect(ends, latency_s, shared_bw if cl.interconnect.shared else None),
        decode_router)
    replicas: list[Replica] = []
    first: tuple[Any, Any] | None = None
    for pool in cl.pools:
        pcfg = pool_config(config, pool)
        hw, plan = hardware_model(pcfg)
        first = first or (hw, plan)
        bandwidth = link_of(cl, pcfg.hardware.gpu)[0] if disaggregated else 1.0
        for _ in range(pool.num_gpus // pcfg.hardware.tp):
            replica = make_replica(pcfg, len(replicas), hw, plan, executor_factory)
            ends[replica.index] = LinkEnd(pcfg.hardware.tp, plan.kv_bytes_per_token, bandwidth)
            if pool.role == "prefill":
                replica.scheduler = PrefillStage(replica.scheduler, replica.index, disagg)
                disagg.add_prefill(replica)
            elif pool.role == "decode":
                disagg.add_decode(replica)
            replicas.append(replica)
    router = make_router(cl.router, cl.prefix_load_weight)
    if disaggregated:
        router = PoolRouter(router, list(disagg.prefill.values()))
    hw, plan = first
    return Deployment(config, plan, hw, replicas, router=router,
                      disaggregation=disagg if disaggregated else None,
                      num_gpus=sum(p.num_gpus for p in cl.pools))


def cluster_summary(requests: pd.DataFrame, disaggregated: bool) -> dict:
    """KV transfer statistics of a disaggregated run (ms), for the summary."""
    if not disaggregated:
        return {}
    done = requests[~requests["rejected"]]
    ms = done["kv_transfer_time"].to_numpy(dtype=np.float64) * 1e3
    return {
        "mean_kv_transfer_ms": float(ms.mean()) if ms.size else math.nan,
        "p90_kv_transfer_ms": float(np.percentile(ms, 90)) if ms.size else math.nan,
    }
