"""The compiled lane gives the general engine's results, bit for bit (hypothesis), and runs
only where it applies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwmodels.roofline import RooflineModel
from policies.chunked import ChunkedPrefillScheduler
from policies.continuous import ContinuousScheduler
from policies.kv_paged import PagedAllocator, PrefixCachingAllocator
from policies.static import StaticScheduler
from sim import lane
from sim.core import Request
from sim.engine import Engine, Replica, closed_loop, open_loop
from sim.executors import RooflineExecutor
from sim.metrics import MetricsRecorder

pytest.importorskip("numba")  # a core dependency: present wherever the package installed

HARDWARE = {  # a few pricing paths: graphed or eager steps, TP, naive attention, DP share
    "8b": lambda: RooflineModel("H100", "llama-3.1-8b"),
    "8b-eager": lambda: RooflineModel("H100", "llama-3.1-8b",
                                      params={"cuda_graph_max_tokens": 0}),
    "8b-decode-graphs": lambda: RooflineModel("A100-80GB", "llama-3.1-8b",
                                              params={"cuda_graph_mode": "decode"}),
    "70b-tp4-naive": lambda: RooflineModel("H100", "llama-3.1-70b", tp=4,
                                           attention_impl="naive"),
    # the host's work overlapped with the device's (SGLang / TensorRT-LLM overlap schedulers),
    # eager so that launch-bound steps meet it too
    "8b-host-overlap": lambda: RooflineModel("H100", "llama-3.1-8b", params={
        "host_overlap": True, "cuda_graph_max_tokens": 64, "seq_overhead_s": 5e-5}),
}


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    gaps = rng.exponential(1.0 / draw(st.floats(0.5, 200.0)), size=n)
    gaps[rng.random(n) < draw(st.sampled_from([0.0, 0.3]))] = 0.0  # simultaneous arrivals
    prompts = rng.integers(1, draw(st.integers(2, 3000)), size=n)
    outputs = rng.integers(1, draw(st.integers(2, 300)), size=n)
    return dict(
        requests=[(float(t), int(p), int(o))
                  for t, p, o in zip(np.cumsum(gaps), prompts, outputs, strict=True)],
        policy=draw(st.sampled_from(["chunked", "continuous"])),
        hardware=draw(st.sampled_from(sorted(HARDWARE))),
        num_blocks=draw(st.integers(4, 400)),  # small pools preempt, and reject long requests
        block_size=draw(st.sampled_from([1, 16, 32])),
        max_num_seqs=draw(st.integers(1, 48)),
        max_tokens=draw(st.integers(8, 4096)),
        chunk_size=draw(st.sampled_from([None, 64, 512])),
        max_model_len=draw(st.sampled_from([None, 2500])),
    )


def simulate(s, fast_lane: bool) -> tuple[Engine, MetricsRecorder, list[Request]]:
    alloc = PagedAllocator(s["num_blocks"], s["block_size"])
    policy = ChunkedPrefillScheduler if s["policy"] == "chunked" else ContinuousScheduler
    sched = policy(alloc, s["max_num_seqs"], s["max_tokens"], chunk_size=s["chunk_size"],
                   max_model_len=s["max_model_len"])
    replica = Replica(0, sched, RooflineExecutor(HARDWARE[s["hardware"]]()))
    metrics = MetricsRecorder()
    engine = Engine([replica], metrics, fast_lane=fast_lane, fast_forward=fast_lane)
    reqs = [Request(i, t, p, o) for i, (t, p, o) in enumerate(s["requests"])]
    engine.run(open_loop(reqs))
    return engine, metrics, reqs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_the_lane_gives_the_engines_results(s):
    stepped_engine, stepped, stepped_reqs = simulate(s, fast_lane=False)
    lane_engine, laned, lane_reqs = simulate(s, fast_lane=True)
    assert stepped_engine.lane_steps is None
    assert lane_engine.lane_steps == stepped.num_steps  # the lane did run, every step
    pd.testing.assert_frame_equal(stepped.requests_frame(), laned.requests_frame(),
                                  check_exact=True)
    pd.testing.assert_frame_equal(stepped.steps_frame(), laned.steps_frame(), check_exact=True)
    np.testing.assert_array_equal(stepped.itl.counts(), laned.itl.counts())
    assert stepped.itl.count == laned.itl.count
    np.testing.assert_allclose(stepped.itl.total, laned.itl.total, rtol=1e-12)
    sched_a = stepped_engine.replicas[0].scheduler
    sched_b = lane_engine.replicas[0].scheduler
    assert sched_a.stats() == sched_b.stats()  # preemptions and rejections counted alike
    for a, b in zip(stepped_reqs, lane_reqs, strict=True):  # the caller's objects, as left
        assert (a.num_output_tokens, a.finish_time, a.first_token_time, a.preemptions,
                a.rejected_reason) == (b.num_output_tokens, b.finish_time, b.first_token_time,
                                       b.preemptions, b.rejected_reason)


@pytest.mark.parametrize("policy", ["chunked", "continuous"])
def test_a_busy_pool_preempts_in_the_lane_as_in_the_engine(policy):
    """A pool too small for the batch: the lane must take the preemption path (checked by its
    counter), and agree with the engine (the hypothesis test covers the records)."""
    s = dict(requests=[(0.0, 300, 200)] * 12, policy=policy, hardware="8b", num_blocks=60,
             block_size=16, max_num_seqs=16, max_tokens=2048, chunk_size=None, max_model_len=None)
    engine_a, a, _ = simulate(s, fast_lane=False)
    engine_b, b, _ = simulate(s, fast_lane=True)
    preempted = engine_b.replicas[0].scheduler.counts.preemptions_recompute
    assert preempted > 0
    assert preempted == engine_a.replicas[0].scheduler.counts.preemptions_recompute
    pd.testing.assert_frame_equal(a.requests_frame(), b.requests_frame(), check_exact=True)


PRICED_ONLY = {  # more row layouts for the pricing test: experts, pipeline, DP attention
    "mixtral-tp2-ep2": lambda: RooflineModel("H100", "mixtral-8x7b", tp=2, ep=2),
    "70b-tp2-pp2": lambda: RooflineModel("H200", "llama-3.1-70b", tp=2, pp=2),
    "mixtral-dp-attention": lambda: RooflineModel("H100", "mixtral-8x7b", tp=2, ep=2,
                                                  dp_attention=True),
    "8b-fp8": lambda: RooflineModel("H100", "llama-3.1-8b", weight_dtype="fp8",
                                    kv_dtype="fp8"),
}


def test_the_lane_prices_a_step_as_the_roofline_does():
    """The compiled sum of the roofline's rows is its ``step_time_s``, bit for bit."""
    from sim.lane import _Prices
    from sim.lane_kernel import NEED_PREFILL, NEED_STATIC, price

    rng = np.random.default_rng(7)
    for make in [*HARDWARE.values(), *PRICED_ONLY.values()]:
        hw = make()
        prices = _Prices(hw, 9000)
        sched = ChunkedPrefillScheduler(PagedAllocator(10, 16))
        cfg, cfgf = prices.knobs(sched)
        for _ in range(60):
            b = int(rng.integers(1, 40))
            seqs = [(1 if rng.random() < 0.8 else int(rng.integers(2, 3000)),
                     int(rng.integers(0, 5000))) for _ in range(b)]
            new = np.array([n for n, _ in seqs], dtype=np.int64)
            ctx = np.array([c for _, c in seqs], dtype=np.int64)
            need = np.zeros(3, dtype=np.int64)
            while True:
                t = price(b, new, ctx, cfg, cfgf, prices.decode_s, prices.index.keys,
                          prices.index.values, prices.before, prices.after, prices.nafter,
                          prices.kernels, prices.prefill_s.keys, prices.prefill_s.values, need)
                if t >= 0:
                    break
                if need[0] == NEED_STATIC:
                    prices.add_static(int(need[1]), int(need[2]))
                else:
                    assert need[0] == NEED_PREFILL
                    prices.add_prefill(int(need[1]), int(need[2]))
            assert t == hw.step_time_s(seqs)


def _replica(scheduler=None, hardware=None) -> Replica:
    sched = scheduler or ChunkedPrefillScheduler(PagedAllocator(1000, 16))
    return Replica(0, sched, RooflineExecutor(hardware or RooflineModel("H100", "llama-3.1-8b")))


def test_the_lane_serves_only_what_it_mirrors():
    reqs = [Request(0, 0.0, 10, 5)]
    assert lane.reason_not_served([_replica()], open_loop(reqs)) is None
    cases = {
        "more than one replica": ([_replica(), _replica()], open_loop(reqs)),
        "not an open-loop workload": (
            [_replica()], closed_loop(lambda now, c: Request(0, now, 10, 5), 1, 1, None)),
        "the scheduler (StaticScheduler) declares no fast path": (
            [_replica(StaticScheduler(PagedAllocator(1000, 16)))], open_loop(reqs)),
        "the scheduler option split_prompts=False is not mirrored by the fast path": (
            [_replica(ChunkedPrefillScheduler(PagedAllocator(1000, 16), split_prompts=False))],
            open_loop(reqs)),
        "the scheduler option order='priority' is not mirrored by the fast path": (
            [_replica(ChunkedPrefillScheduler(PagedAllocator(1000, 16), order="priority"))],
            open_loop(reqs)),
        "the scheduler option admission='no_evict' is not mirrored by the fast path": (
            [_replica(ChunkedPrefillScheduler(PagedAllocator(1000, 16), admission="no_evict"))],
            open_loop(reqs)),
        "the scheduler option max_waiting=4 is not mirrored by the fast path": (
            [_replica(ChunkedPrefillScheduler(PagedAllocator(1000, 16), max_waiting=4))],
            open_loop(reqs)),
        "the KV allocator (PrefixCachingAllocator) declares no fast path": (
            [_replica(ChunkedPrefillScheduler(PrefixCachingAllocator(1000, 16)))],
            open_loop(reqs)),
        "MLA attention": ([_replica(hardware=RooflineModel("H200", "deepseek-v3", tp=8))],
                          open_loop(reqs)),
    }
    for reason, (replicas, workload) in cases.items():
        assert lane.reason_not_served(replicas, workload) == reason


def test_without_numba_runs_take_the_general_engine(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sim.lane_kernel", None)  # its import now fails
    reqs = [Request(0, 0.0, 10, 5)]
    assert lane.reason_not_served([_replica()], open_loop(reqs)) == "numba is not installed"
    metrics = MetricsRecorder()
    engine = Engine([_replica()], metrics)
    engine.run(open_loop(reqs))
    assert engine.lane_steps is None and metrics.num_finished == 1


def test_a_numba_that_rejects_the_loops_options_leaves_runs_to_the_general_engine(monkeypatch):
    from sim import lane_kernel

    def refuse():
        raise KeyError("Unrecognized options: {'_nrt'}")

    monkeypatch.setattr(lane_kernel, "probe", refuse)
    reason = lane.reason_not_served([_replica()], open_loop([Request(0, 0.0, 10, 5)]))
    assert reason.startswith("the compiled loop does not compile with this numba")


@pytest.mark.parametrize("policy", ["chunked_prefill", "continuous"])
def test_simulate_takes_the_lane_for_a_study_it_serves(policy):
    """``sim.simulate`` runs the lane when it applies, with the general engine's summary
    (continuous batching is the default scenario's policy)."""
    import sim.api
    from sim import simulate

    cfg = {"scheduler": {"policy": policy}, "workload": {"num_requests": 300}}
    used = []
    real = sim.api.Engine

    class Spy(real):
        def run(self, workload):
            super().run(workload)
            used.append(self.lane_steps)

    sim.api.Engine = Spy
    try:
        laned = simulate(cfg)
    finally:
        sim.api.Engine = real
    assert used and used[0] == len(laned.steps)
    import functools

    sim.api.Engine = functools.partial(real, fast_lane=False)
    try:
        general = simulate(cfg)
    finally:
        sim.api.Engine = real
    pd.testing.assert_frame_equal(general.requests, laned.requests, check_exact=True)
    pd.testing.assert_frame_equal(general.steps, laned.steps, check_exact=True)
    assert general.summary.keys() == laned.summary.keys()
    for key, value in general.summary.items():  # the ITL mean sums its values in another order
        assert value == pytest.approx(laned.summary[key], rel=1e-12, nan_ok=True), key
