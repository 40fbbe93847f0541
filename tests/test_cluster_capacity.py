"""The capacity search: cheapest deployment meeting p90 TTFT and TPOT targets."""

from types import SimpleNamespace

import pandas as pd
import pytest

from sim.capacity import Candidate, candidates, meets, search
from sim.config import ConfigError

SMALL = {"workload": {"num_requests": 60, "output_tokens": 32,
                      "prompt_tokens": {"dist": "lognormal", "mean": 2000, "sigma": 0.5,
                                        "min": 64, "max": 8000}}, "seed": 1}


def test_candidates_are_cheapest_first_and_cover_every_split():
    cands = candidates(4, tps=(1, 2))
    gpus = [c.num_gpus for c in cands]
    assert gpus == sorted(gpus) and max(gpus) == 4
    assert cands[0] == Candidate("aggregated", tp=1, replicas=1)
    disagg = {c.label for c in cands if c.mode == "disaggregated"}
    assert {"P 1x tp1 + D 1x tp1", "P 3x tp1 + D 1x tp1", "P 1x tp2 + D 1x tp2",
            "P 1x tp1 + D 1x tp2", "P 1x tp1 + D 3x tp1"} <= disagg
    assert all(c.num_gpus <= 4 for c in cands)
    two = [c for c in cands if c.num_gpus == 2]
    assert two[0].mode == "aggregated" and two[-1].mode == "disaggregated"
    with pytest.raises(ConfigError, match="capacity.modes"):
        candidates(4, modes=("hybrid",))


def _fake_simulate(capacity_of):
    """A stand-in for sim.simulate: p90 TTFT falls with the deployment's capacity."""
    calls = []

    def simulate(cfg):
        pools = cfg.cluster.pools
        label = "+".join(f"{p.role}:{p.num_gpus}/{p.tp}" for p in pools)
        calls.append(label)
        cap = capacity_of(pools)
        return SimpleNamespace(summary={
            "completed": 100, "rejected": 0, "p90_ttft_ms": 1000.0 / cap, "p90_tpot_ms": 10.0,
            "goodput": cap, "request_throughput": 1.0})

    return simulate, calls


def test_search_stops_at_the_first_cost_that_meets_the_slos_and_keeps_the_best_goodput():
    # Disaggregated pools count double: at 2 GPUs, P1+D1 (capacity 4) beats 2x tp1 (capacity 2).
    def capacity(pools):
        gpus = sum(p.num_gpus for p in pools)
        return gpus * (2 if pools[0].role == "prefill" else 1)

    simulate, calls = _fake_simulate(capacity)
    result = search(SMALL, ttft_p90_ms=300.0, tpot_p90_ms=50.0, max_gpus=8, tps=(1,),
                    simulate=simulate)
    assert result.best == Candidate("disaggregated", prefill_tp=1, prefill_replicas=1,
                                    decode_tp=1, decode_replicas=1)
    assert result.table["num_gpus"].max() == 2  # nothing dearer was simulated
    assert len(calls) == 3  # 1x tp1, 2x tp1, P1+D1
    assert list(result.table["meets_slo"]) == [False, False, True]


def test_search_returns_none_when_nothing_within_the_budget_meets_the_slos():
    simulate, _ = _fake_simulate(lambda pools: 1.0)
    result = search(SMALL, ttft_p90_ms=1.0, tpot_p90_ms=None, max_gpus=2, tps=(1,),
                    modes=("aggregated",), simulate=simulate)
    assert result.best is None and len(result.table) == 2 and not result.table.meets_slo.any()


def test_meets_needs_every_request_served_and_both_percentiles():
    ok = {"completed": 10, "rejected": 0, "p90_ttft_ms": 100.0, "p90_tpot_ms": 20.0}
    assert meets(ok, 100.0, 20.0)
    assert not meets({**ok, "rejected": 1}, 100.0, 20.0)
    assert not meets(ok, 99.0, None) and not meets(ok, None, 19.0)
    assert not meets({**ok, "p90_ttft_ms": float("nan")}, 100.0, None)
    with pytest.raises(ConfigError, match="capacity"):
        search(SMALL, ttft_p90_ms=None, tpot_p90_ms=None, max_gpus=2)


def test_tps_at_which_the_model_does_not_fit_are_skipped_with_the_reason():
    simulate, calls = _fake_simulate(lambda pools: 100.0)
    result = search({**SMALL, "model": {"name": "llama-3.1-70b"}}, ttft_p90_ms=100.0,
                    tpot_p90_ms=None, max_gpus=4, tps=(1, 4), simulate=simulate)
    assert set(result.skipped_tps) == {1} and "tp=1" in result.skipped_tps[1]
    assert result.best == Candidate("aggregated", tp=4, replicas=1)
    assert calls == ["both:4/4"]


def test_real_search_adds_replicas_until_an_overload_clears():
    # 24 req/s of ~2,000-token prompts overloads one H100 (p90 TTFT ~0.6 s, TPOT ~80 ms)
    cfg = {**SMALL, "workload": {**SMALL["workload"], "rate": 24.0}}
    result = search(cfg, ttft_p90_ms=500.0, tpot_p90_ms=40.0, max_gpus=3, tps=(1,),
                    modes=("aggregated",), jobs=1)  # through sim.sweep, in this process
    table = result.table
    assert result.best is not None and result.best.num_gpus > 1, table
    assert not table[table.num_gpus < result.best.num_gpus].meets_slo.any()
    assert table.iloc[-1].meets_slo and table.iloc[-1].p90_ttft_ms <= 500.0


def test_search_through_the_sweep_matches_simulate_one_by_one():
    import sim

    kwargs = dict(ttft_p90_ms=300.0, tpot_p90_ms=40.0, max_gpus=2, tps=(1,))
    swept = search(SMALL, jobs=1, **kwargs)
    direct = search(SMALL, simulate=sim.simulate, **kwargs)
    pd.testing.assert_frame_equal(swept.table, direct.table)
    assert swept.best == direct.best
