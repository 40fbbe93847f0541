"""Radix-tree prefix cache (SGLang's RadixAttention): match the longest prefix, lock, LRU evict.

The tree's edges are runs of block content keys (``policies.prefix``) and each node holds the
ids of the blocks on its edge; no tensors, so the policy runs without a GPU. A request matches
the longest cached prefix (splitting a node where the match ends inside it), locks the path to
it, and computes the rest in blocks of its own; as its blocks fill they are inserted below (its
``commit``), and when it finishes they stay in the tree, unlocked. The pool reclaims unlocked
leaves, least recently used first, only when it runs out of free blocks. A locked node (one on
the path of a running request) is never evicted.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from core import Request
from policies.prefix import Key, PrefixCacheStats, content_keys, max_hit_blocks


@dataclass(eq=False, slots=True)
class _Node:
    keys: list[Key]
    blocks: list[int]
    parent: _Node | None
    depth: int  # blocks from the root to the end of this node's edge
    children: dict[Key, _Node] = field(default_factory=dict)
    lock_ref: int = 0  # running requests whose locked path goes through this node
    last_access: int = 0


@dataclass(slots=True)
class _Holding:
    table: list[int]  # the request's blocks, shared tree blocks first
    keys: list[Key]  # content keys of its shareable blocks
    node: _Node  # deepest node of its locked path
    inserted: int  # leading blocks of the request covered by its locked path


class RadixAllocator:
    """A block pool whose cached blocks live in a radix tree of block content keys."""

    def __init__(self, num_blocks: int, block_size: int = 16):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("kv_cache: the pool needs at least one block of at least one token")
        self.block_size = block_size
        self.num_blocks_total = num_blocks
        self.stats = PrefixCacheStats()
        self.root = _Node([], [], None, 0, lock_ref=1)  # the root is never evicted
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        self._in_tree = [False] * num_blocks
        self._evictable_blocks = 0  # blocks in nodes with lock_ref 0
        self._leaves: list[tuple[int, int, _Node]] = []  # (last_access, seq, node), lazy heap
        self._seq = itertools.count()
        self._clock = itertools.count(1)
        self._held: dict[int, _Holding] = {}

    def num_blocks_used(self) -> int:
        return self.num_blocks_total - len(self._free) - self._evictable_blocks

    # ---- matching ----------------------------------------------------------------------------
    def lookup_prefix(self, request: Request) -> int:
        """Tokens of the longest cached prefix of the request (no side effect)."""
        keys = content_keys(request, self.block_size, max_hit_blocks(request, self.block_size))
        return self._walk(keys)[0] * self.block_size

    def _walk(self, keys: list[Key]) -> tuple[int, int]:
        """(blocks matched, of them in unlocked nodes) along the longest cached prefix."""
        node, i, unlocked = self.root, 0, 0
        while i < len(keys):
            child = node.children.get(keys[i])
            if child is None:
                break
            m = _common(child.keys, keys, i, len(keys))
            i += m
            unlocked += m if child.lock_ref == 0 else 0
            if m < len(child.keys):
                break
            node = child
        return i, unlocked

    def _match(self, keys: list[Key]) -> tuple[_Node, list[int]]:
        """The node where the longest match ends (split there if inside an edge), its blocks."""
        node, i, blocks = self.root, 0, []
        while i < len(keys):
            child = node.children.get(keys[i])
            if child is None:
                break
            m = _common(child.keys, keys, i, len(keys))
            if m < len(child.keys):
                child = self._split(child, m)
            blocks.extend(child.blocks)
            i += m
            node = child
        return node, blocks

    def _split(self, node: _Node, at: int) -> _Node:
        """Cut ``node``'s edge after ``at`` blocks; return the new upper part."""
        upper = _Node(node.keys[:at], node.blocks[:at], node.parent,
                      node.depth - len(node.keys) + at, {}, node.lock_ref, node.last_access)
        upper.parent.children[upper.keys[0]] = upper
        node.keys, node.blocks, node.parent = node.keys[at:], node.blocks[at:], upper
        upper.children[node.keys[0]] = node
        return upper

    # ---- the allocator protocol --------------------------------------------------------------
    def allocate(self, request: Request, num_tokens: int) -> bool:
        held = self._held.get(request.request_id)
        if held is None:
            return self._first_allocate(request, num_tokens)
        need = -(-num_tokens // self.block_size) - len(held.table)
        if need <= 0:
            return True
        if need > len(self._free) + self._evictable_blocks:
            return False
        held.table.extend(self._take(need))
        return True

    def _first_allocate(self, request: Request, num_tokens: int) -> bool:
        keys = content_keys(request, self.block_size)
        limit = max_hit_blocks(request, self.block_size)
        matched, unlocked = self._walk(keys[:limit])
        need = max(0, -(-num_tokens // self.block_size) - matched)
        if need > len(self._free) + self._evictable_blocks - unlocked:
            return False  # checked before touching anything: all or nothing
        node, blocks = self._match(keys[:limit])
        self._lock(node)
        self._touch(node)
        self._held[request.request_id] = _Holding(blocks + self._take(need), keys, node, matched)
        self.stats.record(request, matched, self.block_size)
        return True

    def commit(self, request: Request) -> None:
        """Insert the request's newly computed full blocks into the tree, below its path."""
        held = self._held.get(request.request_id)
        if held is None:
            return
        full = min(request.num_computed_tokens // self.block_size, len(held.keys))
        if full <= held.inserted:
            return
        node = self._insert(held.node, held.keys, held.table, held.inserted, full)
        if node is not held.node:
            self._lock(node)
            self._unlock(held.node)
            held.node = node
        held.inserted = full

    def free(self, request: Request) -> None:
        held = self._held.pop(request.request_id, None)
        if held is None:
            return
        self._touch(held.node)
        for block in reversed(held.table):
            if not self._in_tree[block]:
                self._free.append(block)
        self._unlock(held.node)

    def block_table(self, request: Request) -> list[int]:
        held = self._held.get(request.request_id)
        return list(held.table) if held else []

    # ---- tree upkeep -------------------------------------------------------------------------
    def _insert(self, node: _Node, keys: list[Key], table: list[int], start: int,
                end: int) -> _Node:
        """Add ``keys[start:end]`` (with the request's blocks) below ``node``; return the node
        where they end. Where another request already inserted the same content, the tree keeps
        its blocks and the request's copies stay private to it (freed when it finishes)."""
        i = start
        while i < end:
            child = node.children.get(keys[i])
            if child is None:
                leaf = _Node(keys[i:end], table[i:end], node, end, last_access=next(self._clock))
                node.children[keys[i]] = leaf
                for block in leaf.blocks:
                    self._in_tree[block] = True
                self._evictable_blocks += len(leaf.blocks)  # unlocked until the caller locks it
                return leaf
            m = _common(child.keys, keys, i, end)
            if m < len(child.keys):
                child = self._split(child, m)
            i += m
            node = child
        return node

    def _lock(self, node: _Node) -> None:
        while node is not self.root:
            if node.lock_ref == 0:
                self._evictable_blocks -= len(node.blocks)
            node.lock_ref += 1
            node = node.parent

    def _unlock(self, node: _Node) -> None:
        leaf = node
        while node is not self.root:
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self._evictable_blocks += len(node.blocks)
            node = node.parent
        if leaf is not self.root and leaf.lock_ref == 0 and not leaf.children:
            self._push_leaf(leaf)

    def _touch(self, node: _Node) -> None:
        now = next(self._clock)
        while node is not self.root:
            node.last_access = now
            node = node.parent

    def _push_leaf(self, node: _Node) -> None:
        heapq.heappush(self._leaves, (node.last_access, next(self._seq), node))

    def _take(self, count: int) -> list[int]:
        while len(self._free) < count:
            self._evict_one()
        taken = self._free[-count:] if count else []
        del self._free[len(self._free) - count:]
        taken.reverse()
        return taken

    def _evict_one(self) -> None:
        """Drop the least recently used unlocked leaf (entries of changed nodes are stale)."""
        while True:
            access, _, node = heapq.heappop(self._leaves)
            if (node.parent is not None and not node.children and node.lock_ref == 0
                    and access == node.last_access):
                break
        parent = node.parent
        del parent.children[node.keys[0]]
        node.parent = None
        for block in node.blocks:
            self._in_tree[block] = False
            self._free.append(block)
        self._evictable_blocks -= len(node.blocks)
        self.stats.evicted_blocks += len(node.blocks)
        if parent is not self.root and parent.lock_ref == 0 and not parent.children:
            self._push_leaf(parent)

    def check(self) -> None:
        """Assert the tree's invariants (tests): locks, evictable count, block ownership."""
        owners = [0] * self.num_blocks_total
        for block in self._free:
            owners[block] += 1
        evictable, stack = 0, list(self.root.children.values())
        while stack:
            node = stack.pop()
            assert node.lock_ref >= 0 and node.lock_ref >= max(
                (c.lock_ref for c in node.children.values()), default=0), "lock below a child's"
            assert node.depth == node.parent.depth + len(node.keys) and node.keys
            evictable += len(node.blocks) if node.lock_ref == 0 else 0
            for block in node.blocks:
                assert self._in_tree[block]
                owners[block] += 1
            stack.extend(node.children.values())
        assert evictable == self._evictable_blocks, "evictable count is off"
        for held in self._held.values():
            assert held.node.parent is not None or held.node is self.root, "locked node evicted"
            assert held.node.lock_ref >= 1
            for block in held.table:
                if not self._in_tree[block]:
                    owners[block] += 1
        assert owners == [1] * self.num_blocks_total, "a block is leaked or owned twice"


def _common(edge: list[Key], keys: list[Key], start: int, end: int) -> int:
    """Length of the common prefix of ``edge`` and ``keys[start:end]``."""
    n = min(len(edge), end - start)
    i = 0
    while i < n and edge[i] == keys[start + i]:
        i += 1
    return i
