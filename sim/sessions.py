"""Closed-loop multi-turn sessions: real agentic traces and a synthetic session generator.

A session is an agent that sends one request at a time: its next turn is sent only after the
previous response has finished (and any sub-agents it launched), plus a think or tool time.
So, unlike an open-loop replay, a slow server stretches the session instead of piling requests
up, which is how chat users and coding agents behave. Each turn's prompt holds the whole history
so far; its ``prefix_hashes`` repeat the hashes of the earlier turns' blocks, which is what a
prefix cache can reuse.

The SimPy side is one process per agent (``SessionWorkload``); it logs every turn, so the
per-session latency and the never-early property can be checked against ``Result.requests``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import pandas as pd
import simpy

from core import Request
from sim.workload import LengthDist, WorkloadError, parse_length

SESSION_STARTS_STREAM = 101  # seed-stream ids (np.random.default_rng([seed, stream]))
SESSION_SHAPES_STREAM = 102


@dataclass(slots=True)
class Turn:
    """One request of an agent, with the wait before it is sent.

    ``delay_s`` is counted from the end of the previous turn's response, or, when that turn
    launched sub-agents, from the end of the last of them. The ``trace_*`` fields keep what a
    recorded trace said (``None`` for synthetic sessions); they feed statistics, not the replay.
    """

    prompt_tokens: int
    output_tokens: int
    prefix_hashes: tuple[int, ...]
    delay_s: float
    hash_block_tokens: int = 16
    children: list[Agent] = field(default_factory=list)  # sub-agents launched after the response
    trace_time_s: float | None = None  # send time on the trace's clock, from the session start
    api_time_s: float | None = None
    think_time_s: float | None = None


@dataclass(slots=True)
class Agent:
    """A chain of turns; a sub-agent starts ``start_delay_s`` after its launching response."""

    turns: list[Turn]
    start_delay_s: float = 0.0
    name: str = ""

    def all_turns(self) -> Iterator[Turn]:
        for turn in self.turns:
            yield turn
            for child in turn.children:
                yield from child.all_turns()


@dataclass(slots=True)
class Session:
    name: str
    root: Agent

    def trace_requests(self) -> list[tuple[float, Request]]:
        """The session's requests at their recorded send times (for statistics)."""
        out = []
        for i, turn in enumerate(self.root.all_turns()):
            t = turn.trace_time_s if turn.trace_time_s is not None else 0.0
            out.append((t, Request(i, t, turn.prompt_tokens, turn.output_tokens,
                                   turn.prefix_hashes, turn.hash_block_tokens)))
        out.sort(key=lambda x: x[0])
        return out

    def shifted(self, hash_offset: int, suffix: str) -> Session:
        """A copy whose block hashes are moved by ``hash_offset`` (a distinct user's session)."""
        return Session(self.name + suffix, _shift_agent(self.root, hash_offset))


def _shift_agent(agent: Agent, offset: int) -> Agent:
    turns = [replace(t, prefix_hashes=tuple(h + offset for h in t.prefix_hashes),
                     children=[_shift_agent(c, offset) for c in t.children])
             for t in agent.turns]
    return Agent(turns, agent.start_delay_s, agent.name)


# ---------------------------------------------------------------- synthetic sessions


def _dist(spec: Any, name: str) -> LengthDist:
    return parse_length(spec, f"workload.session.{name}")


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """Parameters of synthetic sessions (``workload.session`` in a config; all optional).

    A session picks one of ``num_system_prompts`` system prompts (sessions that pick the same one
    share its blocks), then runs ``turns`` user turns. Each user turn adds ``user_tokens`` to the
    history after an exponential think time of mean ``think_time_s``; after each response, with
    probability ``tool_call_prob`` the model called a tool (at most ``max_tool_calls`` times in a
    row): the next request adds ``tool_result_tokens`` after an exponential ``tool_time_s``.
    The session ends early when a prompt plus its output would exceed ``max_context_tokens``.
    """

    system_prompt_tokens: int = 1024
    num_system_prompts: int = 4
    turns: LengthDist = LengthDist("uniform", low=2, high=8)
    user_tokens: LengthDist = LengthDist("lognormal", mean=200, sigma=0.8, min=8, max=4096)
    output_tokens: LengthDist = LengthDist("lognormal", mean=250, sigma=0.8, min=1, max=2048)
    think_time_s: float = 10.0
    tool_call_prob: float = 0.0
    max_tool_calls: int = 8
    tool_result_tokens: LengthDist = LengthDist("lognormal", mean=500, sigma=1.0, min=1,
                                                max=8192)
    tool_time_s: float = 1.0
    max_context_tokens: int = 32768
    block_tokens: int = 16


_DIST_FIELDS = ("turns", "user_tokens", "output_tokens", "tool_result_tokens")
_CHECKS: dict[str, tuple[str, Any]] = {
    "system_prompt_tokens": (">= 0", lambda v: v >= 0),
    "num_system_prompts": (">= 1", lambda v: v >= 1),
    "think_time_s": (">= 0", lambda v: v >= 0),
    "tool_call_prob": ("in [0, 1)", lambda v: 0 <= v < 1),
    "max_tool_calls": (">= 0", lambda v: v >= 0),
    "tool_time_s": (">= 0", lambda v: v >= 0),
    "max_context_tokens": (">= 2", lambda v: v >= 2),
    "block_tokens": (">= 1", lambda v: v >= 1),
}


def parse_session_spec(spec: Mapping[str, Any] | None) -> SessionSpec:
    """Validate ``workload.session``; every error names the key and what is allowed."""
    spec = dict(spec or {})
    allowed = [f.name for f in fields(SessionSpec)]
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise WorkloadError(f"workload.session.{unknown[0]}: unknown key; "
                            f"allowed: {', '.join(allowed)}")
    kwargs: dict[str, Any] = {}
    for name, value in spec.items():
        if name in _DIST_FIELDS:
            kwargs[name] = _dist(value, name)
            continue
        rule, ok = _CHECKS[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise WorkloadError(f"workload.session.{name}: must be a number {rule} "
                                f"(got {value!r})")
        kwargs[name] = value
    return SessionSpec(**kwargs)


class SessionGenerator:
    """Draws synthetic sessions from a ``SessionSpec``; the same seed gives the same sessions."""

    def __init__(self, spec: SessionSpec, seed: int = 0):
        self.spec = spec
        self._rng = np.random.default_rng([seed, SESSION_SHAPES_STREAM])
        self._ids = itertools.count(1)  # fresh block ids; equal id = identical block content
        blocks = spec.system_prompt_tokens // spec.block_tokens
        self._system = [[next(self._ids) for _ in range(blocks)]
                        for _ in range(spec.num_system_prompts)]

    def __iter__(self) -> Iterator[Session]:
        for i in itertools.count():
            yield self.make(f"synthetic-{i}")

    def _draw(self, dist: LengthDist) -> int:
        return int(dist.sample(self._rng, 1)[0])

    def _extend(self, hashes: list[int], old_tokens: int, new_tokens: int) -> list[int]:
        """Keep the blocks wholly inside the old content; name the new full blocks afresh."""
        out = hashes[: old_tokens // self.spec.block_tokens]
        out += [next(self._ids) for _ in range(new_tokens // self.spec.block_tokens - len(out))]
        return out

    def make(self, name: str) -> Session:
        s, rng = self.spec, self._rng
        context = s.system_prompt_tokens
        hashes = list(self._system[int(rng.integers(s.num_system_prompts))])
        turns: list[Turn] = []
        for user_turn in range(self._draw(s.turns)):
            added = self._draw(s.user_tokens)
            delay = 0.0 if user_turn == 0 else float(rng.exponential(s.think_time_s))
            for tool_calls in itertools.count():
                prompt, output = context + added, self._draw(s.output_tokens)
                if prompt + output > s.max_context_tokens:
                    return Session(name, Agent(turns, name=name))
                prompt_hashes = self._extend(hashes, context, prompt)
                turns.append(Turn(prompt, output, tuple(prompt_hashes), delay, s.block_tokens))
                context = prompt + output
                hashes = self._extend(prompt_hashes, prompt, context)
                if tool_calls >= s.max_tool_calls or rng.random() >= s.tool_call_prob:
                    break
                added = self._draw(s.tool_result_tokens)
                delay = float(rng.exponential(s.tool_time_s))
        return Session(name, Agent(turns, name=name))


# ---------------------------------------------------------------- closed-loop replay

TURN_COLUMNS = ("request_id", "session_id", "user", "agent", "turn", "after_request_id",
                "ready_time", "delay")


class SessionLog:
    """One row per sent request: which session, user and agent sent it, after what, when ready.

    ``user`` is the closed-loop user (``workload.concurrency``) or NaN for Poisson starts;
    ``agent`` numbers the session's agents as they start (0 is the root); the request was sent
    at ``ready_time + delay``, ``ready_time`` being when ``after_request_id`` (the agent's
    previous request) and its sub-agents had finished.
    """

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.names: dict[int, str] = {}

    def frames(self, requests: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(turns, sessions): the turn log, and one row per session with its latency."""
        turns = pd.DataFrame(self.rows, columns=list(TURN_COLUMNS))
        merged = turns.merge(requests, on="request_id", how="left")
        end = merged["finish_time"].fillna(merged["arrival_time"])
        merged = merged.assign(end=end, e2el=merged["finish_time"] - merged["arrival_time"])
        g = merged.groupby("session_id")
        sessions = pd.DataFrame({
            "name": pd.Series(self.names),
            "requests": g.size(),
            "rejected": g["rejected"].sum().astype(int),
            "start_time": g["arrival_time"].min(),
            "end_time": g["end"].max(),
            "wait_time": g["e2el"].sum(),  # agent-seconds spent waiting on the server
            "think_time": g["delay"].sum(),
            "mean_ttft": g["ttft"].mean(),
        })
        sessions["duration"] = sessions["end_time"] - sessions["start_time"]
        sessions.index.name = "session_id"
        return turns, sessions.reset_index()


def session_summary(sessions: pd.DataFrame) -> dict:
    """Session-level numbers for ``Result.summary`` (seconds, like ``duration_s``)."""
    d = sessions["duration"].to_numpy(dtype=float)
    if not len(d):
        return {"num_sessions": 0}
    return {
        "num_sessions": int(len(d)),
        "mean_session_duration_s": float(d.mean()),
        "median_session_duration_s": float(np.median(d)),
        "p99_session_duration_s": float(np.percentile(d, 99)),
        "mean_session_wait_s": float(sessions["wait_time"].mean()),
    }


class SessionWorkload:
    """The workload process of closed-loop sessions (call it with the engine).

    Sessions start as a Poisson process at ``rate`` sessions/s, or, with ``concurrency``, as that
    many users each running sessions back to back. No new session starts once ``num_requests``
    requests were sent or ``duration_s`` has passed; sessions already running finish.
    ``think_time_scale`` multiplies every wait (think, tool, sub-agent start), then
    ``max_think_time_s`` caps it.
    """

    def __init__(self, sessions: Iterator[Session], *, rate: float = 1.0,
                 concurrency: int | None = None, num_requests: int | None = None,
                 duration_s: float | None = None, think_time_scale: float = 1.0,
                 max_think_time_s: float | None = None, seed: int = 0):
        self._sessions = iter(sessions)
        self.rate, self.concurrency = rate, concurrency
        self.num_requests, self.duration_s = num_requests, duration_s
        self.scale, self.cap = think_time_scale, max_think_time_s
        self._rng = np.random.default_rng([seed, SESSION_STARTS_STREAM])
        self._request_ids = itertools.count()
        self._session_ids = itertools.count()
        self.sent = 0
        self.log = SessionLog()

    def __call__(self, engine: Any) -> Iterator[simpy.Event]:
        env = engine.env
        if self.concurrency:
            for user in range(self.concurrency):
                env.process(self._user(engine, user))
            yield env.timeout(0)
            return
        while (session := self._next(env.now)) is not None:
            env.process(self._run(engine, session, None))
            yield env.timeout(float(self._rng.exponential(1.0 / self.rate)))

    def _user(self, engine: Any, user: int) -> Iterator[simpy.Event]:
        while (session := self._next(engine.env.now)) is not None:
            yield engine.env.process(self._run(engine, session, user))

    def _next(self, now: float) -> Session | None:
        if self.num_requests is not None and self.sent >= self.num_requests:
            return None
        if self.duration_s is not None and now >= self.duration_s:
            return None
        return next(self._sessions, None)

    def _delay(self, seconds: float) -> float:
        d = seconds * self.scale
        return d if self.cap is None else min(d, self.cap)

    def _run(self, engine: Any, session: Session, user: int | None) -> Iterator[simpy.Event]:
        sid = next(self._session_ids)
        self.log.names[sid] = session.name
        yield from self._agent(engine, session.root, (sid, user, itertools.count()))

    def _agent(self, engine: Any, agent: Agent, ctx: tuple) -> Iterator[simpy.Event]:
        env, (sid, user, agent_ids) = engine.env, ctx
        index = next(agent_ids)
        ready, after = env.now, math.nan
        for k, turn in enumerate(agent.turns):
            delay = self._delay(turn.delay_s)
            if ready + delay > env.now:
                yield env.timeout(ready + delay - env.now)
            req = Request(next(self._request_ids), env.now, turn.prompt_tokens,
                          turn.output_tokens, turn.prefix_hashes, turn.hash_block_tokens,
                          session_id=sid, client_id=user)
            self.log.rows.append((req.request_id, sid, math.nan if user is None else user,
                                  index, k, after, ready, delay))
            self.sent += 1
            yield engine.dispatch(req)
            ready, after = env.now, req.request_id
            if turn.children:
                yield env.all_of([env.process(self._child(engine, c, ctx)) for c in turn.children])
                ready = env.now

    def _child(self, engine: Any, agent: Agent, ctx: tuple) -> Iterator[simpy.Event]:
        yield engine.env.timeout(self._delay(agent.start_delay_s))
        yield from self._agent(engine, agent, ctx)


def synthetic_workload(wl: Any, seed: int) -> SessionWorkload:
    """The workload process for ``workload.arrival: sessions`` (``wl`` is the WorkloadConfig)."""
    if wl.num_sessions is None and wl.num_requests is None and wl.duration_s is None:
        raise WorkloadError("workload: set num_sessions, num_requests or duration_s")
    generator = iter(SessionGenerator(parse_session_spec(wl.session), seed))
    sessions = (generator if wl.num_sessions is None
                else itertools.islice(generator, wl.num_sessions))
    return SessionWorkload(sessions, rate=wl.rate, concurrency=wl.concurrency,
                           num_requests=wl.num_requests, duration_s=wl.duration_s,
                           think_time_scale=wl.think_time_scale,
                           max_think_time_s=wl.max_think_time_s, seed=seed)
