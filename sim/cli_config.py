"""``servesim config``: every config key with its default, as YAML to copy, or as a schema.

Both are read off the pydantic models of ``sim/config.py`` at run time, so a field added there
shows up here with nothing else to change: its description, type, bounds and default come from
the model, allowed values from a ``Literal`` type (or, for names of catalog entries, from the
catalog itself), and its unit from the field's ``json_schema_extra={"unit": ...}`` or, failing
that, from the suffix of its name (``duration_s`` is in seconds, ``ttft_ms`` in milliseconds).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sim.cli_output import fail

# Units read off a field's name when it gives none itself, longest suffix first.
NAME_UNITS = (
    ("_us_per_token", "us/token"), ("_gb_s", "GB/s"), ("_ms", "ms"), ("_us", "us"),
    ("_s", "s"), ("_gb", "GB (1e9 bytes)"), ("_tokens", "tokens"), ("_requests", "requests"),
    ("_seqs", "sequences"), ("_gpus", "GPUs"), ("_sessions", "sessions"),
)


def _catalog_choices() -> dict[str, Callable[[], list[str]]]:
    """Keys whose allowed values are the names of catalog entries (checked by validators)."""
    from hwmodels import list_gpus, list_models
    from hwmodels.precision import KV_ALIASES, KV_FORMATS, WEIGHT_FORMATS
    from policies.presets import PRESETS

    return {"hardware.gpu": list_gpus, "cluster.pools[].gpu": list_gpus,
            "model.name": list_models, "speculative.draft_model": list_models,
            "model.weight_dtype": lambda: list(WEIGHT_FORMATS),
            "model.kv_dtype": lambda: [*KV_FORMATS, *KV_ALIASES],
            "engine.preset": lambda: list(PRESETS)}


@dataclass(frozen=True)
class Key:
    """One config key as the schema lists it."""

    key: str  # dotted, as --set takes it; ``[]`` marks an item of a list section
    type: str
    default: Any
    unit: str | None
    bounds: str | None
    allowed: list[Any] | None
    description: str


def unit_of(name: str, field: FieldInfo) -> str | None:
    """The field's declared unit, else the one its name's suffix gives, else None."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "unit" in extra:
        return str(extra["unit"])
    for suffix, unit in NAME_UNITS:
        if name.endswith(suffix):
            return unit
    return None


def type_name(annotation: Any) -> str:
    """A YAML user's name for a Python annotation: int, float, text, mapping, list of ..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return "choice"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(type_name(a) for a in args))
    if origin is dict or annotation is dict:
        return "mapping"
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is tuple:
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return {int: "int", float: "float", str: "text", bool: "bool"}.get(annotation,
                                                                      str(annotation))


def _literal_values(annotation: Any) -> list[Any] | None:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    for arg in typing.get_args(annotation):  # Literal[...] | None
        values = _literal_values(arg)
        if values is not None:
            return values
    return None


def _bounds(field: FieldInfo) -> str | None:
    """The numeric bounds pydantic checks (``ge=1`` -> ``>= 1``)."""
    signs = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
    parts = [f"{sign} {getattr(m, attr)}" for m in field.metadata
             for attr, sign in signs if getattr(m, attr, None) is not None]
    return ", ".join(parts) or None


def _section_of(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """(model, is_list) when the annotation is a section or a list of sections."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list and args and isinstance(args[0], type) \
            and issubclass(args[0], BaseModel):
        return args[0], True
    return None


def schema(model: type[BaseModel] | None = None, prefix: str = "") -> Iterator[Key]:
    """Every leaf key of the config, depth first, in the models' order."""
    from sim.config import Config

    model = model or Config
    choices = _catalog_choices()
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _section_of(field.annotation)
        if section is not None:
            sub, is_list = section
            yield from schema(sub, f"{key}[]." if is_list else f"{key}.")
            continue
        allowed = _literal_values(field.annotation)
        if key in choices:
            allowed = choices[key]()
        yield Key(key=key, type=type_name(field.annotation),
                  default=field.get_default(call_default_factory=True),
                  unit=unit_of(name, field), bounds=_bounds(field), allowed=allowed,
                  description=field.description or "")


def _flow(value: Any) -> str:
    """A value as one line of YAML (mappings and lists in flow style)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


def _comment(key: Key) -> str:
    extras = [x for x in (key.unit, key.bounds) if x]
    if key.allowed is not None and len(key.allowed) <= 12:
        extras.append("one of: " + ", ".join(map(str, key.allowed)))
    return key.description + (f" [{'; '.join(extras)}]" if extras else "")


def defaults_yaml(config: BaseModel | None = None) -> str:
    """The whole config as YAML, every key commented with its description and unit.

    ``config``: the values to print (default: the built-in defaults). Loading the text back
    gives the same config (``tests/test_config_command.py``)."""
    from sim.config import Config

    config = config if config is not None else Config()
    keys = {k.key: k for k in schema()}
    lines = ["# servesim config: every key with its value (servesim config --schema: types, "
             "units, allowed values)"]
    _emit(config, Config, "", 0, keys, lines)
    return "\n".join(lines) + "\n"


def _emit(values: BaseModel, model: type[BaseModel], prefix: str, depth: int,
          keys: dict[str, Key], lines: list[str]) -> None:
    pad = "  " * depth
    for name, field in model.model_fields.items():
        value = getattr(values, name)
        section = _section_of(field.annotation)
        if section is not None and not section[1]:
            lines.append(f"{pad}# {field.description}" if field.description else "")
            lines.append(f"{pad}{name}:")
            _emit(value, section[0], f"{prefix}{name}.", depth + 1, keys, lines)
            continue
        if section is not None:  # a list of sections: their keys are listed under [].
            lines.append(f"{pad}# {field.description} (keys: servesim config --schema)")
            items = [v.model_dump(mode="json", exclude_defaults=True) for v in value]
            lines.append(f"{pad}{name}: {_flow(items)}")
            continue
        lines.append(f"{pad}# {_comment(keys[prefix + name])}")
        lines.append(f"{pad}{name}: {_flow(_plain(value))}")


def _plain(value: Any) -> Any:
    """Tuples as lists (YAML has no tuple), everything else unchanged."""
    return list(value) if isinstance(value, tuple) else value


def schema_text(keys: list[Key]) -> str:
    """The schema for reading: one block per key."""
    blocks = []
    for k in keys:
        facts = [k.type] + [x for x in (k.unit, k.bounds) if x]
        lines = [f"{k.key}  ({'; '.join(facts)})  default: {_flow(_plain(k.default))}",
                 f"    {k.description}"]
        if k.allowed is not None:
            lines.append(f"    allowed: {', '.join(map(str, k.allowed))}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) + "\n"


def config(
    file: Annotated[Path | None, typer.Argument(
        help="show this experiment YAML with every default filled in")] = None,
    set_: Annotated[list[str], typer.Option(
        "--set", help="override a config key: key=value")] = [],  # noqa: B006
    show_schema: Annotated[bool, typer.Option(
        "--schema", help="every key: type, unit, bounds, allowed values, default, meaning")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="with --schema: as JSON")] = False,
) -> None:
    """Print the defaults as commented YAML to copy (or a config with them filled in), or
    the schema of every key with its unit."""
    from sim.config import load_config

    if show_schema:
        keys = list(schema())
        if as_json:
            print(json.dumps([asdict(k) for k in keys], indent=2, default=_plain))
        else:
            print(schema_text(keys), end="")
        return
    try:
        cfg = load_config(file, set_) if file is not None or set_ else None
    except ValueError as exc:
        fail(str(exc))
    print(defaults_yaml(cfg), end="")
