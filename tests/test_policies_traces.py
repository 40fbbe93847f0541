"""Both prefix caches replayed on the Mooncake conversation trace (12,031 requests).

Policy-level replay, no engine: each request in arrival order takes its prefix hit, allocates
its prompt, computes it, publishes its blocks and finishes. With room for every block ever
made (nothing evicted), the caches must report exactly the hits of an offline count of repeated
block hashes; with less room, the hit rate may only fall as the pool shrinks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.kv_paged import PrefixCachingAllocator
from policies.kv_radix import RadixAllocator
from sim.core import Request
from sim.traces import TraceReader

TRACE = Path(__file__).resolve().parents[1] / "../shared/traces/mooncake_conversation_trace.jsonl"
CACHES = [PrefixCachingAllocator, RadixAllocator]


@pytest.fixture(scope="module")
def trace() -> list[Request]:
    assert TRACE.is_file(), f"missing {TRACE}: the shared traces folder is required"
    requests = list(TraceReader(TRACE).requests())
    assert len(requests) == 12_031
    return requests


def offline_hits(requests: list[Request], block_size: int) -> list[int]:
    """Exact count, independent of the policies: per request, the prompt tokens in leading full
    KV blocks whose content (every hash up to the end of the block, and the block's position)
    appeared as a full block of an earlier prompt; the last prompt token is never a hit."""
    prefix_ids: dict[tuple[int, int], int] = {}  # (parent prefix id, hash) -> prefix id
    seen: set[tuple[int, int]] = set()  # (prefix id of the covering hashes, block index)
    hits = []
    for r in requests:
        span, node, chain = r.hash_block_tokens, 0, []
        for h in r.prefix_hashes:
            node = prefix_ids.setdefault((node, h), len(prefix_ids) + 1)
            chain.append(node)
        full = min(r.prompt_tokens, len(chain) * span) // block_size
        keys = [(chain[((j + 1) * block_size - 1) // span], j) for j in range(full)]
        k, cap = 0, min(full, (r.prompt_tokens - 1) // block_size)
        while k < cap and keys[k] in seen:
            k += 1
        hits.append(k * block_size)
        seen.update(keys)
    return hits


def replay(cache, requests: list[Request]) -> list[int]:
    """Serve the requests one after another on the cache; return each one's hit (tokens)."""
    hits = []
    for r in requests:
        r.num_computed_tokens = 0
        hits.append(cache.lookup_prefix(r))
        assert cache.allocate(r, r.prompt_tokens)
        r.num_computed_tokens = r.prompt_tokens
        cache.commit(r)
        cache.free(r)
    return hits


def blocks_needed(requests: list[Request], block_size: int) -> int:
    return sum(-(-r.prompt_tokens // block_size) for r in requests)


@pytest.mark.parametrize("cls", CACHES)
def test_unbounded_cache_matches_the_offline_count(cls, trace):
    expected = offline_hits(trace, 512)
    cache = cls(blocks_needed(trace, 512), 512)
    assert replay(cache, trace) == expected
    s = cache.stats
    assert s.prefix_hit_tokens == sum(expected) and s.evicted_blocks == 0
    # 37.3 % of prompt tokens; 36.6 % of the 288,500 hash blocks (the trace README counts
    # 36.64 %: it also counts a repeated prompt's last block, which is always recomputed here).
    assert s.prefix_query_blocks == 288_500
    assert s.prefix_hit_tokens / s.prefix_query_tokens == pytest.approx(0.3734, abs=1e-4)
    assert s.prefix_hit_blocks / s.prefix_query_blocks == pytest.approx(0.3660, abs=1e-4)


@pytest.mark.parametrize("cls", CACHES)
def test_small_blocks_inside_hash_blocks_match_the_offline_count(cls, trace):
    head = trace[:2000]
    cache = cls(blocks_needed(head, 64), 64)
    assert replay(cache, head) == offline_hits(head, 64)


@pytest.mark.parametrize("cls", CACHES)
def test_hit_rate_falls_monotonically_as_the_cache_shrinks(cls, trace):
    unbounded = blocks_needed(trace, 512)
    rates = []
    for num_blocks in (unbounded, 60_000, 15_000, 4_000, 1_000, 300):  # 300 >= longest prompt
        cache = cls(num_blocks, 512)
        replay(cache, trace)
        rates.append(cache.stats.prefix_hit_tokens / cache.stats.prefix_query_tokens)
    assert rates == sorted(rates, reverse=True), rates
    assert rates[0] > 0.37 and rates[-1] < rates[0] / 2, rates
