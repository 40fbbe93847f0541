"""Hand-computed summaries of ``sim.metrics`` (issue #27: the mutmut survivors of
``sim/metrics.py`` in ``summarize``, ``_stats``, ``_goodput``, ``speculative_summary`` and
``policy_summary``; docs/testing.md). Every expected number below is worked out by hand from
the three requests of ``REQUESTS``; none comes from the code under test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sim.metrics import SLO, LogHistogram, policy_summary, speculative_summary, summarize

# Three served requests and one rejected. Seconds. ttft 0.1 / 0.3 / 0.2; e2el 1.0 / 2.0 / 4.0;
# tpot = (e2el - ttft) / (output - 1): 0.9 / 9 = 0.1, 1.7 / 17 = 0.1, 3.8 / 19 = 0.2.
REQUESTS = pd.DataFrame({
    "arrival_time": [0.5, 1.0, 2.0, 3.0],
    "ttft": [0.1, 0.3, 0.2, np.nan],
    "tpot": [0.1, 0.1, 0.2, np.nan],
    "e2el": [1.0, 2.0, 4.0, np.nan],
    "finish_time": [1.5, 3.0, 6.0, np.nan],
    "prompt_tokens": [100, 200, 300, 5000],
    "output_tokens": [10, 18, 20, 0],
    "cached_tokens": [0, 100, 50, 0],
    "preemptions": [0, 1, 2, 0],
    "queue_delay": [0.0, 0.2, 0.1, np.nan],
    "rejected": [False, False, False, True],
    "accepted_draft_tokens": [3, 0, 5, 0],
    "proposed_draft_tokens": [8, 0, 8, 0],
})


def _itl(values_s=(0.1, 0.1, 0.2, 0.2)) -> LogHistogram:
    hist = LogHistogram()
    for v in values_s:
        hist.add(v)
    return hist


def test_counts_tokens_and_rates_over_the_run_from_t0():
    out = summarize(REQUESTS, _itl(), SLO())
    assert out["completed"] == 3 and out["rejected"] == 1
    assert out["duration_s"] == 6.0  # from t = 0 (before the first arrival) to the last finish
    assert out["total_input_tokens"] == 600 and out["total_output_tokens"] == 48
    assert out["request_throughput"] == pytest.approx(0.5)
    assert out["output_throughput"] == pytest.approx(8.0)
    assert out["total_token_throughput"] == pytest.approx(108.0)


def test_a_warm_up_window_opens_at_the_first_measured_send():
    out = summarize(REQUESTS, _itl(), SLO(), window_start=2.0)
    assert out["duration_s"] == 4.0
    assert out["request_throughput"] == pytest.approx(0.75)


def test_a_run_whose_first_arrival_is_before_zero_counts_from_it():
    early = REQUESTS.assign(arrival_time=REQUESTS["arrival_time"] - 1.0)
    assert summarize(early, _itl(), SLO())["duration_s"] == 6.5  # from -0.5 to 6.0


def test_latency_statistics_in_milliseconds_skip_the_rejected():
    out = summarize(REQUESTS, _itl(), SLO())
    assert out["mean_ttft_ms"] == pytest.approx(200.0)
    assert out["median_ttft_ms"] == pytest.approx(200.0)
    assert out["mean_e2el_ms"] == pytest.approx(7000.0 / 3)
    assert out["median_e2el_ms"] == pytest.approx(2000.0)
    # numpy's linear interpolation over [1000, 2000, 4000]: p90 at rank 1.8, p99 at rank 1.98
    assert out["p90_e2el_ms"] == pytest.approx(2000.0 + 0.8 * 2000.0)
    assert out["p99_e2el_ms"] == pytest.approx(2000.0 + 0.98 * 2000.0)
    assert out["mean_tpot_ms"] == pytest.approx(400.0 / 3)
    assert out["median_tpot_ms"] == pytest.approx(100.0)
    assert out["p90_tpot_ms"] == pytest.approx(100.0 + 0.8 * 100.0)
    assert out["p99_tpot_ms"] == pytest.approx(100.0 + 0.98 * 100.0)


def test_itl_queue_preemptions_and_prefix_hits():
    out = summarize(REQUESTS, _itl(), SLO())
    assert out["mean_itl_ms"] == pytest.approx(150.0)
    assert out["median_itl_ms"] == pytest.approx(100.0, rel=2e-3)  # bins 0.1% wide
    assert out["p90_itl_ms"] == pytest.approx(200.0, rel=2e-3)
    assert out["p99_itl_ms"] == pytest.approx(200.0, rel=2e-3)
    assert out["mean_queue_delay_ms"] == pytest.approx(100.0)
    assert out["total_preemptions"] == 3
    assert out["prefix_cache_hit_rate"] == pytest.approx(150 / 600)


def test_goodput_counts_requests_meeting_every_target_per_second():
    # ttft <= 250 ms drops the 300 ms one; e2el <= 3000 drops the 4 s one; tpot <= 100 too
    assert summarize(REQUESTS, _itl(), SLO(ttft_ms=250))["goodput"] == pytest.approx(2 / 6)
    assert summarize(REQUESTS, _itl(), SLO(e2el_ms=3000))["goodput"] == pytest.approx(2 / 6)
    assert summarize(REQUESTS, _itl(), SLO(tpot_ms=100))["goodput"] == pytest.approx(2 / 6)
    both = SLO(ttft_ms=250, e2el_ms=3000)
    assert summarize(REQUESTS, _itl(), both)["goodput"] == pytest.approx(1 / 6)
    # a value equal to its target meets it
    assert summarize(REQUESTS, _itl(), SLO(ttft_ms=300))["goodput"] == pytest.approx(3 / 6)
    assert summarize(REQUESTS, _itl(), SLO())["goodput"] == pytest.approx(3 / 6)


def test_a_run_with_nothing_served_reports_nan_latencies_and_zero_rates():
    none = REQUESTS.iloc[[3]]
    out = summarize(none, LogHistogram(), SLO())
    assert out["completed"] == 0 and out["rejected"] == 1
    for key in ("mean_ttft_ms", "median_e2el_ms", "p90_tpot_ms", "p99_ttft_ms",
                "mean_queue_delay_ms"):
        assert math.isnan(out[key]), key
    assert out["request_throughput"] == 0.0
    assert out["prefix_cache_hit_rate"] == 0.0


STEPS = pd.DataFrame({
    "spec_seqs": [2, 2, 0], "decode_seqs": [2, 2, 1],
    "duration": [1.0, 3.0, 0.0], "kv_blocks_used": [10, 40, 50], "kv_blocks_total": [100] * 3,
    "num_waiting": [4, 0, 9],
})


def test_speculative_summary_by_hand():
    out = speculative_summary(REQUESTS, STEPS)
    assert out["spec_draft_acceptance_rate"] == pytest.approx(8 / 16)
    assert out["spec_mean_acceptance_length"] == pytest.approx(1 + 8 / 4)
    # decode tokens: (10 - 1 - 0) + (18 - 1 - 1) + (20 - 1 - 2) = 9 + 16 + 17 = 42 over 5
    assert out["spec_tokens_per_step"] == pytest.approx(42 / 5)
    assert out["draft_bytes"] == 0.0


def test_speculative_summary_is_empty_without_drafts_and_nan_without_steps():
    no_drafts = REQUESTS.assign(accepted_draft_tokens=0, proposed_draft_tokens=0)
    assert speculative_summary(no_drafts, STEPS) == {}

    class Plan:
        draft_bytes = 2.5e9

    out = speculative_summary(no_drafts, STEPS.iloc[:0], Plan())
    assert out["draft_bytes"] == 2.5e9
    assert all(math.isnan(out[k]) for k in ("spec_draft_acceptance_rate",
                                            "spec_mean_acceptance_length",
                                            "spec_tokens_per_step"))


class _Sched:
    def __init__(self, **stats):
        self._stats = stats

    def stats(self):
        return self._stats


def test_policy_summary_sums_counters_and_weights_load_by_step_time():
    scheds = [_Sched(preemptions_recompute=2, swapped_out_bytes=1.5e6, prefix_hit_blocks=3,
                     prefix_query_blocks=12, swap_time_s=0.25),
              _Sched(preemptions_recompute=1, prefix_hit_blocks=1, prefix_query_blocks=4,
                     unknown_counter=99)]
    out = policy_summary(scheds, STEPS)
    assert out["preemptions_recompute"] == 3 and isinstance(out["preemptions_recompute"], int)
    assert out["swapped_out_bytes"] == 1.5e6 and out["swap_time_s"] == 0.25
    assert out["prefix_hit_blocks"] == 4 and "prefix_query_blocks" not in out
    assert out["prefix_cache_block_hit_rate"] == pytest.approx(4 / 16)
    assert "unknown_counter" not in out
    # occupancy 0.1 for 1 s and 0.4 for 3 s (the zero-length step weighs nothing)
    assert out["mean_kv_occupancy"] == pytest.approx((0.1 * 1 + 0.4 * 3) / 4)
    assert out["peak_kv_occupancy"] == pytest.approx(0.5)
    assert out["mean_num_waiting"] == pytest.approx(4 * 1 / 4)
    assert out["max_num_waiting"] == 9


def test_policy_summary_without_steps_or_lookups():
    out = policy_summary([_Sched()], None)
    assert out["prefix_cache_block_hit_rate"] == 0.0
    assert "mean_kv_occupancy" not in out
    zero = STEPS.assign(duration=0.0)
    assert math.isnan(policy_summary([], zero)["mean_kv_occupancy"])
