"""The dashboard's importable logic without Streamlit: form <-> config, the run cache, charts,
comparisons, cost, breakdowns, the advisor's diagnosis and the validation page's reader."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import sim
from dashboard import advisor, breakdown, charts, compare, cost, form, runner, sweep, validation
from sim.config import Config

SMALL = {"workload": {"num_requests": 40, "rate": 8.0}}


@pytest.fixture(scope="module")
def small_result():
    return sim.simulate(SMALL)


def _leaf_keys(model, prefix=""):
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, form.BaseModel):
            yield from _leaf_keys(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", ann


def test_every_scalar_config_key_gets_a_widget():
    """Discovery, not a hard-coded list: keys other modules add appear by themselves."""
    keys = {s.key for s in form.field_specs()}
    for key, ann in _leaf_keys(Config):
        scalar = ann in (int, float, str, bool) or "Literal" in str(ann)
        if scalar:
            assert key in keys, key
    assert {"hardware.gpu", "scheduler.policy", "workload.rate", "slo.ttft_ms"} <= keys


def test_state_round_trips_a_config():
    mapping = {
        "seed": 7,
        "hardware": {"gpu": "a100", "num_gpus": 2, "gpu_memory_utilization": 0.85},
        "model": {"weight_dtype": "int4"},
        "scheduler": {"policy": "static", "max_waiting": 5},
        "workload": {"rate": 3.5, "prompt_tokens": 300,
                     "output_tokens": {"dist": "normal", "mean": 100, "sigma": 10,
                                       "min": 1, "max": 400}},
        "slo": {"ttft_ms": 250.0},
    }
    state = form.state_from_config(mapping, "B")
    assert state["B|hardware.gpu"] == "a100" and state["W|workload.rate"] == 3.5
    assert state["W|workload.prompt_tokens"] == "fixed"
    back = form.mapping_from_state(state, "B")
    assert sim.load_config(back) == sim.load_config(mapping)
    assert "kv_cache" not in back  # defaults are left out of the YAML


def test_custom_gpu_state_round_trips():
    gpu = {"base": "a100", "memory_gb": 120.0, "tflops_dense": {"bf16": 900.0, "fp8": None}}
    state = form.state_from_config({"hardware": {"gpu": gpu}}, "A")
    assert state["A|hardware.gpu"] == form.CUSTOM_GPU and state["A|hardware.gpu.base"] == "a100"
    back = form.mapping_from_state(state, "A")
    assert back["hardware"]["gpu"] == {"base": "a100", "memory_gb": 120.0,
                                       "tflops_dense": {"bf16": 900.0}}
    assert form.custom_gpu_supported()


def test_empirical_lengths_from_an_upload_are_kept():
    mapping = {"workload": {"prompt_tokens": {"dist": "empirical", "values": [10, 20, 30]}}}
    state = form.state_from_config(mapping, "A")
    back = form.mapping_from_state(state, "A", base=mapping)
    assert back["workload"]["prompt_tokens"]["values"] == [10, 20, 30]


def test_default_state_differs_only_where_intended():
    state = form.default_state()
    a, b = form.mapping_from_state(state, "A"), form.mapping_from_state(state, "B")
    assert b["model"] == {"weight_dtype": "fp8", "kv_dtype": "fp8"} and "model" not in a
    assert a["workload"] == b["workload"] and a["slo"] == b["slo"]


def test_run_cache_reuses_runs_and_keeps_errors_as_messages():
    calls = []

    def fake(mapping):
        calls.append(mapping)
        return runner.run_mapping(mapping)

    cache = runner.RunCache(max_entries=2, runner=fake)
    first = cache.get(SMALL)
    assert first.ok and cache.get({"workload": {"rate": 8.0, "num_requests": 40}}) is first
    assert len(calls) == 1
    bad = cache.get({"workload": {"rate": 0}})
    assert not bad.ok and bad.error.startswith("workload.rate:") and "\n" not in bad.error
    huge = cache.get({"model": {"name": "llama-3.1-405b"}})
    assert huge.error.startswith("model: llama-3.1-405b") and huge.config is not None
    assert SMALL not in cache  # two entries at most: the oldest went first


def test_yaml_helpers_reject_non_configs():
    with pytest.raises(ValueError, match="not valid YAML"):
        runner.from_yaml("a: [")
    with pytest.raises(ValueError, match="mapping of sections"):
        runner.from_yaml("- 1\n- 2\n")
    with pytest.raises(ValueError, match="hardware.tp"):
        runner.from_yaml("hardware: {tp: 0}")
    text = runner.to_yaml({"workload": {"rate": 2.0}})
    assert runner.from_yaml(text) == {"workload": {"rate": 2.0}}


def test_cost_per_million_tokens():
    assert cost.usd_per_million_tokens(1000.0, 2, 3.6) == pytest.approx(2.0)
    assert math.isnan(cost.usd_per_million_tokens(0.0, 1, 3.0))


def test_compare_table_marks_the_better_side():
    a = {"p99_ttft_ms": 100.0, "output_throughput": 1000.0}
    b = {"p99_ttft_ms": 50.0, "output_throughput": 900.0}
    table = compare.compare_table(a, b).set_index("metric")
    assert table.loc["P99 TTFT (ms)", "better"] == "B"
    assert table.loc["Output tok/s", "better"] == "A"
    assert table.loc["P99 TTFT (ms)", "change"] == pytest.approx(-0.5)
    metric = compare.HEADLINE[2]
    assert compare.format_delta(metric, 10.0, 12.5) == "+2.5 (+25.0%)"
    assert compare.format_value(metric, float("nan")) == "n/a"


def test_slo_attainment_agrees_with_goodput():
    result = sim.simulate({**SMALL, "slo": {"ttft_ms": 60.0, "tpot_ms": 12.0}})
    table = compare.slo_attainment(result.requests, result.config.slo.model_dump())
    met_all = table.set_index("slo").loc["all", "met"]
    s = result.summary
    assert met_all * s["completed"] / s["duration_s"] == pytest.approx(s["goodput"])


def test_charts_are_figures_of_bounded_size(small_result):
    req, steps = small_result.requests, small_result.steps
    fig = charts.latency_cdfs({"A": req, "B": req})
    assert isinstance(fig, go.Figure) and len(fig.data) == 6
    assert all(len(t.x) <= charts.CDF_POINTS for t in fig.data)
    fig = charts.kv_and_queue({"A": steps})
    assert len(fig.data) == 2 and all(len(t.x) <= charts.TIME_BINS for t in fig.data)
    assert max(fig.data[0].y) <= 100.0
    fig = charts.batch_composition({"A": steps, "B": steps})
    assert len(fig.data) == 6


def test_binned_series_keep_the_mean(small_result):
    steps = small_result.steps
    b = charts._binned(steps, ["num_seqs"], bins=1)
    assert b["num_seqs"].iloc[0] == pytest.approx(steps["num_seqs"].mean())


def test_memory_rows_match_hand_numbers(small_result):
    """Llama 3.1 8B (default config) on one 80 GiB H100 at 90% utilization: the weights are
    the model card's 8.03e9 bf16 parameters; the peak KV row is the busiest step's blocks x 16
    tokens x (32 layers x K,V x 8 heads x 128 x 2 bytes); what is not allocated is 10%
    (and under a block)."""
    rows = breakdown.memory_rows("A", small_result.plan, small_result.steps)
    gb = rows.set_index("component")["gb"]
    assert (gb >= 0).all()
    assert gb["weights"] == pytest.approx(8.03e9 * 2 / 1e9, rel=0.005)
    peak_blocks = small_result.steps["kv_blocks_used"].max()
    assert gb["KV cache (peak used)"] == pytest.approx(peak_blocks * 16 * 32 * 2 * 8 * 128 * 2
                                                       / 1e9, rel=1e-9)
    block_gb = 16 * 32 * 2 * 8 * 128 * 2 / 1e9  # the pool is whole blocks: less than one over
    assert 0.1 * 80 * 2**30 / 1e9 <= gb["not allocated"] < 0.1 * 80 * 2**30 / 1e9 + block_gb
    fig = charts.memory_breakdown(rows)
    assert len(fig.data) == len(rows)


def test_operator_rows_follow_the_model_shape(small_result):
    """The MLP's gate+up GEMM holds twice the down GEMM's weights and does twice its FLOPs, so
    it takes about twice as long whether the step is memory bound (decode) or compute bound
    (prefill), less because both pay the same fixed per-call floor (3.2 us per layer on an H100,
    which pulls a decode step's ratio a little below 2); a decode step cannot beat streaming the
    weights (all but the 0.53e9-parameter embedding of the model card's 8.03e9) at the H100's
    3.35 TB/s."""
    typical = breakdown.typical_steps(small_result.steps, 16)
    assert "typical decode step" in typical
    hw = breakdown.hardware_of(small_result.config)
    for kind, seqs in typical.items():
        rows = breakdown.operator_rows("A", hw, seqs)
        assert set(rows["bound"]) <= {"compute", "memory", "comm", "host"}
        by_name = rows.set_index("operator")
        ratio = by_name.loc["gate_up_proj", "time_ms"] / by_name.loc["down_proj", "time_ms"]
        assert 1.7 < ratio < 2.1, (kind, ratio)
        if kind == "typical decode step":
            assert by_name.loc["gate_up_proj", "bound"] == "memory"
            floor_ms = (8.03e9 - 128256 * 4096) * 2 / 3.35e12 * 1e3
            assert rows["time_ms"].sum() > floor_ms
    fig = charts.operator_breakdown(rows)
    assert fig.data


def test_throughput_latency_and_bars_take_long_frames():
    sweep_frame = pd.DataFrame({"config": ["A", "A"], "load": [1.0, 2.0],
                                "output_throughput": [10.0, 20.0], "p99_ttft_ms": [5.0, 9.0],
                                "median_tpot_ms": [3.0, 4.0]})
    assert len(charts.throughput_latency(sweep_frame).data) == 2
    costs = pd.DataFrame({"config": ["A", "B"], "tokens": ["output", "output"],
                          "usd_per_m": [1.0, 0.5]})
    assert len(charts.cost_chart(costs).data) == 2
    att = pd.DataFrame({"config": ["A"], "slo": ["all"], "met": [0.9]})
    assert list(charts.goodput_chart(att).data[0].y) == [90.0]


def test_load_points_scale_rate_or_concurrency():
    points = sweep.load_points({"workload": {"rate": 4.0}}, (0.5, 2.0), num_requests=10)
    assert [p for p, _ in points] == [2.0, 8.0]
    assert points[1][1]["workload"] == {"rate": 8.0, "num_requests": 10}
    closed = sweep.load_points({"workload": {"arrival": "closed", "concurrency": 4}}, (0.5, 2.0))
    assert [p for p, _ in closed] == [2, 8]


def test_diagnose_finds_the_binding_limit():
    mapping = {**SMALL, "slo": {"ttft_ms": 10_000.0, "tpot_ms": 1.0}}
    outcome = runner.run_mapping(mapping)
    limits = {lim.name: lim for lim in advisor.diagnose(outcome, 3.0)}
    assert limits["decode throughput"].pressure > 1 > limits["TTFT"].pressure
    assert advisor.binding(list(limits.values())).name == "decode throughput"
    assert math.isnan(limits["cost"].pressure)  # no budget given
    names = [r.name for r in advisor.remedies("decode throughput", outcome.config)]
    assert "FP8 weights" in names
    fp8 = runner.run_mapping({**mapping, "model": {"weight_dtype": "fp8", "kv_dtype": "fp8"}})
    assert "FP8 weights" not in [r.name for r in advisor.remedies("memory", fp8.config)]


def test_no_binding_limit_when_targets_are_met():
    outcome = runner.run_mapping({**SMALL, "slo": {"ttft_ms": 1e6, "tpot_ms": 1e6}})
    assert advisor.binding(advisor.diagnose(outcome, 3.0)) is None


def test_validation_reports_split_text_and_images(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"png")
    report = tmp_path / "h100.md"
    report.write_text("# H100 validation\n\ntext before\n\n![TTFT](fig.png)\n\nafter\n"
                      "![remote](https://example.org/x.png)\n")
    assert validation.list_reports(tmp_path) == [report]
    assert validation.title_of(report) == "H100 validation"
    parts = validation.split_report(report)
    assert [p.kind for p in parts] == ["markdown", "image", "markdown"]
    assert parts[1].path == (tmp_path / "fig.png").resolve() and parts[1].text == "TTFT"
    assert "https://example.org/x.png" in parts[2].text
    assert validation.list_reports(tmp_path / "missing") == []


def test_cdf_ignores_missing_values():
    x, q = charts._cdf(np.array([3.0, np.nan, 1.0, 2.0]))
    assert x[0] == 1.0 and x[-1] == 3.0 and q[-1] == 1.0


def test_servesim_dashboard_starts_streamlit_on_the_app():
    from sim.cli_dashboard import app_path, streamlit_command

    cmd = streamlit_command(8601, "127.0.0.1", headless=True)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and app_path().is_file()
    assert cmd[4] == str(app_path()) and app_path().name == "app.py"
    assert cmd[cmd.index("--server.port") + 1] == "8601"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
