"""servesim's simulator: ``sim.simulate(config) -> Result``.

Imports are lazy so that ``sim.core`` (the old name of the vocabulary, now the package ``core``)
does not pull in SimPy and pandas.
"""

from typing import Any

__all__ = ["simulate", "Result", "Config", "load_config", "ConfigError"]


def __getattr__(name: str) -> Any:
    if name in ("simulate", "Result"):
        from sim import api

        return getattr(api, name)
    if name in ("Config", "load_config", "ConfigError"):
        from sim import config

        return getattr(config, name)
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
