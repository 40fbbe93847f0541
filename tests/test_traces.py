"""Trace loaders against the real files in ../shared/traces, replay options, and the CLI.

The expected numbers are the ones ../shared/traces/README.md states (rounded as it rounds them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import sim
from sim.cli import app
from sim.cli_trace import trace_stats
from sim.traces import Replay, TraceError, TraceReader, detect_format, replay

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
AGENTIC = TRACES / "weka_cc_agentic_traces"


def test_shared_traces_are_present():
    """The folder is part of the test setup: its absence is a failure, never a skip."""
    assert (TRACES / "README.md").is_file(), f"missing {TRACES}"
    assert len(list(AGENTIC.glob("*.json"))) == 29


def near(actual: float | None, expected: float, decimals: int = 0) -> bool:
    """``actual`` rounds to ``expected`` at the README's precision."""
    return actual is not None and abs(actual - expected) <= 0.5 * 10 ** -decimals + 1e-9


# file, format, rows, span_s, rate, cv, (prompt mean/p50/p90/p99/max), (output ...),
# (block refs, distinct blocks, hit %)
README = [
    ("AzureLLMInferenceTrace_code.csv", "azure", 8819, 3436, (2.57, 2), (13.2, 1),
     (2048, 1469, 5188, 7436, 7437), ((27.9, 1), 13, 55, 251, 1899), None),
    ("AzureLLMInferenceTrace_conv.csv", "azure", 19366, 3502, (5.53, 2), (1.09, 2),
     (1155, 1020, 2734, 4142, 14050), (211, 129, 424, 601, 1000), None),
    ("mooncake_conversation_trace.jsonl", "mooncake", 12031, 3537, (3.40, 2), (3.0, 1),
     (12035, 6909, 27367, 85400, 126195), (343, 350, 597, 1119, 2000), (288500, 182790, 36.6)),
    ("mooncake_synthetic_trace.jsonl", "mooncake", 3993, 1022, (3.91, 2), (1.01, 2),
     (15325, 11587, 38611, 66456, 191378), (149, 69, 389, 768, 893), (121877, 43924, 64.0)),
    ("vidur_arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv", "vidur", 28257, None,
     None, None, (2588, 2730, 3702, 3933, 4054), (291, 167, 372, 3271, 4056), None),
]


def check_dist(dist: dict, expected: tuple) -> None:
    for key, value in zip(("mean", "p50", "p90", "p99", "max"), expected, strict=True):
        value, decimals = value if isinstance(value, tuple) else (value, 0)
        assert near(dist[key], value, decimals), (key, dist[key], value)


@pytest.mark.parametrize("row", README, ids=[r[0].split(".")[0] for r in README])
def test_readme_statistics(row):
    name, fmt, rows, span, rate, cv, prompt, output, blocks = row
    s = trace_stats(TRACES / name)
    assert s.format == fmt and s.requests == rows and not s.bad_rows
    if span is None:
        assert s.span_s is None and s.rate is None and s.gap_cv is None
    else:
        assert near(s.span_s, span) and near(s.rate, *rate) and near(s.gap_cv, *cv)
    check_dist(s.prompt_tokens, prompt)
    check_dist(s.output_tokens, output)
    if blocks is None:
        assert s.prefix_hit_fraction is None
    else:
        assert (s.block_refs, s.distinct_blocks) == blocks[:2]
        assert near(100 * s.prefix_hit_fraction, blocks[2], 1)
        assert s.hash_block_tokens == 512


def test_readme_statistics_agentic_sessions():
    s = trace_stats(AGENTIC)
    assert s.format == "agentic" and s.requests == 1143 and not s.bad_rows
    check_dist(s.prompt_tokens, (86501, 81568, 139191, 258016, 451691))
    check_dist(s.output_tokens, (443, 267, 893, 3308, 9183))
    ss = s.sessions
    assert ss["sessions"] == 29 and ss["subagents"] == 5
    assert near(100 * ss["mean_within_session_hit_fraction"], 89.7, 1)
    assert near(100 * ss["min_within_session_hit_fraction"], 62)
    assert near(ss["api_time_s"]["mean"], 9.9, 1) and near(ss["api_time_s"]["p50"], 7.4, 1)
    think = ss["think_time_s"]
    assert near(think["p50"], 10) and near(think["p90"], 91) and near(think["max"], 77589)
    spans = ss["span_s"]
    assert near(spans["p50"] / 60, 34) and near(spans["min"] / 60, 1.7, 1)
    assert near(spans["max"] / 3600, 21.9, 1)
    assert s.hash_block_tokens == 64


def test_agentic_hashes_are_unique_per_file():
    sessions = TraceReader(AGENTIC).sessions()
    blocks = [{h for t in s.root.all_turns() for h in t.prefix_hashes} for s in sessions]
    assert sum(map(len, blocks)) == len(set().union(*blocks))  # no block shared across files
    first = sessions[0].root.turns
    assert first[1].prefix_hashes[:100] == first[0].prefix_hashes[:100]  # history is a prefix


def test_agentic_subagent_timing_from_trace_0010():
    """Waits come from the trace clock: sub-agent start after its launching response, and the
    parent's next turn after the last sub-agent (numbers read off trace_0010.json)."""
    root = TraceReader(AGENTIC / "trace_0010.json").sessions()[0].root
    first = root.turns[0]
    assert [len(t.children) for t in root.turns if t.children] == [1, 3]
    child = first.children[0]
    assert child.start_delay_s == pytest.approx(100.65 - 91.243 - 8.81)  # start - (t + api)
    assert len(child.turns) == 7 and child.turns[1].delay_s == 5.0
    assert root.turns[1].delay_s == pytest.approx(107.0 - 100.65)
    three = next(t for t in root.turns if len(t.children) == 3)
    after = root.turns[root.turns.index(three) + 1]
    assert after.delay_s == pytest.approx(772.0 - 760.094)


def test_detect_format(tmp_path):
    for name, fmt in [(r[0], r[1]) for r in README]:
        assert detect_format(TRACES / name) == fmt
    assert detect_format(AGENTIC) == detect_format(AGENTIC / "trace_0001.json") == "agentic"
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(TraceError, match="workload.trace_format: cannot tell"):
        detect_format(tmp_path / "x.txt")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_burstgpt_loader(tmp_path):
    f = write(tmp_path / "burst.csv",
              "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,"
              "Total tokens,Log Type\n"
              "5,11,1.2,ChatGPT,472,18,490,Conversation log\n"
              "7.5,12,0.8,GPT-4,1087,230,1317,API log\n")
    reqs = list(TraceReader(f).requests())
    assert detect_format(f) == "burstgpt"
    assert [(r.arrival_time, r.prompt_tokens, r.output_tokens, r.session_id) for r in reqs] == [
        (5.0, 472, 18, 11), (7.5, 1087, 230, 12)]


def test_burstgpt_failed_requests_are_reported_not_dropped(tmp_path):
    f = write(tmp_path / "burst.csv", "Timestamp,Model,Request tokens,Response tokens,"
              "Total tokens,Log Type\n1,GPT-4,100,0,100,Conversation log\n2,GPT-4,50,5,55,x\n")
    with pytest.raises(TraceError, match=r"burst.csv:2: Response tokens: zero length"):
        list(TraceReader(f).requests())
    reader = TraceReader(f, on_bad_rows="skip")
    with pytest.warns(UserWarning, match="skipped 1 bad rows: line 2"):
        assert [r.prompt_tokens for r in reader.requests()] == [50]


def test_sharegpt_loader_counts_characters(tmp_path):
    data = [{"id": "a", "conversations": [{"from": "human", "value": "x" * 12},
                                          {"from": "gpt", "value": "y" * 13}]},
            {"id": "b", "conversations": [{"from": "human", "value": "hi"},
                                          {"from": "gpt", "value": "z" * 400},
                                          {"from": "human", "value": "more"}]}]
    f = write(tmp_path / "sg.json", json.dumps(data, indent=2))
    reader = TraceReader(f)
    assert reader.format == "sharegpt" and not reader.timed
    assert [(r.prompt_tokens, r.output_tokens) for r in reader.requests()] == [(3, 4), (1, 100)]


def test_azure_2024_timestamps_with_offset(tmp_path):
    f = write(tmp_path / "az24.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
              "2024-05-10 00:00:00.009930+00:00,100,10\n2024-05-10 00:00:01.509930+00:00,200,20\n")
    assert [r.arrival_time for r in TraceReader(f).requests()] == pytest.approx([0.0, 1.5])


def times(reqs) -> np.ndarray:
    return np.array([r.arrival_time for r in reqs])


def conv(**kw):
    reader = TraceReader(TRACES / "AzureLLMInferenceTrace_conv.csv")
    return list(replay(reader.requests(), True, Replay(**kw)))


def test_time_scale_window_and_sample():
    base = times(conv())
    assert base[0] == 0.0 and len(base) == 19366
    assert times(conv(time_scale=2.0)) == pytest.approx(base / 2)
    window = conv(window=(600.0, 900.0))
    t = times(window)
    assert len(t) == int(((base >= 600) & (base < 900)).sum()) and 0 <= t.min() and t.max() < 300
    assert [r.request_id for r in window] == list(range(len(window)))  # renumbered
    half = conv(sample=0.5, seed=3)
    assert abs(len(half) - 19366 / 2) < 4 * np.sqrt(19366 / 4)
    assert [r.arrival_time for r in half] == [r.arrival_time for r in conv(sample=0.5, seed=3)]
    assert len(conv(num_requests=10)) == 10
    assert times(conv(duration_s=60.0)).max() <= 60.0


def gap_cv(t: np.ndarray) -> float:
    gaps = np.diff(t)
    return gaps.std() / gaps.mean()


def test_trace_rate_keeps_burstiness():
    """Rescaling the Azure code trace (CV 13.2) to 20 req/s keeps its CV exactly."""
    reader = TraceReader(TRACES / "AzureLLMInferenceTrace_code.csv")
    base = times(reader.requests())
    scaled = times(replay(reader.requests(), True, Replay(target_rate=20.0)))
    assert (len(scaled) - 1) / (scaled[-1] - scaled[0]) == pytest.approx(20.0)
    assert gap_cv(scaled) == pytest.approx(gap_cv(base)) and gap_cv(scaled) > 13


def test_length_only_trace_gets_synthetic_arrivals():
    reader = TraceReader(TRACES / README[4][0])
    reqs = list(replay(reader.requests(), reader.timed, Replay(rate=4.0, num_requests=4000)))
    t = times(reqs)
    assert len(reqs) == 4000 and (len(t) - 1) / (t[-1] - t[0]) == pytest.approx(4.0, rel=0.05)
    assert gap_cv(t) == pytest.approx(1.0, abs=0.05)  # Poisson
    assert reqs[0].prompt_tokens == 3772  # file order is kept


def base_config(**workload) -> dict:
    return {"workload": {"arrival": "trace", **workload}}


def test_trace_replay_through_simulate():
    cfg = base_config(trace=str(TRACES / "mooncake_synthetic_trace.jsonl"), window=[0, 20],
                      num_requests=None)
    expected = [r for r in TraceReader(TRACES / "mooncake_synthetic_trace.jsonl").requests()
                if r.arrival_time < 20]
    result = sim.simulate(cfg)
    assert result.summary["completed"] + result.summary["rejected"] == len(expected)
    req = result.requests.sort_values("request_id")
    assert req["arrival_time"].tolist() == pytest.approx([r.arrival_time for r in expected])
    assert req["prompt_tokens"].tolist() == [r.prompt_tokens for r in expected]


@pytest.mark.parametrize("workload, message", [
    ({}, "workload.trace: arrival 'trace' needs"),
    ({"trace": "nowhere.csv"}, "workload.trace: no such file"),
    ({"trace": "VIDUR", "window": [0, 5]}, "workload.window: .* has no timestamps"),
    ({"trace": "CONV", "time_scale": 2, "trace_rate": 5}, "set either time_scale or trace_rate"),
    ({"trace": "AGENTIC", "sample": 0.5}, "workload.sample: not used by session traces"),
    ({"trace": "CONV", "window": [5, 1]}, r"workload.window: needs 0 <= start_s < end_s"),
])
def test_trace_config_errors(workload, message):
    paths = {"VIDUR": TRACES / README[4][0], "CONV": TRACES / README[1][0], "AGENTIC": AGENTIC}
    if "trace" in workload:
        workload["trace"] = str(paths.get(workload["trace"], workload["trace"]))
    with pytest.raises(ValueError, match=message):
        sim.simulate(base_config(**workload))


def test_servesim_run_with_a_trace(tmp_path):
    """``workload.arrival: trace`` through the command line, on 30 s of the Azure conv trace."""
    trace = TRACES / "AzureLLMInferenceTrace_conv.csv"
    result = CliRunner().invoke(app, [
        "run", "--set", "workload.arrival=trace", "--set", f"workload.trace={trace}",
        "--set", "workload.window=[0, 30]", "--set", "workload.num_requests=null",
        "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    in_window = sum(r.arrival_time < 30 for r in TraceReader(trace).requests())
    assert summary["completed"] + summary["rejected"] == in_window


def test_servesim_trace_stats_prints_the_numbers():
    result = CliRunner().invoke(app, ["trace", "stats",
                                      str(TRACES / "mooncake_conversation_trace.jsonl")])
    assert result.exit_code == 0, result.output
    for text in ("12,031", "3.40", "3.03", "36.6%", "288,500 / 182,790", "Prefix-cache hit"):
        assert text in result.output
    as_json = CliRunner().invoke(app, ["trace", "stats", "--json",
                                       str(TRACES / "AzureLLMInferenceTrace_code.csv")])
    assert json.loads(as_json.output)["requests"] == 8819
