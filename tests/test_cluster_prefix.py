"""The prefix-aware router on the Mooncake conversation trace: more prefix-cache hits than
round robin, because a conversation's next turn goes where its earlier turns' KV is cached."""

from itertools import islice
from pathlib import Path

from policies.chunked import ChunkedPrefillScheduler
from policies.kv_paged import PrefixCachingAllocator
from sim.engine import Engine, Replica, open_loop
from sim.executors import RooflineExecutor
from sim.metrics import MetricsRecorder
from sim.routers import make_router
from sim.traces import TraceReader
from tests.helpers import LinearHardware

TRACE = Path(__file__).resolve().parents[2] / "shared/traces/mooncake_conversation_trace.jsonl"
NUM_REQUESTS = 400  # the first 400 requests: about 2 minutes of the trace
MAX_OUTPUT_TOKENS = 2  # routing and hits depend on prompts; short outputs keep the test fast
NUM_REPLICAS = 4


def _trace_slice():
    requests = list(islice(TraceReader(TRACE).requests(), NUM_REQUESTS))
    for r in requests:
        r.output_tokens = min(r.output_tokens, MAX_OUTPUT_TOKENS)
    return requests


def _hit_rate(router: str) -> tuple[float, list[int]]:
    replicas = [Replica(i, ChunkedPrefillScheduler(PrefixCachingAllocator(100_000, 16)),
                        RooflineExecutor(LinearHardware(per_token_s=2e-5)))
                for i in range(NUM_REPLICAS)]
    metrics = MetricsRecorder()
    Engine(replicas, metrics, router=make_router(router)).run(open_loop(_trace_slice()))
    df = metrics.requests_frame()
    assert len(df) == NUM_REQUESTS and not df["rejected"].any()
    return df["cached_tokens"].sum() / df["prompt_tokens"].sum(), df["replica"].value_counts()


def test_prefix_aware_routing_raises_the_hit_rate_on_the_mooncake_trace():
    assert TRACE.is_file(), f"missing {TRACE}: the shared traces folder is required"
    round_robin, _ = _hit_rate("round_robin")
    prefix_aware, per_replica = _hit_rate("prefix_aware")
    assert prefix_aware > 1.5 * round_robin, (prefix_aware, round_robin)
    # The load-balance term still uses every replica.
    assert len(per_replica) == NUM_REPLICAS and per_replica.min() > NUM_REQUESTS / 8
