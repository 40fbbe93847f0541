"""One replica from a config: the one place that turns names in a config into objects.

Policies and hardware models are picked from plain name-to-class dicts; nothing else in the
project chooses by name. A replica has its own scheduler, KV allocator (sized by the memory
planner) and executor. ``sim.build`` (a whole deployment) and ``sim.cluster`` (the replicas of
``cluster.pools``) both build their replicas here; it sits below both so that neither imports
the other's caller (``tests/test_import_layers.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core import Executor, Scheduler
from policies.chunked import ChunkedPrefillScheduler
from policies.continuous import ContinuousScheduler
from policies.kv_contiguous import ContiguousAllocator
from policies.kv_paged import PagedAllocator, PrefixCachingAllocator
from policies.kv_radix import RadixAllocator
from policies.static import StaticScheduler
from policies.swap import SwapSpace, SwapTimeExecutor
from sim import speculative
from sim.config import Config, ConfigError, with_field
from sim.engine import Replica
from sim.executors import RooflineExecutor

SCHEDULERS: dict[str, Callable[..., Scheduler]] = {
    "static": StaticScheduler,
    "continuous": ContinuousScheduler,
    "chunked_prefill": ChunkedPrefillScheduler,
}
ALLOCATORS: dict[str, Callable[..., Any]] = {
    "contiguous": ContiguousAllocator,
    "paged": PagedAllocator,
    "radix": RadixAllocator,
}
PREFIX_CACHING_ALLOCATORS: dict[str, Callable[..., Any]] = {  # kv_cache.enable_prefix_caching
    "paged": PrefixCachingAllocator,
    "radix": RadixAllocator,
}
ExecutorFactory = Callable[[Config, Scheduler, Any], Executor]


@dataclass
class Deployment:
    """What a config builds: replicas ready to serve, the memory plan and the hardware model."""

    config: Config
    plan: Any  # hwmodels.MemoryPlan of one replica
    hardware: Any  # hwmodels.RooflineModel of one replica
    replicas: list[Replica]
    router: Any = None  # sim.engine.Router; None: cluster.router over the replicas
    disaggregation: Any = None  # sim.disagg.Disaggregation when pools are prefill/decode
    num_gpus: int | None = None  # GPUs of all pools; None: hardware.num_gpus


def hardware_model(config: Config) -> tuple[Any, Any]:
    """The roofline model and memory plan of one replica; a model that does not fit is an error."""
    import hwmodels

    hw_cfg, m_cfg = config.hardware, config.model
    gpu, model = hwmodels.get_gpu(hw_cfg.gpu), hwmodels.get_model(m_cfg.name)
    try:
        plan = speculative.plan_replica_memory(  # reserves a draft's memory when on
            config, gpu, model, tp=hw_cfg.tp, weight_dtype=m_cfg.weight_dtype,
            kv_dtype=m_cfg.kv_dtype,
            gpu_memory_utilization=hw_cfg.gpu_memory_utilization,
            max_num_batched_tokens=config.scheduler.max_num_batched_tokens,
            block_size=config.kv_cache.block_size)
        profile = None if hw_cfg.profile == "none" else hw_cfg.profile
        hw = hwmodels.RooflineModel(gpu, model, tp=hw_cfg.tp, weight_dtype=m_cfg.weight_dtype,
                                    kv_dtype=m_cfg.kv_dtype, profile=profile,
                                    params=hw_cfg.params or None)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(with_field("model", exc)) from None
    return hw, plan


def make_replica(config: Config, index: int, hw: Any, plan: Any,
                 executor_factory: ExecutorFactory | None = None) -> Replica:
    """One replica of ``config.hardware`` (also each replica of a cluster pool)."""
    tp = config.hardware.tp
    scheduler = make_scheduler(config, plan.kv_pool_blocks,
                               kv_bytes_per_token=plan.kv_bytes_per_token * tp,
                               host_bw_bytes_s=_host_bw(hw, tp))
    executor = (executor_factory(config, scheduler, plan) if executor_factory
                else RooflineExecutor(hw))
    if getattr(scheduler, "swap", None) is not None:  # swaps lengthen the step they are in
        executor = SwapTimeExecutor(executor, scheduler.swap)
    if speculative.enabled(config):
        scheduler, spec_executor = speculative.speculative_replica(
            config, scheduler, None if executor_factory else executor, hw)
        executor = spec_executor or executor
    return Replica(index, scheduler, executor)


def make_scheduler(config: Config, num_blocks: int, *, kv_bytes_per_token: float | None = None,
                   host_bw_bytes_s: float | None = None) -> Scheduler:
    """The scheduler (with its own KV allocator) of one replica.

    ``kv_bytes_per_token`` (the replica's, all its GPUs) and ``host_bw_bytes_s`` (its PCIe
    bandwidth to host memory) size and time swap preemption; only that needs them.
    """
    kv, sc = config.kv_cache, config.scheduler
    if kv.allocator not in ALLOCATORS:
        raise ConfigError(f"kv_cache.allocator: '{kv.allocator}' is not available yet; "
                          f"allowed: {', '.join(ALLOCATORS)}")
    if sc.policy not in SCHEDULERS:
        raise ConfigError(f"scheduler.policy: '{sc.policy}' is not available yet; "
                          f"allowed: {', '.join(SCHEDULERS)}")
    if kv.enable_prefix_caching and kv.allocator not in PREFIX_CACHING_ALLOCATORS:
        raise ConfigError(f"kv_cache.enable_prefix_caching: the {kv.allocator} allocator has no "
                          f"prefix cache; allowed with: {', '.join(PREFIX_CACHING_ALLOCATORS)}")
    table = PREFIX_CACHING_ALLOCATORS if kv.enable_prefix_caching else ALLOCATORS
    allocator = table[kv.allocator](num_blocks, kv.block_size)
    kwargs: dict[str, Any] = dict(
        max_num_seqs=sc.max_num_seqs, max_num_batched_tokens=sc.max_num_batched_tokens,
        max_waiting=sc.max_waiting, order=sc.order, preemption=sc.preemption,
        admission=sc.admission, chunk_size=sc.chunk_size,
        max_model_len=sc.max_model_len or _model_context(config))
    if sc.policy == "chunked_prefill":
        kwargs["split_prompts"] = sc.split_prompts
        kwargs["budget_counts_decodes"] = sc.budget_counts_decodes
    if sc.preemption == "swap":
        if not kv_bytes_per_token or not host_bw_bytes_s:
            raise ConfigError("scheduler.preemption: 'swap' needs the KV bytes per token and the "
                              f"GPU's PCIe bandwidth ({config.hardware.gpu} has none); "
                              "allowed: recompute")
        kwargs["swap"] = SwapSpace(kv.swap_space_gb * 1e9, kv_bytes_per_token, host_bw_bytes_s)
    return SCHEDULERS[sc.policy](allocator, **kwargs)


def _model_context(config: Config) -> int | None:
    """The model's context length (``max_position_embeddings``), as engines default to it."""
    import hwmodels

    return hwmodels.get_model(config.model.name).max_position_embeddings


def _host_bw(hw: Any, tp: int) -> float | None:
    """PCIe bandwidth of a replica to host memory: one link per GPU, used in parallel."""
    bw = getattr(getattr(hw, "gpu", None), "host_bw_bytes_s", None)
    return bw * tp if bw else None
