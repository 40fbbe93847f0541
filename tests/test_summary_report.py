"""The printed summary (groups, goodput without an SLO, the two prefix-cache rates) and the
units every saved file records."""

from __future__ import annotations

import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from sim import simulate
from sim.cli import app
from sim.cli_summary import summary_report
from sim.units import parquet_units

SMALL = {"workload": {"num_requests": 40}}


def _text(result) -> str:
    console = Console(record=True, width=200)
    console.print(summary_report(result.summary, result.config))
    return console.export_text()


def test_every_saved_column_and_summary_key_has_its_unit(tmp_path):
    result = CliRunner().invoke(app, ["run", "--set", "workload.num_requests=30",
                                      "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    for name in ("requests", "steps"):
        units = parquet_units(tmp_path / f"{name}.parquet")
        import pandas as pd

        assert set(units) == set(pd.read_parquet(tmp_path / f"{name}.parquet").columns)
    requests = parquet_units(tmp_path / "requests.parquet")
    assert {requests[c] for c in ("arrival_time", "ttft", "e2el", "finish_time")} == {"s"}
    assert requests["prompt_tokens"] == "tokens"
    document = json.loads((tmp_path / "summary.json").read_text())
    numbers = {k for k in document if k not in ("units", "notes")}
    assert set(document["units"]) == numbers
    assert document["units"]["p99_ttft_ms"] == "ms"
    assert document["units"]["request_throughput"] == "req/s"
    assert "times in s" in result.output and "times in ms" in result.output


def test_rows_come_in_groups_and_goodput_without_slo_says_why():
    text = _text(simulate(SMALL))
    order = [text.index(g) for g in ("Requests", "Throughput", "Latency (ms)",
                                     "SLO and goodput", "KV cache and scheduling")]
    assert order == sorted(order)
    assert "n/a: no SLO" in text and "equal the request throughput" in text
    assert "Prefix cache" in text and "off" in text
    assert "seconds in requests.parquet" in text


def test_goodput_with_an_slo_names_the_targets():
    result = simulate({**SMALL, "slo": {"ttft_ms": 200, "tpot_ms": 50}})
    text = _text(result)
    assert "SLO: TTFT <= 200 ms, TPOT <= 50 ms" in text
    assert f"{result.summary['goodput']:.2f}" in text and "n/a" not in text


def _prefix_run(memory_utilization: float) -> dict:
    """Synthetic sessions sharing system prompts, through vLLM-style prefix caching."""
    return simulate({
        "seed": 3,
        "hardware": {"gpu_memory_utilization": memory_utilization},
        "kv_cache": {"enable_prefix_caching": True},
        "workload": {"arrival": "sessions", "rate": 4.0, "num_sessions": 30,
                     "num_requests": None,
                     "session": {"turns": 3, "think_time_s": 0.5,
                                 "system_prompt_tokens": 2048}},
    }).summary


def test_the_two_prefix_rates_agree_without_preemptions_and_part_with_them():
    """What the table's notes say: blocks count re-admissions after preemption, tokens count
    each request's first admission only."""
    roomy = _prefix_run(0.9)
    assert roomy["total_preemptions"] == 0 and roomy["prefix_cache_hit_rate"] > 0.3
    assert roomy["prefix_cache_block_hit_rate"] == pytest.approx(
        roomy["prefix_cache_hit_rate"], abs=0.02)
    tight = _prefix_run(0.22)  # a KV pool of about 5,000 tokens: preemptions
    assert tight["total_preemptions"] > 0
    assert tight["prefix_cache_block_hit_rate"] > tight["prefix_cache_hit_rate"] + 0.02
