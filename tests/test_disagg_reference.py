"""Disaggregated prefill/decode: KV transfer sizes and times against hand-derived numbers.

What crosses the link is the prompt's KV the decode replica does not already cache, per GPU,
at the slower end's pace. Each expected time below is worked out from the inputs (latency,
bandwidth, bytes per token, the cached blocks), never read back from the simulator.
"""

import pytest

from policies.continuous import ContinuousScheduler
from policies.kv_paged import PagedAllocator, PrefixCachingAllocator
from sim.core import Request
from sim.disagg import Disaggregation, PrefillStage, admitted_for_decode
from sim.engine import Engine, Replica, open_loop
from sim.executors import RooflineExecutor
from sim.interconnect import Interconnect, LinkEnd
from sim.metrics import MetricsRecorder
from sim.routers import LeastOutstandingRouter, PoolRouter
from tests.helpers import LinearHardware

LATENCY_S = 1e-4
BYTES_PER_TOKEN = 1e5  # per GPU
BANDWIDTH = 1e9  # bytes/s per GPU: 1e-4 s per token
BLOCK = 16


def _run(requests: list[Request], decode_cache: bool = True, decode_blocks: int = 400,
         bandwidth: float = BANDWIDTH, latency_s: float = LATENCY_S, metrics_out=None):
    """One prefill replica (no prefix cache) and one decode replica (prefix cache or not)."""
    ends: dict[int, LinkEnd] = {}
    disagg = Disaggregation(Interconnect(ends, latency_s),
                            LeastOutstandingRouter(admitted_for_decode))
    prefill = Replica(0, None, RooflineExecutor(LinearHardware()))
    prefill.scheduler = PrefillStage(ContinuousScheduler(PagedAllocator(400, BLOCK),
                                                         max_num_seqs=8), 0, disagg)
    allocator = PrefixCachingAllocator if decode_cache else PagedAllocator
    decode = Replica(1, ContinuousScheduler(allocator(decode_blocks, BLOCK), max_num_seqs=8),
                     RooflineExecutor(LinearHardware()))
    for replica in (prefill, decode):
        ends[replica.index] = LinkEnd(1, BYTES_PER_TOKEN, bandwidth)
    disagg.add_prefill(prefill)
    disagg.add_decode(decode)
    metrics = MetricsRecorder()
    engine = Engine([prefill, decode], metrics, router=PoolRouter(LeastOutstandingRouter(),
                                                                  [prefill]))
    disagg.bind(engine.env)
    engine.run(open_loop(requests))
    if metrics_out is not None:
        metrics_out.append(metrics)
    return metrics.requests_frame().set_index("request_id")


def _wire_s(tokens: int) -> float:
    return LATENCY_S + tokens * BYTES_PER_TOKEN / BANDWIDTH


SHARED = tuple(range(100, 120))  # 20 blocks of 16 tokens: a 320-token system prompt


def _requests():
    """Requests one second apart (each finished before the next), all decoded on replica 1."""
    return [
        Request(0, 0.0, 320, 5, prefix_hashes=SHARED),  # nothing cached yet: all 320 tokens
        # the 320-token prefix is cached on the decode replica: 480 - 320 = 160 tokens cross
        Request(1, 1.0, 480, 5, prefix_hashes=SHARED + tuple(range(200, 210))),
        # only the first 10 blocks match: 488 - 160 = 328 tokens cross
        Request(2, 2.0, 488, 5, prefix_hashes=SHARED[:10] + tuple(range(300, 331))),
        # the whole prompt is cached, but a cache serves at most (320 - 1) // 16 = 19 blocks
        # (the last prompt token is recomputed for its logits): 320 - 304 = 16 tokens cross
        Request(3, 3.0, 320, 5, prefix_hashes=SHARED),
        # shares nothing: all 100 tokens cross
        Request(4, 4.0, 100, 5),
    ]


def test_only_what_the_decode_replica_does_not_cache_crosses_the_link():
    df = _run(_requests())
    assert (df["replica"] == 1).all() and not df["rejected"].any()
    expected = {0: _wire_s(320), 1: _wire_s(160), 2: _wire_s(328), 3: _wire_s(16),
                4: _wire_s(100)}
    # by hand: 0.0321, 0.0161, 0.0329, 0.0017, 0.0101 s
    assert expected[1] == pytest.approx(0.0161) and expected[3] == pytest.approx(0.0017)
    for rid, seconds in expected.items():
        assert df.loc[rid, "kv_transfer_time"] == pytest.approx(seconds, rel=1e-9), rid


def test_without_a_decode_side_cache_every_prompt_crosses_whole():
    df = _run(_requests(), decode_cache=False)
    for rid, prompt in enumerate((320, 480, 488, 320, 100)):
        assert df.loc[rid, "kv_transfer_time"] == pytest.approx(_wire_s(prompt), rel=1e-9)


def test_ttft_is_prefill_plus_transfer_plus_the_first_decode_step():
    """Request 1: prefill of 480 tokens on replica 0, 160 tokens on the wire, then the decode
    replica computes the one prompt token it was not sent (479 cached) to sample token 1."""
    df = _run(_requests())
    hw = LinearHardware()
    expected = (hw.step_time_s([(480, 0)]) + _wire_s(160) + hw.step_time_s([(1, 479)]))
    assert df.loc[1, "ttft"] == pytest.approx(expected, rel=1e-9)


def test_a_cached_prefix_evicted_during_the_transfer_is_recomputed_not_assumed():
    """The transfer sends only what the decode replica cached when it began; if memory
    pressure evicts that prefix before the request is admitted, the missing KV must be
    recomputed there (it was neither sent nor kept).

    Decode pool: 50 blocks. A (320 tokens, 20 hashed blocks) leaves them cached. C (16-token
    prompt, 700 outputs) grows to ceil(715 / 16) = 45 blocks: the 30 free ones, then 15 of
    A's, tail first (freed blocks enter the LRU last block first). Meanwhile B (A's 20 blocks
    + 20 new) was sent only its 320 new tokens (0.01 s a token: 3.2 s); it waits until C
    finishes, when 5 of A's blocks (80 tokens) remain: B's first step on the decode replica
    computes 640 - 80 = 560 tokens, not 1.
    """
    shared = tuple(range(100, 120))
    reqs = [Request(0, 0.0, 320, 2, prefix_hashes=shared),
            Request(1, 4.0, 16, 700),
            Request(2, 4.1, 640, 3, prefix_hashes=shared + tuple(range(200, 220)))]
    runs: list = []
    df = _run(reqs, decode_blocks=50, bandwidth=1e7, latency_s=0.0, metrics_out=runs)
    steps = runs[0].steps_frame()
    decode = steps[steps["replica"] == 1]
    b_starts = decode[decode["start_time"] == df.loc[1, "finish_time"]]
    assert len(b_starts) == 1 and b_starts["prefill_tokens"].iloc[0] == 560
    hw = LinearHardware()
    assert df.loc[2, "first_token_time"] == pytest.approx(
        df.loc[1, "finish_time"] + hw.step_time_s([(560, 80)]), rel=1e-9)
    assert df.loc[2, "kv_transfer_time"] >= 320 * 0.01  # only the uncached 320 tokens crossed
