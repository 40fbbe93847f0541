"""KV allocators on hand-worked cases: paging, hashed-block prefix caching, the radix tree."""

from __future__ import annotations

import pytest

from policies.chunked import ChunkedPrefillScheduler
from policies.kv_contiguous import ContiguousAllocator
from policies.kv_paged import PagedAllocator, PrefixCachingAllocator
from policies.kv_radix import RadixAllocator
from policies.prefix import content_keys, max_hit_blocks, shareable_blocks
from sim.core import Request, StepResult

CACHES = [PrefixCachingAllocator, RadixAllocator]


def req(rid: int, prompt: int, hashes: tuple[int, ...] = (), span: int = 4, output: int = 1):
    return Request(rid, 0.0, prompt, output, prefix_hashes=hashes, hash_block_tokens=span)


def compute(alloc, r: Request, tokens: int | None = None) -> None:
    """Allocate and 'compute' the request's prompt, then publish its blocks."""
    tokens = r.num_tokens if tokens is None else tokens
    assert alloc.allocate(r, tokens)
    r.num_computed_tokens = tokens
    alloc.commit(r)


# ---- hashes to blocks ----------------------------------------------------------------------------
def test_block_keys_follow_the_covering_hash_blocks():
    r = req(0, 1000, (7, 8), span=512)  # hashes cover 1024 tokens, the prompt only 1000
    assert shareable_blocks(r, 16) == 62  # full 16-token blocks inside the prompt
    keys = content_keys(r, 16)
    assert keys[:32] == [7] * 32 and keys[32:] == [8] * 30
    assert shareable_blocks(req(1, 1000, (7,), span=512), 16) == 32  # hashed region ends at 512
    # A KV block spanning two hash blocks needs both to match.
    assert content_keys(req(2, 12, (1, 2, 3), span=4), 8) == [(1, 2)]
    assert content_keys(req(3, 12, (), span=4), 4) == []
    # At least one prompt token is left to compute: 12 tokens in 4-token blocks -> 2 hits at most.
    assert max_hit_blocks(req(4, 12, (1, 2, 3)), 4) == 2
    assert max_hit_blocks(req(5, 13, (1, 2, 3, 4)), 4) == 3


# ---- both prefix caches ------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CACHES)
def test_prefix_hits_are_whole_leading_blocks(cls):
    alloc = cls(16, 4)
    a = req(0, 12, (1, 2, 3))
    assert alloc.lookup_prefix(a) == 0
    compute(alloc, a)
    assert alloc.lookup_prefix(req(1, 16, (1, 2, 3, 4))) == 12
    assert alloc.lookup_prefix(req(2, 12, (1, 2, 3))) == 8  # the last token is recomputed
    assert alloc.lookup_prefix(req(3, 16, (1, 9, 3, 4))) == 4  # a hit stops at the first miss
    assert alloc.lookup_prefix(req(4, 16, (9, 2, 3, 4))) == 0
    assert alloc.lookup_prefix(req(5, 16)) == 0  # no hashes: shares nothing
    alloc.check()


@pytest.mark.parametrize("cls", CACHES)
def test_shared_blocks_are_counted_once_and_survive_their_first_owner(cls):
    alloc = cls(16, 4)
    a, b = req(0, 12, (1, 2, 3)), req(1, 16, (1, 2, 3, 4))
    compute(alloc, a)
    assert alloc.num_blocks_used() == 3
    compute(alloc, b)
    assert alloc.num_blocks_used() == 4  # three shared blocks and B's own fourth
    assert alloc.block_table(b)[:3] == alloc.block_table(a)
    alloc.free(a)
    assert alloc.num_blocks_used() == 4  # B still holds the shared ones
    alloc.free(b)
    assert alloc.num_blocks_used() == 0  # all cached, none used
    assert alloc.lookup_prefix(req(2, 20, (1, 2, 3, 4, 5))) == 16
    alloc.check()


@pytest.mark.parametrize("cls", CACHES)
def test_lookup_has_no_side_effect(cls):
    alloc = cls(4, 4)
    compute(alloc, req(0, 8, (1, 2)))
    alloc.free(req(0, 8, (1, 2)))
    before = alloc.num_blocks_used()
    probe = req(1, 12, (1, 2, 3))
    for _ in range(3):
        assert alloc.lookup_prefix(probe) == 8
    assert alloc.num_blocks_used() == before and alloc.block_table(probe) == []
    alloc.check()


@pytest.mark.parametrize("cls", CACHES)
def test_allocation_is_all_or_nothing(cls):
    alloc = cls(4, 4)
    a = req(0, 8, (1, 2))
    compute(alloc, a)
    big = req(1, 20, (1, 2, 3, 4, 5))  # 5 blocks, 2 of them A's: needs 3 more, 2 are free
    assert not alloc.allocate(big, 20)
    assert alloc.block_table(big) == [] and alloc.num_blocks_used() == 2
    alloc.check()
    alloc.free(a)
    other = req(2, 16, (9, 9, 9, 9))
    assert alloc.allocate(other, 16)  # evicts A's cached blocks to fit
    assert alloc.lookup_prefix(req(3, 12, (1, 2, 3))) == 0
    assert alloc.stats.evicted_blocks == 2
    alloc.check()


@pytest.mark.parametrize("cls", CACHES)
def test_least_recently_used_prefix_is_evicted_first(cls):
    alloc = cls(4, 4)
    old, new = req(0, 9, (1, 2, 3)), req(1, 9, (5, 6, 7))
    compute(alloc, old)
    alloc.free(old)
    compute(alloc, new)
    alloc.free(new)
    compute(alloc, req(2, 8))  # two blocks without hashes: both come from the older prefix
    assert alloc.lookup_prefix(req(3, 9, (1, 2, 3))) == 0
    assert alloc.lookup_prefix(req(4, 9, (5, 6, 7))) == 8
    alloc.check()


@pytest.mark.parametrize("cls", CACHES)
def test_hit_statistics(cls):
    alloc = cls(16, 4)
    compute(alloc, req(0, 12, (1, 2, 3)))
    compute(alloc, req(1, 16, (1, 2, 3, 4)))
    s = alloc.stats
    assert (s.prefix_queries, s.prefix_query_tokens, s.prefix_hit_tokens) == (2, 28, 12)
    assert (s.prefix_query_blocks, s.prefix_hit_blocks) == (7, 3)


# ---- radix specifics ---------------------------------------------------------------------------
def test_radix_splits_a_node_where_a_match_ends():
    alloc = RadixAllocator(16, 4)
    a, b = req(0, 13, (1, 2, 3, 4)), req(1, 13, (1, 2, 7, 8))
    compute(alloc, a)
    assert [c.keys for c in alloc.root.children.values()] == [[1, 2, 3]]
    compute(alloc, b)
    (top,) = alloc.root.children.values()
    assert top.keys == [1, 2] and sorted(c.keys for c in top.children.values()) == [[3], [7]]
    assert top.lock_ref == 2  # both requests' paths go through the shared node
    alloc.free(a)
    assert top.lock_ref == 1
    alloc.check()


def test_radix_never_evicts_a_locked_node():
    alloc = RadixAllocator(7, 4)
    a, b = req(0, 13, (1, 2, 3, 4)), req(1, 13, (1, 2, 5, 6))
    compute(alloc, a)
    compute(alloc, b)  # shares [1, 2]; its path [1, 2] -> [5] is locked while it runs
    alloc.free(a)  # A's tail block is freed, its leaf [3] stays cached, unlocked
    assert alloc.num_blocks_used() == 4  # [1, 2], [5] and B's tail block
    assert alloc.allocate(req(2, 12), 12)  # two free blocks, and leaf [3] evicted
    assert alloc.stats.evicted_blocks == 1
    assert not alloc.allocate(req(3, 4), 4)  # nothing else may go: B's path is locked
    assert alloc.lookup_prefix(req(4, 13, (1, 2, 5, 6))) == 12
    alloc.check()


def test_radix_keeps_one_copy_when_two_requests_fill_the_same_prefix():
    alloc = RadixAllocator(16, 4)
    a, b = req(0, 9, (1, 2, 3)), req(1, 9, (1, 2, 3))
    assert alloc.allocate(a, 9) and alloc.allocate(b, 9)  # neither computed yet: no hit
    for r in (a, b):
        r.num_computed_tokens = 9
        alloc.commit(r)
    assert alloc.num_blocks_used() == 6
    alloc.free(b)  # B's duplicate blocks are its own: freed
    assert alloc.num_blocks_used() == 3
    alloc.free(a)
    assert alloc.num_blocks_used() == 0 and alloc.lookup_prefix(req(2, 9, (1, 2, 3))) == 8
    alloc.check()


def test_paged_cache_keeps_one_copy_when_two_requests_fill_the_same_prefix():
    alloc = PrefixCachingAllocator(16, 4)
    a, b = req(0, 9, (1, 2, 3)), req(1, 9, (1, 2, 3))
    assert alloc.allocate(a, 9) and alloc.allocate(b, 9)
    for r in (a, b):
        r.num_computed_tokens = 9
        alloc.commit(r)
    alloc.free(a)
    alloc.free(b)
    assert len(alloc._evictable) == 2 and alloc.lookup_prefix(req(2, 9, (1, 2, 3))) == 8
    alloc.check()


# ---- under a scheduler -------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CACHES)
def test_a_prefix_hit_starts_the_request_ahead(cls):
    sched = ChunkedPrefillScheduler(cls(32, 4), max_num_batched_tokens=64)
    first, second = req(0, 20, (1, 2, 3, 4, 5), output=2), req(1, 22, (1, 2, 3, 4, 6, 7), output=2)
    sched.add_request(first, 0.0)
    batch = sched.schedule(0.0)
    sched.update(batch, StepResult(0.01), 0.01)
    sched.add_request(second, 0.01)
    batch = sched.schedule(0.01)
    assert batch.seqs() == [(1, 20), (6, 16)]  # 16 of 22 prompt tokens served from the cache
    assert second.cached_tokens == 16
    assert sched.allocator.block_table(second)[:4] == sched.allocator.block_table(first)[:4]


def test_plain_allocators_have_no_prefix_cache():
    for alloc in (PagedAllocator(8, 4), ContiguousAllocator(8, 4)):
        a = req(0, 8, (1, 2))
        compute(alloc, a)
        assert alloc.lookup_prefix(req(1, 12, (1, 2, 3))) == 0
        alloc.free(a)
        assert alloc.num_blocks_used() == 0
