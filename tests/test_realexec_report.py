"""The pure parts of calibration and validation: shape design, loads, all-reduce fit, report."""

import math

import pytest

from realexec.calibrate import QUICK_GRID, Grid, design_shapes
from realexec.report import headline, markdown, rel_error
from realexec.tp_commands import fit_allreduce
from realexec.validate import LOAD_FRACTIONS, Scenario, base_config, default_scenarios, load_config


def test_designed_shapes_cover_every_kind_within_limits():
    shapes = design_shapes(Grid(), max_batch=64, max_tokens=4096, max_context=4096)
    kinds = {s.kind for s in shapes}
    assert kinds == {"prefill", "prefill_cached", "prefill_batch", "decode", "decode_spread",
                     "mixed", "verify"}
    assert all(len(s.seqs) <= 64 and s.tokens <= 4096 for s in shapes)
    spread = [s for s in shapes if s.kind == "decode_spread"]
    assert [len(s.seqs) for s in spread] == [16, 32, 48, 64]  # 96 and 128 exceed max_batch
    contexts = [c for _, c in spread[0].seqs]  # 16 rows from 1024 / 16 to 2 x 1024, even steps
    assert contexts[0] == 64 and contexts[-1] == 2048 and contexts[1] == 64 + 1984 // 15
    assert all(max(n + c for n, c in s.seqs) <= 4096 for s in shapes)
    verify = [s for s in shapes if s.kind == "verify"]
    assert all(n == s.draft_tokens + 1 for s in verify for n, _ in s.seqs)
    assert len(design_shapes(QUICK_GRID)) < 20


def test_suite_sweeps_every_policy_over_three_fractions_of_measured_capacity():
    suite = default_scenarios()
    assert len(suite) >= 8
    policies = {s.overrides["scheduler.policy"] for s in suite}
    assert policies == {"static", "continuous", "chunked_prefill"}
    assert {s.overrides.get("kv_cache.allocator", "paged") for s in suite} == {"paged", "radix"}
    kinds = {s.name.rsplit("-", 1)[0] for s in suite}
    for kind in kinds:
        assert sorted(s.load for s in suite if s.name.startswith(kind + "-p")) == [
            "p50", "p80", "p95"]
    assert [LOAD_FRACTIONS[x] for x in ("p50", "p80", "p95")] == [0.5, 0.8, 0.95]


def test_load_sets_rate_from_capacity_and_bounds_requests():
    base = base_config("llama-3.1-8b", "h100", profile=None)
    scn = Scenario("x", {"scheduler.policy": "continuous"}, "high")
    cfg = load_config(base, scn, (20.0, 20.0), target_s=10)
    assert cfg["workload"]["rate"] == pytest.approx(0.85 * 20)
    assert cfg["workload"]["num_requests"] == 170
    low = load_config(base, Scenario("y", {}, "low"), (1.0, 1.0), target_s=10)
    assert low["workload"]["num_requests"] == 30  # the floor


def test_report_marks_each_scenario_against_targets_and_compares_capacity():
    from realexec.report import capacity_section, host_gpu_section, within_targets

    def scenario(name, ttft, tpot, e2el, predicted, measured):
        real = {"mean_ttft_ms": 100.0, "mean_tpot_ms": 10.0, "mean_e2el_ms": 1000.0}
        sim_ = {"mean_ttft_ms": ttft, "mean_tpot_ms": tpot, "mean_e2el_ms": e2el}
        steps = [[[[1, 10]], 0.010, 0.011, 0.0004, 0.0096, "decode", "decode_graph"],
                 [[[512, 0]], 0.030, 0.031, 0.0020, 0.0280, "prefill", "token_graph"]]
        return {"name": name, "real": real, "sim": sim_, "steps": steps,
                "capacity_rps": predicted, "capacity_measured_rps": measured}

    good = scenario("continuous-paged-p50", 109.0, 10.4, 960.0, 10.3, 10.0)
    bad = scenario("continuous-paged-p95", 120.0, 10.0, 1000.0, 10.3, 10.0)
    assert within_targets(good) == (True, [])
    ok, misses = within_targets(bad)
    assert not ok and misses == ["ttft +20.0%"]
    cap = "\n".join(capacity_section([good, bad]))
    assert cap.count("| continuous-paged |") == 1 and "+3.0%" in cap
    table = "\n".join(host_gpu_section([good]))
    assert "| decode | decode_graph | 1 | 0.40 | 9.60 | 4.2% |" in table
    assert "| prefill | token_graph | 1 | 2.00 | 28.00 | 7.1% |" in table


def test_two_runs_show_each_scenarios_errors_and_the_real_spread():
    from realexec.report import repeat_section

    def run(real_e2el):
        real = {"mean_ttft_ms": 100.0, "mean_tpot_ms": 10.0, "mean_e2el_ms": real_e2el}
        sim_ = {"mean_ttft_ms": 100.0, "mean_tpot_ms": 10.0, "mean_e2el_ms": 1000.0}
        return [{"name": "chunked-paged-p80", "real": real, "sim": sim_}]

    table = "\n".join(repeat_section(run(1000.0), run(1100.0)))
    assert ("| chunked-paged-p80 | +0.0% | +0.0% | +0.0% | +0.0% | +0.0% | -9.1% | +10.0% "
            "| no |") in table


def test_allreduce_fit_recovers_latency_and_bus_bandwidth():
    latency, bus = 12e-6, 300e9
    rows = [{"bytes": b, "median_s": latency + b * 2 * (2 - 1) / 2 / bus}
            for b in (1 << 14, 1 << 18, 1 << 22, 1 << 26)]
    fit = fit_allreduce(rows, tp=2)
    assert fit["latency_s"] == pytest.approx(latency, rel=1e-6)
    assert fit["bus_gbps"] == pytest.approx(300, rel=1e-6)


def _scenario(name, real, sim_value):
    keys = ["mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "mean_e2el_ms",
            "median_e2el_ms", "p99_e2el_ms", "output_throughput", "kv_blocks_used_mean"]
    return {"name": name, "config": {"workload": {"rate": 1, "num_requests": 10}},
            "capacity_rps": 2.0, "real": {k: real for k in keys},
            "sim": {k: sim_value for k in keys}, "steps": [[[[1, 5]], 0.01, 0.011]],
            "wall_s": 1.0, "error": None}


def test_headline_is_median_of_absolute_errors_and_skips_failed_runs():
    scenarios = [_scenario("a", 10.0, 11.0), _scenario("b", 10.0, 9.7),
                 _scenario("c", 10.0, 10.2), {**_scenario("d", 1.0, 9.0), "error": "boom"}]
    rows = {key: (med, n) for key, med, _, n in headline(scenarios)}
    assert rows["mean_ttft_ms"][0] == pytest.approx(3.0)  # |+10%|, |-3%|, |+2%| -> 3%
    assert rows["mean_ttft_ms"][1] == 3
    text = markdown({"meta": {"model": "m", "gpu_name": "g"}, "scenarios": scenarios})
    assert "not run: boom" in text and "| mean_tpot_ms | 3.0% | <= 5% | 3 |" in text


def test_relative_error_of_missing_values_is_nan():
    assert math.isnan(rel_error(1.0, 0.0)) and math.isnan(rel_error(1.0, float("nan")))
    assert rel_error(11.0, 10.0) == pytest.approx(0.1)
