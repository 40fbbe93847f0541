"""The committed calibration data, run again through the committed profiles.

Each profile under ``hwmodels/profiles/`` was fitted on a table of steps measured on a lent GPU
(``docs/validation/raw/*-calibration.csv``), and its report (``docs/validation/*.md``) states the
fit's errors: MAPE and p90 over all steps, median and max per step kind. The README's accuracy
table states the held-out errors of the H100 run. A change to the hardware model, the engine or
the workload generator that makes any of them worse than stated fails here, so the numbers the
README and the reports print stay true of the code (or are measured again: refit the profile,
re-simulate, regenerate the report, as ``docs/validation/h100-llama-3.1-8b.md`` names).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sim
from hwmodels.calibrate import residual_table
from hwmodels.profile import load_profile

REPO = Path(__file__).resolve().parent.parent
RAW = REPO / "docs/validation/raw"
# committed profile -> the report and raw files of the run it was fitted on
RUNS = {
    "h100-sxm5-80gb/llama-3.1-8b": "h100-llama-3.1-8b",
    "h100-sxm5-80gb/llama-3.1-8b-tp2": "h100x2-llama-3.1-8b-tp2",
    "h100-sxm5-80gb/llama-3.1-70b-40l-tp2": "h100x2-llama-3.1-70b-40l-tp2",
    "h200-sxm-141gb/llama-3.1-8b-tp2": "h200x2-llama-3.1-8b-tp2",
    "h200-sxm-141gb/llama-3.1-70b-40l-tp2": "h200x2-llama-3.1-70b-40l-tp2",
    "h200-sxm-141gb/llama-3.1-70b-tp4": "h200x4-llama-3.1-70b-tp4",
}
ROUNDING_PP = 0.051  # the reports print one decimal


def _profile_path(name: str) -> Path:
    return REPO / "hwmodels/profiles" / f"{name}.json"


@cache
def _residuals(name: str) -> pd.DataFrame:
    table = pd.read_csv(RAW / f"{RUNS[name]}-calibration.csv")
    out = residual_table(table, load_profile(_profile_path(name)))
    out["abs_error_pct"] = out["error_pct"].abs()
    return out


def test_every_committed_profile_has_its_run_here():
    committed = {str(p.relative_to(REPO / "hwmodels/profiles"))[:-5]
                 for p in (REPO / "hwmodels/profiles").glob("*/*.json")}
    assert committed == set(RUNS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_calibration_table_replays_within_the_stated_fit_error(name):
    """MAPE and p90 as the profile and its report state them ("Fit on N designed steps: MAPE
    x%, p90 abs error y%"), and each step kind's median and max as the report's table."""
    errors = _residuals(name)["abs_error_pct"]
    stated = json.loads(_profile_path(name).read_text())
    report = (REPO / "docs/validation" / f"{RUNS[name]}.md").read_text()
    fit = re.search(r"Fit on (\d+) designed steps: MAPE ([\d.]+)%, p90 abs error ([\d.]+)%", report)
    assert fit and int(fit.group(1)) == len(errors) == stated["num_steps"]
    assert errors.mean() <= stated["mape"] + 1e-6
    assert errors.mean() <= float(fit.group(2)) + ROUNDING_PP
    assert np.percentile(errors, 90) <= stated["p90_abs_error_pct"] + 1e-6
    assert np.percentile(errors, 90) <= float(fit.group(3)) + ROUNDING_PP
    kinds = re.findall(r"^\| (\w+) \| (\d+) \| ([\d.]+)% \| ([\d.]+)% \|$", report, re.M)
    assert kinds, "the report's table of errors by step kind"
    by_kind = _residuals(name).groupby("kind")["abs_error_pct"]
    for kind, steps, median, worst in kinds:
        assert by_kind.size()[kind] == int(steps), kind
        assert by_kind.median()[kind] <= float(median) + ROUNDING_PP, (kind, by_kind.median()[kind])
        assert by_kind.max()[kind] <= float(worst) + ROUNDING_PP, (kind, by_kind.max()[kind])


README_METRICS = {"mean TTFT": "mean_ttft_ms", "median TTFT": "median_ttft_ms",
                  "mean TPOT": "mean_tpot_ms", "mean E2E latency": "mean_e2el_ms",
                  "output throughput": "output_throughput"}


@pytest.mark.slow
def test_held_out_h100_scenarios_stay_within_the_readme_table():
    """The README's table: median absolute error over the 6 held-out H100 workloads of each
    metric, simulated again (same seeds, hence the same requests) under the committed profile
    against the measured runs, as ``servesim validate --resim`` does."""
    readme = (REPO / "README.md").read_text()
    stated = {README_METRICS[m]: float(v)
              for m, v in re.findall(r"^\| ([\w ]+?) \| ([\d.]+)% \|", readme, re.M)
              if m in README_METRICS}
    assert set(stated) == set(README_METRICS.values())
    runs = json.loads((RAW / "h100-llama-3.1-8b-results-device.json").read_text())["scenarios"]
    profile = str(_profile_path("h100-sxm5-80gb/llama-3.1-8b"))
    errors: dict[str, list[float]] = {m: [] for m in stated}
    for run in runs:
        config = json.loads(json.dumps(run["config"]))
        config["hardware"]["profile"] = profile
        simulated = sim.simulate(config).summary
        for metric in stated:
            errors[metric].append(100.0 * (simulated[metric] / run["real"][metric] - 1.0))
    assert len(runs) == 6
    for metric, limit in stated.items():
        measured = float(np.median(np.abs(errors[metric])))
        assert measured <= limit + ROUNDING_PP, (metric, measured, limit)
