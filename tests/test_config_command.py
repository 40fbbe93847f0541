"""``servesim config``: the defaults as YAML that loads back, and a schema with units that
follows the pydantic models by itself."""

from __future__ import annotations

import json
from typing import Literal

import yaml
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from sim.cli import app
from sim.cli_config import schema, unit_of
from sim.config import Config, load_config


def _leaves(model: type[BaseModel] = Config, prefix: str = "") -> set[str]:
    """Every leaf key of the models, walked independently of sim.cli_config."""
    out = set()
    for name, field in model.model_fields.items():
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= _leaves(ann, f"{prefix}{name}.")
        elif args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            out |= _leaves(args[0], f"{prefix}{name}[].")
        else:
            out.add(prefix + name)
    return out


def test_printed_defaults_load_back_to_the_default_config():
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert load_config(yaml.safe_load(result.output)) == Config()
    assert "# mean arrival rate, requests/s (open loop) [req/s; > 0]" in result.output


def test_a_config_file_is_shown_with_every_default_filled_in(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("workload: {rate: 3.5}\n")
    result = CliRunner().invoke(app, ["config", str(path), "--set", "scheduler.max_num_seqs=64"])
    assert result.exit_code == 0, result.output
    shown = load_config(yaml.safe_load(result.output))
    assert shown.workload.rate == 3.5 and shown.scheduler.max_num_seqs == 64
    assert shown.model == Config().model  # untouched sections: the defaults


def test_a_bad_value_is_one_line_with_status_2():
    result = CliRunner().invoke(app, ["config", "--set", "workload.rate=-1"])
    assert result.exit_code == 2
    assert "workload.rate:" in result.output and len(result.output.strip().splitlines()) == 1


def test_the_schema_lists_every_key_with_type_default_and_unit():
    result = CliRunner().invoke(app, ["config", "--schema", "--json"])
    assert result.exit_code == 0, result.output
    keys = {k["key"]: k for k in json.loads(result.output)}
    assert set(keys) == _leaves()
    assert all(k["description"] for k in keys.values())
    expected_units = {
        "workload.rate": "req/s", "workload.duration_s": "s", "slo.ttft_ms": "ms",
        "kv_cache.swap_space_gb": "GB (1e9 bytes)", "kv_cache.block_size": "tokens",
        "scheduler.max_num_batched_tokens": "tokens", "scheduler.max_num_seqs": "sequences",
        "cluster.interconnect.bandwidth_gb_s": "GB/s", "cluster.interconnect.latency_us": "us",
        "workload.window": "s", "hardware.gpu_memory_utilization": "fraction"}
    assert {k: keys[k]["unit"] for k in expected_units} == expected_units
    assert keys["scheduler.policy"]["allowed"] == ["static", "continuous", "chunked_prefill"]
    assert "h100" in keys["hardware.gpu"]["allowed"]
    assert keys["workload.rate"]["bounds"] == "> 0" and keys["workload.rate"]["default"] == 10.0
    assert keys["hardware.gpu_memory_utilization"]["bounds"] == "> 0, <= 1"


def test_every_quantity_with_a_dimension_has_a_unit():
    """Numeric keys left without a unit are dimensionless by design; a new one must be added
    to this list or given a unit (json_schema_extra or a unit suffix on its name)."""
    dimensionless = {
        "seed", "workload.cv", "cluster.prefix_load_weight", "speculative.acceptance.decay",
        "speculative.acceptance.concentration", "workload.client.latency_sigma"}
    numeric = [k for k in schema() if k.type.split(" | ")[0] in ("int", "float")]
    missing = {k.key for k in numeric if k.unit is None} - dimensionless
    assert not missing


def test_the_text_schema_names_units_and_allowed_values():
    result = CliRunner().invoke(app, ["config", "--schema"])
    assert result.exit_code == 0, result.output
    assert "workload.rate  (float; req/s; > 0)  default: 10.0" in result.output
    assert "allowed: static, continuous, chunked_prefill" in result.output


def test_a_new_field_appears_with_its_unit_without_touching_the_command():
    class Extra(BaseModel):
        warmup_s: float = Field(0.0, ge=0, description="left out of the summary")
        speed: float = Field(1.0, description="x", json_schema_extra={"unit": "tokens/s"})
        mode: Literal["a", "b"] = Field("a", description="a mode")

    keys = {k.key: k for k in schema(Extra, "extra.")}
    assert keys["extra.warmup_s"].unit == "s" and keys["extra.warmup_s"].bounds == ">= 0"
    assert keys["extra.speed"].unit == "tokens/s"
    assert keys["extra.mode"].allowed == ["a", "b"]
    assert unit_of("p99_ttft_ms", Extra.model_fields["mode"]) == "ms"


def test_relative_paths_in_a_config_file_are_taken_from_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "exp.yaml").write_text(
        "workload: {arrival: trace, trace: traces/t.csv}\n"
        "speculative: {acceptance: {file: acc.txt}}\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(folder / "exp.yaml")
    assert cfg.workload.trace == str(folder / "traces" / "t.csv")
    assert cfg.speculative.acceptance.file == str(folder / "acc.txt")
    assert cfg.hardware.profile == "auto"  # a word, not a path
    over = load_config(folder / "exp.yaml", ["workload.trace=here.csv"])
    assert over.workload.trace == "here.csv"  # typed on the command line: from the cwd


def test_a_sweep_base_file_resolves_its_paths_from_its_own_folder(tmp_path, monkeypatch):
    from sim.sweep import load_spec

    configs = tmp_path / "configs"
    (configs / "traces").mkdir(parents=True)
    (configs / "traces" / "t.jsonl").write_text(
        '{"timestamp": 0, "input_length": 100, "output_length": 10, "hash_ids": [0]}\n'
        '{"timestamp": 500, "input_length": 200, "output_length": 20, "hash_ids": [0]}\n')
    (configs / "base.yaml").write_text("workload: {arrival: trace, trace: traces/t.jsonl}\n")
    (tmp_path / "sweep.yaml").write_text(
        "base: configs/base.yaml\ngrid: {scheduler.max_num_seqs: [8, 16]}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(tmp_path / "sweep.yaml")
    assert spec.base["workload"]["trace"] == str(configs / "traces" / "t.jsonl")
