"""Package data: ``gpus.yaml``, ``models.yaml`` and their ``README.md`` (sources and units).

``load_catalog(name)`` reads a file once and unwraps ``{value, uncertain, note}`` fields into plain
values, so the spec loaders never see the uncertainty markup (it stays in the YAML for readers).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml


def unwrap(value: Any) -> Any:
    """Turn ``{value: X, uncertain: ..., note: ...}`` into ``X``, recursively."""
    if isinstance(value, dict):
        if "value" in value and set(value) <= {"value", "uncertain", "note"}:
            return unwrap(value["value"])
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


@cache
def load_catalog(name: str) -> dict[str, Any]:
    """The parsed, unwrapped ``<name>.yaml`` of this folder (cached: the files never change)."""
    text = resources.files(__package__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return unwrap(yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
