"""Captured steps: CUDA graphs over padded token-count buckets, for every kind of step.

A decode step of an 8B model launches about 15 kernels per layer (6 with the compiled pieces);
launching them one by one costs more host time than the GPU spends at small batch, and a
prefill or mixed step of a few hundred tokens is no different. Captured once per bucket and
replayed, the whole step is one launch. Two families, both built by ``StepGraphs``:

- decode (every row one token): one graph per batch-size bucket, small query tiles and
  split-KV, the LM head and greedy sampling inside the graph;
- tokens (prefill, mixed chunk + decodes, prefill on a cached prefix, speculative verify): one
  graph per token-count bucket ``T``, for any split of its tokens over up to ``min(T,
  max_num_seqs)`` sequences; the graph returns the last residual stream and the LM head runs
  after it on the sampled rows only (their count varies from step to step).

A step runs in the smallest bucket that holds it. The padded tokens write their K/V to the
scratch block and belong to no sequence: the attention work list (``triton_attention.py``)
gives them no tile, so they cost only their share of the GEMMs (vLLM pads the same way). Their
rows hold whatever the graph's memory held; every kernel works row by row, so they never reach
a real row, and the sampler reads real rows only.

Everything a replay reads lives in static tensors sized for the largest bucket, with block
tables as wide as the longest sequence the server admits; a step's inputs are written into one
pinned host buffer per dtype and copied in two transfers. On CPU (the tests) a stand-in
replaces the CUDA graph: ``replay`` runs the step's function again on the same static tensors
and copies its result into the same output tensor, which are the semantics of a replay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from realexec.attention import AttentionFn
from realexec.attn_metadata import (
    DECODE_BLOCK_M,
    PROMPT_BLOCK_M,
    AttnMetadata,
    max_tiles,
    work_list,
)
from realexec.kvcache import PagedKVPool
from realexec.model import Decoder, sample_greedy

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256)
TOKEN_BUCKETS = (16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def bucket_for(buckets: Sequence[int], size: int) -> int | None:
    """The smallest bucket that holds ``size``, or None."""
    for b in buckets:
        if b >= size:
            return b
    return None


class StandInGraph:
    """A CUDA graph's replay semantics without CUDA: the captured function is run again and its
    result copied into the tensors the capture returned (same objects, same storage)."""

    def __init__(self, fn: Callable[[], torch.Tensor]):
        self.fn = fn
        self.output = fn()

    def replay(self) -> None:
        fresh = self.fn()
        if isinstance(self.output, tuple):
            for out, new in zip(self.output, fresh, strict=True):
                out.copy_(new)
        else:
            self.output.copy_(fresh)


def capture(fn: Callable[[], torch.Tensor], device: torch.device, mempool=None):
    """``(graph, output)``: ``fn`` warmed up and captured (CUDA) or wrapped (CPU stand-in);
    ``output`` is what ``fn`` returns, a tensor or a tuple of tensors."""
    if device.type != "cuda":
        graph = StandInGraph(fn)
        return graph, graph.output
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm up: compile kernels, autotune, create handles
        fn()
        fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=mempool):
        output = fn()
    return graph, output


class StaticInputs:
    """The device tensors every captured step reads, and the host buffers that fill them."""

    def __init__(self, *, tokens: int, seqs: int, width: int, tiles: int, pool: PagedKVPool,
                 device: torch.device):
        self.tokens, self.seqs, self.width, self.num_tiles = tokens, seqs, width, tiles
        self.pool = pool
        pin = device.type == "cuda"
        sizes32 = (seqs, seqs, seqs, seqs * width, 2 * tiles)
        self.host64 = torch.zeros(3 * tokens + seqs, dtype=torch.int64, pin_memory=pin)
        self.host32 = torch.zeros(sum(sizes32), dtype=torch.int32, pin_memory=pin)
        self.dev64 = torch.zeros_like(self.host64, device=device)
        self.dev32 = torch.zeros_like(self.host32, device=device)
        self.ids, self.pos, self.slots = self.dev64[: 3 * tokens].view(3, tokens)
        self.rows = self.dev64[3 * tokens :]  # the rows whose next token is sampled
        q_lens, ctx, q_start, tables, tile = self.dev32.split(sizes32)
        self.q_lens, self.ctx, self.q_start = q_lens, ctx, q_start
        self.tables = tables.view(seqs, width)
        self.tiles = tile.view(2, tiles)
        self.h64 = self.host64.numpy()[: 3 * tokens].reshape(3, tokens)
        self.h_rows = self.host64.numpy()[3 * tokens :]
        parts = np.split(self.host32.numpy(), np.cumsum(sizes32)[:-1])
        self.h_qlens, self.h_ctx, self.h_qstart = parts[:3]
        self.h_tables = parts[3].reshape(seqs, width)
        self.h_tiles = parts[4].reshape(2, tiles)
        self._plans: dict[tuple, np.ndarray] = {}  # work lists of one-token steps by shape
        self.load_padding(0, 0)
        self.push()

    def meta(self, tokens: int, seqs: int, tiles: int, block_m: int, splits: int
             ) -> AttnMetadata:
        """The metadata a graph of ``tokens`` tokens over ``seqs`` sequences is captured with."""
        return AttnMetadata(q_lens=self.q_lens[:seqs], ctx_lens=self.ctx[:seqs],
                            q_start=self.q_start[:seqs], block_tables=self.tables[:seqs],
                            slots=self.slots[:tokens], q_lens_host=[1] * seqs,
                            ctx_lens_host=[0] * seqs, block_size=self.pool.block_size,
                            num_splits=splits, block_m=block_m, tiles=self.tiles[:, :tiles])

    def load_padding(self, tokens: int, seqs: int) -> None:
        """Host buffers past ``tokens`` / ``seqs``: scratch slots, empty sequences."""
        self.h64[:, tokens:] = 0
        self.h64[2, tokens:] = self.pool.scratch_slot
        for arr in (self.h_qlens, self.h_ctx, self.h_qstart):
            arr[seqs:] = 0
        self.h_tables[seqs:] = self.pool.scratch_block
        self.h_tiles[0].fill(-1)
        self.h_tiles[1].fill(0)
        self._held = (tokens, seqs, 0)  # what the buffers hold past their padding

    def load(self, ids, pos, slots, q_lens, ctx, tables, *, group: int, block_m: int,
             tiles: int, rows=None, one_token_rows: bool = False) -> None:
        """Write one step's host arrays into the host buffers, re-padding only what the last
        step wrote past this one (the host builds one step per generated token, so its array
        work is kept to the step's own size). ``rows``: the logit rows sampled in the graph
        (padded with row 0), if they fit; ``one_token_rows``: every row is one token (the
        work list then depends on the row count only, and is kept)."""
        t, s, w = len(ids), len(q_lens), tables.shape[1]
        if t > self.tokens or s > self.seqs or w > self.width:
            raise ValueError(f"captured step: {t} tokens x {s} seqs x {w} blocks "
                             f"exceed {self.tokens} x {self.seqs} x {self.width}")
        held_t, held_s, held_w = self._held
        if held_t > t:
            self.h64[:, t:held_t] = 0
            self.h64[2, t:held_t] = self.pool.scratch_slot
        if held_s > s:
            for arr in (self.h_qlens, self.h_ctx, self.h_qstart):
                arr[s:held_s] = 0
            self.h_tables[s:held_s, :held_w] = self.pool.scratch_block
        if held_w > w:
            self.h_tables[:s, w:held_w] = self.pool.scratch_block
        self._held = (t, s, w)
        self.h64[0, :t], self.h64[1, :t], self.h64[2, :t] = ids, pos, slots
        self.h_qlens[:s], self.h_ctx[:s] = q_lens, ctx
        self.h_qstart[0] = 0
        np.cumsum(q_lens[:-1], out=self.h_qstart[1:s])
        self.h_tables[:s, :w] = tables
        key = (s, group, block_m, tiles) if one_token_rows else None
        plan = self._plans.get(key) if key else None
        if plan is None:
            plan = work_list(list(q_lens), group, block_m, tiles)
            if key:
                self._plans[key] = plan
        self.h_tiles[:, :tiles] = plan
        if rows is not None and len(rows) <= len(self.h_rows):
            self.h_rows[: len(rows)] = rows
            self.h_rows[len(rows) :] = 0
        else:  # the graph still samples these rows: keep them inside every bucket
            self.h_rows.fill(0)

    def push(self) -> None:
        """Copy the host buffers to the device (two transfers, asynchronous from pinned memory)."""
        self.dev64.copy_(self.host64, non_blocking=True)
        self.dev32.copy_(self.host32, non_blocking=True)


class StepGraphs:
    """Captured steps of one family (decode or tokens); ``run`` replays the bucket that fits.

    ``decode=True``: buckets are batch sizes, every row one token, the graph samples.
    ``decode=False``: buckets are token counts, any rows; the graph returns the hidden states
    and the greedy tokens of up to ``rows_of(bucket)`` logit rows (the LM head over that many
    rows, padded: memory-bound, so about what one row costs); a step with more logit rows
    (a wide speculative verify) samples from the hidden states after the replay.
    """

    def __init__(
        self,
        model: Decoder,
        pool: PagedKVPool,
        attention: AttentionFn,
        *,
        buckets: Sequence[int],
        width: int,
        max_num_seqs: int,
        decode: bool,
        splits_for: Callable[[int], int] = lambda b: 1,
        all_gather: Callable | None = None,
        mempool=None,
    ) -> None:
        self.model, self.decode = model, decode
        self.buckets = sorted(buckets)
        self.group = model.heads // model.kv_heads
        self.block_m = DECODE_BLOCK_M if decode else PROMPT_BLOCK_M
        self.all_gather = all_gather
        self.max_num_seqs = max_num_seqs
        top = self.buckets[-1]
        self.inputs = StaticInputs(tokens=top, seqs=self.seqs_of(top), width=width,
                                   tiles=self.tiles_of(top), pool=pool, device=model.device)
        # Every tensor a graph reads must outlive it: the graph keeps raw addresses.
        self.rows = torch.arange(top, dtype=torch.int64, device=model.device)
        self.graphs: dict[int, object] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        for b in reversed(self.buckets):  # largest first: smaller ones reuse its memory
            meta = self.inputs.meta(b, self.seqs_of(b), self.tiles_of(b), self.block_m,
                                    splits_for(b))

            def step(b=b, meta=meta):
                inp = self.inputs
                hidden = model.hidden(inp.ids[:b], inp.pos[:b], meta, pool, attention)
                if not decode:
                    rows = inp.rows[: self.rows_of(b)]
                    return hidden, sample_greedy(model.head(hidden, rows), all_gather)
                return sample_greedy(model.head(hidden, self.rows[:b]), all_gather)

            self.graphs[b], self.outputs[b] = capture(step, model.device, mempool)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)

    def seqs_of(self, tokens: int) -> int:
        """Sequences a bucket of ``tokens`` tokens is captured for."""
        return tokens if self.decode else min(tokens, self.max_num_seqs)

    def rows_of(self, tokens: int) -> int:
        """Logit rows a token bucket samples inside its graph: one per sequence it holds."""
        return self.seqs_of(tokens)

    def tiles_of(self, tokens: int) -> int:
        return max_tiles(tokens, self.seqs_of(tokens), self.group, self.block_m)

    def bucket_for(self, tokens: int, seqs: int, max_q: int) -> int | None:
        """The bucket that holds a step, or None (then it runs uncaptured)."""
        if self.decode and max_q != 1:
            return None
        b = bucket_for(self.buckets, tokens)
        if b is None or seqs > self.seqs_of(b):
            return None
        return b

    def run(self, ids: np.ndarray, pos: np.ndarray, slots: np.ndarray, q_lens: np.ndarray,
            ctx: np.ndarray, tables: np.ndarray, logit_rows: np.ndarray) -> torch.Tensor:
        """Replay the step's bucket; returns the sampled ids ``[len(logit_rows)]`` (device)."""
        b = self.bucket_for(len(ids), len(q_lens), int(q_lens.max()))
        if b is None:
            raise ValueError(f"captured steps: {len(ids)} tokens over {len(q_lens)} sequences "
                             f"fit no bucket of {self.buckets}")
        in_graph = not self.decode and len(logit_rows) <= self.rows_of(b)
        self.inputs.load(ids, pos, slots, q_lens, ctx, tables, group=self.group,
                         block_m=self.block_m, tiles=self.tiles_of(b),
                         rows=logit_rows if in_graph else None, one_token_rows=self.decode)
        self.inputs.push()
        self.graphs[b].replay()
        if self.decode:
            return self.outputs[b][: len(ids)]
        hidden, sampled = self.outputs[b]
        if in_graph:
            return sampled[: len(logit_rows)]
        rows = torch.from_numpy(logit_rows).to(self.model.device, non_blocking=True)
        return sample_greedy(self.model.head(hidden, rows), self.all_gather)

