"""The optimization study (sim/studies): every claim runs at CI size, yields a measured number
and a verdict computed from its conditions, and the report carries a row for each claim."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.studies import (
    CANNOT_JUDGE,
    CLAIM_MODULES,
    HOLDS,
    HOLDS_ONLY_WHEN,
    REFUTED,
    VERDICTS,
    Condition,
    judge,
    run_all,
)
from sim.studies.common import grouped_conditions, latency_stats, saturated_throughput
from sim.studies.report import ReportMeta, markdown, write_report


@pytest.fixture(scope="module")
def results():
    """Every claim at quick scale, once for the whole module (the expensive part)."""
    return run_all("quick")


def by_number(results, n):
    return next(r for r in results if r.number == n)


# ---- the verdict rule ---------------------------------------------------------------------
def test_judge_all_some_none_and_unjudgeable():
    ok, bad, unknown = (Condition("a", 1.0, "x", True), Condition("b", 0.5, "x", False),
                        Condition("c", math.nan, "", None))
    assert judge([ok, ok, unknown])[0] == HOLDS
    assert judge([bad, bad])[0] == REFUTED
    assert judge([unknown])[0] == CANNOT_JUDGE
    verdict, detail = judge([ok, bad, unknown])
    assert verdict == HOLDS_ONLY_WHEN
    assert "passes: a" in detail and "fails: b" in detail


def test_grouped_conditions_merge_runs_of_equal_outcome():
    conds = grouped_conditions("batch", [1, 2, 4, 8], [0.9, 0.8, 0.4, 0.3],
                               [True, True, False, False], "share")
    assert [c.label for c in conds] == ["batch 1-2", "batch 4-8"]
    assert conds[0].value == 0.8 and conds[1].value == 0.4  # the edge nearest the bar
    assert [c.passed for c in conds] == [True, False]


def test_saturated_throughput_ignores_the_drain():
    # two requests start at 0, a third waits until t=10; after t=10 one long answer drains
    df = pd.DataFrame({
        "arrival_time": [0.0, 0.0, 0.0], "first_scheduled_time": [0.0, 0.0, 10.0],
        "first_token_time": [1.0, 1.0, 11.0], "finish_time": [10.0, 10.0, 100.0],
        "output_tokens": [10, 10, 10], "rejected": [False, False, False]})
    df["ttft"] = df["first_token_time"] - df["arrival_time"]
    df["e2el"] = df["finish_time"] - df["arrival_time"]
    df["tpot"] = (df["finish_time"] - df["first_token_time"]) / 9
    assert saturated_throughput(df) == pytest.approx(20 / 10)
    stats = latency_stats(df, skip_first=2)
    assert stats["requests_measured"] == 1 and stats["mean_ttft_ms"] == pytest.approx(11000)


# ---- the studies at CI size -----------------------------------------------------------------
# Each claim's verdict and the outcome of each of its conditions, in order, at CI size: a
# change to the simulator that flips one must update this table (and say why).
QUICK_OUTCOMES = {
    1: (HOLDS_ONLY_WHEN, [True, False, True]),  # decode memory bound; a 16-token prefill is not
    2: (REFUTED, [False, False]),  # continuous batching gains less than the claimed 23x
    3: (HOLDS, [True, True]),
    4: (REFUTED, [False]),  # 2048-token prompts, 90% shared, low load: below the bar
    5: (HOLDS_ONLY_WHEN, [True, True, True, True, True, True, False, False]),
    6: (HOLDS_ONLY_WHEN, [True, False, None]),
    7: (HOLDS, [True, True]),  # quick scale: fp8 KV 1.11x at 16 clients (measured kernel curves)
    # fp8 GEMMs pay their measured activation-quantization kernels: batch-1 decode 1.41x (not
    # the bar) over bf16, and W4A16 int4 (none) 1.99x over fp8
    8: (HOLDS_ONLY_WHEN, [True, False, False, True, True, False, True, False]),
    9: (HOLDS, [True, True]),
    10: (HOLDS, [True, True, True, True]),
    # naive static serving meets the SLOs only at 0.6% of its capacity: a degenerate baseline,
    # not judged at the SLOs (#26); at capacity the full stack is 4.95x cheaper, below the bar
    11: (REFUTED, [None, False]),
}
# The verdicts of the committed full-scale report (docs/studies/optimizations.md).
FULL_VERDICTS = {1: HOLDS_ONLY_WHEN, 2: REFUTED, 3: HOLDS_ONLY_WHEN, 4: HOLDS_ONLY_WHEN,
                 5: HOLDS_ONLY_WHEN, 6: HOLDS_ONLY_WHEN, 7: HOLDS_ONLY_WHEN, 8: HOLDS_ONLY_WHEN,
                 9: HOLDS_ONLY_WHEN, 10: HOLDS, 11: REFUTED}  # 11: its one pass was degenerate


def _verdict_by_hand(outcomes: list[bool | None]) -> str:
    """The rule the report states, written out apart from ``judge``."""
    judged = [o for o in outcomes if o is not None]
    if not judged:
        return CANNOT_JUDGE
    if all(judged):
        return HOLDS
    return HOLDS_ONLY_WHEN if any(judged) else REFUTED


def test_every_claim_has_a_measured_number_and_a_pinned_verdict(results):
    assert [r.number for r in results] == sorted(CLAIM_MODULES) == list(range(1, 12))
    for r in results:
        assert r.verdict in VERDICTS, r.number
        outcomes = [c.passed for c in r.conditions]
        assert (r.verdict, outcomes) == QUICK_OUTCOMES[r.number], (r.number, r.conditions)
        assert r.verdict == _verdict_by_hand(outcomes), r.number
        assert isinstance(r.headline.value, float) and not math.isnan(r.headline.value), r.number
        assert r.conditions and len(r.table), r.number
        assert all(c.passed in (True, False, None) for c in r.conditions)
        assert r.figure is not None and r.rule and r.setup


def test_studies_measure_the_expected_directions(results):
    roof = by_number(results, 1).table
    assert roof[(roof["phase"] != "prefill") & (roof["size"] == 1)]["memory_share"].min() > 0.5
    long_prefill = roof[(roof["phase"] == "prefill") & (roof["size"] == 8192)]
    assert 1 - long_prefill["memory_share"].max() > 0.5
    kv_table = by_number(results, 5).table
    paged = kv_table[kv_table["setting"] == kv_table["setting"].iloc[0]].set_index("kv")
    assert paged.loc["paged", "waste"] < 0.05 < paged.loc["contiguous, max length", "waste"]
    heads = by_number(results, 6).table
    assert heads[heads["model"] == "llama-3.1-70b"]["factor"].iloc[0] == pytest.approx(8.0)
    kv = by_number(results, 7).table.set_index("kv_dtype")
    assert kv.loc["fp8", "kv_bytes_per_token_vs_bf16"] == pytest.approx(0.5)
    spec = by_number(results, 9).table
    assert spec[spec["clients"] == 1]["speedup"].iloc[0] > 1
    example = by_number(results, 10).table.set_index("rung")
    assert example["min_h100"].iloc[-1] <= 2 and example["kv_tokens_needed"].iloc[-1] < 100_000


def test_report_has_a_row_per_claim_and_one_plotly_bundle(results, tmp_path):
    meta = ReportMeta.collect("servesim study optimizations --quick", "quick", 1.0)
    md_path, html_path = write_report(results, tmp_path, meta)
    md = md_path.read_text()
    for r in results:
        row = re.search(rf"^\| {r.number} \| .* \| {re.escape(r.verdict)} \|", md, re.M)
        assert row, f"claim {r.number} missing from the verdict table"
        assert re.search(r"\d", row.group(0).split("|")[3]), "no measured number"
    assert "servesim study optimizations --quick" in md and meta.date in md
    # a smoke run says so and calls nothing a verdict (issue #26)
    assert "## Smoke-run outcomes (not verdicts)" in md and "## Verdicts" not in md
    assert "**Verdict:" not in md and md.count("**Smoke-run outcome:") == len(results)
    full_md = markdown(results, ReportMeta("servesim study optimizations --full", "full"))
    assert "## Verdicts" in full_md and "Smoke" not in full_md
    text = html_path.read_text()
    assert "Smoke run (`--quick`)" in text and "<b>Verdict:" not in text
    assert text.count("plotly.js v") == 1  # the library once: the file opens offline
    assert text.count('class="plotly-graph-div"') == len(results)
    assert html_path.stat().st_size < 5.5e6


def test_cli_runs_selected_claims_and_rejects_bad_input(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["study", "optimizations", "--quick", "--claims", "6",
                             "--out", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert "smoke run (--quick)" in ok.output and "not verdicts" in ok.output
    assert (tmp_path / "optimizations.md").is_file()
    assert (tmp_path / "optimizations.html").is_file()
    bad = runner.invoke(app, ["study", "optimizations", "--quick", "--claims", "12",
                              "--out", str(tmp_path)])
    assert bad.exit_code == 2
    assert "claim: unknown claim 12" in bad.output


def test_the_committed_full_scale_report_keeps_its_verdicts():
    """The full study takes minutes, so CI reads its committed report: each claim's verdict is
    the pinned one, and agrees with the pass count written beside it."""
    md = (Path(__file__).resolve().parent.parent / "docs/studies/optimizations.md").read_text()
    rows = re.findall(r"^\| (\d+) \| [^|]+ \| [^|]+ \| ([a-z ]+) \| ([^|]+) \|$", md, re.M)
    verdicts = {int(n): v.strip() for n, v, _ in rows[:11]}
    assert verdicts == FULL_VERDICTS
    for n, verdict, detail in rows[:11]:
        if verdict.strip() == HOLDS:
            assert re.match(r" ?all \d+ tested conditions pass", detail), (n, detail)
        elif verdict.strip() == REFUTED:
            assert re.match(r" ?none of \d+ tested conditions passes", detail), (n, detail)
        else:
            passed, total = map(int, re.search(r"holds in (\d+) of (\d+)", detail).groups())
            assert 0 < passed < total, (n, detail)


def test_a_baseline_meeting_the_slos_only_by_idling_is_not_judged_there():
    """Claim 11's degenerate-baseline rule on a hand-made table: 4 tok/s at the SLOs against
    740 at capacity on the same 4 GPUs is 0.54% of capacity, under the 5% line."""
    import pandas as pd

    from sim.studies import serving_cost as sc

    df = pd.DataFrame([
        {"stack": "naive FP16", "h100s": 8, "mode": sc.AT_SLO, "output_throughput": 5.0,
         "usd_per_m_output_tokens": 900.0},
        {"stack": "naive FP16", "h100s": 4, "mode": sc.AT_SLO, "output_throughput": 4.0,
         "usd_per_m_output_tokens": 600.0},
        {"stack": "naive FP16", "h100s": 4, "mode": sc.AT_CAPACITY, "output_throughput": 740.0,
         "usd_per_m_output_tokens": 3.0},
        {"stack": "naive FP16", "h100s": 8, "mode": sc.AT_CAPACITY, "output_throughput": 50.0,
         "usd_per_m_output_tokens": 3.0},
    ])
    assert sc.share_of_capacity(df, "naive FP16") == pytest.approx(4.0 / 740.0)
    assert sc.share_of_capacity(df, "naive FP16") < sc.DEGENERATE_SHARE
