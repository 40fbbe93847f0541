"""CUDA graphs of decode steps, one per batch-size bucket.

A decode step of an 8B model launches about 15 kernels per layer; launching them one by one
costs more host time than the GPU spends at small batch. Captured once per bucket and replayed,
the whole step is one launch. A batch runs in the smallest bucket that holds it; the empty rows
decode one token from the scratch block (they cost what a real row costs at context 1, as in
vLLM, whose graphs pad the same way).

Everything a replay reads lives in static tensors sized for the largest bucket, with block
tables as wide as the longest sequence the server admits, so lengths and tables can change
between replays while the launches stay the same (the attention kernel loops to each row's
length, read from memory).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from realexec.attention import AttentionFn, AttnMetadata
from realexec.kvcache import PagedKVPool
from realexec.model import Decoder, sample_greedy

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256)


class DecodeGraphs:
    """Captured decode steps; ``run`` replays the one that fits and returns sampled ids."""

    def __init__(
        self,
        model: Decoder,
        pool: PagedKVPool,
        attention: AttentionFn,
        *,
        buckets: Sequence[int],
        width: int,
        splits_for: Callable[[int], int],
        all_gather: Callable | None = None,
        share_pool: bool = False,
    ) -> None:
        self.buckets = sorted(buckets)
        self.width = width
        self.pool = pool
        size, dev = self.buckets[-1], model.device
        self.ids = torch.zeros(size, dtype=torch.int64, device=dev)
        self.pos = torch.zeros(size, dtype=torch.int64, device=dev)
        self.slots = torch.full((size,), pool.scratch_slot, dtype=torch.int64, device=dev)
        self.ctx = torch.zeros(size, dtype=torch.int32, device=dev)
        self.tables = torch.full((size, width), pool.scratch_block, dtype=torch.int32, device=dev)
        # Every tensor a graph reads must outlive it: the graph keeps raw addresses, and memory
        # the caching allocator gets back is handed to the next eager step.
        self.q_lens = q_lens = torch.ones(size, dtype=torch.int32, device=dev)
        self.q_start = q_start = torch.arange(size, dtype=torch.int32, device=dev)
        self.rows = rows = torch.arange(size, dtype=torch.int64, device=dev)
        self.metas: dict[int, AttnMetadata] = {}
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        # One memory pool per graph by default: a shared pool is only safe when graphs are
        # replayed in capture order, and a server replays whichever bucket fits (costs ~0.1 GB
        # of activations per graph for an 8B model).
        mempool = torch.cuda.graph_pool_handle() if share_pool else None
        for b in reversed(self.buckets):  # largest first
            meta = AttnMetadata(q_lens=q_lens[:b], ctx_lens=self.ctx[:b], q_start=q_start[:b],
                                block_tables=self.tables[:b], slots=self.slots[:b],
                                q_lens_host=[1] * b, ctx_lens_host=[0] * b,
                                block_size=pool.block_size, num_splits=splits_for(b))
            self.metas[b] = meta

            def step(b=b, meta=meta):
                logits = model.forward(self.ids[:b], self.pos[:b], meta, pool, attention,
                                       rows[:b])
                return sample_greedy(logits, all_gather)

            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm up: compile kernels, create handles
                step()
                step()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=mempool if share_pool else None):
                self.outputs[b] = step()
            self.graphs[b] = graph
        torch.cuda.synchronize()

    def bucket_for(self, num_seqs: int) -> int | None:
        """The smallest captured batch that holds ``num_seqs`` rows, or None."""
        for b in self.buckets:
            if b >= num_seqs:
                return b
        return None

    def run(self, ids: np.ndarray, pos: np.ndarray, slots: np.ndarray, ctx: np.ndarray,
            tables: np.ndarray) -> torch.Tensor:
        """Replay for ``n = len(ids)`` one-token rows; tables ``[n, <= width]``. Returns ``[n]``."""
        n = len(ids)
        b = self.bucket_for(n)
        if b is None or tables.shape[1] > self.width:
            raise ValueError(f"decode graphs: batch {n} x {tables.shape[1]} blocks exceeds the "
                             f"captured {self.buckets[-1]} x {self.width}")
        self.ids[:n].copy_(torch.from_numpy(ids))
        self.pos[:n].copy_(torch.from_numpy(pos))
        self.slots[:n].copy_(torch.from_numpy(slots))
        self.ctx[:n].copy_(torch.from_numpy(ctx))
        full = np.full((n, self.width), self.pool.scratch_block, dtype=np.int32)
        full[:, : tables.shape[1]] = tables
        self.tables[:n].copy_(torch.from_numpy(full))
        if b > n:  # empty rows: one token at position 0 of the scratch block
            self.ids[n:b].zero_()
            self.pos[n:b].zero_()
            self.slots[n:b].fill_(self.pool.scratch_slot)
            self.ctx[n:b].zero_()
            self.tables[n:b].fill_(self.pool.scratch_block)
        self.graphs[b].replay()
        return self.outputs[b][:n]
