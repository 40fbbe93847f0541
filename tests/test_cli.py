"""End-to-end tests of `servesim run` as a user runs it, and of its bad-input handling."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app

REQUEST_COLUMNS = ["request_id", "arrival_time", "first_token_time", "finish_time",
                   "prompt_tokens", "output_tokens", "cached_tokens", "ttft", "tpot", "e2el",
                   "preemptions"]
STEP_COLUMNS = ["replica", "start_time", "duration", "num_seqs", "prefill_tokens",
                "decode_tokens", "kv_blocks_used", "kv_blocks_total"]
SUMMARY_KEYS = ["request_throughput", "output_throughput", "goodput"] + [
    f"{stat}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el") for stat in ("mean", "median", "p99")]


def test_servesim_run_writes_the_contract_files(tmp_path):
    """The real console script, in a subprocess, on a small default scenario."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "sim.cli", "run", "--set", "workload.num_requests=60",
         "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for label in ("Request throughput", "Output token throughput", "Mean TTFT", "Median TPOT",
                  "P99 ITL", "Mean E2E latency"):
        assert label in proc.stdout
    requests = pd.read_parquet(out / "requests.parquet")
    steps = pd.read_parquet(out / "steps.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert set(REQUEST_COLUMNS) <= set(requests.columns) and len(requests) == 60
    assert set(STEP_COLUMNS) <= set(steps.columns) and len(steps) > 0
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["completed"] == 60


def test_set_overrides_reach_the_simulation(tmp_path):
    result = CliRunner().invoke(app, [
        "run", "--set", "workload.num_requests=30", "--set", "workload.rate=20",
        "--set", "scheduler.policy=static", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["completed"] == 30


@pytest.mark.parametrize("override, needle", [
    ("hardware.gpu=h1000", "hardware.gpu: unknown GPU 'h1000'; allowed:"),
    ("model.name=llama-9", "model.name: unknown model 'llama-9'; allowed:"),
    ("scheduler.policy=magic", "scheduler.policy:"),
    ("kv_cache.allocator=heap", "kv_cache.allocator:"),
    ("workload.rate=-3", "workload.rate:"),
    ("workload.rate=0", "workload.rate:"),
    ("workload.colour=blue", "workload.colour: unknown key; allowed:"),
    ("model.name=llama-3.1-70b", "GB"),
    ("workload.prompt_tokens={dist: zipf}", "workload.prompt_tokens.dist: unknown 'zipf'"),
])
def test_bad_input_is_one_line_exit_2(override, needle, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sim.cli", "run", "--set", override, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]


def test_missing_config_file_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no such file" in proc.stderr
