"""Hand-computed summaries of ``sim.metrics`` (issue #27: the mutmut survivors of
``sim/metrics.py`` in ``summarize``, ``_stats``, ``_goodput``, ``speculative_summary`` and
``policy_summary``; docs/testing.md). Every expected number below is worked out by hand from
the three requests of ``REQUESTS``; none comes from the code under test."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
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
    # a percentile is its bin's geometric centre: 1 µs x 1.001^(k + 0.5), k the 0.1%-wide bin
    # of the value: log(0.1 / 1e-6) / log(1.001) = 11518.68, log(0.2 / 1e-6) / ... = 12212.17
    assert out["median_itl_ms"] == pytest.approx(1e-3 * 1.001 ** 11518.5, rel=1e-9)
    assert out["p90_itl_ms"] == pytest.approx(1e-3 * 1.001 ** 12212.5, rel=1e-9)
    assert out["p99_itl_ms"] == pytest.approx(1e-3 * 1.001 ** 12212.5, rel=1e-9)
    assert out["median_itl_ms"] == pytest.approx(100.0, rel=1e-3)  # within the bin width
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


def test_a_run_shorter_than_a_second_and_an_empty_run():
    # the window opens at 5.5 s, the last finish is at 6.0 s
    short = summarize(REQUESTS, _itl(), SLO(), window_start=5.5)
    assert short["duration_s"] == pytest.approx(0.5)
    assert short["request_throughput"] == pytest.approx(6.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" noise either
        empty = summarize(REQUESTS.iloc[:0], LogHistogram(), SLO())
    assert empty["completed"] == 0 and empty["duration_s"] < 1e-9  # nothing ran: zero length
    assert empty["request_throughput"] == 0.0 and math.isnan(empty["mean_ttft_ms"])


def test_a_run_with_nothing_served_reports_nan_latencies_and_zero_rates():
    none = REQUESTS.iloc[[3]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the empty statistics are NaN without a numpy warning
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


def test_decode_tokens_per_request_are_never_negative():
    # decode tokens = output - 1 - preemptions, at least 0: (1, 0) -> 0, (2, 3) -> 0, (5, 1) -> 3
    reqs = pd.DataFrame({"rejected": [False] * 3, "output_tokens": [1, 2, 5],
                         "preemptions": [0, 3, 1], "accepted_draft_tokens": [0, 0, 2],
                         "proposed_draft_tokens": [0, 0, 4]})
    out = speculative_summary(reqs, STEPS)
    assert out["spec_tokens_per_step"] == pytest.approx(3 / 5)


def test_no_served_request_with_draft_memory_reserved():
    class Plan:
        draft_bytes = 1e9

    out = speculative_summary(REQUESTS.iloc[:0], STEPS, Plan())  # steps ran, nothing finished
    assert math.isnan(out["spec_draft_acceptance_rate"])  # nothing proposed
    assert out["spec_mean_acceptance_length"] == 1.0  # 1 + 0 accepted over 4 verifies
    assert out["spec_tokens_per_step"] == 0.0
    assert speculative_summary(REQUESTS.iloc[:0], STEPS) == {}


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
    # bytes and seconds stay floats; the other counters are whole numbers
    assert isinstance(out["swapped_out_bytes"], float) and isinstance(out["swap_time_s"], float)
    assert isinstance(out["swapped_in_bytes"], float) and isinstance(out["evicted_blocks"], int)
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
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 division: the no-time case is NaN by rule
        out = policy_summary([], zero)
    assert math.isnan(out["mean_kv_occupancy"]) and math.isnan(out["mean_num_waiting"])
    assert out["peak_kv_occupancy"] == pytest.approx(0.5) and out["max_num_waiting"] == 9


def test_policy_summary_counts_nothing_for_a_scheduler_without_stats():
    out = policy_summary([object(), _Sched(evicted_blocks=5)])
    assert out["evicted_blocks"] == 5 and out["preemptions_recompute"] == 0


# --- LogHistogram on doubling bins (low 1, rel_width 1: bin k holds [2^k, 2^(k+1))) ---------
# high 20: int(log2(20)) + 2 = 6 bins, the last one also taking everything above 16.
def _doubling() -> LogHistogram:
    return LogHistogram(low=1.0, high=20.0, rel_width=1.0)


def test_doubling_bins_by_hand():
    hist = _doubling()
    for v in (0.5, 3.0, 5.0, 100.0):  # 0.5 is clamped into bin 0; 100 goes to the last bin
        hist.add(v)
    assert hist.counts().tolist() == [1, 1, 1, 0, 0, 1]
    assert hist.counts().dtype == np.int64  # whole counts, exact however many
    assert hist.count == 4
    assert hist.total == pytest.approx(108.5)  # the mean is over the values, not the bins
    assert hist.mean() == pytest.approx(108.5 / 4)
    # a quantile is the geometric centre 2^(k + 0.5) of the first bin whose cumulative count
    # reaches q * count: cumulative counts 1, 2, 3, 3, 3, 4
    assert hist.quantile(0.1) == pytest.approx(2 ** 0.5)
    assert hist.quantile(0.25) == pytest.approx(2 ** 0.5)  # exactly 1 of 4: still bin 0
    assert hist.quantile(0.5) == pytest.approx(2 ** 1.5)
    assert hist.quantile(0.75) == pytest.approx(2 ** 2.5)
    assert hist.quantile(1.0) == pytest.approx(2 ** 5.5)


def test_weighted_values_and_add_many_give_the_same_bins():
    one = _doubling()
    one.add(3.0, weight=3)
    one.add(6.0)
    many = _doubling()
    many.add_many(np.array([3.0, 6.0]), np.array([3, 1]))
    listed = _doubling()
    listed.add_many([3.0, 3.0, 3.0, 6.0])
    for hist in (one, many, listed):
        assert hist.counts().tolist() == [0, 3, 1, 0, 0, 0]
        assert hist.count == 4
        assert hist.mean() == pytest.approx((3 * 3.0 + 6.0) / 4)
    scalar = _doubling()
    scalar.add_many(np.array([6.0, 12.0]), 2)  # a scalar weight applies to every value
    assert scalar.counts().tolist() == [0, 0, 2, 2, 0, 0]
    assert scalar.total == pytest.approx(36.0)


def test_the_buffer_is_binned_when_full_and_keeps_counting_after():
    hist = _doubling()
    hist.add_many(np.full(LogHistogram._BUFFER - 1, 3.0))
    assert len(hist._values) == LogHistogram._BUFFER - 1  # not binned yet
    hist.add(6.0)  # the 65,536th value fills the buffer
    assert len(hist._values) == 0 and hist._count == LogHistogram._BUFFER
    hist.add(12.0)
    hist.add_many([12.0], 2)
    assert hist.counts().tolist() == [0, LogHistogram._BUFFER - 1, 1, 3, 0, 0]
    assert hist.count == LogHistogram._BUFFER + 3
    # the mean is over both binned batches: 65,535 x 3 + 6 + 3 x 12
    assert hist.total == pytest.approx((LogHistogram._BUFFER - 1) * 3.0 + 6.0 + 36.0)
    big = _doubling()
    big.add_many(np.full(LogHistogram._BUFFER, 6.0), np.full(LogHistogram._BUFFER, 2))
    assert len(big._values) == 0 and big._count == 2 * LogHistogram._BUFFER


def test_counts_is_a_copy_and_an_empty_histogram_is_nan():
    hist = _doubling()
    assert math.isnan(hist.mean()) and math.isnan(hist.quantile(0.5))
    assert hist.count == 0 and hist.total == 0.0
    hist.add(3.0)
    hist.counts()[1] = 99
    assert hist.counts().tolist() == [0, 1, 0, 0, 0, 0]


def test_default_bins_are_a_tenth_of_a_percent_from_a_microsecond():
    hist = LogHistogram()
    hist.add_many([0.5, 1.0, 1.0015])  # 1.0015 is one bin (0.1%) above 1.0
    assert hist.quantile(1 / 3) == pytest.approx(0.5, rel=1e-3)
    assert hist.quantile(2 / 3) == pytest.approx(1.0, rel=1e-3)
    assert hist.quantile(1.0) == pytest.approx(1.0015, rel=1e-3)
    assert hist.quantile(2 / 3) < hist.quantile(1.0)
    tiny = LogHistogram()
    tiny.add(1e-9)  # below the 1 µs floor: binned at it
    assert tiny.quantile(0.5) == pytest.approx(1e-6, rel=1e-3)
    # log(1e5 / 1e-6) / log(1.001) = 25341.1 -> 25341 + 2 bins
    assert len(tiny.counts()) == 25343


# --- MetricsRecorder: what one step and one request become in the tables --------------------
def _req(rid, out_so_far=0, **kw):
    from sim.core import Request

    r = Request(request_id=rid, arrival_time=kw.pop("arrival", 0.0),
                prompt_tokens=kw.pop("prompt", 100), output_tokens=kw.pop("output", 10), **kw)
    r.num_output_tokens = out_so_far
    return r


def _mixed_batch():
    """Seven sequences: a prompt (100 new), the first decode after it (1 new, 1 output so
    far), a verify of 3 drafts (4), a static batching pad (1), a recompute after preemption (50
    new with 2 outputs), a 3-token chunk carrying 1 draft (not 1 + draft: a prefill) and the
    last prompt token after a prefix hit (1 new, no output yet: a prefill). Prefill 100 + 50 +
    3 + 1 = 154; decode 1 + 4 + 1 = 6, by 2 real decoding sequences (the pad computes but
    decodes nothing); drafts 3 + 1 = 4 on 2 sequences."""
    from sim.core import Batch

    reqs = [_req(0), _req(1, 1), _req(2, 5), _req(3, 10), _req(4, 2), _req(5, 2), _req(6)]
    return Batch(reqs, new_tokens=[100, 1, 4, 1, 50, 3, 1],
                 context_tokens=[0, 100, 104, 109, 0, 0, 99], draft_tokens=[0, 0, 3, 0, 0, 1, 0],
                 padding=[False, False, False, True, False, False, False])


def _two_steps(rec):
    from sim.core import Batch

    rec.record_step(1, 2.5, 0.25, _mixed_batch(), 7, 10, 3, 6)
    # one decode without drafts: no verifying sequence
    rec.record_step(0, 2.75, 0.5, Batch([_req(9, 4)], [1], [104]), 2, 10, 0, 1)


ROW_1 = dict(replica=1, start_time=2.5, duration=0.25, num_seqs=7, prefill_tokens=154,
             decode_tokens=6, kv_blocks_used=7, kv_blocks_total=10, num_waiting=3, num_running=6,
             decode_seqs=2, spec_seqs=2, draft_tokens=4)
ROW_2 = dict(replica=0, start_time=2.75, duration=0.5, num_seqs=1, prefill_tokens=0,
             decode_tokens=1, kv_blocks_used=2, kv_blocks_total=10, num_waiting=0, num_running=1,
             decode_seqs=1, spec_seqs=0, draft_tokens=0)


def _assert_steps(frame, rows):
    from sim.metrics import STEP_COLUMNS

    assert list(frame.columns) == list(STEP_COLUMNS)
    assert frame.to_dict("records") == rows
    for col in STEP_COLUMNS:
        want = np.float64 if col in ("start_time", "duration") else np.int64
        assert frame[col].dtype == want, col


def test_record_step_splits_prefill_decode_and_drafts_by_hand():
    from sim.metrics import MetricsRecorder

    rec = MetricsRecorder()
    assert rec.itl.count == 0 and math.isnan(rec.itl.mean())  # an empty ITL histogram
    _two_steps(rec)
    assert rec.num_steps == 2
    _assert_steps(rec.steps_frame(), [ROW_1, ROW_2])


def test_record_step_refuses_a_batch_whose_lists_differ_in_length():
    from sim.metrics import MetricsRecorder

    batch = _mixed_batch()
    batch.padding = batch.padding[:-1]  # one flag short: no sequence may be silently dropped
    with pytest.raises(ValueError):
        MetricsRecorder().record_step(0, 0.0, 0.1, batch, 1, 10, 0, 7)


def test_record_steps_takes_arrays_and_shared_scalars_and_zeroes_the_rest():
    from sim.metrics import MetricsRecorder

    rec = MetricsRecorder()
    _two_steps(rec)
    rec.record_steps({"start_time": np.array([3.25, 3.5]), "duration": 0.25, "replica": 2,
                      "num_seqs": np.array([4, 5], dtype=np.int64), "decode_tokens": 4})
    zero = dict.fromkeys(ROW_1, 0)
    more = [{**zero, "replica": 2, "start_time": t, "duration": 0.25, "num_seqs": n,
             "decode_tokens": 4} for t, n in ((3.25, 4), (3.5, 5))]
    assert rec.num_steps == 4
    _assert_steps(rec.steps_frame(), [ROW_1, ROW_2, *more])


def test_steps_spool_to_parquet_every_n_rows(tmp_path):
    from sim.metrics import MetricsRecorder

    rec = MetricsRecorder(spool_dir=tmp_path / "run" / "spool", spool_rows=2)  # made
    _two_steps(rec)
    assert rec._spool.written == 2 and len(rec._step["start_time"]) == 0  # 2 rows: spooled
    rec.record_step(0, 3.0, 0.5, _mixed_batch(), 7, 10, 3, 6)
    assert rec.num_steps == 3 and rec._spool.written == 2
    rec.record_steps({"start_time": np.array([3.5]), "duration": np.array([0.5])})
    assert rec._spool.written == 4 and rec.num_steps == 4  # the batch call spools too
    path = rec.steps_path()
    assert path == tmp_path / "run" / "spool" / "steps.parquet" and rec.steps_path() == path
    assert pq.read_schema(path).names == list(ROW_1)  # the step columns only, no index column
    third = {**ROW_1, "replica": 0, "start_time": 3.0, "duration": 0.5}
    fourth = {**dict.fromkeys(ROW_1, 0), "start_time": 3.5, "duration": 0.5}
    frame = rec.steps_frame()
    _assert_steps(frame, [ROW_1, ROW_2, third, fourth])
    assert frame.index.tolist() == [0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="^steps were recorded after the step spool was "
                                           "closed$"):
        rec.record_steps({"start_time": np.array([9.0, 9.5])})  # 2 rows: a write


def test_an_empty_spool_still_writes_the_columns(tmp_path):
    from sim.metrics import MetricsRecorder

    rec = MetricsRecorder(spool_dir=tmp_path, spool_rows=4)
    rec.record_steps({"start_time": np.array([1.0])})
    assert rec._spool.written == 0  # 1 row of 4: kept in memory until the file is asked for
    empty = MetricsRecorder(spool_dir=tmp_path / "none")
    frame = empty.steps_frame()
    assert len(frame) == 0 and list(frame.columns) == list(ROW_1)
    assert pq.read_schema(tmp_path / "none" / "steps.parquet").names == list(ROW_1)


def test_steps_path_refuses_an_in_memory_recorder():
    from sim.metrics import MetricsRecorder

    with pytest.raises(ValueError, match=r"^steps_path: this recorder keeps its steps in memory "
                                         r"\(no spool_dir\)$"):
        MetricsRecorder().steps_path()


def _served(rid, arrival, scheduled, first, finish, output, **kw):
    r = _req(rid, arrival=arrival, output=output, **kw)
    r.first_scheduled_time, r.first_token_time, r.finish_time = scheduled, first, finish
    return r


def test_requests_frame_by_hand():
    from sim.metrics import REQUEST_COLUMNS, MetricsRecorder

    rec = MetricsRecorder()
    # ttft 1.0, e2el 3.0, tpot (4 - 2) / (5 - 1) = 0.5, queue delay 0.5
    a = _served(2, 1.0, 1.5, 2.0, 4.0, 5, prompt=10, cached_tokens=4, preemptions=1,
                kv_transfer_time=0.125, accepted_draft_tokens=3, proposed_draft_tokens=6)
    b = _served(0, 0.0, 0.25, 0.5, 0.625, 1, prompt=7)  # one token: no tpot, even if the
    # finish is recorded after the first token (0 decode tokens: undefined, not infinite)
    rec.record_finished(a, replica=3)
    rec.record_finished(b, replica=1)
    too_long = _req(1, arrival=0.2, prompt=9999, output=7, rejected_reason="too_long")
    rec.record_rejected(too_long)
    rec.record_rejected(_req(4, arrival=0.3, prompt=5, output=2))  # no reason given
    assert rec.num_finished == 4
    df = rec.requests_frame()
    assert df["request_id"].tolist() == [0, 1, 2, 4]
    assert df["rejected"].tolist() == [False, True, False, True]
    assert df["rejected_reason"].tolist() == ["", "too_long", "", ""]
    assert df["prompt_tokens"].tolist() == [7, 9999, 10, 5]
    assert df["output_tokens"].tolist() == [1, 7, 5, 2]
    served = df[~df["rejected"]].reset_index(drop=True)
    assert served["ttft"].tolist() == [0.5, 1.0]
    assert served["e2el"].tolist() == [0.625, 3.0]
    assert math.isnan(served["tpot"][0]) and served["tpot"][1] == 0.5
    assert served["queue_delay"].tolist() == [0.25, 0.5]
    assert served["replica"].tolist() == [1, 3]
    assert served["cached_tokens"].tolist() == [0, 4]
    assert served["preemptions"].tolist() == [0, 1]
    assert served["kv_transfer_time"].tolist() == [0.0, 0.125]
    assert served["accepted_draft_tokens"].tolist() == [0, 3]
    assert served["proposed_draft_tokens"].tolist() == [0, 6]
    assert served["arrival_time"].tolist() == [0.0, 1.0]
    assert served["first_scheduled_time"].tolist() == [0.25, 1.5]
    assert served["first_token_time"].tolist() == [0.5, 2.0]
    assert served["finish_time"].tolist() == [0.625, 4.0]
    rejected = df[df["rejected"]]
    assert rejected["arrival_time"].tolist() == [0.2, 0.3]
    assert list(df.columns) == [*REQUEST_COLUMNS, "ttft", "e2el", "tpot", "queue_delay",
                                "rejected", "rejected_reason"]
    assert df.index.tolist() == [0, 1, 2, 3]
    alone = MetricsRecorder()
    alone.record_finished(a, replica=3)
    frame = alone.requests_frame()
    for col in ("request_id", "prompt_tokens", "output_tokens", "cached_tokens", "preemptions",
                "replica", "accepted_draft_tokens", "proposed_draft_tokens"):
        assert frame[col].dtype == np.int64, col
    assert frame["rejected"].tolist() == [False] and frame["rejected_reason"].tolist() == [""]


def test_a_request_without_times_gets_nan_and_columns_append_in_bulk():
    from sim.metrics import REQUEST_COLUMNS, MetricsRecorder

    rec = MetricsRecorder()
    rec.record_finished(_req(0, arrival=1.0, output=3), replica=0)  # never scheduled
    df = rec.requests_frame()
    for col in ("first_scheduled_time", "first_token_time", "finish_time", "ttft", "e2el",
                "tpot", "queue_delay"):
        assert math.isnan(df[col][0]), col
    bulk = MetricsRecorder()
    cols = {c: np.zeros(2) for c in REQUEST_COLUMNS}
    cols.update(request_id=np.array([5, 6]), arrival_time=np.array([1.0, 2.0]),
                first_token_time=np.array([1.5, 2.25]), finish_time=np.array([2.0, 3.25]),
                output_tokens=np.array([2, 5]))
    bulk.record_finished_columns(cols)
    df = bulk.requests_frame()
    assert df["request_id"].tolist() == [5, 6] and bulk.num_finished == 2
    assert df["ttft"].tolist() == [0.5, 0.25] and df["tpot"].tolist() == [0.5, 0.25]
