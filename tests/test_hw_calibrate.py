"""Calibration round trip: steps synthesized from known parameters + noise are fitted back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hwmodels import CatalogError, RooflineModel, load_profile
from hwmodels.calibrate import CORE_PARAMS, fit, residual_table
from hwmodels.params import default_params
from hwmodels.specs import get_gpu

TRUTH = default_params(get_gpu("h100")).updated(
    gemm_eff=0.70,
    overlap_p=3.0,
    hbm_eff=0.80,
    attn_compute_eff=0.45,
    attn_bw_eff=0.65,
    kernel_gap_s=3.0e-6,
    step_overhead_s=6e-4,
    seq_overhead_s=1.2e-5,
)
SMALL = {
    "num_hidden_layers": 16,
    "hidden_size": 2048,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "intermediate_size": 8192,
    "vocab_size": 128256,
}
NOISE = 0.01  # 1% timing noise (median of repeated steps)


def shapes():
    for t in (32, 64, 128, 192, 256, 384, 512, 768, 1024, 2048, 4096, 8192):
        yield [(t, 0)]
    for t, c in ((1024, 4096), (2048, 8192), (512, 16384)):
        yield [(t, c)]
    for b in (1, 4, 16, 64, 128, 256):
        for c in (256, 2048, 8192):
            if b * c <= 256 * 4096:
                yield [(1, c)] * b
    yield [(512, 0)] + [(1, 1024)] * 32


def synthetic_table(seed: int = 0) -> pd.DataFrame:
    """Two layer widths and several depths: per-kernel and per-byte costs then differ."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, layers in (
        ("llama-3.1-8b", 2),
        ("llama-3.1-8b", 8),
        ("llama-3.1-8b", 32),
        ("small", 4),
        ("small", 16),
    ):
        config = SMALL if model == "small" else None
        hw = RooflineModel("h100", config or model, num_layers=layers, params=TRUTH.to_dict())
        for seqs in shapes():
            t = hw.step_time_s(seqs) * (1 + rng.normal(0, NOISE))
            rows.append(
                {
                    "gpu": "h100",
                    "model": model,
                    "tp": 1,
                    "weight_dtype": "bf16",
                    "kv_dtype": "bf16",
                    "seqs": json.dumps(seqs),
                    "measured_ms": 1e3 * t,
                    "num_layers": layers,
                    "model_config": json.dumps(config) if config else None,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def fitted():
    table = synthetic_table()
    return table, fit(table, source={"card": "synthetic", "command": "pytest"})


def test_round_trip_recovers_parameters(fitted):
    _, profile = fitted
    # launch_cpu_s is tried too (eager steps exist) but binds no step: it keeps its default
    assert set(profile.source["fitted"]) == set(CORE_PARAMS)
    assert profile.params["launch_cpu_s"] == TRUTH.launch_cpu_s
    for name in CORE_PARAMS:
        assert profile.params[name] == pytest.approx(getattr(TRUTH, name), rel=0.05), name
        assert profile.source["relative_stderr"][name] < 0.05
    assert profile.mape < 2.0  # noise level: the model family contains the truth
    assert profile.p90_abs_error_pct < 3.0
    worst = max(abs(profile.params[n] / getattr(TRUTH, n) - 1) for n in CORE_PARAMS)
    print(
        f"round trip: {profile.num_steps} steps, MAPE {profile.mape:.2f}%, "
        f"p90 {profile.p90_abs_error_pct:.2f}%, worst parameter error {100 * worst:.1f}%"
    )


def test_profile_records_coverage_and_source(fitted, tmp_path):
    table, profile = fitted
    assert profile.gpu == "h100-sxm5-80gb" and profile.num_steps == len(table)
    assert profile.coverage.max_tokens == 8192 + 0 and profile.coverage.max_batch == 256
    assert profile.coverage.max_context == 16384
    assert profile.source["card"] == "synthetic" and "date" in profile.source
    assert load_profile(profile.save(tmp_path)) == profile
    hw = RooflineModel("h100", "llama-3.1-8b", profile=tmp_path / "profile.json")
    assert hw.params.hbm_eff == pytest.approx(TRUTH.hbm_eff, rel=0.05)
    assert hw.predict([(1, 100)]).high_s > hw.predict([(1, 100)]).time_s
    assert hw.predict([(20000, 0)]).extrapolating
    report = residual_table(table, profile)
    assert report["error_pct"].abs().mean() == pytest.approx(profile.mape, rel=1e-6)


def test_unidentified_parameters_stay_at_their_defaults():
    """All steps on one GPU: the all-reduce parameters are not fitted, nor moved."""
    table = synthetic_table().head(30)
    profile = fit(table, max_nfev=30)
    assert "comm_latency_s" not in profile.source["fitted"]
    assert profile.params["comm_latency_s"] == default_params(get_gpu("h100")).comm_latency_s


def test_bad_tables_are_rejected():
    table = synthetic_table().head(3)
    with pytest.raises(CatalogError, match="missing column"):
        fit(table.drop(columns=["seqs"]))
    mixed = table.copy()
    mixed.loc[0, "gpu"] = "a100"
    with pytest.raises(CatalogError, match="one GPU per fit"):
        fit(mixed)


def test_fixed_parameters_are_not_fitted():
    table = synthetic_table().head(40)
    profile = fit(table, fixed={"hbm_eff": 0.8}, max_nfev=20)
    assert "hbm_eff" not in profile.source["fitted"] and profile.params["hbm_eff"] == 0.8


def test_a_host_launch_cost_that_binds_is_found_from_a_start_where_it_does_not():
    """Eager steps whose CPU launches outrun the GPU: at the default launch cost nothing is
    host-bound, the gradient is zero, and a fit started there alone would never move it."""
    truth = TRUTH.updated(launch_cpu_s=6e-5, cuda_graph_max_tokens=0)
    rng = np.random.default_rng(3)
    rows = []
    for layers in (4, 16):
        hw = RooflineModel("h100", "llama-3.1-8b", num_layers=layers, params=truth.to_dict())
        for seqs in shapes():
            rows.append({"gpu": "h100", "model": "llama-3.1-8b", "tp": 1, "weight_dtype": "bf16",
                         "kv_dtype": "bf16", "seqs": json.dumps(seqs), "num_layers": layers,
                         "measured_ms": 1e3 * hw.step_time_s(seqs) * (1 + rng.normal(0, NOISE))})
    table = pd.DataFrame(rows)
    start = RooflineModel("h100", "llama-3.1-8b", params={"cuda_graph_max_tokens": 0})
    assert start.params.launch_cpu_s == pytest.approx(1e-5)  # host-bound nowhere at the start
    profile = fit(table, fixed={"cuda_graph_max_tokens": 0})
    assert "launch_cpu_s" in profile.source["fitted"]
    assert profile.params["launch_cpu_s"] == pytest.approx(6e-5, rel=0.1)
    assert profile.mape < 2.0
