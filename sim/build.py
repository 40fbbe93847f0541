"""``build(config)``: the deployment a config describes, ready to serve.

A deployment is ``num_gpus / tp`` replicas of ``config.hardware``, or the pools of
``cluster.pools`` (``sim.cluster``: routers, disaggregation). Each replica is made by
``sim.assembly``, the one place that picks policies and hardware models by name; its names are
re-exported here (``from sim.build import make_scheduler, hardware_model`` keeps working).
``apply_preset`` fills in an ``engine.preset`` first.
"""

from __future__ import annotations

from typing import Any

from policies.presets import preset_overrides
from sim import speculative
from sim.assembly import (  # noqa: F401  (re-exported: scripts build replicas through sim.build)
    ALLOCATORS,
    PREFIX_CACHING_ALLOCATORS,
    SCHEDULERS,
    Deployment,
    ExecutorFactory,
    hardware_model,
    make_replica,
    make_scheduler,
)
from sim.cluster import build_pools
from sim.config import Config, ConfigError, check_kv_blocks, load_config, set_dotted


def build(config: Config, executor_factory: ExecutorFactory | None = None) -> Deployment:
    """Build every replica of the deployment the config describes."""
    config = apply_preset(config)
    if config.cluster.pools:  # heterogeneous or disaggregated pools
        if speculative.enabled(config):
            raise ConfigError("speculative.method: not yet supported with cluster.pools; "
                              "allowed there: none")
        return build_pools(config, executor_factory)
    hw_cfg = config.hardware
    if hw_cfg.num_gpus % hw_cfg.tp:
        raise ConfigError(f"hardware.num_gpus: {hw_cfg.num_gpus} is not a multiple of "
                          f"hardware.tp={hw_cfg.tp}")
    hw, plan = hardware_model(config)
    check_kv_blocks(hw_cfg.num_gpus // hw_cfg.tp * plan.kv_pool_blocks)
    replicas = [make_replica(config, index, hw, plan, executor_factory)
                for index in range(hw_cfg.num_gpus // hw_cfg.tp)]
    return Deployment(config, plan, hw, replicas)


def apply_preset(config: Config) -> Config:
    """The config with its ``engine.preset`` filled in under every key the user left unset."""
    if config.engine.preset is None:
        return config
    data = config.model_dump(exclude_unset=True)
    for key, value in preset_overrides(config.engine.preset).items():
        *sections, last = key.split(".")
        node: Any = data
        for part in sections:
            node = node.get(part, {})
        if last not in node:
            set_dotted(data, key, value)
    return load_config(data)
