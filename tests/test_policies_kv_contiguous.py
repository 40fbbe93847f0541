"""The contiguous allocator's regions, traced by hand: first fit, exact block tables, freed
neighbours coalescing, and the refusals. Written for the mutants of ``policies/kv_contiguous.py``
that the scheduler-level tests let through (docs/testing.md)."""

from __future__ import annotations

import pytest

from policies.kv_contiguous import ContiguousAllocator
from sim.core import Request


def _req(rid: int, prompt: int, output: int) -> Request:
    return Request(rid, 0.0, prompt, output)


def test_reservations_are_first_fit_regions_of_the_final_length():
    pool = ContiguousAllocator(10, block_size=4)
    a, b = _req(0, 5, 3), _req(1, 4, 4)  # 8 tokens each: 2 blocks
    assert pool.allocate(a, 5) and pool.allocate(b, 4)
    assert pool.block_table(a) == [0, 1] and pool.block_table(b) == [2, 3]
    assert pool.num_blocks_used() == 4
    assert pool.allocate(a, 8)  # grows within its reservation
    assert not pool.allocate(a, 9)  # one token past its final length
    assert pool.block_table(_req(7, 1, 1)) == []  # holds nothing
    pool.check()


def test_freed_neighbours_coalesce_and_a_large_request_fits_again():
    pool = ContiguousAllocator(6, block_size=1)
    a, b, c = _req(0, 1, 1), _req(1, 1, 1), _req(2, 1, 1)  # 2 blocks each
    assert pool.allocate(a, 1) and pool.allocate(b, 1) and pool.allocate(c, 1)
    assert not pool.allocate(_req(3, 2, 1), 2)  # full
    pool.free(a)
    pool.free(c)
    pool.check()
    assert not pool.allocate(_req(4, 3, 1), 3)  # 4 blocks free, but in two holes of 2
    pool.free(b)  # the three holes merge into one region of 6
    pool.check()
    big = _req(5, 5, 1)
    assert pool.allocate(big, 5) and pool.block_table(big) == list(range(6))
    assert pool.num_blocks_used() == 6
    pool.free(big)
    pool.free(big)  # freeing twice changes nothing
    assert pool.num_blocks_used() == 0
    pool.check()


def test_an_exact_fit_takes_the_whole_hole():
    pool = ContiguousAllocator(4, block_size=2)
    a = _req(0, 3, 5)  # 8 tokens: all 4 blocks
    assert pool.allocate(a, 3) and pool.block_table(a) == [0, 1, 2, 3]
    assert not pool.allocate(_req(1, 1, 1), 1)
    pool.free(a)
    b = _req(2, 1, 2)  # 3 tokens: 2 blocks, from the start again
    assert pool.allocate(b, 1) and pool.block_table(b) == [0, 1]
    pool.check()


@pytest.mark.parametrize(("blocks", "size"), [(0, 16), (4, 0)])
def test_an_empty_pool_is_a_one_line_error(blocks, size):
    with pytest.raises(ValueError, match="^kv_cache: the pool needs at least one block"):
        ContiguousAllocator(blocks, size)


def test_one_block_of_one_token_is_a_valid_pool():
    pool = ContiguousAllocator(1, block_size=1)
    assert pool.block_size == 1 and pool.allocate(_req(0, 1, 0), 1)
    assert ContiguousAllocator(3).block_size == 16  # vLLM's default block size
