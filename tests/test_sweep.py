"""Sweeps: the points, a killed-and-resumed sweep, and the Ray backend against the local one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sim.sweep import SweepError, load_spec, run_sweep

SPEC = {
    "set": {"workload.num_requests": 40, "workload.rate": 8},
    "grid": {"scheduler.policy": ["continuous", "chunked_prefill"]},
    "random": {"samples": 2, "seed": 3, "params": {
        "scheduler.max_num_seqs": [4, 64],
        "scheduler.max_num_batched_tokens": {"low": 512, "high": 8192, "log": True, "int": True},
    }},
    "seeds": 2,
    "metrics": ["mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "request_throughput"],
}


def results(table: pd.DataFrame) -> pd.DataFrame:
    """The table without wall-clock times (the only column that may differ between runs)."""
    return table.drop(columns="wall_s")


def test_points_cross_grid_random_samples_and_seeds():
    spec = load_spec(SPEC)
    points = spec.points()
    assert len(points) == 2 * 2 * 2
    assert len({p.point_id for p in points}) == len(points)
    assert [p.point_id for p in load_spec(SPEC).points()] == [p.point_id for p in points]
    tokens = {p.params["scheduler.max_num_batched_tokens"] for p in points}
    assert all(isinstance(t, int) and 512 <= t <= 8192 for t in tokens)
    config = spec.config(points[3])
    assert config["seed"] == points[3].seed
    assert config["workload"]["num_requests"] == 40


@pytest.mark.parametrize("bad, field", [
    ({"grid": {"scheduler.max_num_seqs": []}}, "sweep.grid.scheduler.max_num_seqs"),
    ({"grid": {"scheduler.max_seqs": [1]}}, "scheduler.max_seqs"),
    ({"grid": {"seed": [1]}, "sedes": 2}, "sweep: unknown key"),
    ({"set": {}}, "sweep: give grid or random"),
    ({"random": {"params": {"workload.rate": {"low": 2}}}}, "sweep.random.params.workload.rate"),
    ({"grid": {"workload.rate": [1]}, "seeds": 0}, "sweep.seeds"),
])
def test_bad_sweep_files_are_one_line_errors(bad, field):
    with pytest.raises(SweepError) as err:
        load_spec(bad)
    assert field in str(err.value) and "\n" not in str(err.value)


def test_a_killed_sweep_resumes_to_exactly_the_uninterrupted_table(tmp_path):
    spec_path = tmp_path / "sweep.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    whole = run_sweep(load_spec(spec_path), tmp_path / "whole.parquet", jobs=1)
    assert len(whole) == 8 and (whole["error"] == "").all()

    out = tmp_path / "killed.parquet"
    journal = out.with_name(out.name + ".journal.jsonl")
    cmd = [sys.executable, "-m", "sim.cli", "sweep", str(spec_path), "--out", str(out),
           "--jobs", "1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _finished(journal) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _finished(journal)
    assert 3 <= done_before < 8, "the sweep was not killed mid-way"

    with pytest.raises(SweepError, match="--resume"):
        run_sweep(load_spec(spec_path), out, jobs=1)
    ran = []
    resumed = run_sweep(load_spec(spec_path), out, jobs=1, resume=True,
                        progress=lambda done, total: ran.append(done))
    assert ran[0] == done_before and ran[-1] == 8  # only the rest ran
    pd.testing.assert_frame_equal(results(resumed), results(whole), check_exact=True)
    pd.testing.assert_frame_equal(results(pd.read_parquet(out)), results(whole),
                                  check_exact=True)


def _finished(journal: Path) -> int:
    if not journal.exists():
        return 0
    count = 0
    for line in journal.read_text().splitlines()[1:]:
        try:
            json.loads(line)
        except json.JSONDecodeError:
            continue
        count += 1
    return count


def test_a_changed_sweep_file_is_not_resumed(tmp_path):
    spec = {**SPEC, "seeds": 1, "random": None, "grid": {"workload.rate": [4]}}
    run_sweep(load_spec(spec), tmp_path / "r.parquet", jobs=1)
    changed = {**spec, "grid": {"workload.rate": [5]}}
    with pytest.raises(SweepError, match="changed"):
        run_sweep(load_spec(changed), tmp_path / "r.parquet", jobs=1, resume=True)


def test_process_pool_and_ray_give_the_same_table_as_one_process(tmp_path):
    import ray

    spec = load_spec(SPEC)
    serial = run_sweep(spec, tmp_path / "serial.parquet", jobs=1)
    pool = run_sweep(spec, tmp_path / "pool.parquet", jobs=2)
    pd.testing.assert_frame_equal(results(pool), results(serial), check_exact=True)
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)  # a local instance
    try:
        on_ray = run_sweep(spec, tmp_path / "ray.parquet", backend="ray")
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(results(on_ray), results(serial), check_exact=True)


def test_a_point_the_simulator_refuses_is_a_row_with_its_reason(tmp_path):
    spec = load_spec({"set": {"workload.num_requests": 10},
                      "grid": {"hardware.num_gpus": [1, 3], "hardware.tp": [1, 2]}})
    table = run_sweep(spec, tmp_path / "r.parquet", jobs=1)
    bad = table[(table["hardware.num_gpus"] == 3) & (table["hardware.tp"] == 2)]
    assert bad["error"].str.contains("hardware.num_gpus").all()
    assert (table.loc[table["error"] == "", "request_throughput"] > 0).all()


def test_cli_errors_are_one_line_with_status_2(tmp_path):
    from typer.testing import CliRunner

    from sim.cli import app

    result = CliRunner().invoke(app, ["sweep", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "no such file" in result.output
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"grid": {"workload.rate": [4]}}))
    result = CliRunner().invoke(app, ["sweep", str(spec), "--backend", "spark", "--quiet",
                                      "--out", str(tmp_path / "r.parquet")])
    assert result.exit_code == 2 and "allowed: local, ray" in result.output
