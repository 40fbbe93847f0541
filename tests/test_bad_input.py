"""Bad input, as a new user types it, through the real ``servesim`` command (issue #20).

Each case runs ``python -m sim.cli`` in a subprocess and asserts what a user sees: exit status
2, exactly one line on stderr (no traceback), naming the field or the file. The subprocess
timeout is each case's time limit: it catches a hang or work done before the refusal (these
are checked before any simulation), it is not a speed benchmark.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

LIMIT_S = 60  # a refusal comes before any simulation; minutes would mean it did not
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def servesim(*args: str, cwd: Path, timeout: float = LIMIT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})


def refused(proc: subprocess.CompletedProcess, *named: str) -> str:
    """Exit status 2, one line on stderr, naming every string of ``named``; the line."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error: ")
    for name in named:
        assert name in lines[0], lines[0]
    return lines[0]


def azure_trace(path: Path, prompts: list[int]) -> Path:
    rows = [f"2023-11-16 18:17:{i:02d}.0,{p},10\n" for i, p in enumerate(prompts)]
    path.write_text(AZURE_HEADER + "".join(rows))
    return path


# ---- sizes --------------------------------------------------------------------------------


def test_a_trace_row_of_a_trillion_tokens_is_a_bad_row_named_by_file_and_line(tmp_path):
    trace = azure_trace(tmp_path / "huge.csv", [100, 10**12, 100])
    proc = servesim("run", "--quiet", "--set", "workload.arrival=trace",
                    "--set", f"workload.trace={trace}", "--out", str(tmp_path / "o"), cwd=tmp_path)
    refused(proc, "huge.csv:3", "ContextTokens", "1000000000000")


def test_a_request_longer_than_max_model_len_is_rejected_without_being_priced(tmp_path):
    """2M tokens is a plausible row (a long document) the model refuses: the run goes on and
    counts it rejected. It used to build a 2M-entry price table first (4 s, 20M: 28 s)."""
    trace = azure_trace(tmp_path / "long.csv", [100, 20_000_000, 100])
    proc = servesim("run", "--quiet", "--set", "workload.arrival=trace",
                    "--set", f"workload.trace={trace}", "--out", str(tmp_path / "o"),
                    cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = yaml.safe_load((tmp_path / "o" / "summary.json").read_text())
    assert summary["rejected"] == 1 and summary["completed"] == 2


def test_a_million_gpus_is_refused_with_the_allowed_range(tmp_path):
    proc = servesim("run", "--set", "hardware.num_gpus=1000000", cwd=tmp_path)
    refused(proc, "hardware.num_gpus", "1 <= num_gpus <= 1024", "1000000")


def test_kv_pools_too_big_to_simulate_are_refused_before_any_replica_is_built(tmp_path):
    # 1024 replicas of 1-token blocks: ~450M blocks, ~20 GB of Python lists
    proc = servesim("run", "--set", "hardware.num_gpus=1024", "--set", "kv_cache.block_size=1",
                    cwd=tmp_path)
    refused(proc, "hardware.num_gpus", "kv_cache.block_size", "33,554,432")


def test_a_synthetic_run_that_would_never_end_is_refused(tmp_path):
    refused(servesim("run", "--set", "workload.num_requests=null", cwd=tmp_path),
            "workload.num_requests", "workload.duration_s")
    refused(servesim("run", "--set", "workload.num_requests=null", "--set",
                     "workload.duration_s=1.0e+300", cwd=tmp_path), "workload.duration_s",
            "10,000,000")


# ---- --out --------------------------------------------------------------------------------


def test_run_out_that_is_a_file_is_refused_first_and_left_as_it_is(tmp_path):
    existing = tmp_path / "results"
    existing.write_bytes(b"precious")
    refused(servesim("run", "--out", str(existing), cwd=tmp_path), "--out", "results")
    assert existing.read_bytes() == b"precious"


@pytest.mark.parametrize("out", ["/dev/null", "/proc/servesim-out"])
def test_run_out_on_a_device_or_under_proc_is_refused_first(tmp_path, out):
    refused(servesim("run", "--out", out, cwd=tmp_path), "--out", out)


def test_run_out_in_a_read_only_folder_is_refused_first(tmp_path):
    if os.geteuid() == 0:  # root writes in any folder of mode 555; /proc/self takes no file
        out = "/proc/self"
    else:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o555)
        out = str(folder)
    refused(servesim("run", "--out", out, cwd=tmp_path), "--out", out)


def test_run_out_empty_is_refused_and_nothing_is_written_in_the_current_folder(tmp_path):
    refused(servesim("run", "--out", "", cwd=tmp_path), "--out", "empty")
    assert list(tmp_path.iterdir()) == []


def test_sweep_out_that_is_a_folder_is_refused_and_leaves_no_stray_files(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"grid": {"workload.rate": [1, 2]},
                                    "set": {"workload.num_requests": 5}}))
    folder = tmp_path / "results"
    folder.mkdir()
    refused(servesim("sweep", str(spec), "--out", str(folder), "--quiet", cwd=tmp_path),
            "--out", "results", "folder")
    assert list(folder.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "sweep.yaml"]


def test_sweep_out_that_is_another_file_is_refused_and_left_as_it_is(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"grid": {"workload.rate": [1, 2]}}))
    existing = tmp_path / "table.parquet"
    existing.write_bytes(b"someone else's table")
    refused(servesim("sweep", str(spec), "--out", str(existing), "--quiet", cwd=tmp_path),
            "--out", "table.parquet")
    assert existing.read_bytes() == b"someone else's table"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml", "table.parquet"]


# ---- messages that named no field or file --------------------------------------------------


def test_a_negative_seed_names_the_field(tmp_path):
    refused(servesim("run", "--set", "seed=-1", cwd=tmp_path), "seed", "0 <= seed", "-1")


def test_empirical_weights_of_the_wrong_length_name_the_field(tmp_path):
    spec = "workload.prompt_tokens={dist: empirical, values: [10, 20], weights: [1]}"
    refused(servesim("run", "--set", spec, cwd=tmp_path),
            "workload.prompt_tokens.weights", "2 values, 1 weights")


def test_malformed_yaml_is_one_line_naming_file_line_and_column(tmp_path):
    (tmp_path / "bad.yaml").write_text("scheduler:\n  policy: [continuous\nseed: 1\n")
    line = refused(servesim("run", "bad.yaml", cwd=tmp_path), "bad.yaml:3:")
    assert "unicode string" not in line


def test_a_key_given_twice_is_refused_not_silently_overridden(tmp_path):
    (tmp_path / "twice.yaml").write_text("workload:\n  rate: 1\n  rate: 2\n")
    refused(servesim("run", "twice.yaml", cwd=tmp_path), "twice.yaml:3:3", "'rate' given twice")


def test_a_binary_trace_names_the_file(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_bytes(bytes(range(256)) * 4)
    refused(servesim("run", "--set", "workload.arrival=trace", "--set",
                     f"workload.trace={trace}", cwd=tmp_path), "workload.trace", "trace.csv",
            "not a text file")


def test_a_folder_given_as_the_config_is_called_a_folder(tmp_path):
    (tmp_path / "configs").mkdir()
    line = refused(servesim("run", "configs", cwd=tmp_path), "configs", "folder")
    assert "no such file" not in line


@pytest.mark.parametrize("setting", ["", "workload.trace"])
def test_a_device_given_as_a_file_is_refused_not_read_forever(tmp_path, setting):
    if setting:
        args = ["--set", "workload.arrival=trace", "--set", "workload.trace=/dev/zero",
                "--set", "workload.trace_format=azure"]
    else:
        args = ["/dev/zero"]
    refused(servesim("run", *args, cwd=tmp_path), setting or "config", "/dev/zero",
            "not a regular file")


def test_bad_sweep_options_are_one_line_before_the_progress_bar(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"grid": {"workload.rate": [1, 2]}}))
    refused(servesim("sweep", str(spec), "--jobs", "0", cwd=tmp_path), "--jobs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


# ---- one prefix, one "(got ...)" --------------------------------------------------------------


def test_a_length_error_has_one_prefix_and_one_got(tmp_path):
    line = refused(servesim("run", "--set", "workload.output_tokens=0", cwd=tmp_path),
                   "workload.output_tokens")
    assert line.count("workload.output_tokens") == 1 and line.count("(got 0)") == 1


def test_a_model_check_naming_its_own_field_is_not_prefixed_again(tmp_path):
    line = refused(servesim("run", "--set", "hardware.tp=3", "--set", "hardware.num_gpus=3",
                            cwd=tmp_path), "hardware.tp")
    assert line.startswith("error: hardware.tp: ") and "model:" not in line


def test_calibrate_refit_from_a_missing_table_names_the_option(tmp_path):
    proc = servesim("calibrate", "--refit", "steps.csv", "--refit-profile", "old.json",
                    "--out", "new.json", cwd=tmp_path)
    refused(proc, "--refit", "steps.csv")


def test_calibrate_help_names_the_refit_profile_option_that_exists(tmp_path):
    proc = servesim("calibrate", "--help", cwd=tmp_path)
    assert proc.returncode == 0
    assert "--refit-profile" in proc.stdout and "--table-profile" not in proc.stdout


# ---- a sweep point fails alone (#27) ----------------------------------------------------------


class _Result:
    def __init__(self, rate: float):
        self.summary = {"completed": 3, "request_throughput": rate}


def test_a_sweep_point_that_raises_anything_fails_alone_and_resume_keeps_it(tmp_path,
                                                                           monkeypatch):
    """Any exception of one point (not only a refusal) is that point's row; the others run,
    and ``resume`` redoes no finished point, failed ones included."""
    import sim.api
    from sim.sweep import load_spec, run_sweep

    calls = []

    def simulate(config):
        calls.append(config["workload"]["rate"])
        if config["workload"]["rate"] == 2:
            raise ZeroDivisionError("a bug met by one corner of the grid")
        return _Result(config["workload"]["rate"])

    monkeypatch.setattr(sim.api, "simulate", simulate)
    spec = load_spec({"grid": {"workload.rate": [1, 2, 3]}})
    out = tmp_path / "sweep.parquet"
    table = run_sweep(spec, out, jobs=1)
    assert calls == [1, 2, 3]
    assert list(table["error"]) == ["", "ZeroDivisionError: a bug met by one corner of the grid",
                                    ""]
    assert list(table["request_throughput"].fillna(-1)) == [1, -1, 3]
    resumed = run_sweep(load_spec({"grid": {"workload.rate": [1, 2, 3]}}), out, jobs=1,
                        resume=True)
    assert calls == [1, 2, 3]  # nothing ran again
    assert list(resumed["error"]) == list(table["error"])


def test_a_sweep_point_whose_config_cannot_be_put_together_fails_alone(tmp_path, monkeypatch):
    import sim.api
    from sim.sweep import load_spec, run_sweep

    monkeypatch.setattr(sim.api, "simulate", lambda config: _Result(1.0))
    # point 1 sets workload.session to 5, then a key under it: its config cannot be made
    spec = load_spec({"grid": {"workload.session": [{}, 5]}, "set": {"workload.rate": 1}})
    spec.grid["workload.session.x"] = [1]  # added after load_spec, which checks point 0 only
    table = run_sweep(spec, tmp_path / "t.parquet", jobs=1)
    assert len(table) == 2
    assert table["error"].iloc[0] == "" and "is a value, not a section" in table["error"].iloc[1]
