"""Fast-forwarding: a run of identical decode steps as one event instead of one per token.

Between events (an arrival, a finish, a preemption, a prompt chunk) a replica decodes the same
requests step after step; only their contexts grow, by one token a step, so every step of the
run is predictable: its duration from the hardware model, its KV growth from the block size.
The engine then advances the clock once for the whole run and applies its outcome in bulk.

It is exact, not an approximation: a run is planned only when every condition under which
stepping would have produced the same batch again holds, and ends before anything can change:

- the batch is pure decode: every sequence computes exactly its one next token (no prompt
  chunk, no draft, no padding);
- the scheduler vouches that, while nothing arrives, finishes or runs out of KV, its next
  ``schedule()`` calls return the same requests again: an OPTIONAL capability,
  ``scheduler.can_fast_forward(batch) -> bool``, or an entry in ``STEADY_SCHEDULERS`` for the
  project's own schedulers (exact types, so a subclass that changes ``schedule()`` is excluded);
- the executor can predict step times: ``executor.decode_step_times_s(seqs, n_steps)``, or a
  ``RooflineExecutor`` whose hardware model has ``step_times_s(seqs, n_steps)`` or, failing
  that, is asked ``step_time_s`` step by step (no scheduling, no SimPy event per step);
- the KV allocator's growth is known: ``allocator.blocks_held(request)`` (or, for a batch,
  ``held_tokens(requests)``), or a plain paged or contiguous allocator; the run ends before
  the pool would be short of a block;
- no request finishes inside the run (the finishing step runs normally, with ``update()``);
- nothing arrives: the run is cut at the first step boundary after new work is handed to the
  replica (through its ``wakeup`` event, which every path that adds work already triggers).

Everything the rest of the simulation can observe (request progress, KV blocks in use, step
records) is brought up to date before each SimPy event is processed (``ServeEnvironment``),
so routers and other replicas see what they would have seen with stepping. Only exact ties of
float instants between two sources of events may be ordered differently.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from heapq import heappush
from typing import Any

import numpy as np
import simpy

from core import Batch, Request, StepResult

MIN_RUN_STEPS = 2  # a shorter run costs more to plan than to step
MAX_RUN_STEPS = 1 << 14  # bounds the arrays of one run (a run may follow another)
FIRST_PRICED_STEPS = 32  # a run before the next arrival is priced in chunks from this size

StepTimes = Callable[[list[tuple[int, int]], int, float, float], np.ndarray]
# SimPy priority of step ends (URGENT is 0, NORMAL 1): at one instant, the steps ending then are
# processed before anything else, replica by replica, so simultaneous events have one order that
# a fast-forwarded run can reproduce (SimPy's own order there is that of event creation).
STEP_END_PRIORITY = -(1 << 20)


def step_priority(replica: int) -> int:
    return STEP_END_PRIORITY + replica


# ---- capabilities ---------------------------------------------------------------------------


def _capability(obj: Any, name: str) -> Callable | None:
    """``obj.name`` only if ``obj``'s own class defines it: a wrapper that forwards unknown
    attributes to what it wraps (``__getattr__``) must not borrow the inner object's promise."""
    if getattr(type(obj), name, None) is None:
        return None
    return getattr(obj, name)


DecodeRows = tuple[int, list[int], list[float | None], list[tuple[int, int]]]


def _decode_rows(batch: Batch) -> DecodeRows | None:
    """For a pure-decode batch (every sequence computes exactly its next token: no prompt
    chunk, draft or padding): the fewest output tokens any request has left, each request's
    tokens, each one's last token instant, and the batch's ``seqs()``; else None.

    One pass over the batch, as planning a run needs all four: a hot path (plain attribute
    arithmetic, no properties)."""
    if any(batch.draft_tokens) or any(batch.padding):
        return None
    remaining = sys.maxsize
    tokens: list[int] = []
    last: list[float | None] = []
    seqs: list[tuple[int, int]] = []
    for req, new, ctx in zip(batch.requests, batch.new_tokens, batch.context_tokens,
                             strict=True):
        out = req.num_output_tokens
        # the next token: one new, on all the KV computed, and the prompt is in
        if (new != 1 or out == 0 or ctx != req.num_computed_tokens
                or ctx + 1 != req.prompt_tokens + out):
            return None
        left = req.output_tokens - out
        if left < remaining:
            remaining = left
        tokens.append(ctx + 1)
        last.append(req.last_token_time)
        seqs.append((1, ctx))
    return remaining, tokens, last, seqs


def _preemptions(scheduler: Any) -> int:
    counts = scheduler.counts
    return counts.preemptions_recompute + counts.preemptions_swap


def _queueing_steady(scheduler: Any, batch: Batch, preemptions_before: int) -> bool:
    """Continuous and chunked-prefill scheduling (``policies.base.QueueingScheduler``).

    Every running request is in the batch and nothing was preempted while forming it (these
    schedulers admit nobody in a step that preempted). So a request still waiting was just
    refused admission: they try the head of the queue whenever the step has room. It stays
    refused while the sequence limit is reached, or while the pool only shrinks and no cache
    can start it further ahead: a plain paged or contiguous pool.
    """
    if len(batch) != len(scheduler.running) or _preemptions(scheduler) != preemptions_before:
        return False
    if not len(scheduler.waiting) or len(scheduler.running) >= scheduler.max_num_seqs:
        return True
    return type(scheduler.allocator) in _monotone_allocators()


def _static_steady(scheduler: Any, batch: Batch, _mark: int) -> bool:
    """Static batching decodes its batch to the end and admits nobody meanwhile."""
    return len(batch) == len(scheduler.running)


SteadyCheck = tuple[Callable[[Any], int], Callable[[Any, Batch, int], bool]]


@cache
def _steady_schedulers() -> dict[type, SteadyCheck]:
    """The project's schedulers known to be steady (imported late: policies may import sim):
    what to note before ``schedule()``, and the check of the batch it returned."""
    from policies.chunked import ChunkedPrefillScheduler
    from policies.continuous import ContinuousScheduler
    from policies.static import StaticScheduler

    queueing = (_preemptions, _queueing_steady)
    return {ContinuousScheduler: queueing, ChunkedPrefillScheduler: queueing,
            StaticScheduler: (lambda _s: 0, _static_steady)}


@cache
def _monotone_allocators() -> tuple[type, ...]:
    from policies.kv_contiguous import ContiguousAllocator
    from policies.kv_paged import PagedAllocator

    return (PagedAllocator, ContiguousAllocator)


def steady_fns(scheduler: Any) -> tuple[Callable[[], int], Callable[[Batch, int], bool]] | None:
    """``(mark, check)``: ``mark()`` is noted before ``schedule()``; ``check(batch, mark)``
    says whether the scheduler would schedule ``batch``'s requests again, one token each, until
    an arrival, a finish or a KV shortage. None for a scheduler that cannot tell."""
    method = _capability(scheduler, "can_fast_forward")
    if method is not None:
        return (lambda: 0), (lambda batch, _mark: bool(method(batch)))
    known = _steady_schedulers().get(type(scheduler))
    if known is None:
        return None
    mark, check = known
    return (lambda: mark(scheduler)), (lambda batch, before: check(scheduler, batch, before))


def held_tokens_fn(allocator: Any) -> Callable[[list[Request]], list[int]] | None:
    """Tokens the blocks of each of some requests cover (blocks held x block size), for
    allocators whose growth is known, else None.

    Known growth: a request holding ``h`` blocks takes one more block from the free pool each
    time its tokens pass ``h x block_size``, and nothing else changes the pool meanwhile. An
    allocator says so with ``blocks_held(request)``, and may answer for a whole batch at once
    with ``held_tokens(requests)`` (one call instead of one per request: a hot path).
    """
    many = _capability(allocator, "held_tokens")
    if many is not None:
        return many
    bs = allocator.block_size
    method = _capability(allocator, "blocks_held")
    if method is not None:
        return lambda requests: [method(r) * bs for r in requests]
    if type(allocator) in _monotone_allocators():
        return lambda requests: [len(allocator.block_table(r)) * bs for r in requests]
    return None


def step_times_fn(executor: Any) -> StepTimes | None:
    """``f(seqs, n, now, until_s)``: durations of up to ``n`` decode steps from ``seqs``
    (contexts + 1 a step) starting at ``now``; it may stop after the step in progress at
    ``until_s`` (the next arrival), where the run will be cut anyway."""
    method = _capability(executor, "decode_step_times_s")
    if method is not None:
        return lambda seqs, n, now, until_s: method(seqs, n)
    from sim.executors import RooflineExecutor

    if type(executor) is not RooflineExecutor:
        return None  # a real GPU, or a wrapper that adds work: every step must run
    hardware = executor.hardware
    vectorised = _capability(hardware, "step_times_s")
    if vectorised is not None:
        return lambda seqs, n, now, until_s: chunked_times(vectorised, seqs, n, now, until_s)
    return lambda seqs, n, now, until_s: stepwise_times(hardware, seqs, n, now, until_s)


def chunked_times(vectorised: Callable, seqs: list[tuple[int, int]], n_steps: int,
                  now: float = 0.0, until_s: float = math.inf) -> np.ndarray:
    """Price a run in growing chunks with a vectorised ``step_times_s``, stopping once the
    steps priced reach past ``until_s`` (the next arrival cuts the run there anyway)."""
    if until_s == math.inf:
        return vectorised(seqs, n_steps)
    parts, done, t, size = [], 0, now, FIRST_PRICED_STEPS
    while done < n_steps and t <= until_s:
        k = min(size, n_steps - done)
        part = vectorised(seqs if not done else [(new, ctx + done) for new, ctx in seqs], k)
        parts.append(part)
        t += float(part.sum())
        done += k
        size *= 4
    return np.concatenate(parts)


def stepwise_times(hardware: Any, seqs: list[tuple[int, int]], n_steps: int, now: float = 0.0,
                   until_s: float = math.inf) -> np.ndarray:
    """The fallback: ask ``step_time_s`` for each step of the run in turn, up to the one in
    progress at ``until_s``."""
    out = []
    t = now
    for j in range(n_steps):
        d = hardware.step_time_s([(new, ctx + j) for new, ctx in seqs])
        out.append(d)
        t += d
        if t > until_s:
            break
    return np.array(out, dtype=np.float64)


# ---- a run ------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class DecodeRun:
    """A planned run of ``length`` decode steps of ``requests``, applied lazily in order.

    Step ``j`` (0-based) starts at ``starts_s[j]`` and ends at ``ends_s[j]`` (accumulated as
    SimPy accumulates its clock, so the instants are bit-identical to stepping). Before step
    ``j``, request ``i`` holds ``tokens[i] + j`` tokens; ``crossings`` are the (1-based) steps
    at which some request takes a new KV block, sorted. As in stepping, a step's KV is taken
    when it starts and its tokens are emitted when it ends. With ``final``, the last step is
    not applied here but by the scheduler's ``update()`` (a request finishes in it).
    """

    scheduler: Any
    replica: int
    requests: list[Request]
    tokens: list[int]
    held_tokens: list[int]  # tokens each request's blocks cover now
    last_token_s: list[float | None]
    starts_s: np.ndarray
    ends_s: np.ndarray
    durations_s: np.ndarray
    crossings: list[int]
    length: int
    final: bool  # the last step finishes a request: the engine hands it to update()
    applied: int = 0  # steps whose outcome the requests have
    allocated: int = 1  # steps whose KV is allocated (step 1's by the schedule() that made it)
    priority: int = 0  # SimPy priority of this replica's step ends (``step_priority``)
    commit: bool = True  # call ``allocator.commit`` (a no-op for the plain allocators)
    timer: simpy.Event | None = field(default=None, repr=False)

    def end_s(self) -> float:
        return float(self.ends_s[self.length - 1])

    @property
    def lazy_steps(self) -> int:
        """Steps applied here (all but a final one)."""
        return self.length - 1 if self.final else self.length

    def due_s(self) -> float:
        """End of the first step not applied yet (inf when all are)."""
        return float(self.ends_s[self.applied]) if self.applied < self.lazy_steps else math.inf

    def ended(self, t: float, priority: int) -> int:
        """Steps over by the time an event (``t``, ``priority``) is processed: those ending
        before ``t``, and at ``t`` if step ends outrank the event (at most ``lazy_steps``)."""
        find = bisect_right if self.priority < priority else bisect_left  # searchsorted's sides
        return min(self.lazy_steps, find(self.ends_s, t, 0, self.length))

    def cut(self, t: float) -> None:
        """New work arrived at ``t`` (a NORMAL event): stop after the step in progress, where
        stepping would first call ``schedule()`` again."""
        in_progress = bisect_right(self.ends_s, t, 0, self.length) + 1
        if in_progress < self.length:
            self.length, self.final = max(self.applied, 1, in_progress), False

    def final_batch(self) -> Batch:
        """The last step's batch, as ``schedule()`` would have formed it."""
        reqs = self.requests
        return Batch(list(reqs), [1] * len(reqs), [r.num_computed_tokens for r in reqs])


class Forwarder:
    """Plans the runs of one replica; what its parts can do is looked up once."""

    def __init__(self, replica: int, scheduler: Any, executor: Any):
        self.replica, self.scheduler = replica, scheduler
        self.priority = step_priority(replica)
        self._times = step_times_fn(executor)
        self._held = held_tokens_fn(scheduler.allocator)
        steady = steady_fns(scheduler)
        self._mark, self._steady = steady if steady is not None else (None, None)
        self._commit = type(scheduler.allocator) not in _monotone_allocators()
        self.enabled = None not in (self._times, self._held, self._steady)
        self.mark = 0
        # A plan cut short by an arrival has priced its first step already; the engine may run
        # that step at that price when the executor only prices (a plain RooflineExecutor, whose
        # step_times_s element 0 is step_time_s bit for bit), instead of pricing it again.
        from sim.executors import RooflineExecutor

        self._pricing_only = type(executor) is RooflineExecutor
        self.priced: tuple[Batch, float] | None = None

    def before_schedule(self) -> None:
        """Note what the steadiness check compares with (called before each ``schedule()``)."""
        self.priced = None
        if self.enabled:
            self.mark = self._mark()

    def step_result(self, batch: Batch) -> StepResult | None:
        """The outcome of stepping ``batch`` if its plan priced it already, else None."""
        priced = self.priced
        if priced is None or priced[0] is not batch:
            return None
        return StepResult(priced[1])

    def plan(self, batch: Batch, now: float, next_arrival_s: float | None) -> DecodeRun | None:
        """A run starting with ``batch`` (already scheduled at ``now``), or None if unsafe."""
        if not self.enabled or len(batch) == 0:
            return None
        rows = _decode_rows(batch)
        if rows is None:
            return None
        remaining, tokens, last, seqs = rows
        if remaining < MIN_RUN_STEPS or not self._steady(batch, self.mark):
            return None
        reqs = batch.requests
        alloc = self.scheduler.allocator
        held = self._held(reqs)
        length, crossings = _kv_horizon(alloc, tokens, held, min(remaining, MAX_RUN_STEPS))
        if length < MIN_RUN_STEPS:
            return None
        until = math.inf if next_arrival_s is None else next_arrival_s
        durations = np.asarray(self._times(seqs, length, now, until), dtype=np.float64)
        ends = np.empty(len(durations) + 1)  # the clock as SimPy adds it up: now + d0 + d1...
        ends[0], ends[1:] = now, durations
        ends.cumsum(out=ends)
        starts, ends = ends[:-1], ends[1:]
        # the next arrival would cut the run after the step in progress at its instant
        length = min(length, len(ends), bisect_right(ends, until) + 1)
        if length < MIN_RUN_STEPS:
            if self._pricing_only:
                self.priced = (batch, float(durations[0]))
            return None
        del crossings[bisect_right(crossings, length):]  # blocks taken after the run's end
        return DecodeRun(self.scheduler, self.replica, list(reqs), tokens, held,
                         last, starts, ends, durations, crossings,
                         length, final=length == remaining, priority=self.priority,
                         commit=self._commit)


def _kv_horizon(allocator: Any, tokens: list[int], held: list[int],
                length: int) -> tuple[int, list[int]]:
    """Cap ``length`` where the free blocks run out; the steps at which blocks are taken."""
    bs = allocator.block_size
    crossings: list[int] = []
    for n, covered in zip(tokens, held, strict=True):
        # step j (1-based) needs n + j - 1 tokens: the first block beyond those held is taken
        # at step covered - n + 2, then one every bs steps
        first = covered - n + 2
        if first <= length:
            crossings.extend(range(first, length + 1, bs))
    crossings.sort()
    free = allocator.num_blocks_total - allocator.num_blocks_used()
    if len(crossings) > free:
        length = crossings[free] - 1  # the step that would find the pool empty
        del crossings[free:]
    return length, crossings


def apply_run(run: DecodeRun, upto: int, itl: Any) -> dict[str, Any] | None:
    """Apply the outcome of steps ``run.applied + 1 .. upto`` to the requests and the ITL
    histogram, and take the KV of the step after them (already started) if the run has one;
    return their step records (columns, as ``MetricsRecorder.record_steps`` takes them)."""
    k0 = run.applied
    if upto <= k0:
        return None
    alloc, n = run.scheduler.allocator, len(run.requests)
    used_before, a0 = alloc.num_blocks_used(), run.allocated
    a1 = max(a0, min(upto + 1, run.length))
    t_last = float(run.ends_s[upto - 1])
    dk, grow = upto - k0, a1 - 1
    bs, held, tokens = alloc.block_size, run.held_tokens, run.tokens
    for i, req in enumerate(run.requests):
        req.num_computed_tokens += dk
        req.num_output_tokens += dk
        req.last_token_time = t_last
        if tokens[i] + grow > held[i]:
            if not alloc.allocate(req, tokens[i] + grow):
                raise RuntimeError("fast-forward: the KV pool refused a block it had (a bug)")
            held[i] = -(-(tokens[i] + grow) // bs) * bs
    if run.commit:
        for req in run.requests:
            alloc.commit(req)
    # blocks in use during step j: those allocated up to step j
    crossings = run.crossings
    taken_a0, taken_a1 = bisect_right(crossings, a0), bisect_right(crossings, a1)
    taken_k0 = bisect_right(crossings, k0)
    if taken_a1 == taken_a0 == taken_k0:  # no block taken in the chunk
        used: np.ndarray | int = used_before
    else:  # blocks taken by each step of the chunk: only its own crossings are searched
        steps = np.arange(k0 + 1, upto + 1)
        mine = np.array(crossings[taken_k0:bisect_right(crossings, upto, taken_k0)])
        used = used_before - taken_a0 + taken_k0 + mine.searchsorted(steps, "right")
    if alloc.num_blocks_used() != used_before + taken_a1 - taken_a0:
        raise RuntimeError(f"fast-forward: {type(alloc).__name__} grew by "
                           f"{alloc.num_blocks_used() - used_before} blocks, expected "
                           f"{taken_a1 - taken_a0}")
    _record_itl(run, k0, upto, itl)
    run.applied, run.allocated = upto, a1
    sched = run.scheduler
    return {
        "replica": run.replica, "start_time": run.starts_s[k0:upto],
        "duration": run.durations_s[k0:upto], "num_seqs": n, "decode_tokens": n,
        "kv_blocks_used": used, "kv_blocks_total": alloc.num_blocks_total,
        "num_waiting": sched.num_waiting, "num_running": sched.num_running, "decode_seqs": n,
        "end_s": run.ends_s[k0:upto], "priority": run.priority,
    }


def merge_steps(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Step records of several runs, interleaved as stepping records them: by end time, then
    by the priority of the replica's step ends."""
    if len(chunks) == 1:
        return chunks[0]
    sizes = [len(c["start_time"]) for c in chunks]
    ends = np.concatenate([c["end_s"] for c in chunks])
    ranks = np.repeat([c["priority"] for c in chunks], sizes)
    order = np.lexsort((ranks, ends))
    return {col: np.concatenate([np.broadcast_to(c[col], (k,)) for c, k in
                                 zip(chunks, sizes, strict=True)])[order]
            for col in chunks[0]}


def _record_itl(run: DecodeRun, k0: int, upto: int, itl: Any) -> None:
    """Each step emits one token per request, ``end - previous token`` after the last one."""
    if k0 == 0:  # the first step follows each request's own last token
        t1 = float(run.ends_s[0])
        itl.add_many([t1 - prev for prev in run.last_token_s if prev is not None and prev != t1])
        k0 = 1
    if upto > k0:
        gaps = run.ends_s[k0:upto] - run.starts_s[k0:upto]
        itl.add_many(gaps[gaps != 0], len(run.requests))


class ServeEnvironment(simpy.Environment):
    """The engine's SimPy environment: step ends outrank other events at the same instant, and
    fast-forwarded runs are brought up to date before each event.

    A run's steps are applied lazily; before any other event is processed, the steps that are
    over by its instant are applied, so whatever the event reads (a router reading KV use, a
    client reading its request) is what stepping would have shown.
    """

    def __init__(self, metrics: Any) -> None:
        super().__init__()
        self.runs: list[DecodeRun] = []
        self._metrics = metrics
        self._due = math.inf
        self.fast_forwarded_runs = 0
        self.fast_forwarded_steps = 0  # steps that took no SimPy event of their own

    def step_end(self, delay: float, replica: int) -> simpy.Event:
        """A timeout for the end of a replica's step, ``delay`` from now."""
        return self.timeout_at(self._now + delay, step_priority(replica))

    def timeout_at(self, when: float, priority: int) -> simpy.Event:
        """A timeout firing at the absolute instant ``when`` with a SimPy ``priority``.

        It is pushed as ``Timeout`` pushes itself (``simpy.Timeout`` takes no priority, and
        for a run, ``now + (when - now)`` need not be ``when``: stepping reaches ``when`` by
        adding up every step).
        """
        event = simpy.Event(self)
        event._ok, event._value = True, None
        heappush(self._queue, (when, priority, next(self._eid), event))
        return event

    def add_run(self, run: DecodeRun) -> None:
        self.runs.append(run)
        self._due = min(self._due, run.due_s())

    def finish_run(self, run: DecodeRun) -> None:
        """Apply the whole (possibly cut) run but a final step; it leaves the runs in progress."""
        self.runs.remove(run)
        chunk = apply_run(run, run.lazy_steps, self._metrics.itl)
        if chunk is not None:
            self._metrics.record_steps(chunk)
        self._due = min((r.due_s() for r in self.runs), default=math.inf)
        self.fast_forwarded_runs += 1
        self.fast_forwarded_steps += run.length

    def step(self) -> None:
        # _queue is SimPy's heap of (time, priority, id, event): the next event decides which
        # steps of the runs in progress are over before it is processed.
        if self.runs and self._queue and self._queue[0][0] >= self._due:
            t, priority, _, event = self._queue[0]
            self._sync(t, priority, event)
        super().step()

    def _sync(self, t: float, priority: int, event: simpy.Event) -> None:
        """Apply every run's steps over by (``t``, ``priority``), recorded in end order."""
        pending = [(r, upto) for r in self.runs if (upto := r.ended(t, priority)) > r.applied]
        if not pending or (len(pending) == 1 and pending[0][0].timer is event):
            return  # a run's own end, nothing to interleave: it applies itself on resuming
        chunks = [apply_run(r, upto, self._metrics.itl) for r, upto in pending]
        self._metrics.record_steps(merge_steps([c for c in chunks if c is not None]))
        self._due = min((r.due_s() for r in self.runs), default=math.inf)
