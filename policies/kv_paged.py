"""Paged KV allocation (vLLM's PagedAttention): fixed-size blocks handed out on demand.

A request holds only ceil(tokens / block_size) blocks, so the only waste is the tail of its last
block; the pool is the GPU memory left after weights and activations, cut into blocks.
"""

from __future__ import annotations

from sim.core import Request


class PagedAllocator:
    """A pool of ``num_blocks`` blocks of ``block_size`` tokens, given out one block at a time."""

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
        table = self._tables.setdefault(request.request_id, [])
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
