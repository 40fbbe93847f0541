"""Agentic session traces (kv-cache-tester JSON, a file or a folder of files): one session
per file, turns with think times, sub-agents, 64-token block hashes.
"""

from __future__ import annotations

from pathlib import Path

from sim.sessions import Agent, Session, Turn
from sim.traces.fields import TimeOrder, parse_hash_ids, parse_seconds, parse_tokens
from sim.traces.json_docs import JsonDoc
from sim.traces.rows import BadField, RowReport


def read_agentic(path: Path, report: RowReport, namespace: int) -> Session | None:
    """One kv-cache-tester session file: turns, think times, sub-agents, 64-token block hashes.

    Hash ids are local to a file (``hash_id_scope: local``), so they are moved into the file's
    own ``namespace`` (``namespace * 2**32 + id``): two files never share a block by accident.
    """
    doc = JsonDoc(path, report)
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

    def __init__(self, doc: JsonDoc, block_tokens: int, namespace: int):
        self.doc, self.block, self.ns = doc, block_tokens, namespace
        self.report = doc.report

    def read(self, rows: list, where: tuple, name: str, offset_s: float) -> Agent:
        agent = Agent([], name=name)
        order, last_t, last_end, children_end = TimeOrder("t"), None, None, None
        for i, row in enumerate(rows):
            loc = (*where, i)
            try:
                if not isinstance(row, dict):
                    raise BadField("not a JSON object")
                t = parse_seconds(row, "t")
                order.check(t, row)
                if row.get("type") == "subagent":
                    if self._subagent(row, loc, t, last_end, agent, offset_s):
                        children_end = t if children_end is None else max(children_end, t)
                    continue
                turn = self._turn(row, t, last_t, children_end)
            except BadField as bad:
                self.report.bad(self.doc.line_of(*loc), f"{_path(loc)}.{bad}")
                continue
            turn.trace_time_s = offset_s + t
            agent.turns.append(turn)
            last_t, children_end = t, None
            last_end = t + turn.api_time_s if turn.api_time_s is not None else None
        return agent

    def _turn(self, row: dict, t: float, last_t: float | None, children_end: float | None
              ) -> Turn:
        prompt, output = parse_tokens(row, "in"), parse_tokens(row, "out")
        hashes = parse_hash_ids(row, prompt, self.block, whole_blocks=True, namespace=self.ns)
        think = parse_seconds(row, "think_time")
        api = parse_seconds(row, "api_time") if row.get("api_time") is not None else None
        if last_t is None:
            delay = t  # the first request's offset from the agent's start (0 in these traces)
        elif children_end is not None:
            delay = max(0.0, t - children_end)
        else:
            delay = min(think, t - last_t)
        return Turn(prompt, output, hashes, delay, self.block, api_time_s=api, think_time_s=think)

    def _subagent(self, row: dict, loc: tuple, t: float, last_end: float | None, parent: Agent,
                  offset_s: float) -> bool:
        duration = parse_seconds(row, "duration_ms", scale=1e-3)
        if not isinstance(row.get("requests"), list):
            raise BadField("requests: a sub-agent needs a list of requests")
        if not parent.turns:
            raise BadField("type: a sub-agent before the agent's first request is not supported")
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
