"""The SimPy engine: arrivals, one serve loop per replica, idle waits.

One loop, two executors (see ARCHITECTURE.md): each replica asks its scheduler for a batch, asks
its executor how long the batch takes, advances the clock by that much and hands the outcome
back. The engine knows nothing of policies or hardware beyond the protocols in ``core``.

Runs of identical decode steps are fast-forwarded (``sim.fastforward``): one SimPy event for
the whole run instead of one per token, with exactly the results of stepping. The cost of a
simulation then grows with its events (arrivals, finishes, preemptions, batch changes), not
with its tokens. ``Engine(fast_forward=False)`` steps every iteration.

A run of the commonest kind (one replica, open loop, chunked-prefill or continuous batching,
paged KV, the roofline) is handed whole to the compiled lane (``sim.lane``), which gives this
engine's results bit for bit; ``Engine(fast_lane=False)`` keeps it on the Python path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import simpy

from core import Batch, Executor, Request, Scheduler, StepResult
from sim import lane  # the compiled serve loop; numba is imported only when it runs
from sim.fastforward import DecodeRun, Forwarder, ServeEnvironment
from sim.metrics import LogHistogram, MetricsRecorder
from sim.stall import SimulationStalled  # also raised by the lane; one class
from sim.workload import ClientLatency


@dataclass(eq=False)
class Replica:
    """One serving instance: its own scheduler (with its KV pool) and executor."""

    index: int
    scheduler: Scheduler
    executor: Executor
    wakeup: simpy.Event | None = field(default=None, repr=False)
    process: simpy.Process | None = field(default=None, repr=False)
    run: DecodeRun | None = field(default=None, repr=False)  # the fast-forward in progress
    forwarder: Forwarder | None = field(default=None, repr=False)


class Router(Protocol):
    """Picks the replica that serves a request."""

    def route(self, request: Request, replicas: list[Replica]) -> Replica: ...


class RoundRobinRouter:
    """Replicas in turn, regardless of their load."""

    def __init__(self) -> None:
        self._next = 0

    def route(self, request: Request, replicas: list[Replica]) -> Replica:
        replica = replicas[self._next % len(replicas)]
        self._next += 1
        return replica


class Engine:
    """Drives replicas and a workload process on one SimPy clock."""

    def __init__(self, replicas: list[Replica], metrics: MetricsRecorder,
                 router: Router | None = None, on_done: Callable[[int], None] | None = None,
                 fast_forward: bool = True, fast_lane: bool = True):
        self.fast_forward = fast_forward
        # the compiled lane (``sim.lane``) for the runs it serves; off with fast-forwarding
        self.fast_lane = fast_lane and fast_forward
        self.lane_steps: int | None = None  # steps the lane simulated (None: it did not run)
        self.env = ServeEnvironment(metrics)
        self.replicas = replicas
        self.metrics = metrics
        self.router = router or RoundRobinRouter()
        self._on_done = on_done
        self._done_events: dict[int, simpy.Event] = {}
        # When the next request arrives, if the workload knows (open loop); None: unknown.
        # Only a hint that spares planning steps an arrival would cut off anyway.
        self.next_arrival_s: float | None = None
        # Warm-up exclusion: the measurement window opens when the first request with an id
        # >= the first and sent no earlier than the second reaches a replica (None: open).
        self.measure_from: tuple[int, float] | None = None

    def dispatch(self, request: Request) -> simpy.Event:
        """Hand an arriving request to a replica; the event fires when it finishes or is
        rejected."""
        done = self.env.event()
        if self.measure_from is not None:
            self._open_window(request)
        replica = self.router.route(request, self.replicas)
        if not replica.scheduler.add_request(request, self.env.now):
            self.metrics.record_rejected(request)
            done.succeed(request)
            self._notify()
            return done
        self._done_events[request.request_id] = done
        if replica.wakeup is not None and not replica.wakeup.triggered:
            replica.wakeup.succeed()
        return done

    def _open_window(self, request: Request) -> None:
        """Open the measurement window at the first measured request: inter-token gaps count
        from here on (the request-level metrics leave warm-up requests out by themselves)."""
        first_id, from_s = self.measure_from
        if request.request_id >= first_id and request.arrival_time >= from_s:
            self.measure_from = None
            self.metrics.itl = LogHistogram()

    def serve(self, replica: Replica) -> Iterator[simpy.Event]:
        """The iteration loop of one replica."""
        env, sched = self.env, replica.scheduler
        if self.fast_forward:  # the replica is wired by now (a cluster may wrap its parts)
            replica.forwarder = Forwarder(replica.index, sched, replica.executor)
        while True:
            if replica.forwarder is not None:
                replica.forwarder.before_schedule()
            batch = sched.schedule(env.now)
            if batch is None:
                replica.wakeup = env.event()
                yield replica.wakeup
                continue
            if replica.forwarder is not None:
                run = replica.forwarder.plan(batch, env.now, self.next_arrival_s)
                if run is not None:
                    yield from self._fast_forward(replica, run)
                    continue
            start = env.now
            previous = [r.last_token_time for r in batch.requests]
            result = None if replica.forwarder is None else replica.forwarder.step_result(batch)
            if result is None:
                result = replica.executor.run(batch)
            yield env.step_end(result.seconds, replica.index)
            self._complete_step(replica, batch, result, start, previous)

    def _complete_step(self, replica: Replica, batch: Batch, result: StepResult, start: float,
                       previous: list[float | None]) -> None:
        """Hand a step's outcome to the scheduler; record the step, its tokens and finishes."""
        sched, metrics, now = replica.scheduler, self.metrics, self.env.now
        kv_used = sched.allocator.num_blocks_used()  # during the step: before finishers free
        finished = sched.update(batch, result, now)
        gaps = [now - prev for req, prev, pad in zip(batch.requests, previous, batch.padding,
                                                     strict=True)
                if not pad and prev is not None and req.last_token_time == now and prev != now]
        if gaps:
            metrics.itl.add_many(gaps)
        metrics.record_step(replica.index, start, result.seconds, batch,
                            kv_used, sched.allocator.num_blocks_total,
                            sched.num_waiting, sched.num_running)
        for req in finished:
            metrics.record_finished(req, replica.index)
            self._done_events.pop(req.request_id).succeed(req)
            self._notify()

    def _fast_forward(self, replica: Replica, run: DecodeRun) -> Iterator[simpy.Event]:
        """Wait out a whole run of decode steps; new work for the replica cuts it short.

        A run that goes to its end finishes with the step in which a request completes: that
        last step goes through the scheduler's ``update()`` like any other step.
        """
        env = self.env
        wake = env.event()  # what dispatch() and the cluster trigger when work arrives
        wake.callbacks.append(lambda _event: self._cut(replica, run))
        replica.wakeup, replica.run = wake, run
        run.timer = env.timeout_at(run.end_s(), run.priority)
        env.add_run(run)
        while True:
            try:
                yield run.timer
                break
            except simpy.Interrupt:
                run.timer = env.timeout_at(run.end_s(), run.priority)
        replica.wakeup = replica.run = None
        env.finish_run(run)
        if run.final:
            batch = run.final_batch()
            previous = [r.last_token_time for r in batch.requests]
            start = float(run.starts_s[run.length - 1])
            result = StepResult(float(run.durations_s[run.length - 1]))
            self._complete_step(replica, batch, result, start, previous)

    def _cut(self, replica: Replica, run: DecodeRun) -> None:
        if replica.run is not run:
            return  # the run ended at this very instant; the next schedule() sees the work
        length = run.length
        run.cut(self.env.now)
        if run.length != length:
            replica.process.interrupt("new work")

    def _notify(self) -> None:
        if self._on_done is not None:
            self._on_done(self.metrics.num_finished)

    def run(self, workload: Callable[[Engine], Iterator[simpy.Event]]) -> None:
        """Run the workload process and every replica until nothing is left to happen."""
        if self.fast_lane:
            if lane.reason_not_served(self.replicas, workload) is None:
                lane.run(self, workload.requests)
                return
        for replica in self.replicas:
            replica.process = self.env.process(self.serve(replica))
        self.env.process(workload(self))
        self.env.run()
        if self._done_events:
            raise SimulationStalled(
                f"{len(self._done_events)} requests never finished: the scheduler stopped "
                "scheduling them (a policy bug)")


def open_loop(requests: Iterable[Request]) -> Callable[[Engine], Iterator[simpy.Event]]:
    """A workload process that sends pre-timed requests at their arrival instants."""

    def process(engine: Engine) -> Iterator[simpy.Event]:
        env = engine.env
        for req in requests:
            if req.arrival_time > env.now:
                engine.next_arrival_s = req.arrival_time
                yield env.timeout(req.arrival_time - env.now)
            engine.dispatch(req)
        engine.next_arrival_s = math.inf

    process.requests = requests  # what the compiled lane (sim.lane) reads instead
    return process


def closed_loop(make_request: Callable[[float, int], Request], concurrency: int,
                num_requests: int | None, duration_s: float | None,
                client: ClientLatency | None = None
                ) -> Callable[[Engine], Iterator[simpy.Event]]:
    """``concurrency`` clients, each sending its next request when its last one finishes.

    This is a serving benchmark's max-concurrency mode; it stops after ``num_requests`` requests
    in all or when ``duration_s`` has passed. With a ``client`` model each request reaches the
    scheduler after its send delay (network, then the server's one-at-a-time front end), each
    answer reaches its client after a return delay, and clients may start staggered (ramp-up);
    a request's ``arrival_time`` is when its client sent it, as a benchmark client times it.
    """
    sent = 0

    def one_client(engine: Engine, client_id: int) -> Iterator[simpy.Event]:
        nonlocal sent
        env = engine.env
        start_s = 0.0 if client is None else client.start_delay(client_id, concurrency)
        if start_s > 0:
            yield env.timeout(start_s)
        while (num_requests is None or sent < num_requests) and (
                duration_s is None or env.now < duration_s):
            sent += 1
            request = make_request(env.now, client_id)
            if client is None:
                yield engine.dispatch(request)
                continue
            yield env.timeout(client.send_delay(env.now, request.prompt_tokens))
            yield engine.dispatch(request)
            yield env.timeout(client.return_delay())

    def process(engine: Engine) -> Iterator[simpy.Event]:
        for cid in range(concurrency):
            engine.env.process(one_client(engine, cid))
        yield engine.env.timeout(0)

    return process


def gated_open_loop(requests: Iterable[Request], concurrency: int,
                    client: ClientLatency | None = None
                    ) -> Callable[[Engine], Iterator[simpy.Event]]:
    """Pre-timed requests, at most ``concurrency`` of them in flight: ``vllm bench serve
    --request-rate R --max-concurrency N`` (and AIPerf's rate with concurrency). A request due
    while all N slots are busy waits at the client, first come first served, and its clock
    starts when it gets a slot (vLLM times a request from after its semaphore, and reports the
    wait apart): its ``arrival_time`` becomes that instant. A slot frees when the last token
    reaches the client."""

    def one(engine: Engine, request: Request, slots: simpy.Resource) -> Iterator[simpy.Event]:
        env = engine.env
        with slots.request() as slot:
            yield slot
            request.arrival_time = env.now
            if client is not None:
                yield env.timeout(client.send_delay(env.now, request.prompt_tokens))
            yield engine.dispatch(request)
            if client is not None:
                yield env.timeout(client.return_delay())

    def process(engine: Engine) -> Iterator[simpy.Event]:
        env = engine.env
        slots = simpy.Resource(env, capacity=concurrency)
        for req in requests:
            if req.arrival_time > env.now:
                yield env.timeout(req.arrival_time - env.now)
            env.process(one(engine, req, slots))

    process.lane_refusal = "the open loop is capped by workload.concurrency"
    return process


def open_loop_with_client(requests: Iterable[Request], client: ClientLatency
                          ) -> Callable[[Engine], Iterator[simpy.Event]]:
    """Pre-timed requests sent at their arrival instants, each reaching the scheduler after its
    client's send delay (so requests may overtake each other on the way). The compiled lane
    does not mirror this (``lane_refusal``)."""

    def deliver(engine: Engine, request: Request, delay_s: float) -> Iterator[simpy.Event]:
        yield engine.env.timeout(delay_s)
        engine.dispatch(request)

    def process(engine: Engine) -> Iterator[simpy.Event]:
        env = engine.env
        for req in requests:
            if req.arrival_time > env.now:
                yield env.timeout(req.arrival_time - env.now)
            env.process(deliver(engine, req, client.send_delay(env.now, req.prompt_tokens)))

    process.lane_refusal = "client latency (workload.client) is on"
    return process
