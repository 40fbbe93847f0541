"""Paged KV allocation (vLLM's PagedAttention): fixed-size blocks handed out on demand.

A request holds only ceil(tokens / block_size) blocks, so the only waste is the tail of its last
block; the pool is the GPU memory left after weights and activations, cut into blocks.
``PrefixCachingAllocator`` adds ref counts and a hashed-block prefix cache on top.
"""

from __future__ import annotations

from collections import OrderedDict

from core import Request
from policies.fastpath import ANY, records_options
from policies.prefix import PrefixCacheStats, chain_keys, max_hit_blocks


class PagedAllocator:
    """A pool of ``num_blocks`` blocks of ``block_size`` tokens, given out one block at a time."""

    FAST_PATH = {"num_blocks": ANY, "block_size": ANY}  # mirrored by sim/lane.py

    @records_options
    def __init__(self, num_blocks: int, block_size: int = 16):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("kv_cache: the pool needs at least one block of at least one token")
        self.block_size = block_size
        self.num_blocks_total = num_blocks
        # LIFO reuse: a block freed last is still warm in L2 and, in realexec, in the TLB.
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        self._tables: dict[int, list[int]] = {}

    def num_blocks_used(self) -> int:
        return self.num_blocks_total - len(self._free)

    def lookup_prefix(self, request: Request) -> int:
        """No prefix cache in the plain paged allocator."""
        return 0

    def allocate(self, request: Request, num_tokens: int) -> bool:
        table = self._tables.get(request.request_id)
        if table is None:
            table = self._tables[request.request_id] = []
        need = -(-num_tokens // self.block_size) - len(table)
        if need <= 0:
            return True
        if need > len(self._free):
            if not table:
                del self._tables[request.request_id]
            return False
        for _ in range(need):
            table.append(self._free.pop())
        return True

    def commit(self, request: Request) -> None:
        """Nothing to publish: blocks are never shared without a prefix cache."""

    def free(self, request: Request) -> None:
        table = self._tables.pop(request.request_id, None)
        if table:
            self._free.extend(reversed(table))

    def block_table(self, request: Request) -> list[int]:
        return list(self._tables.get(request.request_id, ()))

    def blocks_held(self, request: Request) -> int:
        """Blocks the request holds (``len(block_table(request))`` without the copy); the
        engine's fast-forward reads it to plan when each request takes its next block."""
        return len(self._tables.get(request.request_id, ()))

    def held_tokens(self, requests: list[Request]) -> list[int]:
        """Tokens each request's blocks cover: ``blocks_held x block_size`` for a whole batch
        in one call (the fast-forward asks for every run it plans)."""
        tables, bs = self._tables, self.block_size
        return [len(tables.get(r.request_id, ())) * bs for r in requests]

    def check(self) -> None:
        """Assert the pool's invariants (tests): no block both free and held, or held twice."""
        held = [b for table in self._tables.values() for b in table]
        assert len(set(held)) == len(held), "a block is held twice"
        assert len(set(self._free)) == len(self._free), "a block is free twice"
        assert not set(held) & set(self._free), "a held block is also free"
        assert len(held) + len(self._free) == self.num_blocks_total, "a block leaked"


class PrefixCachingAllocator:
    """Paged blocks with ref counts and a hashed-block prefix cache (vLLM's automatic prefix
    caching).

    A full block whose content is known (``policies.prefix``) is published under its chained
    hash once computed (``commit``); a later request whose leading block hashes are published
    shares those blocks (ref count + 1) and starts that far ahead. A freed block keeps its hash
    and stays reusable until the pool needs it: blocks never cached are handed out first, then
    cached ones, least recently freed first (LRU), a request's tail blocks before its head ones,
    so that a cached prefix is kept longest where it is most shared.
    """

    def __init__(self, num_blocks: int, block_size: int = 16):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("kv_cache: the pool needs at least one block of at least one token")
        self.block_size = block_size
        self.num_blocks_total = num_blocks
        self.stats = PrefixCacheStats()
        self._ref = [0] * num_blocks
        self._key_of: list[int | None] = [None] * num_blocks
        self._cached: dict[int, int] = {}  # chained hash -> block holding that content
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))  # never-cached, LIFO
        self._evictable: OrderedDict[int, None] = OrderedDict()  # cached, ref 0, LRU first
        self._tables: dict[int, list[int]] = {}
        self._keys: dict[int, list[int]] = {}  # chained hashes of a held request's blocks
        self._published: dict[int, int] = {}  # leading blocks of the request already cached

    def num_blocks_used(self) -> int:
        return self.num_blocks_total - len(self._free) - len(self._evictable)

    def lookup_prefix(self, request: Request) -> int:
        """Tokens of the request's prompt held in the cache now (whole blocks, no side effect)."""
        hits = 0
        for key in chain_keys(request, self.block_size, max_hit_blocks(request, self.block_size)):
            if key not in self._cached:
                break
            hits += 1
        return hits * self.block_size

    def allocate(self, request: Request, num_tokens: int) -> bool:
        table = self._tables.get(request.request_id)
        if table is None:
            return self._first_allocate(request, num_tokens)
        need = -(-num_tokens // self.block_size) - len(table)
        if need <= 0:
            return True
        if need > len(self._free) + len(self._evictable):
            return False
        self._take(table, need)
        return True

    def _first_allocate(self, request: Request, num_tokens: int) -> bool:
        keys = list(chain_keys(request, self.block_size))
        hits: list[int] = []
        for key in keys[:max_hit_blocks(request, self.block_size)]:
            block = self._cached.get(key)
            if block is None:
                break
            hits.append(block)
        need = max(0, -(-num_tokens // self.block_size) - len(hits))
        revived = sum(1 for b in hits if self._ref[b] == 0)  # cached but free: not available
        if need > len(self._free) + len(self._evictable) - revived:
            return False
        for block in hits:
            if self._ref[block] == 0:
                del self._evictable[block]
            self._ref[block] += 1
        table = list(hits)
        self._take(table, need)
        rid = request.request_id
        self._tables[rid], self._keys[rid], self._published[rid] = table, keys, len(hits)
        self.stats.record(request, len(hits), self.block_size)
        return True

    def _take(self, table: list[int], count: int) -> None:
        for _ in range(count):
            if self._free:
                block = self._free.pop()
            else:
                block, _ = self._evictable.popitem(last=False)
                del self._cached[self._key_of[block]]
                self._key_of[block] = None
                self.stats.evicted_blocks += 1
            self._ref[block] = 1
            table.append(block)

    def commit(self, request: Request) -> None:
        """Publish the request's newly computed full blocks under their hashes."""
        rid = request.request_id
        done = self._published.get(rid)
        if done is None:
            return
        keys = self._keys[rid]
        full = min(request.num_computed_tokens // self.block_size, len(keys))
        if full <= done:
            return
        table = self._tables[rid]
        for j in range(done, full):
            # Computed twice at once (two requests, same prefix): keep the first copy cached.
            if keys[j] not in self._cached:
                self._cached[keys[j]] = table[j]
                self._key_of[table[j]] = keys[j]
        self._published[rid] = full

    def free(self, request: Request) -> None:
        rid = request.request_id
        table = self._tables.pop(rid, None)
        if table is None:
            return
        del self._keys[rid], self._published[rid]
        for block in reversed(table):
            self._ref[block] -= 1
            if self._ref[block] == 0:
                if self._key_of[block] is None:
                    self._free.append(block)
                else:
                    self._evictable[block] = None

    def block_table(self, request: Request) -> list[int]:
        return list(self._tables.get(request.request_id, ()))

    def check(self) -> None:
        """Assert the pool's invariants (tests): every block is free, cached or referenced."""
        refs = [0] * self.num_blocks_total
        for table in self._tables.values():
            for block in table:
                refs[block] += 1
        assert refs == self._ref, "ref counts differ from the block tables"
        free, evictable = set(self._free), set(self._evictable)
        assert len(free) == len(self._free) and not free & evictable, "a block is free twice"
        for block in range(self.num_blocks_total):
            assert (block in free) + (block in evictable) + (refs[block] > 0) == 1, block
        assert all(self._key_of[b] is None for b in free)
        assert all(self._cached[self._key_of[b]] == b for b in evictable)
        assert all(self._key_of[b] == k for k, b in self._cached.items())
