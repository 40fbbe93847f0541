"""Replaying a trace: the open-loop options (window, sampling, time scaling, caps), and the
``workload.arrival: trace`` entry point (open loop for requests, closed loop for sessions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from core import Request
from sim.traces.reader import TraceReader
from sim.traces.rows import TraceError
from sim.workload import arrival_times

TRACE_SAMPLE_STREAM = 103  # seed-stream ids (np.random.default_rng([seed, stream]))
TRACE_ARRIVAL_STREAM = 104


@dataclass(frozen=True, slots=True)
class Replay:
    """How to replay a trace open loop (every option keeps the trace's burstiness).

    ``window`` keeps requests whose time from the first request is in ``[start_s, end_s)`` and
    starts the clock at ``start_s``; ``sample`` keeps each request with that probability (seeded
    thinning); then times are divided by ``time_scale`` (2 = twice the rate), or, with
    ``target_rate``, by the factor that makes the mean rate (``(n - 1) / span``) equal to it.
    Scaling every gap by one factor leaves the coefficient of variation of the gaps unchanged.
    Length-only traces get arrivals from a Gamma process (``rate``, ``cv``; cv = 1 is Poisson).
    """

    time_scale: float = 1.0
    target_rate: float | None = None
    window: tuple[float, float] | None = None
    sample: float = 1.0
    seed: int = 0
    num_requests: int | None = None
    duration_s: float | None = None
    rate: float = 10.0  # req/s, for length-only traces
    cv: float = 1.0


def replay(requests: Iterable[Request], timed: bool, opts: Replay) -> Iterator[Request]:
    """Apply window, sampling, scaling and the count/duration caps; number requests from 0."""
    try:
        yield from _replay(requests, timed, opts)
    finally:  # stopping early still reports the bad rows skipped so far
        close = getattr(requests, "close", None)
        if close is not None:
            close()


def _replay(requests: Iterable[Request], timed: bool, opts: Replay) -> Iterator[Request]:
    stream: Iterable[Request] = _rebase(requests, opts.window) if timed else requests
    if opts.sample < 1.0:
        rng = np.random.default_rng([opts.seed, TRACE_SAMPLE_STREAM])
        stream = _thin(stream, opts.sample, rng)
    if timed:
        if opts.target_rate is not None:
            stream = list(stream)
            stream = _scale(stream, opts.target_rate / _mean_rate(stream))
        elif opts.time_scale != 1.0:
            stream = _scale(stream, opts.time_scale)
    else:
        times = arrival_times("poisson" if opts.cv == 1.0 else "gamma", opts.rate, opts.cv,
                              np.random.default_rng([opts.seed, TRACE_ARRIVAL_STREAM]))
        stream = _retime(stream, times)
    for i, req in enumerate(stream):
        if opts.num_requests is not None and i >= opts.num_requests:
            return
        if opts.duration_s is not None and req.arrival_time > opts.duration_s:
            return
        req.request_id = i
        yield req


def _thin(reqs: Iterable[Request], keep: float, rng: np.random.Generator) -> Iterator[Request]:
    for req in reqs:
        if rng.random() < keep:
            yield req


def _rebase(reqs: Iterable[Request], window: tuple[float, float] | None) -> Iterator[Request]:
    t0 = None
    for req in reqs:
        t0 = req.arrival_time if t0 is None else t0
        offset = req.arrival_time - t0
        if window is not None:
            if offset < window[0]:
                continue
            if offset >= window[1]:
                return
            offset -= window[0]
        req.arrival_time = offset
        yield req


def _scale(reqs: Iterable[Request], factor: float) -> Iterator[Request]:
    for req in reqs:
        req.arrival_time /= factor
        yield req


def _retime(reqs: Iterable[Request], times: Iterator[float]) -> Iterator[Request]:
    for req, t in zip(reqs, times, strict=False):
        req.arrival_time = t
        yield req


def _mean_rate(reqs: list[Request]) -> float:
    if len(reqs) < 2 or reqs[-1].arrival_time <= reqs[0].arrival_time:
        raise TraceError("workload.trace_rate: needs at least two requests at different times")
    return (len(reqs) - 1) / (reqs[-1].arrival_time - reqs[0].arrival_time)


def trace_workload(wl: Any, seed: int) -> Callable[[Any], Iterator[Any]]:
    """The workload process for ``workload.arrival: trace`` (``wl`` is the WorkloadConfig).

    Request traces replay open loop; an agentic (session) trace replays closed loop, as
    ``SessionWorkload`` sessions started by ``workload.rate`` or ``workload.concurrency``.
    """
    from sim.engine import open_loop
    from sim.sessions import SessionWorkload

    if not wl.trace:
        raise TraceError("workload.trace: arrival 'trace' needs a trace file or folder path")
    reader = TraceReader(wl.trace, wl.trace_format, wl.on_bad_rows)
    replay_opts = {"window": wl.window is not None, "sample": wl.sample != 1.0,
                   "time_scale": wl.time_scale != 1.0, "trace_rate": wl.trace_rate is not None}
    if reader.is_sessions:
        for name in (k for k, v in replay_opts.items() if v):
            raise TraceError(f"workload.{name}: not used by session traces; allowed there: "
                             "num_sessions, think_time_scale, max_think_time_s, rate, concurrency")
        return SessionWorkload(
            reader.cycled_sessions(wl.num_sessions), rate=wl.rate, concurrency=wl.concurrency,
            num_requests=wl.num_requests, duration_s=wl.duration_s,
            think_time_scale=wl.think_time_scale, max_think_time_s=wl.max_think_time_s, seed=seed)
    if not reader.timed:
        for name in ("window", "time_scale", "trace_rate"):
            if replay_opts[name]:
                raise TraceError(f"workload.{name}: '{reader.path}' has no timestamps; its "
                                 "arrivals come from workload.rate and workload.cv")
    if replay_opts["time_scale"] and replay_opts["trace_rate"]:
        raise TraceError("workload.trace_rate: set either time_scale or trace_rate, not both")
    opts = Replay(time_scale=wl.time_scale, target_rate=wl.trace_rate,
                  window=tuple(wl.window) if wl.window else None, sample=wl.sample, seed=seed,
                  num_requests=wl.num_requests, duration_s=wl.duration_s, rate=wl.rate, cv=wl.cv)
    return open_loop(replay(reader.requests(), reader.timed, opts))
