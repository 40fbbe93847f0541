"""examples/policy_study.py at a reduced size: it runs, and its two findings hold."""

from __future__ import annotations

from examples.policy_study import DEFAULT_TRACE, batching_study, prefix_study


def test_chunked_prefill_lowers_p99_tpot_on_the_azure_trace():
    assert DEFAULT_TRACE.is_file(), f"missing {DEFAULT_TRACE}: the shared traces are required"
    results = batching_study(num_requests=200, trace=DEFAULT_TRACE, time_scale=3.0)
    prefill_first = results.pop("continuous, prefill first (8192)")
    assert prefill_first["completed"] == 200
    for name, chunked in results.items():
        assert chunked["completed"] == 200
        assert chunked["p99_tpot_ms"] < prefill_first["p99_tpot_ms"], name
    # the smallest budget is the strongest cure for decode stalls
    assert results["chunked prefill (512)"]["p99_itl_ms"] < 0.8 * prefill_first["p99_itl_ms"]


def test_prefix_caching_lowers_mean_ttft_on_shared_system_prompts():
    results = prefix_study(num_requests=150, trace=DEFAULT_TRACE)
    plain = results.pop("paged, no prefix cache")
    assert plain["prefix_cache_hit_rate"] == 0.0
    for name, cached in results.items():
        assert cached["completed"] == plain["completed"] == 150
        assert cached["prefix_cache_hit_rate"] > 0.5, name
        assert cached["mean_ttft_ms"] < 0.7 * plain["mean_ttft_ms"], name
