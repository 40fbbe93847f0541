"""One step's attention metadata and the Triton kernel's work list, without any backend.

``AttnMetadata`` says where each sequence's new tokens come from and where their K/V go;
``build_metadata`` makes it from the allocator's block tables. The work list (which query tile
of which sequence each Triton program takes) is planned here too, without importing Triton: the
captured-step machinery (``realexec.graphs``) needs it on machines where Triton must first be
told to interpret (``TRITON_INTERPRET=1`` in the CPU tests). The backends (``attention.py``) and
the Triton kernel (``triton_attention.py``) both read it; it imports neither, so the kernel never
imports the module that selects it (``tests/test_import_layers.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(slots=True)
class AttnMetadata:
    """Where one step's tokens come from and go to. Device tensors plus host copies of lengths.

    ``block_tables`` is ``[B, W]`` (int32), padded with the scratch block. ``slots`` is ``[T]``
    (int64): where each new token's K/V is written. Host lists let backends plan without a sync.
    """

    q_lens: torch.Tensor  # [B] int32
    ctx_lens: torch.Tensor  # [B] int32
    q_start: torch.Tensor  # [B] int32: offset of each sequence's first new token in [T]
    block_tables: torch.Tensor  # [B, W] int32
    slots: torch.Tensor  # [T] int64
    q_lens_host: list[int]
    ctx_lens_host: list[int]
    block_size: int
    num_splits: int = 1  # KV partitions per sequence (split-KV decode, Triton backend)
    # Triton backend, captured steps: a fixed query-tile size and a padded work list
    # ``[2, N]`` int32 (sequence, query tile); None: chosen from the host lengths each step.
    block_m: int | None = None
    tiles: torch.Tensor | None = None
    cache: dict = field(default_factory=dict)  # per-step derived tensors, shared by all layers

    @property
    def num_seqs(self) -> int:
        return len(self.q_lens_host)

    @property
    def max_q(self) -> int:
        return max(self.q_lens_host, default=0)

    @property
    def max_kv(self) -> int:
        pairs = zip(self.ctx_lens_host, self.q_lens_host, strict=True)
        return max((c + n for c, n in pairs), default=0)


def build_metadata(
    q_lens: Sequence[int],
    ctx_lens: Sequence[int],
    block_tables: Sequence[Sequence[int]],
    *,
    block_size: int,
    scratch_block: int,
    device: torch.device | str,
    width: int | None = None,
) -> AttnMetadata:
    """Metadata of one step from host lists (block tables as the allocator returns them)."""
    width = width or max((len(t) for t in block_tables), default=1) or 1
    table = torch.full((len(q_lens), width), scratch_block, dtype=torch.int32)
    slots: list[int] = []
    starts, start = [], 0
    for b, (n, c, blocks) in enumerate(zip(q_lens, ctx_lens, block_tables, strict=True)):
        if blocks:
            table[b, : len(blocks)] = torch.tensor(blocks, dtype=torch.int32)
        for pos in range(c, c + n):
            slots.append(blocks[pos // block_size] * block_size + pos % block_size)
        starts.append(start)
        start += n
    return AttnMetadata(
        q_lens=torch.tensor(list(q_lens), dtype=torch.int32, device=device),
        ctx_lens=torch.tensor(list(ctx_lens), dtype=torch.int32, device=device),
        q_start=torch.tensor(starts, dtype=torch.int32, device=device),
        block_tables=table.to(device),
        slots=torch.tensor(slots, dtype=torch.int64, device=device),
        q_lens_host=list(q_lens),
        ctx_lens_host=list(ctx_lens),
        block_size=block_size,
    )


# -- the Triton kernel's work list (planned here, without importing Triton: the captured-step
# machinery needs it on machines where Triton must first be told to interpret) --------------
DECODE_BLOCK_M = 16  # query rows per program when every sequence's rows fit one small tile
PROMPT_BLOCK_M = 64


def block_m_for(max_q: int, group: int) -> int:
    """Query rows per program: small tiles when each sequence has few rows (decode, verify)."""
    return DECODE_BLOCK_M if max_q * group <= DECODE_BLOCK_M else PROMPT_BLOCK_M


def work_list(q_lens: list[int], group: int, block_m: int, size: int | None = None
              ) -> np.ndarray:
    """``[2, size]`` int32: (sequence, query tile) of every tile with rows, padded with
    (-1, 0) up to ``size`` (default: no padding)."""
    tiles = [-(-n * group // block_m) for n in q_lens]
    seq = np.repeat(np.arange(len(q_lens), dtype=np.int32), tiles)
    mtile = (np.arange(len(seq), dtype=np.int32)
             - np.repeat(np.cumsum([0] + tiles[:-1]).astype(np.int32), tiles))
    size = len(seq) if size is None else size
    if len(seq) > size:
        raise ValueError(f"attention work list: {len(seq)} tiles exceed the captured {size}")
    out = np.zeros((2, size), dtype=np.int32)
    out[0].fill(-1)
    out[0, : len(seq)], out[1, : len(seq)] = seq, mtile
    return out


def max_tiles(tokens: int, seqs: int, group: int, block_m: int) -> int:
    """The most tiles a step of ``tokens`` tokens over at most ``seqs`` sequences can have."""
    return tokens * group // block_m + min(seqs, tokens)
