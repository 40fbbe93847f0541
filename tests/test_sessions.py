"""Closed-loop sessions: agentic trace replay end to end, sub-agents, synthetic sessions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sim
from sim.sessions import (
    SessionGenerator,
    WorkloadError,
    parse_session_spec,
)

AGENTIC = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / \
    "weka_cc_agentic_traces"
SMALL_SESSIONS = ("trace_0022.json", "trace_0026.json", "trace_0040.json")  # 16 requests
EPS = 1e-9


def check_never_early(result) -> pd.DataFrame:
    """Every turn was sent exactly ``delay`` after it became ready, and it became ready only
    once the previous request of its agent (and that request's sub-agents) had finished."""
    turns, req = result.turns, result.requests.set_index("request_id")
    end = req["finish_time"].fillna(req["arrival_time"])  # a rejected request ends at once
    sent = req.loc[turns["request_id"], "arrival_time"].to_numpy()
    assert sent == pytest.approx(turns["ready_time"].to_numpy() + turns["delay"].to_numpy())
    follow = turns.dropna(subset=["after_request_id"])
    prev_end = end.loc[follow["after_request_id"].astype(int)].to_numpy()
    assert (follow["ready_time"].to_numpy() >= prev_end - EPS).all()
    assert (req.loc[follow["request_id"], "arrival_time"].to_numpy()
            >= prev_end + follow["delay"].to_numpy() - EPS).all()
    return turns


def test_agentic_sessions_replay_end_to_end(tmp_path):
    """Acceptance: three real sessions through ``sim.simulate`` with a config; per-session
    latency is reported, and no turn starts before the previous response plus think time."""
    for name in SMALL_SESSIONS:
        shutil.copy(AGENTIC / name, tmp_path / name)
    # trace_0040's prompts (256k tokens) exceed Llama-3.1-8B's 128k context: replay them as on
    # a long-context model, else they would be rejected (tested below).
    result = sim.simulate({"workload": {"arrival": "trace", "trace": str(tmp_path),
                                        "num_requests": None},
                           "scheduler": {"max_model_len": 300_000}})
    s = result.sessions
    assert s["name"].tolist() == ["trace_0022", "trace_0026", "trace_0040"]
    assert s["requests"].tolist() == [7, 3, 6] and (s["rejected"] == 0).all()
    assert (s["duration"] > s["think_time"]).all()  # think time plus time spent on the server
    assert np.isfinite(s[["duration", "wait_time", "mean_ttft"]].to_numpy()).all()
    assert result.summary["num_sessions"] == 3 and result.summary["completed"] == 16
    assert result.summary["mean_session_duration_s"] == pytest.approx(s["duration"].mean())
    turns = check_never_early(result)
    assert (turns.groupby("session_id")["turn"].max() + 1).tolist() == [7, 3, 6]
    # the prompts are the trace's, in order (trace_0026.json: in = 15291, 17401, 20068)
    sid = int(s.loc[s["name"] == "trace_0026", "session_id"].iloc[0])
    ids = turns.loc[turns["session_id"] == sid, "request_id"]
    prompts = result.requests.set_index("request_id").loc[ids, "prompt_tokens"].tolist()
    assert prompts == [15291, 17401, 20068]


SUBAGENT_SESSION = """{"id": "sub", "block_size": 64, "requests": [
{"t": 0, "type": "n", "in": 2000, "out": 40, "hash_ids": [1, 2, 3], "think_time": 0,
 "api_time": 2.0},
{"t": 30, "type": "subagent", "duration_ms": 27000, "requests": [
  {"t": 0, "type": "n", "in": 1000, "out": 30, "hash_ids": [9], "think_time": 0,
   "api_time": 1.5},
  {"t": 20, "type": "n", "in": 1500, "out": 20, "hash_ids": [9, 10], "think_time": 18.5,
   "api_time": 1.0}]},
{"t": 31, "type": "subagent", "duration_ms": 17000, "requests": [
  {"t": 0, "type": "n", "in": 800, "out": 10, "hash_ids": [20], "think_time": 0,
   "api_time": 1.0}]},
{"t": 34, "type": "n", "in": 3000, "out": 25, "hash_ids": [1, 2, 3, 4], "think_time": 32,
 "api_time": 3.0}
]}
"""


def test_subagents_run_in_parallel_and_block_their_parent(tmp_path):
    """Two sub-agents launched after the first response run side by side; the parent's next
    turn waits for both, then 34 - 31 = 3 s (t of a sub-agent record is when it ended)."""
    path = tmp_path / "sub.json"
    path.write_text(SUBAGENT_SESSION)
    result = sim.simulate({"workload": {"arrival": "trace", "trace": str(path),
                                        "num_requests": None}})
    turns = check_never_early(result).set_index("request_id")
    req = result.requests.set_index("request_id")
    assert turns["agent"].tolist() == [0, 1, 2, 1, 0]  # sent in this order: they overlap
    parent0, last = turns.index[0], turns.index[-1]
    children = turns.index[turns["agent"] > 0]
    firsts = children[turns.loc[children, "turn"] == 0]
    # sub-agents start (30 - 27) - 2 = 1 s and (31 - 17) - 2 = 12 s after the response
    starts = req.loc[firsts, "arrival_time"] - req.loc[parent0, "finish_time"]
    assert starts.tolist() == pytest.approx([1.0, 12.0])
    assert turns.loc[last, "ready_time"] == pytest.approx(req.loc[children, "finish_time"].max())
    assert turns.loc[last, "delay"] == pytest.approx(34 - 31)
    assert turns.loc[children, "delay"].tolist() == pytest.approx([0.0, 0.0, 18.5])


def test_session_copies_and_think_time_options():
    """trace_0026 waits 0, 48 and 4 s; halved then capped at 20 s: 0, 20, 2. Copies run as
    other users with fresh block hashes."""
    path = AGENTIC / "trace_0026.json"
    wl = {"arrival": "trace", "trace": str(path), "num_sessions": 3, "num_requests": None,
          "concurrency": 3, "think_time_scale": 0.5, "max_think_time_s": 20}
    result = sim.simulate({"workload": wl})
    assert result.sessions["name"].tolist() == ["trace_0026", "trace_0026#1", "trace_0026#2"]
    delays = result.turns.groupby("session_id")["delay"].apply(list).tolist()
    assert all(d == pytest.approx([0.0, 20.0, 2.0]) for d in delays)
    assert sorted(result.turns["user"].unique()) == [0, 1, 2]
    check_never_early(result)


def test_agentic_copies_have_fresh_hashes():
    from sim.traces import TraceReader

    copies = list(TraceReader(AGENTIC / "trace_0026.json").cycled_sessions(2))
    a, b = ({h for t in s.root.all_turns() for h in t.prefix_hashes} for s in copies)
    assert len(a) == len(b) > 0 and not a & b


def test_synthetic_session_shapes():
    spec = parse_session_spec({"system_prompt_tokens": 256, "num_system_prompts": 2,
                               "turns": 4, "user_tokens": 100, "output_tokens": 50,
                               "tool_call_prob": 0.5, "tool_result_tokens": 300,
                               "max_context_tokens": 100_000})
    gen, gen_again = SessionGenerator(spec, seed=7), SessionGenerator(spec, seed=7)
    sessions = [gen.make(str(i)) for i in range(40)]
    again = [gen_again.make(str(i)) for i in range(40)]
    assert [[t.prompt_tokens for t in s.root.turns] for s in sessions] == \
        [[t.prompt_tokens for t in s.root.turns] for s in again]
    system_prefixes = {s.root.turns[0].prefix_hashes[:16] for s in sessions}
    assert len(system_prefixes) == 2  # 256 / 16 shared blocks, one of two system prompts
    tool_loops = 0
    for s in sessions:
        turns = s.root.turns
        for prev, turn in zip(turns, turns[1:], strict=False):
            added = turn.prompt_tokens - prev.prompt_tokens - prev.output_tokens
            assert added in (100, 300)  # a user message or a tool result on top of the history
            tool_loops += added == 300
            kept = (prev.prompt_tokens + prev.output_tokens) // 16
            full_prompt_blocks = prev.prompt_tokens // 16
            assert turn.prefix_hashes[:full_prompt_blocks] == prev.prefix_hashes
            assert len(turn.prefix_hashes) == turn.prompt_tokens // 16 >= kept
        assert turns[0].delay_s == 0
    assert tool_loops > 0
    assert all(len(s.root.turns) >= 4 for s in sessions)


def test_synthetic_sessions_respect_the_context_cap():
    spec = parse_session_spec({"turns": 50, "max_context_tokens": 4000})
    for session in list(zip(range(20), SessionGenerator(spec, seed=1), strict=False)):
        turns = session[1].root.turns
        assert all(t.prompt_tokens + t.output_tokens <= 4000 for t in turns)
        assert len(turns) < 50


@pytest.mark.parametrize("spec, message", [
    ({"turnz": 3}, "workload.session.turnz: unknown key; allowed: system_prompt_tokens"),
    ({"tool_call_prob": 1.5}, r"workload.session.tool_call_prob: must be a number in \[0, 1\)"),
    ({"turns": {"dist": "zipf"}}, "workload.session.turns.dist: unknown 'zipf'"),
])
def test_session_spec_errors(spec, message):
    with pytest.raises(WorkloadError, match=message):
        parse_session_spec(spec)
    with pytest.raises(ValueError, match=message.split(":")[0]):
        sim.load_config({"workload": {"arrival": "sessions", "session": spec}})


def test_synthetic_sessions_through_simulate():
    """Two users run six sessions back to back: a user's sessions never overlap in time."""
    cfg = {"workload": {"arrival": "sessions", "concurrency": 2, "num_sessions": 6,
                        "num_requests": None,
                        "session": {"turns": 3, "user_tokens": 64, "output_tokens": 32,
                                    "think_time_s": 2.0, "tool_call_prob": 0.3}}}
    result = sim.simulate(cfg)
    s, turns = result.sessions, check_never_early(result)
    assert len(s) == 6 and result.summary["rejected"] == 0
    assert result.summary["completed"] == len(turns) >= 18
    users = turns.groupby("session_id")["user"].first()
    spans = s.set_index("session_id").assign(user=users).sort_values("start_time")
    assert sorted(spans["user"].unique()) == [0, 1]
    for _, mine in spans.groupby("user"):
        assert (mine["start_time"].to_numpy()[1:] >= mine["end_time"].to_numpy()[:-1]).all()


def test_no_session_starts_after_the_request_cap():
    """Sessions start every 10 ms; once 10 requests were sent none starts, and the sessions
    already running still send all their turns."""
    cfg = {"workload": {"arrival": "sessions", "rate": 100.0, "num_requests": 10,
                        "session": {"turns": 4, "think_time_s": 0.1}}}
    result = sim.simulate(cfg)
    s = result.sessions
    assert (s["requests"] == 4).all() and result.summary["completed"] == 4 * len(s)
    last_start = s["start_time"].max()
    sent_before = (result.requests["arrival_time"] < last_start).sum()
    assert sent_before < 10 <= len(result.requests)


def test_docs_examples_are_valid_configs():
    """Every YAML example in docs/workloads.md is a valid config."""
    import re

    import yaml

    docs = (Path(__file__).resolve().parents[1] / "docs" / "workloads.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", docs, flags=re.S)
    assert len(blocks) == 3
    for block in blocks:
        sim.load_config(yaml.safe_load(block))
