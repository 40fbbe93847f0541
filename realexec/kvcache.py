"""The paged KV pool on the device, addressed by the policy allocator's block tables.

The pool does not allocate anything: the KV allocator in ``policies/`` (paged or radix) decides
which block holds which token, exactly as in simulation, and this module only turns its block
tables into slots. Token position ``i`` of a request lives in slot
``block_table[i // block_size] * block_size + i % block_size``.

One extra block past the allocator's ``num_blocks_total`` is a scratch block: padded sequences
(static batching) and the empty rows of a CUDA-graph bucket write their KV there, so they cost
what a real row costs and never touch a live request's blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class PagedKVPool:
    """K and V of every layer: ``[num_layers, num_blocks + 1, block_size, kv_heads, head_dim]``.

    The layout matches flash-attn's paged cache (block, slot-in-block, head, dim), so one
    pool serves the flash-attn, Triton and PyTorch backends.
    """

    def __init__(
        self,
        *,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"kv pool: num_blocks {num_blocks} and block_size {block_size} "
                             "must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.scratch_block = num_blocks  # the extra block past the allocator's pool
        shape = (num_layers, num_blocks + 1, block_size, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    @property
    def scratch_slot(self) -> int:
        return self.scratch_block * self.block_size

    @property
    def bytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(k_cache, v_cache) of one layer, each ``[num_blocks + 1, block_size, kvh, hd]``."""
        return self.k[index], self.v[index]

    def write(self, index: int, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor) -> None:
        """Store this step's keys and values: k, v ``[T, kvh, hd]``, slots ``[T]`` (int64)."""
        k_cache, v_cache = self.layer(index)
        k_cache.view(-1, *k.shape[1:]).index_copy_(0, slots, k)
        v_cache.view(-1, *v.shape[1:]).index_copy_(0, slots, v)


def slots_for(block_table: Sequence[int], start: int, stop: int, block_size: int) -> list[int]:
    """Slots of token positions ``start..stop-1`` under one request's block table."""
    needed = (stop + block_size - 1) // block_size
    if needed > len(block_table):
        raise ValueError(f"block table holds {len(block_table)} blocks; positions up to {stop} "
                         f"need {needed} (block_size {block_size})")
    return [block_table[i // block_size] * block_size + i % block_size for i in range(start, stop)]
