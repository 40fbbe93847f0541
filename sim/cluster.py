"""Building a cluster from ``cluster.pools``: replicas per pool, routers, disaggregation.

Every replica has its own scheduler, KV pool and hardware, and pools may differ (GPU, TP,
batching policy). Routers are in ``sim.routers``; the prefill/decode split and its KV transfer
are in ``sim.disagg`` and ``sim.interconnect``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from sim.assembly import Deployment, hardware_model, make_replica
from sim.config import Config, ConfigError, PoolConfig, check_kv_blocks
from sim.disagg import Disaggregation, PrefillStage, admitted_for_decode
from sim.engine import Replica
from sim.interconnect import Interconnect, LinkEnd, link_of
from sim.routers import PoolRouter, make_router


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


def build_pools(config: Config, executor_factory: Any = None) -> Deployment:
    """Build the replicas of ``cluster.pools``, the router and, if any, the disaggregation."""
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
    blocks = 0
    for i, pool in enumerate(cl.pools):
        pcfg = pool_config(config, pool)
        hw, plan = hardware_model(pcfg)
        blocks += pool.num_gpus // pcfg.hardware.tp * plan.kv_pool_blocks
        check_kv_blocks(blocks, f"cluster.pools.{i}.num_gpus")
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
