"""Random and extreme values in every config field, and ``--out`` files never overwritten
(issue #20, acceptance 2).

The fields are enumerated from the pydantic schema of ``sim.config.Config``, so a field added
later is fed the same values without touching this file. Validation runs in-process (fast); a
handful of the same kind of values go through the real CLI at the end.
"""

from __future__ import annotations

import math
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

from sim.build import hardware_model
from sim.config import Config, load_config
from sim.sweep import SweepError, load_spec, run_sweep
from tests.test_bad_input import refused, servesim

HANG_S = 30  # one example taking this long is a hang, not slowness


def _section(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def config_fields(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, sections included; items of a list section as ``.0.``."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        inner = _section(field.annotation)
        if inner is not None:
            is_list = "list" in str(field.annotation)
            out += config_fields(inner, f"{path}.0." if is_list else f"{path}.")
    return out


FIELDS = config_fields()


def put(data: dict, path: str, value: Any) -> None:
    """Set a dotted key in a YAML-shaped mapping; a ``.0.`` part is the first item of a list."""
    parts = path.split(".")
    node: Any = data
    for part, nxt in zip(parts, parts[1:], strict=False):
        if part == "0":
            continue
        node = node.setdefault(part, [{}] if nxt == "0" else {})
        if isinstance(node, list):
            node = node[0]
    node[parts[-1]] = value


CORNERS = [0, -1, 1, 2**31, 2**63, 10**30, -10**30, 10**400, math.nan, math.inf, -math.inf,
           1e-300, 1e308, "", "x" * 10_000, "a\nb", "🙂", True, False, None, [], {}, [1, 2],
           [0, -1], [math.nan], {"a": 1}, {"dist": "empirical"}, {"dist": "normal", "mean": -1},
           {"dist": "uniform", "low": 10**30, "high": 1}, {"base": "h100", "memory_bw_gbps": -1}]
EXTREMES = st.one_of(
    st.sampled_from(CORNERS),
    st.integers(),
    st.floats(),
    st.text(max_size=40),
    st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=5)), max_size=3),
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=5)),
                    max_size=2),
)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"no answer within {HANG_S} s")


def test_the_schema_walk_sees_nested_sections_and_list_items():
    assert {"seed", "hardware.num_gpus", "workload.prompt_tokens", "cluster.pools.0.num_gpus",
            "speculative.acceptance.rate"} <= set(FIELDS)


def test_every_corner_value_in_every_field_is_a_config_or_one_line_naming_the_field():
    """Exhaustive over the corner values; the random test below explores around them."""
    for field in FIELDS:
        for value in CORNERS:
            a_config_or_one_line_naming(field, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=EXTREMES)
def test_any_value_in_any_field_is_a_config_or_one_line_naming_the_field(field, value):
    a_config_or_one_line_naming(field, value)


def a_config_or_one_line_naming(field: str, value: Any) -> None:
    """Validation either gives a Config whose memory plan and roofline build or refuse in one
    line, or refuses in one line naming ``field``; no other exception, no hang."""
    data: dict = {}
    put(data, field, value)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_S)
    try:
        try:
            config = load_config(data)
        except ValueError as exc:  # what the CLI prints as its one line (exit status 2)
            message = str(exc)
            assert "\n" not in message and message.strip() == message, message
            assert field in message, message
            assert len(message) < 1000, message
            return
        try:  # the memory plan and the roofline of the values taken: a refusal or nothing
            hardware_model(config)
        except ValueError as exc:
            assert "\n" not in str(exc), str(exc)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


SWEEP = {"grid": {"workload.rate": [1, 2]}, "set": {"workload.num_requests": 3}}


@settings(max_examples=30, deadline=None)
@given(content=st.binary(max_size=64), name=st.from_regex(r"[a-z][a-z0-9_.-]{0,15}",
                                                           fullmatch=True),
       command=st.sampled_from(["run", "sweep", "sweep --resume"]))
def test_an_existing_out_file_is_never_overwritten(content, name, command):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        if command == "run":
            from sim.cli import app

            result = CliRunner().invoke(app, ["run", "--out", str(path), "--quiet",
                                              "--set", "workload.num_requests=3"])
            assert result.exit_code == 2, result.output
        else:
            with pytest.raises(SweepError, match="--out"):
                run_sweep(load_spec(SWEEP), path, jobs=1, resume=command.endswith("resume"))
        assert path.read_bytes() == content
        assert [p.name for p in Path(folder).iterdir()] == [name]  # nothing left beside it


@pytest.mark.parametrize(("setting", "field"), [
    ("workload.rate=.inf", "workload.rate"),
    ("hardware.tp=-5", "hardware.tp"),
    ("kv_cache.block_size=99999999999999999999", "kv_cache.block_size"),
    ("workload.num_requests=many", "workload.num_requests"),
    ("cluster.pools=[{num_gpus: 5000}]", "cluster.pools"),
])
def test_extreme_values_through_the_real_cli(tmp_path, setting, field):
    refused(servesim("run", "--set", setting, cwd=tmp_path), field)
