"""Policy metrics: preemptions, swapped bytes, prefix block hits, KV occupancy and queue length."""

from __future__ import annotations

import pandas as pd
import pytest

from policies.chunked import ChunkedPrefillScheduler
from policies.continuous import ContinuousScheduler
from policies.kv_paged import PagedAllocator, PrefixCachingAllocator
from policies.swap import SwapSpace, SwapTimeExecutor
from sim.core import Request
from sim.engine import Engine, Replica, open_loop
from sim.executors import RooflineExecutor
from sim.metrics import MetricsRecorder, policy_summary
from tests.helpers import LinearHardware


def serve(scheduler, requests, executor=None):
    metrics = MetricsRecorder()
    executor = executor or RooflineExecutor(LinearHardware())
    Engine([Replica(0, scheduler, executor)], metrics).run(open_loop(requests))
    return metrics


def test_swap_preemption_shows_in_the_summary_and_the_request():
    swap = SwapSpace(capacity_bytes=1e9, kv_bytes_per_token=1e3, host_bw_bytes_s=1e6)
    sched = ContinuousScheduler(PagedAllocator(8, 4), preemption="swap", swap=swap)
    requests = [Request(i, 0.0, 8, 12) for i in range(2)]
    metrics = serve(sched, requests, SwapTimeExecutor(RooflineExecutor(LinearHardware()), swap))
    s = policy_summary([sched], metrics.steps_frame())
    assert s["preemptions_swap"] >= 1 and s["preemptions_recompute"] == 0
    assert s["swapped_out_bytes"] == s["swapped_in_bytes"] > 0
    assert s["swap_time_s"] == pytest.approx(2 * s["swapped_out_bytes"] / 1e6)
    df = metrics.requests_frame()
    assert df["kv_transfer_time"].sum() == pytest.approx(s["swap_time_s"])
    assert df["preemptions"].sum() == s["preemptions_swap"]
    # the swap time is part of the run: steps last longer than the hardware alone says
    steps = metrics.steps_frame()
    assert steps["duration"].sum() > s["swap_time_s"]


def test_prefix_block_hit_rate_and_rejections():
    sched = ChunkedPrefillScheduler(PrefixCachingAllocator(64, 4), max_waiting=2)
    shared = tuple(range(4))
    requests = [Request(0, 0.0, 16, 2, prefix_hashes=shared + (10,), hash_block_tokens=4),
                Request(1, 1.0, 20, 2, prefix_hashes=shared + (11,), hash_block_tokens=4),
                Request(2, 1.0, 4000, 2)]  # longer than the whole pool
    metrics = serve(sched, requests)
    s = policy_summary([sched], metrics.steps_frame())
    assert s["prefix_hit_blocks"] == 4 and s["prefix_cache_block_hit_rate"] == 4 / (4 + 5)
    assert s["rejected_too_long"] == 1 and s["rejected_queue_full"] == 0
    assert metrics.requests_frame()["cached_tokens"].tolist()[:2] == [0, 16]


def test_occupancy_and_queue_are_time_weighted():
    steps = pd.DataFrame({"duration": [1.0, 3.0], "kv_blocks_used": [10, 50],
                          "kv_blocks_total": [100, 100], "num_waiting": [4, 0]})
    s = policy_summary([], steps)
    assert s["mean_kv_occupancy"] == pytest.approx((0.1 * 1 + 0.5 * 3) / 4)
    assert s["peak_kv_occupancy"] == 0.5
    assert s["mean_num_waiting"] == pytest.approx(1.0) and s["max_num_waiting"] == 4
