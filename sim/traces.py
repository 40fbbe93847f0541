"""Loaders of real LLM-serving traces, and the options to replay them open loop.

Every loader yields ``Request`` objects in arrival order, reading the file lazily where the format
allows (CSV, JSON Lines). Formats and their quirks are described in ``docs/workloads.md``:

========= ============================================= =========================================
format    file                                          what a row gives
========= ============================================= =========================================
azure     Azure LLM inference CSV (2023 and 2024)       TIMESTAMP, ContextTokens, GeneratedTokens
mooncake  Mooncake JSON Lines                           timestamp (ms), lengths, 512-token hashes
agentic   kv-cache-tester session JSON (file, folder)   sessions: turns, think time, sub-agents
vidur     Vidur length CSV                              lengths only (``arrived_at`` if present)
burstgpt  BurstGPT CSV                                  Timestamp (s), Request/Response tokens
sharegpt  ShareGPT JSON (vLLM's serving benchmark)      text; tokens = ceil(characters / 4)
========= ============================================= =========================================

A bad row (a missing field, a length that is not a positive integer, a timestamp earlier than
the one before) is never dropped silently: with ``on_bad_rows="error"`` (the default) the first
one raises ``TraceError`` naming the file, the line and the field; with ``"skip"`` each one is
recorded in ``TraceReader.bad_rows`` and a ``TraceWarning`` lists them once the file is read.
"""

from __future__ import annotations

import csv
import itertools
import json
import json.decoder
import json.scanner
import math
import warnings
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from sim.core import Request
from sim.sessions import Agent, Session, Turn
from sim.workload import arrival_times

FORMATS = ("azure", "mooncake", "agentic", "vidur", "burstgpt", "sharegpt")
MOONCAKE_BLOCK_TOKENS = 512
SHAREGPT_CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text and BPE tokenizers
TRACE_SAMPLE_STREAM = 103  # seed-stream ids (np.random.default_rng([seed, stream]))
TRACE_ARRIVAL_STREAM = 104
NAMESPACE_BITS = 32  # a file's local hash ids must stay below 2**32 to be made globally unique


class TraceError(ValueError):
    """A trace that cannot be read: one line, ``FILE:LINE: field: problem``."""


class TraceWarning(UserWarning):
    """Bad rows were skipped (``on_bad_rows: skip``); the message lists them with line numbers."""


class _Bad(Exception):
    """Raised inside a row parser; the reader adds the file and line."""


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    message: str


class RowReport:
    """Where bad rows go: raise at the first one (``error``) or keep them all (``skip``)."""

    def __init__(self, path: Path, on_bad_rows: str = "error"):
        if on_bad_rows not in ("error", "skip"):
            raise TraceError(f"workload.on_bad_rows: unknown '{on_bad_rows}'; allowed: error, skip")
        self.path, self.policy = path, on_bad_rows
        self.rows: list[BadRow] = []

    def bad(self, line: int | Callable[[], int], message: str) -> None:
        line_no = line() if callable(line) else line
        if self.policy == "error":
            raise TraceError(f"{self.path}:{line_no}: {message}")
        self.rows.append(BadRow(line_no, message))

    def fail(self, line: int, message: str) -> None:
        """A defect of the whole file (no header, not JSON): no option skips it."""
        raise TraceError(f"{self.path}:{line}: {message}")

    def warn(self) -> None:
        if not self.rows:
            return
        shown = "; ".join(f"line {r.line}: {r.message}" for r in self.rows[:5])
        more = f" (and {len(self.rows) - 5} more)" if len(self.rows) > 5 else ""
        warnings.warn(f"{self.path}: skipped {len(self.rows)} bad rows: {shown}{more}",
                      TraceWarning, stacklevel=3)


# ---------------------------------------------------------------- field parsing


def _field(row: dict, name: str) -> Any:
    value = row.get(name)
    if value is None or value == "":
        raise _Bad(f"{name}: missing field")
    return value


def _tokens(row: dict, name: str) -> int:
    """A token count: an integer >= 1 (``"12"``, ``12`` and ``"12.0"`` are accepted)."""
    raw = _field(row, name)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _Bad(f"{name}: not a number {raw!r}") from None
    if isinstance(raw, bool) or not value.is_integer():
        raise _Bad(f"{name}: not an integer {raw!r}")
    if value < 0:
        raise _Bad(f"{name}: negative length {int(value)}")
    if value == 0:
        raise _Bad(f"{name}: zero length (a request needs at least 1 token)")
    return int(value)


def _seconds(row: dict, name: str, scale: float = 1.0) -> float:
    raw = _field(row, name)
    try:
        value = float(raw) * scale
    except (TypeError, ValueError):
        raise _Bad(f"{name}: not a number {raw!r}") from None
    if isinstance(raw, bool) or not math.isfinite(value) or value < 0:
        raise _Bad(f"{name}: must be a time >= 0 (got {raw!r})")
    return value


_EPOCH = datetime(1970, 1, 1)


def _timestamp_s(row: dict, name: str) -> float:
    """Seconds from a number or an ISO date-time (Azure: ``2023-11-16 18:17:03.9799600``)."""
    raw = _field(row, name)
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise _Bad(f"{name}: not a finite time {raw!r}")
        return value
    try:
        stamp = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise _Bad(f"{name}: not a date-time or a number {raw!r}") from None
    if stamp.tzinfo is not None:  # 2024 files may carry +00:00; compare everything in UTC
        stamp = stamp.astimezone(timezone.utc).replace(tzinfo=None)
    return (stamp - _EPOCH).total_seconds()


def _hash_ids(row: dict, prompt_tokens: int, block_tokens: int, whole_blocks: bool,
              namespace: int = 0) -> tuple[int, ...]:
    ids = row.get("hash_ids")
    if not isinstance(ids, list) or (ids and (set(map(type, ids)) != {int} or min(ids) < 0)):
        raise _Bad("hash_ids: missing or not a list of non-negative integers")
    limit = prompt_tokens // block_tokens if whole_blocks else -(-prompt_tokens // block_tokens)
    if len(ids) > limit:
        rule = "floor" if whole_blocks else "ceil"
        raise _Bad(f"hash_ids: {len(ids)} blocks for {prompt_tokens} tokens; at most "
                   f"{limit} ({rule}(tokens / {block_tokens}))")
    if not namespace:
        return tuple(ids)
    if ids and max(ids) >= 1 << NAMESPACE_BITS:
        raise _Bad(f"hash_ids: id {max(ids)} too large to be made unique (limit 2**32)")
    return tuple(map((namespace << NAMESPACE_BITS).__add__, ids))


class _Order:
    """Checks that arrival times never go back; equal times are fine (Mooncake has many)."""

    def __init__(self, name: str):
        self.name, self.last, self.last_raw = name, -math.inf, None

    def check(self, t: float, row: dict) -> None:
        raw = row[self.name]  # shown as the file writes it (ms for Mooncake, a date for Azure)
        if t < self.last:
            raise _Bad(f"{self.name}: {raw} is earlier than the previous row's {self.last_raw} "
                       "(the trace must be sorted by time)")
        self.last, self.last_raw = t, raw


# ---------------------------------------------------------------- row formats (CSV, JSONL)


def _csv_rows(path: Path, report: RowReport, required: tuple[str, ...]
              ) -> Iterator[tuple[int, dict]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        if missing:
            report.fail(1, f"missing column '{missing[0]}'; found: {', '.join(columns) or 'none'}")
        for row in reader:
            if None in row:
                report.bad(reader.line_num, f"{len(columns) + len(row[None])} fields; the "
                           f"header has {len(columns)}")
                continue
            yield reader.line_num, row


def read_azure(path: Path, report: RowReport) -> Iterator[Request]:
    """Azure LLM inference traces (2023 Splitwise, 2024 DynamoLLM share the column set)."""
    order, t0 = _Order("TIMESTAMP"), None
    for line, row in _csv_rows(path, report, ("TIMESTAMP", "ContextTokens", "GeneratedTokens")):
        try:
            t = _timestamp_s(row, "TIMESTAMP")
            prompt, output = _tokens(row, "ContextTokens"), _tokens(row, "GeneratedTokens")
            order.check(t, row)
        except _Bad as bad:
            report.bad(line, str(bad))
            continue
        t0 = t if t0 is None else t0
        yield Request(line, t - t0, prompt, output)


def read_burstgpt(path: Path, report: RowReport) -> Iterator[Request]:
    """BurstGPT: ``Timestamp`` (s), ``Request tokens``, ``Response tokens`` (+ ``Session ID``).

    BurstGPT logs failed requests with 0 response tokens; they are bad rows (skip them with
    ``on_bad_rows: skip``), since a request that generates nothing is not a serving workload.
    """
    order = _Order("Timestamp")
    for line, row in _csv_rows(path, report, ("Timestamp", "Request tokens", "Response tokens")):
        try:
            t = _seconds(row, "Timestamp")
            prompt, output = _tokens(row, "Request tokens"), _tokens(row, "Response tokens")
            order.check(t, row)
        except _Bad as bad:
            report.bad(line, str(bad))
            continue
        sid = row.get("Session ID")
        session = int(sid) if sid and sid.isdigit() else None
        yield Request(line, t, prompt, output, session_id=session)


def read_vidur(path: Path, report: RowReport) -> Iterator[Request]:
    """Vidur's length CSVs; ``arrived_at`` (s), when the file has it, is the arrival time."""
    timed = _has_column(path, "arrived_at")
    order = _Order("arrived_at")
    for line, row in _csv_rows(path, report, ("num_prefill_tokens", "num_decode_tokens")):
        try:
            prompt = _tokens(row, "num_prefill_tokens")
            output = _tokens(row, "num_decode_tokens")
            t = _seconds(row, "arrived_at") if timed else 0.0
            if timed:
                order.check(t, row)
        except _Bad as bad:
            report.bad(line, str(bad))
            continue
        yield Request(line, t, prompt, output)


def read_mooncake(path: Path, report: RowReport) -> Iterator[Request]:
    """Mooncake: ``timestamp`` (ms), lengths, and one ``hash_ids`` entry per 512-token block."""
    order = _Order("timestamp")
    with path.open() as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = _json_row(text)
                t = _seconds(row, "timestamp", scale=1e-3)
                prompt, output = _tokens(row, "input_length"), _tokens(row, "output_length")
                hashes = _hash_ids(row, prompt, MOONCAKE_BLOCK_TOKENS, whole_blocks=False)
                order.check(t, row)
            except _Bad as bad:
                report.bad(line, str(bad))
                continue
            yield Request(line, t, prompt, output, prefix_hashes=hashes,
                          hash_block_tokens=MOONCAKE_BLOCK_TOKENS)


def _json_row(text: str) -> dict:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        raise _Bad(f"not valid JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise _Bad("not a JSON object")
    return row


def _has_column(path: Path, name: str) -> bool:
    with path.open(newline="") as f:
        return name in next(csv.reader(f), [])


# ---------------------------------------------------------------- JSON documents


class _Located(dict):
    """A parsed JSON object that remembers the line its ``{`` is on."""

    __slots__ = ("line",)


def _parse_with_lines(text: str) -> Any:
    """Parse JSON keeping each object's line: the pure-Python scanner, used only to name a line."""
    newlines = [i for i, c in enumerate(text) if c == "\n"]
    decoder = json.JSONDecoder()

    def parse_object(s_and_end, *args):
        obj, end = json.decoder.JSONObject(s_and_end, *args)
        located = _Located(obj)
        located.line = bisect_left(newlines, s_and_end[1] - 1) + 1
        return located, end

    decoder.parse_object = parse_object  # type: ignore[attr-defined]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder.decode(text)


class _JsonDoc:
    """A whole JSON file: parsed fast; re-parsed with positions only when a row is bad."""

    def __init__(self, path: Path, report: RowReport):
        self.report = report
        self.text = path.read_text()
        self._located: Any = None
        try:
            self.data = json.loads(self.text)
        except json.JSONDecodeError as err:
            report.fail(err.lineno, f"not valid JSON ({err.msg})")

    def line_of(self, *keys: str | int) -> Callable[[], int]:
        def find() -> int:
            if self._located is None:
                self._located = _parse_with_lines(self.text)
            node, line = self._located, 1
            for key in keys:
                node = node[key]
                line = getattr(node, "line", line)
            return line

        return find


def read_sharegpt(path: Path, report: RowReport) -> Iterator[Request]:
    """ShareGPT conversations: the first turn is the prompt, the second the output.

    No tokenizer is available offline, so lengths come from text by a fixed rule: ``ceil(len(text)
    / 4)`` tokens (at least 1), the usual 4-characters-a-token estimate for English.
    """
    doc = _JsonDoc(path, report)
    if not isinstance(doc.data, list):
        report.fail(1, "expected a JSON array of conversations")
    for i, entry in enumerate(doc.data):
        try:
            turns = entry.get("conversations") if isinstance(entry, dict) else None
            if not isinstance(turns, list) or len(turns) < 2:
                raise _Bad("conversations: needs a prompt and a reply (at least 2 turns)")
            prompt, output = (_text_tokens(turns[k], k) for k in (0, 1))
        except _Bad as bad:
            report.bad(doc.line_of(i), f"[{i}].{bad}")
            continue
        yield Request(i, 0.0, prompt, output)


def _text_tokens(turn: Any, k: int) -> int:
    text = turn.get("value") if isinstance(turn, dict) else None
    if not isinstance(text, str) or not text:
        raise _Bad(f"conversations[{k}].value: missing or empty text")
    return max(1, -(-len(text) // SHAREGPT_CHARS_PER_TOKEN))


def read_agentic(path: Path, report: RowReport, namespace: int) -> Session | None:
    """One kv-cache-tester session file: turns, think times, sub-agents, 64-token block hashes.

    Hash ids are local to a file (``hash_id_scope: local``), so they are moved into the file's
    own ``namespace`` (``namespace * 2**32 + id``): two files never share a block by accident.
    """
    doc = _JsonDoc(path, report)
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("requests"), list):
        report.fail(1, "expected a session object with a 'requests' list")
    block = data.get("block_size", 64)
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        report.fail(1, f"block_size: must be a positive integer (got {block!r})")
    ns = namespace if data.get("hash_id_scope", "local") == "local" else 0
    name = str(data.get("id", path.stem))
    root = _AgentReader(doc, block, ns).read(data["requests"], ("requests",), name, 0.0)
    return Session(name, root) if root.turns else None


class _AgentReader:
    """Turns one agent's request list into an ``Agent`` (sub-agents become child agents).

    Delays follow the trace's own clock: a turn waits ``think_time`` after the previous response
    (capped at the gap between the two send times, for rows whose response time is missing);
    a turn after sub-agents waits for the last of them, then ``t - (their latest end)``; a
    sub-agent (its ``t`` is when it ended) starts ``t - duration - (parent send + api_time)``
    after the response that launched it. The parent waits for its sub-agents, as the Task tool
    of the traced agent does.
    """

    def __init__(self, doc: _JsonDoc, block_tokens: int, namespace: int):
        self.doc, self.block, self.ns = doc, block_tokens, namespace
        self.report = doc.report

    def read(self, rows: list, where: tuple, name: str, offset_s: float) -> Agent:
        agent = Agent([], name=name)
        order, last_t, last_end, children_end = _Order("t"), None, None, None
        for i, row in enumerate(rows):
            loc = (*where, i)
            try:
                if not isinstance(row, dict):
                    raise _Bad("not a JSON object")
                t = _seconds(row, "t")
                order.check(t, row)
                if row.get("type") == "subagent":
                    if self._subagent(row, loc, t, last_end, agent, offset_s):
                        children_end = t if children_end is None else max(children_end, t)
                    continue
                turn = self._turn(row, t, last_t, children_end)
            except _Bad as bad:
                self.report.bad(self.doc.line_of(*loc), f"{_path(loc)}.{bad}")
                continue
            turn.trace_time_s = offset_s + t
            agent.turns.append(turn)
            last_t, children_end = t, None
            last_end = t + turn.api_time_s if turn.api_time_s is not None else None
        return agent

    def _turn(self, row: dict, t: float, last_t: float | None, children_end: float | None
              ) -> Turn:
        prompt, output = _tokens(row, "in"), _tokens(row, "out")
        hashes = _hash_ids(row, prompt, self.block, whole_blocks=True, namespace=self.ns)
        think = _seconds(row, "think_time")
        api = _seconds(row, "api_time") if row.get("api_time") is not None else None
        if last_t is None:
            delay = t  # the first request's offset from the agent's start (0 in these traces)
        elif children_end is not None:
            delay = max(0.0, t - children_end)
        else:
            delay = min(think, t - last_t)
        return Turn(prompt, output, hashes, delay, self.block, api_time_s=api, think_time_s=think)

    def _subagent(self, row: dict, loc: tuple, t: float, last_end: float | None, parent: Agent,
                  offset_s: float) -> bool:
        duration = _seconds(row, "duration_ms", scale=1e-3)
        if not isinstance(row.get("requests"), list):
            raise _Bad("requests: a sub-agent needs a list of requests")
        if not parent.turns:
            raise _Bad("type: a sub-agent before the agent's first request is not supported")
        start = t - duration
        child = self.read(row["requests"], (*loc, "requests"), str(row.get("agent_id", "")),
                          offset_s + start)
        if not child.turns:
            return False
        child.start_delay_s = max(0.0, start - last_end) if last_end is not None else 0.0
        parent.turns[-1].children.append(child)
        return True


def _path(loc: tuple) -> str:
    out = ""
    for key in loc:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out


# ---------------------------------------------------------------- detection and opening

_CSV_SIGNATURES = (
    ("azure", ("TIMESTAMP", "ContextTokens", "GeneratedTokens")),
    ("vidur", ("num_prefill_tokens", "num_decode_tokens")),
    ("burstgpt", ("Request tokens", "Response tokens")),
)


def detect_format(path: Path) -> str:
    """The format of a trace from its extension and first bytes (see the table above)."""
    if path.is_dir():
        return "agentic"
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "mooncake"
    if suffix == ".json":
        with path.open() as f:
            head = f.read(4096).lstrip()
        return "sharegpt" if head.startswith("[") else "agentic"
    if suffix == ".csv":
        with path.open(newline="") as f:
            columns = next(csv.reader(f), [])
        for fmt, needed in _CSV_SIGNATURES:
            if all(c in columns for c in needed):
                return fmt
        raise TraceError(f"workload.trace_format: cannot tell the format of '{path}' from its "
                         f"columns ({', '.join(columns)}); allowed: {', '.join(FORMATS)}")
    raise TraceError(f"workload.trace_format: cannot tell the format of '{path}' from its "
                     f"extension; allowed: {', '.join(FORMATS)}")


_READERS: dict[str, Callable[[Path, RowReport], Iterator[Request]]] = {
    "azure": read_azure,
    "mooncake": read_mooncake,
    "vidur": read_vidur,
    "burstgpt": read_burstgpt,
    "sharegpt": read_sharegpt,
}


class TraceReader:
    """One trace file (or a folder of agentic sessions), its format, and its bad rows."""

    def __init__(self, path: str | Path, fmt: str = "auto", on_bad_rows: str = "error"):
        self.path = Path(path)
        if not self.path.exists():
            raise TraceError(f"workload.trace: no such file or folder '{self.path}'")
        if fmt not in ("auto", *FORMATS):
            raise TraceError(f"workload.trace_format: unknown '{fmt}'; "
                             f"allowed: auto, {', '.join(FORMATS)}")
        self.format = detect_format(self.path) if fmt == "auto" else fmt
        self.on_bad_rows = on_bad_rows
        self.bad_rows: list[tuple[Path, BadRow]] = []
        self._sessions: list[Session] | None = None

    @property
    def is_sessions(self) -> bool:
        return self.format == "agentic"

    @property
    def timed(self) -> bool:
        """False for length-only traces: pair them with a synthetic arrival process."""
        if self.format == "vidur":
            return _has_column(self.path, "arrived_at")
        return self.format != "sharegpt"

    def files(self) -> list[Path]:
        if not self.path.is_dir():
            return [self.path]
        found = sorted(self.path.glob("*.json"))
        if not found:
            raise TraceError(f"workload.trace: no *.json session files in '{self.path}'")
        return found

    def requests(self) -> Iterator[Request]:
        """Every request in arrival order (sessions: each on its own trace clock from 0)."""
        if self.is_sessions:
            rows = [(t, r) for s in self.sessions() for t, r in s.trace_requests()]
            rows.sort(key=lambda x: x[0])
            for i, (_, req) in enumerate(rows):
                req.request_id = i
                yield req
            return
        report = RowReport(self.path, self.on_bad_rows)
        try:
            yield from _READERS[self.format](self.path, report)
        finally:
            self._done(report)

    def sessions(self) -> list[Session]:
        """The sessions of an agentic trace, one per file, each in its own hash namespace."""
        if not self.is_sessions:
            raise TraceError(f"workload.trace: '{self.path}' ({self.format}) has no sessions")
        if self._sessions is not None:
            return self._sessions
        out = []
        for i, f in enumerate(self.files()):
            report = RowReport(f, self.on_bad_rows)
            session = read_agentic(f, report, namespace=i + 1)
            self._done(report)
            if session is not None:
                out.append(session)
        self._sessions = out  # read once: sessions are replayed by reference, never changed
        return out

    def cycled_sessions(self, num_sessions: int | None) -> Iterator[Session]:
        """The sessions in file order, then again as new users (fresh hash namespaces)."""
        base = self.sessions()
        if not base:
            raise TraceError(f"workload.trace: '{self.path}' holds no usable session")
        for n in itertools.count() if num_sessions is None else range(num_sessions):
            copy, i = divmod(n, len(base))
            if num_sessions is None and copy:
                return
            yield base[i] if not copy else base[i].shifted(
                (copy * len(self.files())) << NAMESPACE_BITS, f"#{copy}")

    def _done(self, report: RowReport) -> None:
        self.bad_rows.extend((report.path, r) for r in report.rows)
        report.warn()


# ---------------------------------------------------------------- open-loop replay


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


# ---------------------------------------------------------------- config entry point


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
