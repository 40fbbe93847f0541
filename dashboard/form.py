"""The sidebar form as data: which config keys get a widget, and widget state <-> config.

The fields are discovered from ``Config.model_fields`` at runtime, not listed here, so a section
or key that another part of servesim adds (``speculative``, prefix caching, ``workload.trace``)
gets a widget as soon as it exists. Widget state lives in a flat dict (Streamlit's session
state) under ``"<side>|<dotted.key>"``: side ``A`` or ``B`` for per-configuration keys and ``W``
for the shared workload, SLOs and seed, so both configurations always see the same requests.

This module has no Streamlit import: the mapping between the two worlds is tested on its own.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel

from sim.config import Config, load_config

SIDES = ("A", "B")
SHARED = "W"
SHARED_SECTIONS = ("seed", "workload", "slo")
CUSTOM_GPU = "custom"
# The composite widgets of a custom GPU: (state suffix, catalog field, label).
CUSTOM_GPU_FIELDS = (
    ("memory_gb", "memory_gb", "memory (GB)"),
    ("memory_bw_gbps", "memory_bw_gbps", "memory bandwidth (GB/s)"),
    ("tflops_bf16", "bf16", "dense BF16 TFLOPS"),
    ("tflops_fp8", "fp8", "dense FP8 TFLOPS (0: none)"),
)
# Parameters each length distribution takes from widgets (``empirical`` comes from YAML only).
LENGTH_PARAMS: dict[str, tuple[str, ...]] = {
    "fixed": ("value",),
    "uniform": ("low", "high"),
    "lognormal": ("mean", "sigma", "min", "max"),
    "normal": ("mean", "sigma", "min", "max"),
}
# What the dashboard starts with where it differs from Config's defaults: B is A with FP8
# weights and KV cache, a common first what-if; 500 requests keep the first render quick; the
# SLOs are interactive-chat targets to start from (goodput and the advisor need some).
DEFAULT_OVERRIDES: dict[str, dict[str, Any]] = {
    "A": {},
    "B": {"model.weight_dtype": "fp8", "model.kv_dtype": "fp8"},
    SHARED: {"workload.num_requests": 500, "slo.ttft_ms": 500.0, "slo.tpot_ms": 30.0},
}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One config key with a widget: ``kind`` is select, int, float, bool, text or length."""

    key: str  # dotted config key, e.g. "scheduler.policy"
    kind: str
    default: Any
    options: tuple[Any, ...] = ()
    optional: bool = False  # None is a valid value (an empty number box)
    min_value: float | None = None
    help: str = ""

    @property
    def section(self) -> str:
        return self.key.split(".")[0] if "." in self.key else ""

    @property
    def shared(self) -> bool:
        return self.key.split(".")[0] in SHARED_SECTIONS


def state_key(side: str, key: str) -> str:
    return f"{side}|{key}"


def side_of(spec: FieldSpec, side: str) -> str:
    """The state side a field is stored under for configuration ``side``."""
    return SHARED if spec.shared else side


def _options(key: str, annotation: Any) -> tuple[Any, ...]:
    """Choices for a key: the Literal's values, or the catalog's names for catalog keys."""
    import hwmodels

    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        values = args
        workload_keys = Config.model_fields["workload"].annotation.model_fields
        if key == "workload.arrival" and "trace" not in workload_keys:
            values = tuple(v for v in values if v != "trace")  # no trace file key yet
        return values
    catalog = {
        "hardware.gpu": lambda: hwmodels.list_gpus(),
        "model.name": lambda: hwmodels.list_models(),
        "model.weight_dtype": lambda: list(hwmodels.WEIGHT_FORMATS),
        "model.kv_dtype": lambda: list(hwmodels.KV_FORMATS),
        "engine.preset": preset_names,
        "speculative.draft_model": lambda: hwmodels.list_models(),
    }
    return tuple(catalog[key]()) if key in catalog else ()


def preset_names() -> list[str]:
    """Engine presets, when ``policies.presets`` exists (empty list until then)."""
    try:
        from policies import presets
    except ImportError:
        return []
    for name in ("PRESETS", "presets", "ENGINE_PRESETS"):
        table = getattr(presets, name, None)
        if isinstance(table, Mapping):
            return sorted(table)
    lister = getattr(presets, "list_presets", None)
    return sorted(lister()) if callable(lister) else []


def preset_state(side: str, old: str | None, new: str | None) -> dict[str, Any]:
    """Widget values after switching ``engine.preset`` from ``old`` to ``new``.

    The keys the old preset set go back to Config's defaults, then the new preset's values are
    shown in the widgets, so what the sidebar shows is what runs (a preset only fills keys the
    user leaves unset, and a widget at its default is left out of the YAML).
    """
    try:
        from policies.presets import preset_overrides
    except ImportError:
        return {}
    specs = {s.key: s for s in field_specs()}
    defaults = Config.model_construct().model_dump()
    state: dict[str, Any] = {}
    for name, values in ((old, None), (new, "new")):
        if name is None:
            continue
        for key, value in preset_overrides(name).items():
            if key in specs and not specs[key].shared:
                state[state_key(side, key)] = value if values else get_dotted(defaults, key)
    return state


def _kind(annotation: Any) -> tuple[str | None, bool]:
    """(widget kind, optional) of a field's annotation; kind None means no widget."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    optional = type(None) in args
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if set(rest) == {int, dict[str, Any]} or (int in rest and any(
                typing.get_origin(a) is dict for a in rest)):
            return "length", optional
        if len(rest) == 1:
            return _kind(rest[0])[0], optional
        if str in rest:  # a name or a mapping (hardware.gpu): the name's widget
            return "text", optional
        return None, optional
    if origin is Literal:
        return "select", False
    return {bool: "bool", int: "int", float: "float", str: "text"}.get(annotation), False


def _min_value(info: Any) -> float | None:
    for meta in info.metadata:
        if getattr(meta, "ge", None) is not None:
            return meta.ge
    return None


def _unwrap_optional(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return args[0] if is_union and len(args) == 1 else annotation


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _section_specs(section: str, model: type[BaseModel]) -> list[FieldSpec]:
    """Widgets of a section, nested sections included (``speculative.acceptance.rate``)."""
    out = []
    for name, info in model.model_fields.items():
        key = f"{section}.{name}"
        if _is_section(info.annotation):
            out.extend(_section_specs(key, info.annotation))
            continue
        kind, optional = _kind(info.annotation)
        if kind is None:
            continue  # mappings and lists stay as the uploaded YAML has them
        options = _options(key, _unwrap_optional(info.annotation))
        if options and kind == "text":
            kind = "select"
        out.append(FieldSpec(key, kind, info.get_default(call_default_factory=True),
                             tuple(options), optional, _min_value(info), info.description or ""))
    return out


@lru_cache(maxsize=1)
def field_specs() -> tuple[FieldSpec, ...]:
    """Every config key that gets a widget, in Config's order (sections, then their keys)."""
    specs: list[FieldSpec] = []
    for name, info in Config.model_fields.items():
        annotation = info.annotation
        if _is_section(annotation):
            specs.extend(_section_specs(name, annotation))
            continue
        kind, optional = _kind(annotation)
        if kind is not None:
            specs.append(FieldSpec(name, kind, info.get_default(call_default_factory=True),
                                   (), optional, _min_value(info), info.description or ""))
    return tuple(specs)


@lru_cache(maxsize=1)
def custom_gpu_supported() -> bool:
    """Whether ``hardware.gpu`` accepts a spec mapping (``{base: h100, memory_bw_gbps: ...}``)."""
    try:
        load_config({"hardware": {"gpu": {"base": "h100", "memory_bw_gbps": 4000}}})
    except ValueError:
        return False
    return True


def get_dotted(data: Mapping, key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def set_dotted(data: dict, key: str, value: Any) -> None:
    *path, last = key.split(".")
    node = data
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value


def _length_state(spec: Any, prefix: str) -> dict[str, Any]:
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return {prefix: "fixed", f"{prefix}.value": int(spec)}
    state = {prefix: spec.get("dist", "fixed")}
    for name, value in spec.items():
        if name != "dist" and not isinstance(value, (list, tuple)):
            state[f"{prefix}.{name}"] = value
    return state


def _gpu_state(value: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        return {prefix: value}
    state: dict[str, Any] = {prefix: CUSTOM_GPU, f"{prefix}.base": value.get("base", "h100")}
    flops = value.get("tflops_dense") or {}
    for suffix, field, _ in CUSTOM_GPU_FIELDS:
        found = flops.get(field) if suffix.startswith("tflops") else value.get(field)
        if found is not None:
            state[f"{prefix}.{suffix}"] = found
    return state


def state_from_config(config: Config | Mapping, side: str) -> dict[str, Any]:
    """Widget state that reproduces ``config`` on ``side`` (shared keys go to side W)."""
    data = config.model_dump() if isinstance(config, Config) else load_config(config).model_dump()
    state: dict[str, Any] = {}
    for spec in field_specs():
        prefix = state_key(side_of(spec, side), spec.key)
        value = get_dotted(data, spec.key)
        if spec.kind == "length":
            state.update(_length_state(value, prefix))
        elif spec.key == "hardware.gpu":
            state.update(_gpu_state(value, prefix))
        elif spec.kind == "text" and value is None:
            state[prefix] = ""  # a text box holds "", which means None (unset)
        else:
            state[prefix] = value
    return state


def default_state() -> dict[str, Any]:
    """The dashboard's starting widget state for A, B and the shared keys."""
    state: dict[str, Any] = {}
    for side in SIDES:
        data = Config().model_dump()
        for key, value in {**DEFAULT_OVERRIDES[SHARED], **DEFAULT_OVERRIDES[side]}.items():
            set_dotted(data, key, value)
        state.update(state_from_config(data, side))
    return state


def _length_value(state: Mapping, prefix: str, base: Any) -> Any:
    dist = state.get(prefix)
    if dist not in LENGTH_PARAMS:
        return base  # e.g. an empirical distribution from an uploaded YAML: keep it as is
    if dist == "fixed":
        return int(state[f"{prefix}.value"])
    out: dict[str, Any] = {"dist": dist}
    for name in LENGTH_PARAMS[dist]:
        value = state.get(f"{prefix}.{name}")
        if value is not None:
            out[name] = value
    return out


def _gpu_value(state: Mapping, prefix: str) -> Any:
    name = state.get(prefix)
    if name != CUSTOM_GPU:
        return name
    spec: dict[str, Any] = {"base": state.get(f"{prefix}.base", "h100")}
    flops = {}
    for suffix, field, _ in CUSTOM_GPU_FIELDS:
        value = state.get(f"{prefix}.{suffix}")
        if value is None:
            continue
        if suffix.startswith("tflops"):
            flops[field] = value if value > 0 else None
        else:
            spec[field] = value
    if flops:
        spec["tflops_dense"] = flops
    return spec


def mapping_from_state(state: Mapping, side: str, base: Mapping | None = None) -> dict:
    """The YAML-shaped config of ``side``: ``base`` (an uploaded file) under the widget values.

    Keys without a widget (mappings, lists) keep the value ``base`` gives them. The result holds
    only what differs from Config's defaults, so the downloaded YAML is short and readable.
    """
    data = copy.deepcopy(dict(base or {}))
    for spec in field_specs():
        prefix = state_key(side_of(spec, side), spec.key)
        if prefix not in state:
            continue
        if spec.kind == "length":
            value = _length_value(state, prefix, get_dotted(data, spec.key))
        elif spec.key == "hardware.gpu":
            value = _gpu_value(state, prefix)
        elif spec.kind == "text" and spec.optional and state[prefix] == "":
            value = None
        else:
            value = state[prefix]
        if value is not None or spec.optional:
            set_dotted(data, spec.key, value)
    return minimal(data)


def minimal(data: Mapping) -> dict:
    """``data`` without the keys whose value equals Config's default.

    Only sections are compared key by key; a value that is itself a mapping (a length
    distribution) is kept whole when it differs, so no part of it is lost.
    """
    defaults = Config.model_construct().model_dump()
    return _diff(data, defaults, Config)


def _diff(data: Mapping, defaults: Mapping, model: type[BaseModel] | None) -> dict:
    out: dict = {}
    fields = model.model_fields if model is not None else {}
    for key, value in data.items():
        info = fields.get(key)
        sub_model = info.annotation if info is not None and _is_section(info.annotation) else None
        default = defaults.get(key) if isinstance(defaults, Mapping) else None
        if sub_model is not None and isinstance(value, Mapping) and isinstance(default, Mapping):
            sub = _diff(value, default, sub_model)
            if sub:
                out[key] = sub
        elif key not in defaults or value != default:
            out[key] = value
    return out
