"""Scheduling and KV-cache policies on one H100 with Llama-3.1-8B.

1. Chunked prefill against prefill-first continuous batching, on the Azure LLM inference trace
   (conversation service, its own arrival times). Prefill-first runs every new prompt in a step
   of its own, and the running decodes wait for it: their time per output token (TPOT) takes
   the hit. Chunked prefill puts the decodes first in every step and fills the rest of the token
   budget with prompt chunks, so a decode never waits for more than one budget's worth of
   prompt. The smaller the budget, the lower the tail TPOT (and the later the first tokens).
   The trace is replayed at its own rate (about 5.5 requests/s, a light load for this GPU) and
   three times faster.
2. Prefix caching on a shared-system-prompt workload: the same Azure arrivals and lengths, each
   prompt prefixed by one of a few long system prompts. With a prefix cache (vLLM's hashed
   blocks, or SGLang's radix tree) a request finds its system prompt's KV already computed and
   starts that far ahead: the time to first token (TTFT) falls.
3. Prefix-cache hit rate against cache size on the Mooncake conversation trace (which names
   its prompts' 512-token blocks by hash): a policy-level replay, each request served alone in
   arrival order, through both prefix caches. Unbounded, both find every repeated leading
   block; as the pool shrinks, LRU eviction loses hits.

Every variant sees exactly the same requests.

Run: python examples/policy_study.py [--studies batching prefix mooncake] [--requests N]
         [--trace PATH] [--time-scales 1 3] [--mooncake PATH]
"""

from __future__ import annotations

import argparse
from itertools import islice
from pathlib import Path

from core import Request
from policies.kv_paged import PrefixCachingAllocator
from policies.kv_radix import RadixAllocator
from sim import simulate
from sim.build import build
from sim.config import load_config
from sim.engine import Engine, open_loop
from sim.metrics import SLO, MetricsRecorder, summarize
from sim.traces import TraceReader

TRACES = Path(__file__).resolve().parents[1] / "../shared/traces"
DEFAULT_TRACE = TRACES / "AzureLLMInferenceTrace_conv.csv"
MOONCAKE_TRACE = TRACES / "mooncake_conversation_trace.jsonl"
MOONCAKE_POOL_BLOCKS = (None, 60_000, 15_000, 4_000, 1_000, 300)  # None: room for every block
DEPLOYMENT = {"hardware": {"gpu": "h100"}, "model": {"name": "llama-3.1-8b"}}

# Study 1: the batching policy and its token budget (tokens per step).
BATCHING = {
    "continuous, prefill first (8192)": {"policy": "continuous", "max_num_batched_tokens": 8192},
    "chunked prefill (8192)": {"policy": "chunked_prefill", "max_num_batched_tokens": 8192},
    "chunked prefill (2048)": {"policy": "chunked_prefill", "max_num_batched_tokens": 2048},
    "chunked prefill (512)": {"policy": "chunked_prefill", "max_num_batched_tokens": 512},
}

# Study 2: shared system prompts in front of the trace's prompts.
SYSTEM_PROMPTS = 4  # distinct system prompts, picked in turn
SYSTEM_PROMPT_TOKENS = 2048
HASH_BLOCK_TOKENS = 16  # granularity of the synthetic content hashes
CACHES = {
    "paged, no prefix cache": {"allocator": "paged", "enable_prefix_caching": False},
    "paged + hashed-block prefix cache": {"allocator": "paged", "enable_prefix_caching": True},
    "radix tree": {"allocator": "radix"},
}


def batching_study(num_requests: int, trace: Path, time_scale: float = 1.0) -> dict[str, dict]:
    """Study 1: summary of each batching policy on the first ``num_requests`` of the trace,
    replayed ``time_scale`` times faster than recorded."""
    out = {}
    for name, scheduler in BATCHING.items():
        cfg = {**DEPLOYMENT, "scheduler": {"max_num_seqs": 256, **scheduler},
               "workload": {"arrival": "trace", "trace": str(trace), "trace_format": "azure",
                            "num_requests": num_requests, "time_scale": time_scale}}
        out[name] = simulate(cfg).summary
    return out


def shared_prompt_requests(num_requests: int, trace: Path) -> list[Request]:
    """The trace's arrivals and lengths, each prompt behind one of the system prompts.

    Content hashes (one per 16 tokens): the system prompt's blocks are named by the prompt they
    belong to, every other block is unique, so only system prompts are shared.
    """
    out = []
    next_unique = 1 << 40
    for i, r in enumerate(islice(TraceReader(trace, "azure").requests(), num_requests)):
        group = i % SYSTEM_PROMPTS
        system = tuple((group + 1) * 1_000_000 + j
                       for j in range(SYSTEM_PROMPT_TOKENS // HASH_BLOCK_TOKENS))
        own = -(-r.prompt_tokens // HASH_BLOCK_TOKENS)
        hashes = system + tuple(range(next_unique, next_unique + own))
        next_unique += own
        out.append(Request(i, r.arrival_time, SYSTEM_PROMPT_TOKENS + r.prompt_tokens,
                           r.output_tokens, prefix_hashes=hashes,
                           hash_block_tokens=HASH_BLOCK_TOKENS))
    return out


def run_requests(config: dict, requests: list[Request]) -> dict:
    """Serve fresh copies of ``requests`` on the deployment ``config`` describes; summarize."""
    deployment = build(load_config(config))
    metrics = MetricsRecorder()
    fresh = [Request(r.request_id, r.arrival_time, r.prompt_tokens, r.output_tokens,
                     prefix_hashes=r.prefix_hashes, hash_block_tokens=r.hash_block_tokens)
             for r in requests]
    Engine(deployment.replicas, metrics).run(open_loop(fresh))
    summary = summarize(metrics.requests_frame(), metrics.itl, SLO())
    kv = deployment.replicas[0].scheduler.stats()
    queried = kv.get("prefix_query_blocks", 0)
    summary["prefix_block_hit_rate"] = kv.get("prefix_hit_blocks", 0) / queried if queried else 0.0
    return summary


def prefix_study(num_requests: int, trace: Path) -> dict[str, dict]:
    """Study 2: summary of each KV cache on the shared-system-prompt workload."""
    requests = shared_prompt_requests(num_requests, trace)
    return {name: run_requests({**DEPLOYMENT, "scheduler": {"policy": "chunked_prefill"},
                                "kv_cache": kv}, requests)
            for name, kv in CACHES.items()}


def mooncake_hit_rates(trace: Path, block_size: int = 512) -> dict[str, list[tuple]]:
    """Study 3: (pool blocks, token hit rate, block hit rate) per cache and pool size."""
    requests = list(TraceReader(trace, "mooncake").requests())
    unbounded = sum(-(-r.prompt_tokens // block_size) for r in requests)
    out: dict[str, list[tuple]] = {}
    for name, cls in (("hashed blocks (vLLM)", PrefixCachingAllocator),
                      ("radix tree (SGLang)", RadixAllocator)):
        for blocks in MOONCAKE_POOL_BLOCKS:
            cache = cls(blocks or unbounded, block_size)
            for r in requests:
                r.num_computed_tokens = 0
                if not cache.allocate(r, r.prompt_tokens):
                    raise RuntimeError(f"{blocks} blocks cannot hold request {r.request_id}")
                r.num_computed_tokens = r.prompt_tokens
                cache.commit(r)
                cache.free(r)
            st = cache.stats
            out.setdefault(name, []).append((
                blocks or unbounded, st.prefix_hit_tokens / st.prefix_query_tokens,
                st.prefix_hit_blocks / st.prefix_query_blocks))
    return out


def print_batching(results: dict[str, dict]) -> None:
    print("| batching (token budget) | p99 TPOT ms | mean TPOT ms | p99 ITL ms | mean TTFT ms"
          " | p99 TTFT ms | output tok/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, s in results.items():
        print(f"| {name} | {s['p99_tpot_ms']:.1f} | {s['mean_tpot_ms']:.1f} | "
              f"{s['p99_itl_ms']:.1f} | {s['mean_ttft_ms']:.0f} | {s['p99_ttft_ms']:.0f} | "
              f"{s['output_throughput']:.0f} |")


def print_prefix(results: dict[str, dict]) -> None:
    print("| KV cache | prefix hit rate (tokens) | (blocks) | mean TTFT ms | p99 TTFT ms"
          " | mean TPOT ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, s in results.items():
        print(f"| {name} | {s['prefix_cache_hit_rate']:.1%} | {s['prefix_block_hit_rate']:.1%}"
              f" | {s['mean_ttft_ms']:.1f} | {s['p99_ttft_ms']:.1f} | {s['mean_tpot_ms']:.1f} |")


def print_mooncake(results: dict[str, list[tuple]]) -> None:
    print("| KV pool (512-token blocks) | " + " | ".join(
        f"{name}: tokens | blocks" for name in results) + " |")
    print("|---:|" + "---:|---:|" * len(results))
    for i, (blocks, *_) in enumerate(next(iter(results.values()))):
        cells = " | ".join(f"{rows[i][1]:.2%} | {rows[i][2]:.2%}" for rows in results.values())
        print(f"| {blocks:,} | {cells} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", nargs="+", default=["batching", "prefix", "mooncake"],
                        choices=["batching", "prefix", "mooncake"])
    parser.add_argument("--requests", type=int, default=2000, help="first N trace requests")
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="Azure conv CSV")
    parser.add_argument("--time-scales", type=float, nargs="+", default=[1.0, 3.0],
                        help="replay speeds of study 1 (3 = three times the recorded rate)")
    parser.add_argument("--mooncake", type=Path, default=MOONCAKE_TRACE, help="study 3's trace")
    args = parser.parse_args()
    if "batching" in args.studies:
        print(f"Study 1. Llama-3.1-8B on one H100; first {args.requests} requests of "
              f"{args.trace.name}")
        for scale in args.time_scales:
            print(f"\nReplayed at {scale:g}x the recorded rate\n")
            print_batching(batching_study(args.requests, args.trace, scale))
    if "prefix" in args.studies:
        print(f"\nStudy 2. The same {args.requests} arrivals (recorded rate) and lengths behind "
              f"{SYSTEM_PROMPTS} system prompts of {SYSTEM_PROMPT_TOKENS} tokens; chunked "
              "prefill (8192)\n")
        print_prefix(prefix_study(args.requests, args.trace))
    if "mooncake" in args.studies:
        print(f"\nStudy 3. Prefix-cache hit rate on {args.mooncake.name}, by pool size\n")
        print_mooncake(mooncake_hit_rates(args.mooncake))


if __name__ == "__main__":
    main()
