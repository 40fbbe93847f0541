"""``GpuExecutor.run(batch)``: one real iteration on the device, timed by the wall clock.

The executor is a ``core.Executor`` like the roofline one: the SimPy engine calls ``run``
and advances its clock by the seconds returned, so the same scheduler and KV allocator objects
drive a real model. The time is the whole step as a serving engine spends it: reading the block
tables, building the inputs on the host, copying them, the kernels (a CUDA graph for every step
that fits a captured bucket, ``graphs.py``; the decoder's non-attention pieces compiled by
inductor, ``Decoder.compile``), sampling and copying the sampled ids back, with a device
synchronize before the clock is read.

Each step's host time (building inputs, launching, reading the result back: the CPU's own work)
and its GPU time (CUDA events from the first copy to the last kernel) are kept apart in
``timings``: a step whose host time nears its GPU time is host-bound.

With tensor parallelism every rank runs ``execute`` on the same ``StepInputs``; rank 0 builds
them from the batch and broadcasts them (``realexec/tp.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch

from core import Batch, KVAllocator, Request, StepResult
from realexec.attention import AttnMetadata, select_backend
from realexec.graphs import DEFAULT_BUCKETS, TOKEN_BUCKETS, StepGraphs
from realexec.kvcache import PagedKVPool
from realexec.model import Decoder, sample_greedy
from realexec.tokens import draft_token_id, draft_token_ids, prompt_token_ids

AcceptFn = Callable[[Request, int], int]  # (request, drafted tokens) -> accepted drafts
MAX_SPLITS = 16


class TimeBudgetExceeded(ValueError):
    """A run went past the wall-clock deadline its caller set (one-shot device sessions)."""


@dataclass(slots=True)
class StepInputs:
    """Host arrays of one step: everything every TP rank needs to run it."""

    ids: np.ndarray  # [T] int64
    pos: np.ndarray  # [T] int64
    slots: np.ndarray  # [T] int64
    q_lens: np.ndarray  # [B] int32
    ctx: np.ndarray  # [B] int32
    tables: np.ndarray  # [B, W] int32, padded with the scratch block
    logit_rows: np.ndarray  # [S] int64

    @property
    def is_decode(self) -> bool:
        return bool(len(self.q_lens)) and int(self.q_lens.max()) == 1


@dataclass(slots=True)
class StepTiming:
    """One step's clocks: wall (what the engine advances by), host and GPU apart."""

    kind: str  # decode | prefill | prefill_cached | mixed | verify
    tokens: int
    num_seqs: int
    path: str  # decode_graph | token_graph | eager
    wall_s: float
    host_s: float  # building inputs + launching + reading back (CPU work, not waiting)
    gpu_s: float  # CUDA events around the step's device work (nan on CPU)


def step_kind(batch: Batch) -> str:
    """What kind of step a batch is, for the timing tables."""
    if any(batch.draft_tokens):
        return "verify"
    prompt = [(n, c) for n, c, req in zip(batch.new_tokens, batch.context_tokens,
                                          batch.requests, strict=True)
              if c < req.prompt_tokens]
    if not prompt:
        return "decode"
    if len(prompt) < len(batch.new_tokens):
        return "mixed"
    return "prefill_cached" if any(c > 0 for _, c in prompt) else "prefill"


def _within(counts: np.ndarray) -> np.ndarray:
    """``0..k-1`` for each ``k`` of ``counts``, concatenated."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


class GpuExecutor:
    """Runs batches of the policy's requests on a real decoder over a paged KV pool."""

    def __init__(
        self,
        model: Decoder,
        allocator: KVAllocator,
        *,
        backend: str = "auto",
        accept: AcceptFn | None = None,
        cuda_graphs: bool = True,
        compile: bool | None = None,
        max_num_seqs: int = 256,
        max_model_len: int = 8192,
        all_gather: Callable | None = None,
        keep_outputs: bool = False,
        decode_buckets: tuple[int, ...] | None = None,
        token_buckets: tuple[int, ...] = TOKEN_BUCKETS,
        graph_stand_in: bool = False,
    ) -> None:
        self.model = model
        self.allocator = allocator
        self.device = model.device
        self.pool = PagedKVPool(
            num_layers=model.arch.num_layers, num_blocks=allocator.num_blocks_total,
            block_size=allocator.block_size, num_kv_heads=model.kv_heads,
            head_dim=model.arch.head_dim, dtype=model.dtype, device=self.device)
        self.backend, self.attention = select_backend(backend, self.device,
                                                      allocator.block_size)
        model.fuse_rope_store(self.backend == "triton")  # RoPE + KV write: one kernel a layer
        self.accept = accept
        self.all_gather = all_gather
        self.width = -(-max_model_len // allocator.block_size)  # block-table width of graphs
        self._sms = (torch.cuda.get_device_properties(self.device).multi_processor_count
                     if self.device.type == "cuda" else 0)
        self._outputs: dict[int, list[int]] = {}  # request id -> sampled tokens so far
        self.keep_outputs = keep_outputs  # tests compare generated tokens with a reference
        self.finished_outputs: dict[int, list[int]] = {}
        self.finished_requests: dict[int, Request] = {}
        self.trace: list[tuple[list[tuple[int, int]], float]] = []  # (seqs, seconds) per step
        self.deadline: float | None = None  # time.perf_counter() value; None = no limit
        self.timings: list[StepTiming] = []
        if compile is None:
            compile = self.device.type == "cuda"
        if compile and not model.compiled:
            model.compile()
        self.graphs: StepGraphs | None = None  # decode steps, by batch size
        self.token_graphs: StepGraphs | None = None  # any step, by token count (Triton only)
        if cuda_graphs and (self.device.type == "cuda" or graph_stand_in):
            self._capture(max_num_seqs, decode_buckets, token_buckets)
        self._events = (
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            if self.device.type == "cuda" else None)

    def _capture(self, max_num_seqs: int, decode_buckets, token_buckets) -> None:
        """Capture the decode graphs (Triton or flash-attn) and the token-count graphs (Triton:
        its work list makes any split of a bucket's tokens one launch); one memory pool."""
        if self.backend not in ("triton", "flash"):
            return
        mempool = torch.cuda.graph_pool_handle() if self.device.type == "cuda" else None
        if self.backend == "triton" and token_buckets:
            self.token_graphs = StepGraphs(
                self.model, self.pool, self.attention, buckets=token_buckets,
                width=self.width, max_num_seqs=max_num_seqs, decode=False,
                all_gather=self.all_gather, mempool=mempool)
        buckets = decode_buckets or (
            [b for b in DEFAULT_BUCKETS if b < max_num_seqs] + [max_num_seqs])
        self.graphs = StepGraphs(self.model, self.pool, self.attention, buckets=buckets,
                                 width=self.width, max_num_seqs=max_num_seqs, decode=True,
                                 splits_for=self.splits_for, all_gather=self.all_gather,
                                 mempool=mempool)

    # -- the Executor protocol -------------------------------------------------------------
    def run(self, batch: Batch) -> StepResult:
        """Run one iteration; its seconds are the wall time from here to sampled ids on host."""
        start = time.perf_counter()
        if self.deadline is not None and start > self.deadline:
            raise TimeBudgetExceeded(f"run stopped after its wall-clock budget, "
                                     f"{len(self.trace)} steps in")
        if self.accept is None and any(batch.draft_tokens):
            raise ValueError("GpuExecutor: batch has draft tokens but no acceptance model was "
                             "given (accept=)")
        inputs = self.prepare(batch)
        if self._events:
            self._events[0].record()
        sampled_dev = self.launch(inputs)
        if self._events:
            self._events[1].record()
        launched = time.perf_counter()
        sampled = sampled_dev.tolist()  # waits for the device
        synced = time.perf_counter()
        accepted = self._record(batch, sampled)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        end = time.perf_counter()
        seconds = end - start
        gpu_s = math.nan
        if self._events:
            gpu_s = self._events[0].elapsed_time(self._events[1]) / 1e3
        self.timings.append(StepTiming(step_kind(batch), len(inputs.ids), len(inputs.q_lens),
                                       self.last_path, seconds,
                                       (launched - start) + (end - synced), gpu_s))
        self.trace.append((batch.seqs(), seconds))
        return StepResult(seconds, accepted)

    def close(self) -> None:
        """Drop the pool and graphs so the next executor's pool fits."""
        self.graphs = self.token_graphs = None
        self.pool = None  # type: ignore[assignment]

    def splits_for(self, num_seqs: int) -> int:
        """KV slices per decode row: enough programs to fill the GPU twice, a power of two."""
        if not self._sms:
            return 1
        want = 2 * self._sms / max(1, num_seqs * self.model.kv_heads)
        return int(min(MAX_SPLITS, 2 ** max(0, math.ceil(math.log2(max(want, 1.0))))))

    # -- host side -------------------------------------------------------------------------
    def prepare(self, batch: Batch) -> StepInputs:
        """Token ids, positions, slots and block tables of a batch (host arrays).

        Per row only the block table and the token ids are read in Python (one-token rows
        without numpy); positions, slots, the padded table and the logit rows are computed for
        the whole batch at once: per-row numpy calls cost ~0.1 ms a row, a host-bound 15 ms for
        a 128-row decode step.
        """
        bs, scratch = self.allocator.block_size, self.pool.scratch_block
        vocab = self.model.arch.vocab_size
        ids, tables, scalar_ids = [], [], True
        for req, n, c, pad in zip(batch.requests, batch.new_tokens, batch.context_tokens,
                                  batch.padding, strict=True):
            table = [] if pad else self.allocator.block_table(req)
            if len(table) * bs < c + n:  # padding rows, or a freed request carried along
                table = [scratch] * (-(-(c + n) // bs))
            tables.append(table)
            if n == 1 and not pad:
                ids.append(self._one_token_id(req, c, vocab))
            else:
                ids.append(self._token_ids(req, c, n, pad, vocab))
                scalar_ids = False
        if scalar_ids and not any(batch.draft_tokens):  # a decode step: one token a row
            return self._decode_inputs(batch, ids, tables)
        q_lens = np.asarray(batch.new_tokens, dtype=np.int64)
        ctx = np.asarray(batch.context_tokens, dtype=np.int64)
        seq_of = np.repeat(np.arange(len(q_lens)), q_lens)  # [T]: each token's sequence
        starts = np.cumsum(q_lens) - q_lens
        pos = ctx[seq_of] + np.arange(len(seq_of)) - starts[seq_of]
        table_arr = self._table_array(tables)
        slots = table_arr[seq_of, pos // bs].astype(np.int64) * bs + pos % bs
        if scalar_ids:
            id_arr = np.fromiter(ids, dtype=np.int64, count=len(ids))
        else:
            id_arr = np.concatenate([np.asarray(x, dtype=np.int64).reshape(-1) for x in ids])
        sampled = 1 + np.asarray(batch.draft_tokens, dtype=np.int64)  # logit rows per sequence
        rows = np.repeat(starts + q_lens - sampled, sampled) + _within(sampled)
        return StepInputs(id_arr, pos, slots, q_lens.astype(np.int32), ctx.astype(np.int32),
                          table_arr, rows)

    def _decode_inputs(self, batch: Batch, ids: list[int], tables: list[list[int]]
                       ) -> StepInputs:
        """``prepare`` of a step whose every row is one token without drafts: each row's
        position is its context, its logit row itself (half the array work of the general
        case; the host builds one of these per generated token)."""
        bs, rows = self.allocator.block_size, len(ids)
        pos = np.fromiter(batch.context_tokens, dtype=np.int64, count=rows)
        table_arr = self._table_array(tables)
        every = np.arange(rows)
        slots = table_arr[every, pos // bs].astype(np.int64) * bs + pos % bs
        return StepInputs(np.fromiter(ids, dtype=np.int64, count=rows), pos, slots,
                          np.ones(rows, dtype=np.int32), pos.astype(np.int32), table_arr, every)

    def _table_array(self, tables: list[list[int]]) -> np.ndarray:
        """The block tables as one ``[B, longest]`` int32 array padded with the scratch block."""
        lens = np.fromiter(map(len, tables), dtype=np.int64, count=len(tables))
        table_arr = np.full((len(tables), int(lens.max())), self.pool.scratch_block,
                            dtype=np.int32)
        table_arr[np.repeat(np.arange(len(tables)), lens), _within(lens)] = np.fromiter(
            chain.from_iterable(tables), dtype=np.int32, count=int(lens.sum()))
        return table_arr

    def _one_token_id(self, req: Request, c: int, vocab: int) -> int:
        """``_token_ids`` of a one-token row (decode), without numpy when it is an output."""
        prompt = req.prompt_tokens
        if c < prompt:
            return int(prompt_token_ids(req, c, c + 1, vocab)[0])
        if c < req.num_tokens:
            outs = self._outputs.get(req.request_id)
            if outs is not None and c - prompt < len(outs):
                return outs[c - prompt]
        return draft_token_id(req, c, vocab)

    def _token_ids(self, req: Request, c: int, n: int, pad: bool, vocab: int) -> np.ndarray:
        if pad:
            return np.zeros(n, dtype=np.int64)
        prompt, real_end = req.prompt_tokens, req.num_tokens
        parts = []
        if c < prompt:
            parts.append(prompt_token_ids(req, c, min(prompt, c + n), vocab))
        lo, hi = max(c, prompt), min(c + n, real_end)
        if hi > lo:
            outs = self._outputs.get(req.request_id, [])[lo - prompt : hi - prompt]
            parts.append(np.asarray(outs, dtype=np.int64))
            if len(outs) < hi - lo:  # outputs this executor never saw (a request handed over)
                parts.append(draft_token_ids(req, lo + len(outs), hi, vocab))
        if c + n > real_end:
            parts.append(draft_token_ids(req, max(c, real_end), c + n, vocab))
        return np.concatenate(parts)

    def _record(self, batch: Batch, sampled: list[int]) -> list[int]:
        """Keep each finishing row's sampled tokens; draw accepted drafts (StepResult order)."""
        accepted, row = [], 0
        for req, n, c, d, pad in zip(batch.requests, batch.new_tokens, batch.context_tokens,
                                     batch.draft_tokens, batch.padding, strict=True):
            acc = 0
            if d and not pad:
                acc = min(d, int(self.accept(req, d)))
            if not pad and c + n - d >= req.num_tokens:
                outs = self._outputs.setdefault(req.request_id, [])
                outs.extend(sampled[row : row + 1 + acc])
                if req.num_output_tokens + 1 + acc >= req.output_tokens:  # finishes now
                    done = self._outputs.pop(req.request_id)
                    if self.keep_outputs:
                        self.finished_outputs[req.request_id] = done[: req.output_tokens]
                        self.finished_requests[req.request_id] = req
            accepted.append(acc)
            row += 1 + d
        return accepted

    # -- device side -----------------------------------------------------------------------
    last_path = "eager"  # how the latest step ran: decode_graph | token_graph | eager

    def execute(self, inputs: StepInputs) -> list[int]:
        """Run the model on one step's inputs; return the sampled ids (one per logit row)."""
        return self.launch(inputs).tolist()

    def launch(self, inputs: StepInputs) -> torch.Tensor:
        """Launch one step (a captured bucket if one holds it); the sampled ids on the device."""
        max_q = int(inputs.q_lens.max())
        for path, graphs in (("decode_graph", self.graphs), ("token_graph", self.token_graphs)):
            if graphs is not None and graphs.bucket_for(len(inputs.ids), len(inputs.q_lens),
                                                        max_q) is not None:
                self.last_path = path
                return graphs.run(inputs.ids, inputs.pos, inputs.slots, inputs.q_lens,
                                  inputs.ctx, inputs.tables, inputs.logit_rows)
        self.last_path = "eager"
        dev = self.device
        q_start = np.concatenate([[0], np.cumsum(inputs.q_lens)[:-1]]).astype(np.int32)
        meta = AttnMetadata(
            q_lens=torch.from_numpy(inputs.q_lens).to(dev),
            ctx_lens=torch.from_numpy(inputs.ctx).to(dev),
            q_start=torch.from_numpy(q_start).to(dev),
            block_tables=torch.from_numpy(inputs.tables).to(dev),
            slots=torch.from_numpy(inputs.slots).to(dev),
            q_lens_host=inputs.q_lens.tolist(), ctx_lens_host=inputs.ctx.tolist(),
            block_size=self.pool.block_size,
            num_splits=self.splits_for(len(inputs.q_lens)))
        logits = self.model.forward(
            torch.from_numpy(inputs.ids).to(dev), torch.from_numpy(inputs.pos).to(dev), meta,
            self.pool, self.attention, torch.from_numpy(inputs.logit_rows).to(dev))
        return sample_greedy(logits, self.all_gather)
