"""The compiled lane: the commonest study, simulated by compiled code, with the Engine's results.

A capacity study mostly simulates one thing: one replica, requests sent at known instants,
chunked-prefill or continuous batching over a paged KV pool, priced by the roofline. For that
case ``Engine.run`` hands the whole run to one compiled loop (``sim.lane_kernel``, numba)
instead of walking Python objects per event: a 100,000-request run then takes seconds instead
of a minute (``benchmarks/RESULTS.md``). Everything else takes the general engine.

Same results, not an approximation: the loop mirrors ``ChunkedPrefillScheduler``,
``ContinuousScheduler``, ``PagedAllocator``, ``QueueingScheduler.update`` and the engine's
event order statement by statement, and prices each step from the roofline's own numbers (its
rows before and after attention for the step's tokens and sequences, its per-sequence
attention costs), added in the order ``RooflineModel.step_time_s`` adds them.
``tests/test_lane.py`` checks the per-request, per-step and inter-token-latency records
against the general engine's on random workloads, preemptions included. The policy objects
stay the reference: ``realexec`` and every other configuration run them.

When it applies (``reason_not_served`` says why not otherwise): one replica; an open-loop
workload (``sim.engine.open_loop``); a ``ChunkedPrefillScheduler`` that splits prompts or a
``ContinuousScheduler``, exactly (a subclass may change ``schedule()``), with FCFS, greedy
admission, recompute preemption, no waiting-queue limit, nothing queued yet; a
``PagedAllocator`` exactly (no prefix cache); a ``RooflineExecutor`` over a ``RooflineModel``
exactly, without MLA attention; and numba installed. ``Engine(fast_lane=False)`` turns it off.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from core import Request
from sim.stall import SimulationStalled

STEP_BUFFER = 1 << 16  # steps recorded per flush to the metrics
FIN_BUFFER = 1 << 14


def reason_not_served(replicas: list, workload: Any) -> str | None:
    """Why the lane cannot run this simulation, or None if it can."""
    from hwmodels.roofline import RooflineModel
    from policies.chunked import ChunkedPrefillScheduler
    from policies.continuous import ContinuousScheduler
    from policies.fastpath import fast_path_refusal
    from policies.queues import FcfsQueue

    if getattr(workload, "lane_refusal", None):  # an option of the workload it does not mirror
        return workload.lane_refusal
    if len(replicas) != 1:
        return "more than one replica"
    if getattr(workload, "requests", None) is None:
        return "not an open-loop workload"
    replica = replicas[0]
    sched, executor = replica.scheduler, replica.executor
    for obj, role in ((sched, "scheduler"), (getattr(sched, "allocator", None), "KV allocator"),
                      (executor, "executor")):
        reason = fast_path_refusal(obj, role)  # each policy's own FAST_PATH declaration
        if reason:
            return reason
    checks = (  # what the declarations above leave to the lane: which loop, which pricing
        (isinstance(sched, (ChunkedPrefillScheduler, ContinuousScheduler)),
         "the scheduler is neither chunked prefill nor continuous batching"),
        (type(getattr(sched, "waiting", None)) is FcfsQueue, "the queue is not FCFS"),
        (getattr(sched, "swap", None) is None, "preemption swaps"),
        (type(getattr(executor, "hardware", None)) is RooflineModel, "not a roofline model"),
    )
    for ok, reason in checks:
        if not ok:
            return reason
    if executor.hardware.model.mla is not None:
        return "MLA attention"
    if sched.has_unfinished() or sched.allocator.num_blocks_used():
        return "the replica has work already"
    return _kernel_unavailable()


def _kernel_unavailable() -> str | None:
    """Why the compiled loop cannot run, or None. numba is a core dependency, but the loop
    uses one of its private options (``_nrt``): a numba without it, or none at all, leaves
    every run to the general engine rather than failing it."""
    try:
        import sim.lane_kernel as kernel
    except ImportError:
        return "numba is not installed"
    try:
        with announce_compiling():
            kernel.probe()
    except Exception as exc:  # an incompatible numba: keep simulating, on the general engine
        return f"the compiled loop does not compile with this numba ({exc})"
    return None


COMPILING_MESSAGE = ("servesim: compiling the fast simulation loop (numba; once, about 20 s; "
                     "later runs load it from the cache) ...")


class _SaidOnce:
    """Whether this process has said ``COMPILING_MESSAGE`` (the probe and the loop compile
    one after the other: one line is enough)."""

    said = False


@contextmanager
def announce_compiling() -> Iterator[None]:
    """Within the block, numba compiling anything prints ``COMPILING_MESSAGE`` on stderr, once
    a process. A first run (or one after numba or the kernel changed) spends 15-25 s compiling
    before the first request is simulated; without a word it looks hung. numba's
    "numba:compile" event fires only when a function is really compiled, not when it is loaded
    from the on-disk cache, so a cached run stays silent."""
    from numba.core import event

    class Announce(event.Listener):
        def on_start(self, ev: event.Event) -> None:
            if not _SaidOnce.said:
                _SaidOnce.said = True
                print(COMPILING_MESSAGE, file=sys.stderr, flush=True)

        def on_end(self, ev: event.Event) -> None:
            pass

    with event.install_listener("numba:compile", Announce()):
        yield


class _Table:
    """An int64-keyed hash table the compiled loop reads (``lane_kernel.slot``)."""

    def __init__(self, dtype: type) -> None:
        self.keys = np.full(1024, -1, dtype=np.int64)
        self.values = np.zeros(1024, dtype=dtype)
        self.count = 0

    def put(self, key: int, value: Any) -> None:
        from sim import lane_kernel as K

        if 2 * (self.count + 1) > len(self.keys):  # keep it at most half full
            keys = np.full(2 * len(self.keys), -1, dtype=np.int64)
            values = np.zeros(2 * len(self.keys), dtype=self.values.dtype)
            K.table_rehash(self.keys, self.values, keys, values)
            self.keys, self.values = keys, values
        K.table_put(self.keys, self.values, key, value)
        self.count += 1


class _Prices:
    """The roofline's numbers the compiled loop adds up, looked up as it meets new shapes."""

    def __init__(self, hw: Any, max_context: int) -> None:
        self.hw, self.p = hw, hw.params
        attention = hw.operators.attention
        self.decode_s = np.ascontiguousarray(
            attention._decode_table(self.p, max_context + 1), dtype=np.float64)
        self.index = _Table(np.int64)  # static rows by tokens and sequences
        self.prefill_s = _Table(np.float64)  # a prompt chunk's attention seconds
        self.before = np.zeros(1024)
        self.after = np.zeros((1024, 16))
        self.nafter = np.zeros(1024, dtype=np.int64)
        self.kernels = np.zeros(1024, dtype=np.int64)
        self.rows = 0

    def add_static(self, tokens: int, num_seqs: int) -> None:
        """The rows before and after attention of a step of ``tokens`` over ``num_seqs``."""
        from sim.lane_kernel import STATIC_KEY

        before, after = self.hw.operators.static_ops(float(tokens), num_seqs, self.p)
        if self.rows == len(self.before) or len(after) > self.after.shape[1]:
            grow = 2 * len(self.before)
            self.before = np.resize(self.before, grow)
            width = max(self.after.shape[1], len(after))
            after_grown = np.zeros((grow, width))
            after_grown[:self.rows, :self.after.shape[1]] = self.after[:self.rows]
            self.after = after_grown
            self.nafter = np.resize(self.nafter, grow)
            self.kernels = np.resize(self.kernels, grow)
        row = self.rows
        before_s: Any = 0  # summed from 0 as ``step_time_s``'s sum() starts
        for op in before:
            before_s += op.time_s
        self.before[row] = before_s
        self.after[row, :len(after)] = [op.time_s for op in after]
        self.nafter[row] = len(after)
        self.kernels[row] = sum(op.kernels for op in before) + sum(op.kernels for op in after)
        self.index.put(tokens * STATIC_KEY + num_seqs, row)
        self.rows += 1

    def add_prefill(self, new: int, cached: int) -> None:
        """A prompt chunk's attention seconds (the per-sequence cost ``rows`` sums)."""
        from sim.lane_kernel import PREFILL_KEY

        self.prefill_s.put(new * PREFILL_KEY + cached,
                           self.hw.operators.attention._gqa_seq(new, cached, self.p)[3])

    def knobs(self, sched: Any) -> tuple[np.ndarray, np.ndarray]:
        from policies.chunked import ChunkedPrefillScheduler
        from sim import lane_kernel as K

        p, hw = self.p, self.hw
        alloc = sched.allocator
        graph_max = p.cuda_graph_max_tokens  # an int; a float or inf compares alike, floored
        graph_max = int(min(graph_max, 1 << 62)) if graph_max >= 0 else -1
        cfg = np.array([
            sched.max_num_batched_tokens, sched.chunk_size or sched.max_num_batched_tokens,
            sched.max_num_seqs, alloc.block_size, alloc.num_blocks_total, graph_max,
            int(p.cuda_graph_mode == "all"), hw.operators.attention.kernels, hw.pp,
            K.CHUNKED if isinstance(sched, ChunkedPrefillScheduler) else K.CONTINUOUS,
            int(sched.chunk_size is not None), int(p.host_overlap),
        ], dtype=np.int64)
        floor0, floor1 = hw.operators.attention.call_floors(p)
        path_s, path_keys = hw.operators.attention.path_terms(p)
        split_s, call_p = hw.operators.attention.split_terms(p)
        cfgf = np.array([1.0 / hw.operators.attention.dp, floor0, p.launch_cpu_s,
                         p.step_overhead_s, p.seq_overhead_s, floor1, path_s, path_keys,
                         split_s, call_p], dtype=np.float64)
        return cfg, cfgf


def run(engine: Any, requests: Iterable[Request]) -> None:
    """Simulate ``requests`` (sent at their arrival instants) on the engine's one replica,
    recording into ``engine.metrics`` what the general engine would record."""
    with announce_compiling():
        _run(engine, requests)


def _run(engine: Any, requests: Iterable[Request]) -> None:
    from sim import lane_kernel as K

    replica = engine.replicas[0]
    kept = requests if isinstance(requests, (list, tuple)) else None
    loop = _Loop(engine, replica, _Arrivals.read(replica.scheduler, engine.metrics, requests))
    while True:
        code = K.serve(*loop.arguments())
        if code == K.NEED_STATIC:
            loop.prices.add_static(int(loop.need[1]), int(loop.need[2]))
        elif code == K.NEED_PREFILL:
            loop.prices.add_prefill(int(loop.need[1]), int(loop.need[2]))
        else:
            loop.flush()
            if code == K.FLUSH:
                continue
            if code == K.STALL:
                raise SimulationStalled(
                    f"{loop.unfinished()} requests never finished: the scheduler stopped "
                    "scheduling them (a policy bug)")
            break
    replica.scheduler.counts.preemptions_recompute += int(loop.si[K.PREEMPTED])
    engine.lane_steps = loop.steps
    if kept is not None:
        loop.write_back(kept)


class _Arrivals:
    """The requests as columns; those the scheduler can never serve are rejected (and
    recorded) up front, as the engine rejects them on arrival."""

    def __init__(self, ids: list, arrival: list, prompt: list, output: list,
                 rejected: list) -> None:
        self.ids = np.array(ids, dtype=np.float64)
        self.arrival = np.array(arrival, dtype=np.float64)
        self.prompt = np.array(prompt, dtype=np.int64)
        self.output = np.array(output, dtype=np.int64)
        self.rejected = np.array(rejected, dtype=np.int8)

    @classmethod
    def read(cls, sched: Any, metrics: Any, requests: Iterable[Request]) -> _Arrivals:
        ids, arrival, prompt, output, rejected = [], [], [], [], []
        for req in requests:
            reason = sched.rejection(req)
            if reason is not None:
                req.rejected_reason = reason
                sched.counts.rejected_too_long += 1
                metrics.record_rejected(req)
            ids.append(req.request_id)
            arrival.append(req.arrival_time)
            prompt.append(req.prompt_tokens)
            output.append(req.output_tokens)
            rejected.append(reason is not None)
        return cls(ids, arrival, prompt, output, rejected)


class _Loop:
    """The compiled loop's arrays (per request, the queues, the batch, the output buffers),
    its prices, and the flushing of its buffers into the metrics recorder."""

    def __init__(self, engine: Any, replica: Any, arrivals: _Arrivals) -> None:
        from sim import lane_kernel as K

        sched = replica.scheduler
        self.engine, self.replica_index, self.arrivals = engine, replica.index, arrivals
        self.blocks_total = sched.allocator.num_blocks_total
        n = len(arrivals.ids)
        self.d, self.timed = K.dispatch_instants(arrivals.arrival)
        # rejected requests are never priced: a corrupt 10**9-token row costs nothing here
        served = arrivals.rejected == 0
        max_context = int((arrivals.prompt + arrivals.output)[served].max(initial=1))
        self.prices = _Prices(replica.executor.hardware, max_context)
        self.cfg, self.cfgf = self.prices.knobs(sched)
        self.si, self.sf = np.zeros(K.SI_SIZE, dtype=np.int64), np.zeros(K.SF_SIZE)
        self.si[K.FREE] = self.blocks_total
        self.si[K.WHEAD] = self.si[K.WTAIL] = n  # preempted requests go before the head
        self.out, self.computed, self.held, self.preempts = (
            np.zeros(n, dtype=np.int64) for _ in range(4))
        self.first_sched, self.first_tok, self.last_tok, self.finish = (
            np.full(n, np.nan) for _ in range(4))
        self.running = np.zeros(max(n, 1), dtype=np.int64)
        self.waiting = np.zeros(2 * n + 1, dtype=np.int64)
        cap = sched.max_num_seqs + 1
        self.batch = [np.zeros(cap, dtype=np.int64) for _ in range(3)]  # who, new, cached
        self.in_batch, self.preempted = np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.int8)
        self.order = np.zeros(max(n, 1), dtype=np.int64)
        self.steps_f = np.zeros((STEP_BUFFER, 2))
        self.steps_i = np.zeros((STEP_BUFFER, K.STEP_INT_COLUMNS), dtype=np.int64)
        self.itl_v = np.zeros(STEP_BUFFER + cap)
        self.itl_w = np.zeros(STEP_BUFFER + cap, dtype=np.int64)
        self.finished = np.zeros(FIN_BUFFER + cap, dtype=np.int64)
        self.need = np.zeros(3, dtype=np.int64)  # a missing price: (what, a, b)
        self.steps = 0

    def arguments(self) -> tuple:
        """``lane_kernel.serve``'s arguments, in its order."""
        a, p = self.arrivals, self.prices
        return (self.si, self.sf, self.cfg, self.cfgf, self.d, self.timed, a.rejected,
                a.prompt, a.output, self.out, self.computed, self.held, self.preempts,
                self.first_sched, self.first_tok, self.last_tok, self.finish, self.running,
                self.waiting, *self.batch, self.in_batch, self.preempted, self.order,
                p.decode_s, p.index.keys, p.index.values, p.before, p.after, p.nafter,
                p.kernels, p.prefill_s.keys, p.prefill_s.values, self.steps_f, self.steps_i,
                self.itl_v, self.itl_w, self.finished, self.need)

    def unfinished(self) -> int:
        from sim import lane_kernel as K

        return int(self.si[K.NRUN] + self.si[K.WTAIL] - self.si[K.WHEAD])

    def flush(self) -> None:
        """Empty the step, latency and finish buffers into the metrics recorder."""
        from sim import lane_kernel as K

        si, metrics = self.si, self.engine.metrics
        n = int(si[K.NSTEPS])
        if n:
            ints = self.steps_i[:n]
            metrics.record_steps({
                "replica": self.replica_index, "start_time": self.steps_f[:n, 0],
                "duration": self.steps_f[:n, 1], "num_seqs": ints[:, K.S_SEQS],
                "prefill_tokens": ints[:, K.S_PREFILL], "decode_tokens": ints[:, K.S_DECODE],
                "kv_blocks_used": ints[:, K.S_KV], "kv_blocks_total": self.blocks_total,
                "num_waiting": ints[:, K.S_WAITING], "num_running": ints[:, K.S_RUNNING],
                "decode_seqs": ints[:, K.S_DECODE_SEQS],
            })
            self.steps += n
        m = int(si[K.NITL])
        if m:
            metrics.itl.add_many(self.itl_v[:m].copy(), self.itl_w[:m])
        f = int(si[K.NFIN])
        if f:
            self._record_finished(self.finished[:f])
        si[K.NSTEPS] = si[K.NITL] = si[K.NFIN] = 0
        if f:
            self.engine._notify()

    def _record_finished(self, idx: np.ndarray) -> None:
        a, zeros = self.arrivals, np.zeros(len(idx))
        self.engine.metrics.record_finished_columns({
            "request_id": a.ids[idx], "arrival_time": a.arrival[idx],
            "first_scheduled_time": self.first_sched[idx],
            "first_token_time": self.first_tok[idx], "finish_time": self.finish[idx],
            "prompt_tokens": a.prompt[idx], "output_tokens": a.output[idx],
            "cached_tokens": zeros, "preemptions": self.preempts[idx],
            "replica": np.full(len(idx), self.replica_index), "kv_transfer_time": zeros,
            "accepted_draft_tokens": zeros, "proposed_draft_tokens": zeros,
        })

    def write_back(self, requests: list[Request] | tuple[Request, ...]) -> None:
        """Leave the caller's Request objects as the general engine would."""
        def opt(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        columns = [a.tolist() for a in (self.out, self.computed, self.preempts,
                                        self.first_sched, self.first_tok, self.last_tok,
                                        self.finish)]
        for req, out, computed, preempts, sched, first, last, fin in zip(
                requests, *columns, strict=True):
            if req.rejected_reason is not None:
                continue
            req.num_output_tokens, req.num_computed_tokens = out, computed
            req.preemptions = preempts
            req.first_scheduled_time, req.first_token_time = opt(sched), opt(first)
            req.last_token_time, req.finish_time = opt(last), opt(fin)
