"""``build(config)``: the one place that turns names in a config into objects.

Policies and hardware models are picked from plain name-to-class dicts; nothing else in the
project chooses by name. A deployment is ``num_gpus / tp`` replicas, each with its own scheduler,
KV allocator (sized by the memory planner) and executor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from policies.continuous import ContinuousScheduler
from policies.kv_contiguous import ContiguousAllocator
from policies.kv_paged import PagedAllocator
from policies.static import StaticScheduler
from sim import speculative
from sim.config import Config, ConfigError
from sim.core import Executor, Scheduler
from sim.engine import Replica
from sim.executors import RooflineExecutor

SCHEDULERS: dict[str, Callable[..., Scheduler]] = {
    "static": StaticScheduler,
    "continuous": ContinuousScheduler,
}
ALLOCATORS: dict[str, Callable[..., Any]] = {
    "contiguous": ContiguousAllocator,
    "paged": PagedAllocator,
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
    disaggregation: Any = None  # sim.cluster.Disaggregation when pools are prefill/decode
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
                                    kv_dtype=m_cfg.kv_dtype, profile=profile)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None
    return hw, plan


def build(config: Config, executor_factory: ExecutorFactory | None = None) -> Deployment:
    """Build every replica of the deployment the config describes."""
    if config.cluster.pools:  # heterogeneous or disaggregated pools
        from sim.cluster import build_pools

        return build_pools(config, executor_factory)
    hw_cfg = config.hardware
    if hw_cfg.num_gpus % hw_cfg.tp:
        raise ConfigError(f"hardware.num_gpus: {hw_cfg.num_gpus} is not a multiple of "
                          f"hardware.tp={hw_cfg.tp}")
    hw, plan = hardware_model(config)
    replicas = []
    for index in range(hw_cfg.num_gpus // hw_cfg.tp):
        scheduler = make_scheduler(config, plan.kv_pool_blocks)
        executor = (executor_factory(config, scheduler, plan) if executor_factory
                    else RooflineExecutor(hw))
        if speculative.enabled(config):
            scheduler, spec_executor = speculative.speculative_replica(
                config, scheduler, None if executor_factory else executor, hw)
            executor = spec_executor or executor
        replicas.append(Replica(index, scheduler, executor))
    return Deployment(config, plan, hw, replicas)


def make_scheduler(config: Config, num_blocks: int) -> Scheduler:
    """The scheduler (with its own KV allocator) of one replica."""
    kv, sc = config.kv_cache, config.scheduler
    if kv.allocator not in ALLOCATORS:
        raise ConfigError(f"kv_cache.allocator: '{kv.allocator}' is not available yet; "
                          f"allowed: {', '.join(ALLOCATORS)}")
    if sc.policy not in SCHEDULERS:
        raise ConfigError(f"scheduler.policy: '{sc.policy}' is not available yet; "
                          f"allowed: {', '.join(SCHEDULERS)}")
    allocator = ALLOCATORS[kv.allocator](num_blocks, kv.block_size)
    return SCHEDULERS[sc.policy](allocator, max_num_seqs=sc.max_num_seqs,
                                 max_num_batched_tokens=sc.max_num_batched_tokens,
                                 max_waiting=sc.max_waiting)
