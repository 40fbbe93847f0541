"""The radix allocator's pool checks: written for the mutants of ``RadixAllocator.__init__``
that the scheduler-level tests let through (docs/testing.md)."""

from __future__ import annotations

import pytest

from policies.kv_radix import RadixAllocator


@pytest.mark.parametrize(("blocks", "size"), [(0, 16), (4, 0), (0, 0)])
def test_an_empty_pool_is_a_one_line_error(blocks, size):
    with pytest.raises(ValueError,
                       match="^kv_cache: the pool needs at least one block of at least one token$"):
        RadixAllocator(blocks, size)


def test_one_block_of_one_token_is_a_valid_pool():
    pool = RadixAllocator(1, block_size=1)
    assert pool.block_size == 1 and pool.num_blocks_used() == 0
    assert RadixAllocator(3).block_size == 16  # vLLM's default block size
