"""Malformed traces: each defect gives its documented message (docs/workloads.md) and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sim
from sim.cli import app
from sim.traces import TraceError, TraceReader, TraceWarning

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
OK_AZURE = "2023-11-16 18:17:03.9799600,100,10\n"


def mooncake_row(t=0, n=600, out=5, hashes=(1, 2), **extra) -> str:
    row = {"timestamp": t, "input_length": n, "output_length": out, "hash_ids": list(hashes)}
    row.update(extra)
    return json.dumps({k: v for k, v in row.items() if v is not None}) + "\n"


# (file name, content, expected message after "FILE:")
CASES = [
    ("missing_column.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03,5\n",
     "1: missing column 'GeneratedTokens'; found: TIMESTAMP, ContextTokens"),
    ("empty_cell.csv", AZURE_HEADER + OK_AZURE + "2023-11-16 18:17:04,,10\n",
     "3: ContextTokens: missing field"),
    ("short_row.csv", AZURE_HEADER + OK_AZURE + OK_AZURE + "2023-11-16 18:17:05,7\n",
     "4: GeneratedTokens: missing field"),
    ("long_row.csv", AZURE_HEADER + "2023-11-16 18:17:05,7,8,9\n",
     "2: 4 fields; the header has 3"),
    ("not_number.csv", AZURE_HEADER + "2023-11-16 18:17:05,abc,8\n",
     "2: ContextTokens: not a number 'abc'"),
    ("not_integer.csv", AZURE_HEADER + "2023-11-16 18:17:05,12.5,8\n",
     "2: ContextTokens: not an integer '12.5'"),
    ("negative.csv", AZURE_HEADER + OK_AZURE * 3 + "2023-11-16 18:17:05,7,-5\n",
     "5: GeneratedTokens: negative length -5"),
    ("zero.csv", AZURE_HEADER + "2023-11-16 18:17:05,0,5\n",
     "2: ContextTokens: zero length (a request needs at least 1 token)"),
    ("bad_time.csv", AZURE_HEADER + "yesterday,5,5\n",
     "2: TIMESTAMP: not a date-time or a number 'yesterday'"),
    ("unsorted.csv", AZURE_HEADER + "2023-11-16 18:17:05,5,5\n2023-11-16 18:17:04,5,5\n",
     "3: TIMESTAMP: 2023-11-16 18:17:04 is earlier than the previous row's 2023-11-16 18:17:05 "
     "(the trace must be sorted by time)"),
    ("unsorted.jsonl", mooncake_row(2000) + mooncake_row(1000),
     "2: timestamp: 1000 is earlier than the previous row's 2000 (the trace must be sorted by "
     "time)"),
    ("not_json.jsonl", mooncake_row() + "{oops\n", "2: not valid JSON (Expecting property name "
     "enclosed in double quotes)"),
    ("negative_time.jsonl", mooncake_row(-3), "1: timestamp: must be a time >= 0 (got -3)"),
    ("missing_length.jsonl", mooncake_row() * 2 + mooncake_row(n=None),
     "3: input_length: missing field"),
    ("no_hashes.jsonl", mooncake_row(hashes=()).replace('"hash_ids": []', '"hash_ids": "x"'),
     "1: hash_ids: missing or not a list of non-negative integers"),
    ("many_hashes.jsonl", mooncake_row(n=1000, hashes=(1, 2, 3, 4, 5)),
     "1: hash_ids: 5 blocks for 1000 tokens; at most 2 (ceil(tokens / 512))"),
    ("burst.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
     "1,GPT-4,10,5,15,x\n2,GPT-4,10,0,10,x\n",
     "3: Response tokens: zero length (a request needs at least 1 token)"),
]


@pytest.mark.parametrize("name, content, message", CASES, ids=[c[0] for c in CASES])
def test_defect_message_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    fmt = "azure" if name == "missing_column.csv" else "auto"
    with pytest.raises(TraceError) as err:
        list(TraceReader(path, fmt).requests())
    assert str(err.value) == f"{path}:{message}"


def agentic_file(tmp_path: Path, bad_line: str) -> Path:
    """A session file written one request a line, so line numbers are known."""
    ok = ('{"t": 0, "type": "n", "in": 200, "out": 5, "hash_ids": [1, 2, 3], '
          '"think_time": 0, "api_time": 1.0}')
    lines = ['{"id": "s", "block_size": 64, "hash_id_scope": "local", "requests": [',
             ok + ",",
             '{"t": 9, "type": "subagent", "duration_ms": 4000, "requests": [',
             ok + ",",
             bad_line,
             "]},",
             ok.replace('"t": 0', '"t": 12'),
             "]}"]
    path = tmp_path / "session.json"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("bad, message", [
    ('{"t": 2, "type": "n", "out": 5, "hash_ids": [1], "think_time": 1}',
     "5: requests[1].requests[1].in: missing field"),
    ('{"t": 2, "type": "n", "in": 300, "out": -3, "hash_ids": [1], "think_time": 1}',
     "5: requests[1].requests[1].out: negative length -3"),
    ('{"t": 2, "type": "n", "in": 100, "out": 3, "hash_ids": [1, 2], "think_time": 1}',
     "5: requests[1].requests[1].hash_ids: 2 blocks for 100 tokens; at most 1 "
     "(floor(tokens / 64))"),
])
def test_agentic_defects_name_the_json_path_and_line(tmp_path, bad, message):
    path = agentic_file(tmp_path, bad)
    with pytest.raises(TraceError) as err:
        TraceReader(path).sessions()
    assert str(err.value) == f"{path}:{message}"


def test_agentic_skip_drops_only_the_bad_request(tmp_path):
    path = agentic_file(tmp_path, '{"t": 2, "type": "n", "out": 5, "hash_ids": [], '
                                  '"think_time": 1}')
    reader = TraceReader(path, on_bad_rows="skip")
    with pytest.warns(TraceWarning, match=r"skipped 1 bad rows: line 5: requests\[1\]"):
        (session,) = reader.sessions()
    assert len(session.root.turns) == 2 and len(session.root.turns[0].children[0].turns) == 1


def test_json_document_syntax_error_is_fatal_even_with_skip(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"requests": [\n{"t": 0,,}\n]}\n')
    with pytest.raises(TraceError, match=rf"^{path}:2: not valid JSON"):
        TraceReader(path, on_bad_rows="skip").sessions()


def test_sharegpt_defects(tmp_path):
    path = tmp_path / "sg.json"
    good = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    entries = [good, {"conversations": [{"from": "human", "value": "alone"}]},
               {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]}]
    path.write_text("[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n")
    with pytest.raises(TraceError) as err:
        list(TraceReader(path).requests())
    assert str(err.value) == (f"{path}:3: [1].conversations: needs a prompt and a reply "
                              "(at least 2 turns)")
    reader = TraceReader(path, on_bad_rows="skip")
    with pytest.warns(TraceWarning):
        assert len(list(reader.requests())) == 1
    assert [(b.line, b.message) for _, b in reader.bad_rows] == [
        (3, "[1].conversations: needs a prompt and a reply (at least 2 turns)"),
        (4, "[2].conversations[1].value: missing or empty text")]


def test_skip_reports_every_bad_row_with_its_line(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text(AZURE_HEADER + OK_AZURE + "x,1,1\n" + OK_AZURE + "2023-11-16 18:17:09,-1,4\n"
                    + OK_AZURE)
    reader = TraceReader(path, on_bad_rows="skip")
    with pytest.warns(TraceWarning, match=r"skipped 2 bad rows: line 3: TIMESTAMP: .*; line 5: "
                                          r"ContextTokens: negative length -1"):
        assert [r.request_id for r in reader.requests()] == [2, 4, 6]  # ids are line numbers
    assert [b.line for _, b in reader.bad_rows] == [3, 5]


def test_on_bad_rows_through_simulate(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(AZURE_HEADER + OK_AZURE * 3 + "2023-11-16 18:17:09,-1,4\n" + OK_AZURE)
    cfg = {"workload": {"arrival": "trace", "trace": str(path), "num_requests": None}}
    with pytest.raises(TraceError, match=r"bad.csv:5: ContextTokens: negative length -1"):
        sim.simulate(cfg)
    cfg["workload"]["on_bad_rows"] = "skip"
    with pytest.warns(TraceWarning, match="line 5"):
        result = sim.simulate(cfg)
    assert result.summary["completed"] == 4


def test_early_stop_still_reports_skipped_rows(tmp_path):
    """A replay capped by num_requests stops reading, but the rows it skipped are reported."""
    path = tmp_path / "bad.csv"
    path.write_text(AZURE_HEADER + OK_AZURE + "2023-11-16 18:17:09,-1,4\n" + OK_AZURE * 5)
    cfg = {"workload": {"arrival": "trace", "trace": str(path), "num_requests": 2,
                        "on_bad_rows": "skip"}}
    with pytest.warns(TraceWarning, match="line 3"):
        assert sim.simulate(cfg).summary["completed"] == 2


def test_cli_prints_the_message_and_exits_2(tmp_path):
    path = tmp_path / "neg.jsonl"
    path.write_text(mooncake_row() + mooncake_row(out=-2))
    result = CliRunner().invoke(app, ["trace", "stats", str(path)])
    assert result.exit_code == 2
    assert "neg.jsonl:2: output_length: negative length -2" in " ".join(result.output.split())
    skipped = CliRunner().invoke(app, ["trace", "stats", str(path), "--on-bad-rows", "skip"])
    assert skipped.exit_code == 0 and "skipped" in skipped.output and ":2: output_length" in (
        "".join(skipped.output.split("\n")))
