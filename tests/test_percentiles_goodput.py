"""Latency percentiles and goodput against hand-computed values.

Percentiles follow the usual "linear" definition (Hyndman & Fan type 7, numpy's and vLLM's
benchmark's): the q-th percentile of n sorted values v_0..v_{n-1} is v_i + f (v_{i+1} - v_i)
with i + f = q (n - 1) / 100. The expected values below are worked out by hand from that
definition and from the step times of ``LinearHardware`` (5 ms + 10 us per new token + 10 ns
per cached token), never by calling numpy on the same numbers.
"""

import pytest

from policies.continuous import ContinuousScheduler
from policies.kv_paged import PagedAllocator
from sim.core import Request
from sim.engine import Engine, Replica, open_loop
from sim.executors import RooflineExecutor
from sim.metrics import SLO, LogHistogram, MetricsRecorder, summarize
from tests.helpers import LinearHardware


def _isolated_run():
    """Ten requests 10 s apart, so each runs alone: prompt P = 100, 200, ..., 1000, 11 output
    tokens (one from the prefill step, ten decode steps)."""
    metrics = MetricsRecorder()
    replica = Replica(0, ContinuousScheduler(PagedAllocator(1000, 16)),
                      RooflineExecutor(LinearHardware()))
    Engine([replica], metrics).run(open_loop([Request(i, 10.0 * i, 100 * (i + 1), 11)
                                              for i in range(10)]))
    return metrics


def test_per_request_latencies_by_hand():
    df = _isolated_run().requests_frame()
    for i, row in df.iterrows():
        p = 100 * (i + 1)
        ttft = 0.005 + 1e-5 * p  # one prefill step of P tokens
        # decode steps see P, P+1, ..., P+9 cached tokens: mean P + 4.5
        tpot = 0.005 + 1e-5 + 1e-8 * (p + 4.5)
        assert row["ttft"] == pytest.approx(ttft, rel=1e-9)
        assert row["tpot"] == pytest.approx(tpot, rel=1e-9)
        assert row["e2el"] == pytest.approx(ttft + 10 * tpot, rel=1e-9)


def test_summary_percentiles_and_goodput_by_hand():
    metrics = _isolated_run()
    slo = SLO(ttft_ms=9.5, tpot_ms=5.015)
    s = summarize(metrics.requests_frame(), metrics.itl, slo)
    # TTFT 6, 7, ..., 15 ms: mean = median = 10.5; p90 at 0.9 x 9 = 8.1 -> 14 + 0.1 = 14.1;
    # p99 at 8.91 -> 14.91
    assert s["mean_ttft_ms"] == pytest.approx(10.5, rel=1e-9)
    assert s["median_ttft_ms"] == pytest.approx(10.5, rel=1e-9)
    assert s["p90_ttft_ms"] == pytest.approx(14.1, rel=1e-9)
    assert s["p99_ttft_ms"] == pytest.approx(14.91, rel=1e-9)
    # e2el = ttft + 10 tpot = 5 + 0.01 P + 10 (5.01 + 1e-5 (P + 4.5)) = 55.10045 + 0.0101 P ms
    e2el = [1e3 * (0.005 + 1e-5 * p + 10 * (0.00501 + 1e-8 * (p + 4.5)))
            for p in range(100, 1001, 100)]
    assert s["median_e2el_ms"] == pytest.approx((e2el[4] + e2el[5]) / 2, rel=1e-9)
    # goodput: TTFT <= 9.5 ms means P <= 450; TPOT <= 5.015 ms means P + 4.5 <= 500:
    # P = 100..400 meet both, 4 requests, over a run that ends when the last one finishes:
    # 90 s + e2el(P = 1000) = 90.06520045 s
    duration = 90 + e2el[-1] / 1e3
    assert duration == pytest.approx(90.06520045, rel=1e-12)
    assert s["duration_s"] == pytest.approx(duration, rel=1e-12)
    assert s["goodput"] == pytest.approx(4 / duration, rel=1e-9)
    assert summarize(metrics.requests_frame(), metrics.itl, SLO())["goodput"] == pytest.approx(
        10 / duration, rel=1e-9)  # no target: every completed request counts
    assert e2el[0] == pytest.approx(56.11045, rel=1e-12)
    # a target on e2el only: 55.10045 + 0.0101 P <= 59 ms means P <= 386: 100, 200, 300
    only_e2el = summarize(metrics.requests_frame(), metrics.itl, SLO(e2el_ms=59.0))
    assert only_e2el["goodput"] == pytest.approx(3 / duration, rel=1e-9)


def test_rejected_requests_count_in_neither_latencies_nor_goodput():
    metrics = _isolated_run()
    metrics.record_rejected(Request(99, 1.0, 10**6, 5))
    s = summarize(metrics.requests_frame(), metrics.itl, SLO(ttft_ms=9.5))
    assert s["completed"] == 10 and s["rejected"] == 1
    assert s["p99_ttft_ms"] == pytest.approx(14.91, rel=1e-9)
    assert s["goodput"] == pytest.approx(4 / 90.06520045, rel=1e-9)


def test_inter_token_latency_percentiles_within_the_histograms_bin_width():
    """1, 2, ..., 1000 ms: the q-quantile is the ceil(q n)-th value, 500 / 900 / 990 ms, and
    the log-binned histogram returns it within its 0.1 % bin width; the mean is exact."""
    itl = LogHistogram()
    itl.add_many([k / 1000 for k in range(1000, 0, -1)])  # any order
    assert itl.mean() == pytest.approx(0.5005, rel=1e-12)
    for q, value in ((0.5, 0.500), (0.9, 0.900), (0.99, 0.990)):
        assert itl.quantile(q) == pytest.approx(value, rel=1e-3)
    # the run above: 100 gaps (10 per request); the 99th smallest is P = 1000's ninth decode
    # step, over 1008 cached tokens: 5.01 + 0.01008 ms
    run = _isolated_run()
    assert run.itl.count == 100
    assert run.itl.quantile(0.99) == pytest.approx(0.00501 + 1e-8 * 1008, rel=1e-3)
