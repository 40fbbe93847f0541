"""Paired comparisons: real differences get intervals excluding zero, non-differences do not."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from sim.compare import CompareError, compare, paired_table

BASE = {"workload": {"num_requests": 300, "rate": 8}}


def verdicts(result) -> dict[tuple[str, str], bool]:
    return {(r.metric, r.statistic): r.significant for r in result.table.itertuples()}


def test_near_identical_configs_are_not_significantly_different():
    # Gamma gaps with CV 1.02 instead of Poisson's 1: statistically almost the same workload.
    near = {"workload": {**BASE["workload"], "arrival": "gamma", "cv": 1.02}}
    result = compare(BASE, near, seeds=[0, 1], n_boot=1000)
    assert not verdicts(result)[("ttft", "mean")]
    assert not verdicts(result)[("ttft", "p99")]
    assert "not significant" in result.report()


def test_configs_with_no_difference_at_all_are_not_significant():
    same = {**BASE, "scheduler": {"max_num_seqs": 255}}  # the batch never reaches 255 here
    result = compare(BASE, same, seeds=[0], n_boot=500)
    assert not any(verdicts(result).values())
    assert (result.table["diff_ms"] == 0).all()


def test_clearly_different_configs_get_intervals_that_exclude_zero():
    small = {**BASE, "scheduler": {"max_num_seqs": 4}}
    result = compare(BASE, small, seeds=[0], n_boot=500)
    ttft = result.table.set_index(["metric", "statistic"]).loc[("ttft", "mean")]
    assert ttft["ci_low_ms"] > 0 and ttft["diff_ms"] > 0  # 4 sequences queue far longer
    assert verdicts(result)[("ttft", "mean")] and verdicts(result)[("e2el", "p99")]
    assert "-> significant" in result.report()


def test_the_bootstrap_is_calibrated_on_synthetic_pairs():
    rng = np.random.default_rng(1)
    n = 1000
    a = rng.lognormal(0, 0.5, n)
    pairs = pd.DataFrame({"seed": 0, "request_id": np.arange(n), "ttft_a": a,
                          "tpot_a": np.nan, "tpot_b": np.nan, "e2el_a": np.nan, "e2el_b": np.nan})
    misses = 0
    for trial in range(20):  # no true difference: the 90% interval holds zero ~18 times
        pairs["ttft_b"] = a + rng.normal(0, 0.05, n)
        table = paired_table(pairs, n_boot=300, confidence=0.9, rng_seed=trial)
        misses += bool(table.query("statistic == 'mean'")["significant"].iloc[0])
    assert misses <= 5
    pairs["ttft_b"] = a * 1.05  # a 5% slowdown of every request
    table = paired_table(pairs, n_boot=300)
    assert list(table["metric"]) == ["ttft", "ttft"] and table["significant"].all()


def test_bad_options_are_one_line_errors():
    with pytest.raises(CompareError, match="n_boot"):
        compare(BASE, BASE, n_boot=10)
    with pytest.raises(CompareError, match="seeds"):
        compare(BASE, BASE, seeds=[])


def test_the_cli_prints_the_verdicts_and_writes_the_table(tmp_path):
    from typer.testing import CliRunner

    from sim.cli import app

    config = tmp_path / "a.yaml"
    config.write_text("workload: {num_requests: 60, rate: 8}\n")
    out = tmp_path / "diff.csv"
    result = CliRunner().invoke(app, ["compare", str(config), "--set-b",
                                      "scheduler.max_num_seqs=2", "--boot", "200",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    # two slots instead of 256 queue most of the 60 requests: B's TTFT is far worse, and the
    # verdict says so (not merely contains the word: "not significant" contains it too)
    assert re.search(r"mean ttft:[^>]*->\s+significant", result.output), result.output
    table = pd.read_csv(out).set_index(["metric", "statistic"])
    ttft = table.loc[("ttft", "mean")]
    assert ttft["verdict"] == "significant" and ttft["ci_low_ms"] > 0 and ttft["diff_ms"] > 0
    assert set(table["verdict"]) <= {"significant", "not significant"}
    same = CliRunner().invoke(app, ["compare", str(config), "--boot", "200", "--out", str(out)])
    assert same.exit_code == 0, same.output
    assert set(pd.read_csv(out)["verdict"]) == {"not significant"}  # A against itself
    assert re.search(r"mean ttft:[^>]*->\s+not\s+significant", same.output), same.output
    bad = CliRunner().invoke(app, ["compare", str(config), "--boot", "5"])
    assert bad.exit_code == 2 and "n_boot" in bad.output
