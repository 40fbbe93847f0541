"""Cluster serving: routers, pools, and disaggregated prefill/decode with KV transfer."""

import math

import numpy as np
import pandas as pd
import pytest

import sim
from policies.continuous import ContinuousScheduler
from policies.kv_paged import PagedAllocator
from sim.config import ConfigError
from sim.core import Request
from sim.disagg import Disaggregation, PrefillStage, admitted_for_decode
from sim.engine import Engine, Replica, RoundRobinRouter, open_loop
from sim.executors import RooflineExecutor
from sim.interconnect import Interconnect, LinkEnd
from sim.metrics import MetricsRecorder
from sim.routers import (
    LeastKVLoadRouter,
    LeastOutstandingRouter,
    PoolRouter,
    PrefixAwareRouter,
    SessionAffinityRouter,
    make_router,
)
from tests.helpers import LinearHardware

ROUTERS = ("round_robin", "least_outstanding", "least_kv", "prefix_aware", "session_affinity")
OUTPUT = {"dist": "lognormal", "mean": 64, "sigma": 0.8, "min": 1, "max": 512}
BASE = {"workload": {"num_requests": 80, "rate": 8.0, "output_tokens": OUTPUT}, "seed": 3}


def _frames_equal(a, b) -> None:
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.steps, b.steps)


# ---- one replica: a cluster is exactly the single-replica simulator ---------------------------


@pytest.fixture(scope="module")
def single():
    return sim.simulate(BASE)


@pytest.mark.parametrize("router", ROUTERS)
def test_one_replica_cluster_gives_exactly_the_single_replica_results(router, single):
    as_pool = sim.simulate({**BASE, "cluster": {"router": router, "pools": [{"num_gpus": 1}]}})
    by_router = sim.simulate({**BASE, "cluster": {"router": router}})
    _frames_equal(single, as_pool)
    _frames_equal(single, by_router)
    assert as_pool.summary["num_gpus"] == 1 and "mean_kv_transfer_ms" not in as_pool.summary


# ---- routers ---------------------------------------------------------------------------------


def test_round_robin_spreads_requests_evenly():
    result = sim.simulate({**BASE, "hardware": {"num_gpus": 4},
                           "workload": {"num_requests": 200, "rate": 20.0, "output_tokens": 16}})
    counts = result.requests["replica"].value_counts()
    assert sorted(counts.index) == [0, 1, 2, 3] and set(counts) == {50}


def _replicas(speeds, blocks=4000):
    return [Replica(i, ContinuousScheduler(PagedAllocator(blocks, 16)),
                    RooflineExecutor(LinearHardware(base_s=0.004 * s, per_token_s=2e-5 * s)))
            for i, s in enumerate(speeds)]


def _requests(n, rate=40.0, prompt=300, output=40, **kw):
    return [Request(i, i / rate, prompt, output, **kw) for i in range(n)]


def _run(replicas, router, requests):
    metrics = MetricsRecorder()
    Engine(replicas, metrics, router=router).run(open_loop(requests))
    return metrics.requests_frame()


def test_least_outstanding_sends_less_to_a_slow_replica_and_cuts_latency():
    speeds = (1.0, 1.0, 4.0)  # replica 2 is four times slower
    rr = _run(_replicas(speeds), RoundRobinRouter(), _requests(600))
    lo = _run(_replicas(speeds), LeastOutstandingRouter(), _requests(600))
    assert (rr["replica"] == 2).sum() == 200
    assert (lo["replica"] == 2).sum() < 150
    assert lo["e2el"].mean() < rr["e2el"].mean()


def test_load_routers_spread_a_burst_of_simultaneous_arrivals():
    burst = [Request(i, 0.0, 500, 10) for i in range(12)]
    for router in (LeastOutstandingRouter(), LeastKVLoadRouter(), PrefixAwareRouter()):
        df = _run(_replicas((1.0, 1.0, 1.0)), router, [Request(r.request_id, 0.0, 500, 10)
                                                       for r in burst])
        assert set(df["replica"].value_counts()) == {4}, type(router).__name__


def test_least_kv_prefers_the_emptier_pool_of_heterogeneous_replicas():
    small, large = _replicas((1.0,), blocks=200)[0], _replicas((1.0,), blocks=2000)[0]
    large.index = 1
    router = LeastKVLoadRouter()
    picks = [router.route(Request(i, 0.0, 1000, 10), [small, large]).index for i in range(10)]
    # Each 1000-token prompt claims 63 blocks: 3 fill 95 % of the small pool, the large takes 7.
    assert picks.count(1) >= 7


class FixedPrefixAllocator(PagedAllocator):
    """A paged pool that claims a fixed cached prefix for every request (routing test double)."""

    def __init__(self, cached_tokens, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cached_tokens = cached_tokens

    def lookup_prefix(self, request):
        return self.cached_tokens


def test_prefix_aware_prefers_the_longest_cached_prefix_unless_that_replica_is_overloaded():
    replicas = [Replica(i, ContinuousScheduler(FixedPrefixAllocator(c, 1000, 16)), None)
                for i, c in enumerate((0, 800, 400))]
    req = Request(0, 0.0, 1000, 10, prefix_hashes=(1, 2))
    router = PrefixAwareRouter(load_weight=1.0)
    assert router.route(req, replicas).index == 1
    replicas[1].scheduler.running.extend(Request(100 + i, 0.0, 10, 1) for i in range(6))
    assert router.route(Request(1, 0.0, 1000, 10, prefix_hashes=(1, 2)), replicas).index == 2
    assert PrefixAwareRouter(load_weight=0.0).route(req, replicas).index == 1


def test_session_affinity_keeps_a_session_on_one_replica():
    reqs = [Request(i, i * 0.01, 200, 20, session_id=i % 5) for i in range(100)]
    df = _run(_replicas((1.0, 1.0, 1.0)), SessionAffinityRouter(), reqs)
    homes = df.assign(session=df["request_id"] % 5).groupby("session")["replica"].nunique()
    assert (homes == 1).all()
    assert df["replica"].nunique() == 3  # new sessions still go to the least loaded


def test_unknown_router_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"^cluster.router: .*round_robin"):
        sim.load_config({"cluster": {"router": "random"}})
    with pytest.raises(ConfigError, match="allowed: round_robin"):
        make_router("random")


# ---- heterogeneous and disaggregated pools ---------------------------------------------------


def test_heterogeneous_pools_give_each_replica_its_own_hardware_and_kv_pool():
    result = sim.simulate({**BASE, "cluster": {"router": "least_kv", "pools": [
        {"gpu": "h100", "num_gpus": 1}, {"gpu": "a100", "num_gpus": 2, "tp": 2}]}})
    totals = result.steps.groupby("replica")["kv_blocks_total"].first()
    assert list(totals.index) == [0, 1] and totals[0] != totals[1]
    assert result.summary["num_gpus"] == 3 and result.summary["num_replicas"] == 2


def _disagg_config(**interconnect):
    return {**BASE, "cluster": {"pools": [{"role": "prefill", "num_gpus": 1},
                                          {"role": "decode", "num_gpus": 1}],
                                "interconnect": interconnect}}


def _linear_executor(config, scheduler, plan):
    return RooflineExecutor(LinearHardware())


def test_kv_transfer_time_is_a_column_and_part_of_ttft():
    cfg = _disagg_config(kind="infiniband", bandwidth_gb_s=10.0, latency_us=50.0)
    cfg["workload"] = {"num_requests": 1, "prompt_tokens": 2000, "output_tokens": 5}
    result = sim.simulate(cfg, executor_factory=_linear_executor)
    row = result.requests.iloc[0]
    kv_bytes = result.plan.kv_bytes_per_token  # llama-3.1-8b, tp=1: whole KV on one GPU
    expected = 50e-6 + 2000 * kv_bytes / 10e9
    assert row["kv_transfer_time"] == pytest.approx(expected, rel=1e-9)
    hw = LinearHardware()
    prefill, first_decode = hw.step_time_s([(2000, 0)]), hw.step_time_s([(1, 1999)])
    assert row["ttft"] == pytest.approx(prefill + expected + first_decode, rel=1e-9)
    assert row["replica"] == 1  # finished on the decode replica
    assert result.summary["mean_kv_transfer_ms"] == pytest.approx(expected * 1e3)


def test_decode_admission_waits_for_the_transfer():
    cfg = _disagg_config(kind="roce", bandwidth_gb_s=1.0)  # slow: 2000 tokens take ~0.26 s
    cfg["workload"] = {"num_requests": 1, "prompt_tokens": 2000, "output_tokens": 5}
    result = sim.simulate(cfg, executor_factory=_linear_executor)
    steps, row = result.steps, result.requests.iloc[0]
    prefill_end = (steps[steps.replica == 0].start_time + steps[steps.replica == 0].duration).max()
    decode_start = steps[steps.replica == 1].start_time.min()
    assert decode_start == pytest.approx(prefill_end + row["kv_transfer_time"], rel=1e-9)


def test_a_shared_link_makes_simultaneous_transfers_queue():
    cfg = _disagg_config(kind="roce", bandwidth_gb_s=5.0, latency_us=0.0, shared=True)
    cfg["workload"] = {"arrival": "closed", "concurrency": 2, "num_requests": 2,
                       "prompt_tokens": 1000, "output_tokens": 3,
                       "client": {"mode": "off"}}  # both sent at the same instant
    result = sim.simulate(cfg, executor_factory=_linear_executor)
    times = sorted(result.requests["kv_transfer_time"])
    one = 1000 * result.plan.kv_bytes_per_token / 5e9
    assert times == pytest.approx([one, 2 * one], rel=1e-9)  # the second waited for the first
    per_gpu = _disagg_config(kind="roce", bandwidth_gb_s=5.0, latency_us=0.0)
    per_gpu["workload"] = cfg["workload"]
    apart = sim.simulate(per_gpu, executor_factory=_linear_executor).requests
    # Per-replica links: both leave the same prefill replica, so its egress still serializes.
    assert sorted(apart["kv_transfer_time"]) == pytest.approx([one, 2 * one], rel=1e-9)


def test_transfers_to_different_decode_replicas_run_in_parallel_on_per_gpu_links():
    cfg = {**BASE, "workload": {"arrival": "closed", "concurrency": 2, "num_requests": 2,
                                "prompt_tokens": 1000, "output_tokens": 3},
           "cluster": {"decode_router": "least_outstanding", "pools": [
               {"role": "prefill", "num_gpus": 2}, {"role": "decode", "num_gpus": 2}],
               "interconnect": {"kind": "roce", "bandwidth_gb_s": 5.0, "latency_us": 0.0}}}
    result = sim.simulate(cfg, executor_factory=_linear_executor)
    one = 1000 * result.plan.kv_bytes_per_token / 5e9
    assert list(result.requests["kv_transfer_time"]) == pytest.approx([one, one], rel=1e-9)
    assert sorted(result.requests["replica"]) == [2, 3]


def test_one_token_requests_finish_on_the_prefill_replica():
    cfg = _disagg_config()
    cfg["workload"] = {"num_requests": 20, "prompt_tokens": 300, "output_tokens": 1}
    df = sim.simulate(cfg, executor_factory=_linear_executor).requests
    assert (df["replica"] == 0).all() and (df["kv_transfer_time"] == 0).all()


def test_a_request_no_decode_pool_can_hold_is_rejected_at_the_front_door():
    cfg = _disagg_config()
    cfg["cluster"]["pools"][1]["gpu"] = "a100-40gb"
    cfg["workload"] = {"num_requests": 3, "prompt_tokens": 200_000, "output_tokens": 10}
    df = sim.simulate(cfg).requests
    assert df["rejected"].all() and df["rejected_reason"].str.contains("decode").all()


def _disagg_engine(num_prefill, num_decode, prefill_blocks, decode_blocks, bandwidth=1e9,
                   fast_forward=True):
    ends, replicas = {}, []
    disagg = Disaggregation(Interconnect(ends, 1e-4), LeastKVLoadRouter(admitted_for_decode))
    for i in range(num_prefill + num_decode):
        decode = i >= num_prefill
        sched = ContinuousScheduler(PagedAllocator(decode_blocks if decode else prefill_blocks, 16),
                                    max_num_seqs=64)
        replica = Replica(i, sched if decode else PrefillStage(sched, i, disagg),
                          RooflineExecutor(LinearHardware()))
        replicas.append(replica)
        ends[i] = LinkEnd(1, 1e5, bandwidth)
        (disagg.add_decode if decode else disagg.add_prefill)(replica)
    metrics = MetricsRecorder()
    router = PoolRouter(LeastOutstandingRouter(), replicas[:num_prefill])
    engine = Engine(replicas, metrics, router=router, fast_forward=fast_forward)
    disagg.bind(engine.env)
    return engine, metrics, replicas


def test_disaggregated_run_under_memory_pressure_finishes_everything():
    """Small decode pools force recompute preemptions there; a slow link keeps prefill KV held."""
    engine, metrics, replicas = _disagg_engine(2, 3, prefill_blocks=300, decode_blocks=250,
                                               bandwidth=1e10)
    reqs = [Request(i, i * 0.005, 200 + (i * 37) % 900, 5 + (i * 13) % 200) for i in range(400)]
    engine.run(open_loop(reqs))
    df = metrics.requests_frame()
    assert len(df) == 400 and not df["rejected"].any()
    assert df["replica"].isin([2, 3, 4]).all()
    assert df["preemptions"].sum() > 0
    assert (df["kv_transfer_time"] > 0).all()
    assert (df["ttft"] > df["kv_transfer_time"]).all()
    for r in replicas:
        assert r.scheduler.allocator.num_blocks_used() == 0
        assert not r.scheduler.has_unfinished()
    # each token after the first needs a step of its own on the decode replica: the steps that
    # replica ran between a request's first token and its finish are at least output_tokens - 1
    steps = metrics.steps_frame()
    for replica, group in df.groupby("replica"):
        mine = steps[steps["replica"] == replica]
        starts = np.sort(mine["start_time"].to_numpy())
        ends = np.sort((mine["start_time"] + mine["duration"]).to_numpy())
        after_first = len(starts) - np.searchsorted(starts, group["first_token_time"] - 1e-12)
        past_finish = len(ends) - np.searchsorted(ends, group["finish_time"] + 1e-12, "right")
        assert (after_first - past_finish >= group["output_tokens"] - 1).all()


def test_fast_forwarded_decode_replicas_give_exactly_the_stepped_results():
    """Deliveries of KV wake a decode replica mid-run; the results must not move."""
    reqs = [(i * 0.02, 100 + (i * 53) % 700, 20 + (i * 29) % 300) for i in range(150)]
    runs = []
    for ff in (False, True):
        engine, metrics, _ = _disagg_engine(1, 2, prefill_blocks=400, decode_blocks=300,
                                            bandwidth=3e9, fast_forward=ff)
        engine.run(open_loop([Request(i, t, p, o) for i, (t, p, o) in enumerate(reqs)]))
        runs.append((engine, metrics))
    (_, stepped), (engine, forwarded) = runs
    pd.testing.assert_frame_equal(stepped.requests_frame(), forwarded.requests_frame(),
                                  check_exact=True)
    pd.testing.assert_frame_equal(stepped.steps_frame(), forwarded.steps_frame(),
                                  check_exact=True)
    assert stepped.requests_frame()["preemptions"].sum() > 0
    assert engine.env.fast_forwarded_steps > 0.1 * stepped.num_steps  # decode replicas only


def test_pool_config_errors_are_one_line():
    bad = [
        ({"pools": [{"role": "prefill"}]}, "cluster.pools: disaggregated"),
        ({"pools": [{"role": "prefill"}, {"role": "decode"}, {"role": "both"}]},
         "cluster.pools: disaggregated"),
        ({"pools": [{"num_gpus": 3, "tp": 2}]}, r"cluster.pools.0.num_gpus: 3"),
        ({"pools": [{"gpu": "h1000"}]}, r"cluster.pools.0.gpu: unknown GPU"),
        ({"pools": [{"colour": 1}]}, r"cluster.pools.0.colour: unknown key"),
    ]
    for cluster, msg in bad:
        with pytest.raises(ConfigError, match=msg) as err:
            sim.simulate({**BASE, "cluster": cluster})
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="hardware.num_gpus: 4 disagrees"):
        sim.simulate({**BASE, "hardware": {"num_gpus": 4}, "cluster": {"pools": [{}]}})
    with pytest.raises(ConfigError, match="cluster.interconnect.kind: l40s has no nvlink"):
        sim.simulate({**BASE, "hardware": {"gpu": "l40s"}, "cluster": {"pools": [
            {"role": "prefill"}, {"role": "decode"}]}})


def test_kv_transfer_time_is_zero_and_present_without_disaggregation(single):
    df = single.requests
    assert "kv_transfer_time" in df.columns and (df["kv_transfer_time"] == 0).all()
    assert not math.isnan(df["ttft"].mean())
