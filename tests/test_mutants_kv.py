"""The prefix-caching and paged KV allocators traced by hand: exact block tables, what a hit on
blocks in use or on cached free blocks costs, multi-level radix paths, the order of eviction,
the hit statistics and the invariant checks' own failures. Written for the mutants of
``policies/kv_radix.py``, ``kv_paged.py``, ``prefix.py`` and ``queues.py`` that the unit tests
let through (ledger: docs/mutation/policies-kv.md).

Conventions of every case: 4-token blocks and 4-token hash blocks (one content key per block),
so a prompt of ``n`` tokens with hashes ``h`` has ``min(n, 4 len(h)) // 4`` shareable blocks and
at most ``(n - 1) // 4`` of them are served from the cache. Fresh pools hand out block 0 first,
then 1, 2, ...; a freed block is reused last-freed first.
"""

from __future__ import annotations

import pytest

from policies.kv_paged import PagedAllocator, PrefixCachingAllocator
from policies.kv_radix import RadixAllocator
from policies.prefix import content_keys
from policies.queues import make_queue
from sim.core import Request

CACHES = [PrefixCachingAllocator, RadixAllocator]
PAGED = [PagedAllocator, PrefixCachingAllocator, RadixAllocator]
POOL_ERROR = "^kv_cache: the pool needs at least one block of at least one token$"


def req(rid: int, prompt: int, hashes: tuple[int, ...] = ()) -> Request:
    return Request(rid, 0.0, prompt, 1, prefix_hashes=hashes, hash_block_tokens=4)


def compute(alloc, r: Request, tokens: int | None = None) -> None:
    """Allocate the request's prompt (or its first ``tokens``), 'compute' it, publish it."""
    tokens = r.num_tokens if tokens is None else tokens
    assert alloc.allocate(r, tokens)
    r.num_computed_tokens = tokens
    alloc.commit(r)


def served(alloc, r: Request) -> None:
    """A request that computes its whole prompt and finishes: its full blocks stay cached."""
    compute(alloc, r)
    alloc.free(r)


# ---- pool construction ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [PagedAllocator, PrefixCachingAllocator])
@pytest.mark.parametrize(("blocks", "size"), [(0, 16), (4, 0), (0, 0)])
def test_an_empty_pool_is_a_one_line_error(cls, blocks, size):
    with pytest.raises(ValueError, match=POOL_ERROR):
        cls(blocks, size)


@pytest.mark.parametrize("cls", [PagedAllocator, PrefixCachingAllocator])
def test_one_block_of_one_token_is_a_pool_and_blocks_are_16_tokens_by_default(cls):
    pool = cls(1, 1)
    assert pool.block_size == 1 and pool.num_blocks_used() == 0
    assert pool.allocate(req(0, 1), 1) and pool.block_table(req(0, 1)) == [0]
    assert cls(3).block_size == 16  # vLLM's default block size


# ---- growing a holding -------------------------------------------------------------------------
@pytest.mark.parametrize("cls", PAGED)
def test_a_holding_grows_one_block_per_block_of_tokens_up_to_the_last_free_one(cls):
    pool = cls(4, 4)
    r = req(0, 5)
    assert pool.allocate(r, 5) and pool.block_table(r) == [0, 1]
    assert pool.allocate(r, 8) and pool.block_table(r) == [0, 1]  # still within block 1
    assert pool.allocate(r, 9) and pool.block_table(r) == [0, 1, 2]
    assert pool.allocate(r, 16) and pool.block_table(r) == [0, 1, 2, 3]  # the last free block
    assert not pool.allocate(r, 17)  # a fifth block does not exist
    assert pool.block_table(r) == [0, 1, 2, 3] and pool.num_blocks_used() == 4
    pool.check()


@pytest.mark.parametrize("cls", CACHES)
def test_a_holding_grows_into_cached_blocks_when_no_block_is_free(cls):
    pool = cls(4, 4)
    served(pool, req(0, 9, (1, 2, 3)))  # blocks 0, 1 cached; block 2 private, freed
    r = req(1, 5)
    assert pool.allocate(r, 5) and pool.block_table(r) == [2, 3]  # the two free blocks
    assert pool.allocate(r, 9)  # no free block: a cached one is evicted for the third
    assert pool.block_table(r) == [2, 3, 1] and pool.num_blocks_used() == 3
    # The hashed cache gives up one block (the prefix's tail, block 1); the radix tree a whole
    # leaf (blocks 0 and 1, keys [1, 2]), whose head block 0 is then free.
    assert pool.stats.evicted_blocks == {PrefixCachingAllocator: 1, RadixAllocator: 2}[cls]
    pool.check()


@pytest.mark.parametrize("cls", PAGED)
def test_freeing_a_request_that_holds_nothing_changes_nothing(cls):
    pool = cls(2, 4)
    big = req(0, 12)
    assert not pool.allocate(big, 12)  # 3 blocks of 2: refused, holds nothing
    assert pool.block_table(big) == []
    pool.free(big)
    assert pool.num_blocks_used() == 0
    small = req(1, 8)
    assert pool.allocate(small, 8) and pool.block_table(small) == [0, 1]
    pool.check()


# ---- what a hit costs ----------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CACHES)
def test_an_allocation_inside_the_hit_takes_no_new_block(cls):
    pool = cls(8, 4)
    compute(pool, req(0, 13, (1, 2, 3, 4)))  # blocks 0-2 cached, block 3 its own tail
    r = req(1, 16, (1, 2, 3, 4))  # may take 3 hits ((16 - 1) // 4)
    assert pool.allocate(r, 12) and pool.block_table(r) == [0, 1, 2]
    assert pool.num_blocks_used() == 4
    assert pool.allocate(r, 16) and pool.block_table(r) == [0, 1, 2, 4]
    assert pool.stats.prefix_hit_blocks == 3
    pool.check()


@pytest.mark.parametrize("cls", CACHES)
def test_the_last_prompt_token_is_never_served_from_the_cache(cls):
    pool = cls(8, 4)
    compute(pool, req(0, 13, (1, 2, 3, 4)))  # blocks 0-2 cached
    r = req(1, 12, (1, 2, 3))  # all three blocks cached, but (12 - 1) // 4 = 2 may be hits
    assert pool.allocate(r, 12) and pool.block_table(r) == [0, 1, 4]
    assert pool.stats.prefix_hit_tokens == 8
    pool.check()


@pytest.mark.parametrize("cls", CACHES)
def test_a_hit_on_blocks_in_use_costs_only_the_new_blocks(cls):
    pool = cls(4, 4)
    a = req(0, 9, (1, 2, 3))
    compute(pool, a)  # holds 0, 1 (cached) and 2; block 3 free
    b = req(1, 12, (1, 2, 3))  # hits 0 and 1 while A holds them; needs one block: the free one
    assert pool.allocate(b, 12) and pool.block_table(b) == [0, 1, 3]
    assert pool.num_blocks_used() == 4
    pool.check()  # blocks 0 and 1 are referenced twice


@pytest.mark.parametrize("cls", CACHES)
def test_a_hit_on_cached_free_blocks_does_not_count_them_as_room(cls):
    pool = cls(4, 4)
    served(pool, req(0, 9, (1, 2, 3)))  # blocks 0, 1 cached and free; 2 and 3 free
    big = req(1, 17, (1, 2, 3, 4, 5))  # 5 blocks, 2 hits: needs 3, and only 2 are not the hit
    assert not pool.allocate(big, 17)
    assert pool.block_table(big) == [] and pool.num_blocks_used() == 0
    assert pool.lookup_prefix(req(2, 9, (1, 2, 3))) == 8  # the refusal evicted nothing
    fits = req(3, 13, (1, 2, 3, 4))  # 4 blocks, 2 hits: needs exactly the 2 others
    assert pool.allocate(fits, 13) and pool.block_table(fits) == [0, 1, 2, 3]
    assert pool.num_blocks_used() == 4 and pool.stats.evicted_blocks == 0
    pool.check()


# ---- paths of more than one node ---------------------------------------------------------------
def two_level(cls):
    """A pool of 6 whose cache holds [1] (block 0) and below it [2, 3, 4] (blocks 1-3), all
    unlocked, with blocks 4 and 5 free: a 5-token prompt made the first node, a 17-token one
    (4 shareable blocks, 1 of them a hit) the second."""
    pool = cls(6, 4)
    served(pool, req(0, 5, (1, 2)))
    served(pool, req(1, 17, (1, 2, 3, 4, 5)))
    assert pool.num_blocks_used() == 0
    return pool


@pytest.mark.parametrize("cls", CACHES)
def test_a_lookup_may_end_inside_the_second_edge(cls):
    pool = two_level(cls)
    assert pool.lookup_prefix(req(2, 12, (1, 2, 3))) == 8  # 2 hits at most: [1], then [2]
    assert pool.lookup_prefix(req(3, 21, (1, 2, 3, 4, 5, 6))) == 16
    assert pool.lookup_prefix(req(4, 21, (1, 2, 9, 4, 5, 6))) == 8
    pool.check()


@pytest.mark.parametrize("cls", CACHES)
def test_every_unlocked_block_of_a_two_level_hit_is_not_room(cls):
    pool = two_level(cls)
    # 7 blocks, 4 hits (both nodes): needs 3 more, and only blocks 4 and 5 are not the hit.
    assert not pool.allocate(req(2, 25, (1, 2, 3, 4, 5, 6, 7)), 25)
    r = req(3, 21, (1, 2, 3, 4, 8, 9))  # 6 blocks, 4 hits: needs exactly 4 and 5
    assert pool.allocate(r, 21) and pool.block_table(r) == [0, 1, 2, 3, 4, 5]
    assert pool.stats.evicted_blocks == 0
    pool.check()


@pytest.mark.parametrize("cls", CACHES)
def test_a_two_level_chain_is_evicted_leaf_first_then_its_parent(cls):
    pool = two_level(cls)
    r = req(2, 24)  # 6 blocks: the 2 free ones and all 4 cached
    assert pool.allocate(r, 24) and sorted(pool.block_table(r)) == [0, 1, 2, 3, 4, 5]
    assert pool.stats.evicted_blocks == 4 and pool.num_blocks_used() == 6
    assert pool.lookup_prefix(req(3, 9, (1, 2, 3))) == 0
    pool.check()


@pytest.mark.parametrize("cls", CACHES)
def test_a_match_does_not_run_on_into_a_child_keyed_like_an_earlier_block(cls):
    pool = cls(10, 4)
    served(pool, req(0, 5, (1, 2)))  # [1]
    served(pool, req(1, 13, (1, 2, 3, 9)))  # [1] -> [2, 3]
    z = req(2, 17, (1, 2, 3, 3, 9))  # [1] -> [2, 3] -> [3]
    compute(pool, z)
    head = pool.block_table(z)[:3]
    pool.free(z)
    # keys [1, 2, 3, 7]: 3 hits; the 4th key 7 matches nothing (the child [3] is keyed 3).
    r = req(3, 17, (1, 2, 3, 7, 9))
    assert pool.lookup_prefix(r) == 12
    assert pool.allocate(r, 17)
    table = pool.block_table(r)
    assert table[:3] == head and len(table) == 5 and pool.num_blocks_used() == 5
    pool.check()


# ---- least recently used ---------------------------------------------------------------------
@pytest.mark.parametrize("cls", CACHES)
def test_a_prefix_used_again_outlives_one_cached_after_its_first_use(cls):
    pool = cls(6, 4)
    served(pool, req(0, 9, (1, 2, 3)))  # cached first
    served(pool, req(1, 9, (5, 6, 7)))  # cached second
    served(pool, req(2, 9, (1, 2, 3)))  # the first prefix used again: now the most recent
    assert pool.allocate(req(3, 16), 16)  # 4 blocks: the 2 free ones and one cached prefix
    assert pool.stats.evicted_blocks == 2
    assert pool.lookup_prefix(req(4, 9, (1, 2, 3))) == 8
    assert pool.lookup_prefix(req(5, 9, (5, 6, 7))) == 0
    pool.check()


@pytest.mark.parametrize("cls", CACHES)
def test_blocks_cached_by_others_are_not_counted_as_used(cls):
    pool = cls(8, 4)
    served(pool, req(0, 9, (1, 2, 3)))  # 2 cached, unused
    compute(pool, req(1, 9, (5, 6, 7)))  # 3 blocks held, 2 of them just cached
    assert pool.num_blocks_used() == 3
    pool.check()


def test_radix_never_evicts_a_node_locked_by_a_request_that_computed_the_same_prefix():
    pool = RadixAllocator(8, 4)
    a, b = req(0, 9, (1, 2, 3)), req(1, 9, (1, 2, 3))
    assert pool.allocate(a, 9) and pool.allocate(b, 9)  # no hit yet: blocks 0-2 and 3-5
    for r in (a, b):
        r.num_computed_tokens = 9
        pool.commit(r)  # A's [1, 2] enters the tree; B's copies stay private, B locks A's node
    pool.free(a)
    served(pool, req(2, 5, (8, 9)))  # [8] cached after A's node was last used
    assert pool.num_blocks_used() == 5  # B's three blocks and A's node (2), which B locks
    r = req(3, 12)  # 3 blocks: the 2 free ones and the only unlocked leaf, [8]
    assert pool.allocate(r, 12) and pool.stats.evicted_blocks == 1
    assert pool.lookup_prefix(req(4, 9, (1, 2, 3))) == 8
    assert pool.lookup_prefix(req(5, 5, (8, 9))) == 0
    pool.check()


# ---- publishing ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CACHES)
def test_blocks_computed_in_two_chunks_are_all_published(cls):
    pool = cls(8, 4)
    r = req(0, 13, (1, 2, 3, 4))
    assert pool.allocate(r, 13)
    r.num_computed_tokens = 4
    pool.commit(r)
    assert pool.lookup_prefix(req(1, 17, (1, 2, 3, 4, 5))) == 4
    r.num_computed_tokens = 13
    pool.commit(r)
    assert pool.lookup_prefix(req(2, 17, (1, 2, 3, 4, 5))) == 12
    pool.check()


def test_radix_splits_an_edge_where_a_later_commit_diverges():
    pool = RadixAllocator(16, 4)
    a, b = req(0, 13, (1, 2, 3, 4)), req(1, 13, (1, 2, 7, 8))
    assert pool.allocate(a, 13) and pool.allocate(b, 13)  # blocks 0-3 and 4-7, no hit
    for r in (a, b):
        r.num_computed_tokens = 13
        pool.commit(r)
    (top,) = pool.root.children.values()
    assert top.keys == [1, 2] and top.blocks == [0, 1]
    assert sorted((c.keys, c.blocks) for c in top.children.values()) == [([3], [2]), ([7], [6])]
    assert pool.lookup_prefix(req(2, 13, (1, 2, 7, 8))) == 12
    pool.check()


def test_radix_commit_walks_a_node_another_request_inserted_below_its_hit():
    pool = RadixAllocator(8, 4)
    served(pool, req(0, 5, (1, 2)))  # [1]
    r, q = req(1, 13, (1, 2, 3, 4)), req(2, 13, (1, 2, 3, 4))
    assert pool.allocate(r, 13) and pool.allocate(q, 13)  # both hit [1]
    for x in (q, r):
        x.num_computed_tokens = 13
        pool.commit(x)  # Q inserts [2, 3]; R finds it there and adds nothing
    (top,) = pool.root.children.values()
    (below,) = top.children.values()
    assert below.keys == [2, 3] and not below.children
    assert pool.lookup_prefix(req(3, 17, (1, 2, 3, 3, 9))) == 12
    pool.check()


def test_a_duplicate_block_stays_private_after_the_first_copy_is_evicted():
    """Documented rule of the hashed cache: of two copies computed at once, the first is
    published and the other stays its request's own, also once the first has gone."""
    pool = PrefixCachingAllocator(6, 4)
    a, b = req(0, 5, (1, 2)), req(1, 9, (1, 2, 3))
    assert pool.allocate(a, 5) and pool.allocate(b, 9)  # blocks 0-1 and 2-4
    a.num_computed_tokens, b.num_computed_tokens = 5, 4
    pool.commit(a)
    pool.commit(b)  # B's block 2 has the content of A's block 0: kept private
    pool.free(a)
    assert pool.allocate(req(2, 12), 12) and pool.stats.evicted_blocks == 1  # block 0 goes
    b.num_computed_tokens = 9
    pool.commit(b)  # publishes B's second block only
    assert pool.lookup_prefix(req(3, 12, (1, 2, 3))) == 0
    pool.check()


# ---- hashes and statistics -------------------------------------------------------------------
def test_a_block_starting_on_a_hash_boundary_minus_one_needs_both_hashes():
    # 5-token blocks over 4-token hash blocks: block 0 is tokens 0-4, its last token 4 opens
    # hash block 1; block 1 is tokens 5-9, inside hash blocks 1 and 2.
    r = Request(0, 0.0, 10, 1, prefix_hashes=(1, 2, 3), hash_block_tokens=4)
    assert content_keys(r, 5) == [(1, 2), (2, 3)]


@pytest.mark.parametrize("cls", CACHES)
def test_hit_statistics_add_up_over_requests(cls):
    pool = cls(16, 4)
    compute(pool, req(0, 13, (1, 2, 3, 4)))  # no hit; ceil(13 / 4) = 4 blocks
    compute(pool, req(1, 13, (1, 2, 3, 4)))  # 3 hits of 4 blocks
    compute(pool, req(2, 10, (1, 2, 3)))  # 2 hits ((10 - 1) // 4) of 3 blocks
    s = pool.stats
    assert (s.prefix_queries, s.prefix_query_tokens, s.prefix_hit_tokens) == (3, 36, 20)
    assert (s.prefix_query_blocks, s.prefix_hit_blocks) == (11, 5)
    assert isinstance(s.prefix_query_blocks, int)


# ---- the invariant checks fail where they should ---------------------------------------------
def held_pair():
    """A radix pool of 8 with A (keys [1, 2], blocks 0-2) and B (a hit on [1, 2], its own [3, 4]
    below, blocks 0, 1, 3, 4, 5) both running; block 2 is A's own, block 5 B's."""
    pool = RadixAllocator(8, 4)
    compute(pool, req(0, 9, (1, 2, 3)))
    b = req(1, 17, (1, 2, 3, 4, 5))
    compute(pool, b)
    assert pool.block_table(b) == [0, 1, 3, 4, 5]
    pool.check()
    (top,) = pool.root.children.values()
    (below,) = top.children.values()
    assert (top.lock_ref, below.lock_ref) == (2, 1)
    return pool, top, below


def test_radix_check_finds_a_lock_below_a_childs():
    pool, _, below = held_pair()
    below.lock_ref = 3
    with pytest.raises(AssertionError, match="^lock below a child's$"):
        pool.check()


def test_radix_check_finds_a_wrong_depth():
    pool, _, below = held_pair()
    below.depth += 1
    with pytest.raises(AssertionError):
        pool.check()


def test_radix_check_finds_an_evictable_count_that_is_off():
    pool, _, _ = held_pair()
    pool._evictable_blocks += 1
    with pytest.raises(AssertionError, match="^evictable count is off$"):
        pool.check()


def test_radix_check_finds_a_locked_node_gone_from_the_tree():
    pool, top, below = held_pair()
    del top.children[below.keys[0]]
    below.parent = None
    with pytest.raises(AssertionError, match="^locked node evicted$"):
        pool.check()


@pytest.mark.parametrize("block", [5, 3, 6], ids=["private", "in the tree", "free"])
def test_radix_check_finds_a_block_owned_twice(block):
    pool, _, _ = held_pair()
    pool._free.append(block)  # B's own block, a tree block, a block already free
    with pytest.raises(AssertionError, match="^a block is leaked or owned twice$"):
        pool.check()


def test_paged_cache_check_finds_a_block_free_twice():
    pool = PrefixCachingAllocator(4, 4)
    pool._free.append(pool._free[0])
    with pytest.raises(AssertionError, match="^a block is free twice$"):
        pool.check()


def test_plain_paged_check_passes_a_pool_with_free_and_held_blocks():
    pool = PagedAllocator(4, 4)
    assert pool.allocate(req(0, 8), 8)  # blocks 0, 1 held; 2, 3 free
    pool.check()


def _broken_paged_pool(how: str) -> PagedAllocator:
    pool = PagedAllocator(4, 4)
    assert pool.allocate(req(0, 8), 8)  # blocks 0, 1 held; free list [3, 2]
    if how == "held twice":
        pool._tables[9] = [0]
    elif how == "free twice":
        pool._free.append(2)
    elif how == "held and free":
        pool._free.append(0)
    else:  # leaked
        pool._free.pop()
    return pool


@pytest.mark.parametrize(("how", "message"), [
    ("held twice", "a block is held twice"), ("free twice", "a block is free twice"),
    ("held and free", "a held block is also free"), ("leaked", "a block leaked")])
def test_plain_paged_check_names_each_broken_invariant(how, message):
    with pytest.raises(AssertionError, match=f"^{message}$"):
        _broken_paged_pool(how).check()


# ---- queues ----------------------------------------------------------------------------------
def test_queues_iterate_in_admission_order():
    fcfs = make_queue("fcfs")
    a, b, c = (Request(i, float(i), 4, 1) for i in range(3))
    fcfs.push(a)
    fcfs.push(b)
    fcfs.push_preempted(c)  # a preempted request goes back to the head
    assert list(fcfs) == [c, a, b]
    urgent = make_queue("priority")
    late, early, low = (Request(0, 2.0, 4, 1, priority=0), Request(1, 1.0, 4, 1, priority=0),
                        Request(2, 0.0, 4, 1, priority=2))
    for r in (late, early, low):
        urgent.push(r)
    assert list(urgent) == [early, late, low]  # priority first, then arrival


def test_an_unknown_queue_order_names_the_allowed_ones():
    with pytest.raises(ValueError,
                       match=r"^scheduler\.order: unknown 'lifo'; allowed: fcfs, priority$"):
        make_queue("lifo")
