"""Every starter config in ``examples/`` runs through the real ``servesim run`` as a user runs
it (sizes as in the file: CI runs what a user runs), from another folder, and gives a sane
summary. A new ``examples/*.yaml`` is picked up with nothing to add here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sim.config import Config, load_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONFIGS = sorted(EXAMPLES.glob("*.yaml"))


def test_the_examples_are_there():
    names = {p.stem for p in CONFIGS}
    assert {"default", "llama70b_tp4_fp8_mooncake", "disaggregated", "speculative",
            "agent_sessions"} <= names


def test_default_example_is_the_built_in_default():
    assert load_config(EXAMPLES / "default.yaml") == Config()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_example_says_how_to_run_and_scale_it(path):
    text = path.read_text()
    assert f"servesim run examples/{path.name}" in text
    assert "scale up" in text.lower()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_example_runs_and_its_summary_is_sane(path, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "sim.cli", "run", str(path), "--out", str(out), "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)  # not the repo: paths
    assert proc.returncode == 0, proc.stderr[-3000:]  # resolve from the config's folder
    summary = json.loads((out / "summary.json").read_text())
    requests = pd.read_parquet(out / "requests.parquet")
    steps = pd.read_parquet(out / "steps.parquet")
    assert summary["completed"] > 0 and summary["rejected"] == 0
    assert len(requests) == summary["completed"] and len(steps) > 0
    for key in ("request_throughput", "output_throughput", "mean_ttft_ms", "p99_ttft_ms",
                "mean_tpot_ms", "mean_e2el_ms"):
        assert math.isfinite(summary[key]) and summary[key] > 0, key
    assert summary["median_ttft_ms"] <= summary["p99_ttft_ms"] <= summary["p99_e2el_ms"]
    assert summary["goodput"] <= summary["request_throughput"] + 1e-9
    e2el_ms = requests["e2el"].mean() * 1e3  # requests.parquet in seconds, summary in ms
    assert e2el_ms == pytest.approx(summary["mean_e2el_ms"], rel=1e-9)
    assert "Request throughput" in proc.stdout
