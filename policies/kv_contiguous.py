"""Contiguous KV allocation: reserve a request's whole final length when it is admitted.

This is how engines worked before paging (FasterTransformer, early TGI, HF ``generate``): the
slot for prompt + max output is reserved up front, so memory that the request will only need at
its end (or never, if it stops early) is unavailable to others for its whole life.
"""

from __future__ import annotations

from core import Request


class ContiguousAllocator:
    """Reserves ``ceil((prompt + output) / block_size)`` blocks per request at its first allocation.

    Counting in blocks keeps the KV occupancy metrics comparable with the paged allocator; a block
    here is just a unit of accounting, the reservation is one contiguous region in spirit.
    """

    def __init__(self, num_blocks: int, block_size: int = 16):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("kv_cache: the pool needs at least one block of at least one token")
        self.block_size = block_size
        self.num_blocks_total = num_blocks
        self._extents: list[tuple[int, int]] = [(0, num_blocks)]  # (start, length), sorted
        self._held: dict[int, tuple[int, int]] = {}
        self._used = 0

    def num_blocks_used(self) -> int:
        return self._used

    def lookup_prefix(self, request: Request) -> int:
        return 0

    def allocate(self, request: Request, num_tokens: int) -> bool:
        if request.request_id in self._held:
            start, length = self._held[request.request_id]
            return num_tokens <= length * self.block_size
        length = -(-max(num_tokens, request.max_tokens) // self.block_size)
        for i, (start, free_len) in enumerate(self._extents):
            if free_len >= length:  # first fit: external fragmentation is part of the model
                self._extents[i] = (start + length, free_len - length)
                if free_len == length:
                    del self._extents[i]
                self._held[request.request_id] = (start, length)
                self._used += length
                return True
        return False

    def commit(self, request: Request) -> None:
        """No sharing between requests."""

    def free(self, request: Request) -> None:
        extent = self._held.pop(request.request_id, None)
        if extent is None:
            return
        self._used -= extent[1]
        self._extents.append(extent)
        self._extents.sort()
        merged: list[tuple[int, int]] = []
        for start, length in self._extents:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + length)
            else:
                merged.append((start, length))
        self._extents = merged

    def block_table(self, request: Request) -> list[int]:
        start, length = self._held.get(request.request_id, (0, 0))
        return list(range(start, start + length))

    def check(self) -> None:
        """Assert the pool's invariants (tests): extents and reservations tile the pool exactly."""
        spans = sorted([*self._extents, *self._held.values()])
        position = 0
        for start, length in spans:
            assert start == position and length > 0, "extents overlap or leave a gap"
            position += length
        assert position == self.num_blocks_total, "a block leaked"
        assert self._used == sum(length for _, length in self._held.values())
