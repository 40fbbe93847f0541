"""The dashboard driven through ``streamlit.testing.v1.AppTest``: widgets change the config,
A and B run on the same requests, and what the page shows equals ``sim.simulate`` on the YAML
the page offers for download (which ``servesim run`` also accepts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

import sim
from dashboard import advisor, compare, form, views
from dashboard.runner import with_overrides
from sim.cli import app as cli_app

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
SMALL = 60  # requests per side: enough for every chart, quick to simulate


def new_app(**state) -> AppTest:
    """The app with a small workload (and any other widget state) set before the first run."""
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state[form.state_key(form.SHARED, "workload.num_requests")] = SMALL
    at.session_state["view"] = "YAML"  # the tab that shows both configs as YAML
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def edit(at: AppTest, side: str) -> AppTest:
    """Show ``side``'s widgets in the sidebar (one configuration is edited at a time)."""
    return at.radio(key="edit_side").set_value(side).run()


def shown_yaml(at: AppTest) -> dict[str, dict]:
    codes = [c.value for c in at.code]
    assert len(codes) == 2, codes
    return {"A": yaml.safe_load(codes[0]), "B": yaml.safe_load(codes[1])}


def shown_metrics(at: AppTest, side: str) -> dict[str, tuple[str, str | None]]:
    box = at.get_by_key(f"metrics-{side}")
    return {m.label: (m.value, m.delta) for m in box.metric}


def expected_summary(mapping: dict, price: float = 3.0) -> dict:
    result = sim.simulate(mapping)
    return compare.full_summary(result.summary, result.config.hardware.num_gpus, price)


def assert_page_matches_simulate(at: AppTest) -> dict[str, dict]:
    """Every headline metric (and B's delta) equals sim.simulate on the shown YAML."""
    assert not at.exception, at.exception
    configs = shown_yaml(at)
    sums = {side: expected_summary(configs[side]) for side in form.SIDES}
    for side in form.SIDES:
        shown = shown_metrics(at, side)
        for metric in compare.HEADLINE:
            value, delta = shown[metric.label]
            assert value == compare.format_value(metric, sums[side][metric.key]), metric.label
            if side == "B":
                assert delta == compare.format_delta(
                    metric, sums["A"][metric.key], sums["B"][metric.key]), metric.label
    return configs


def test_default_comparison_equals_simulate_on_the_same_requests():
    at = new_app()
    configs = assert_page_matches_simulate(at)
    assert configs["B"]["model"] == {"weight_dtype": "fp8", "kv_dtype": "fp8"}
    assert len(at.get("download_button")) == 2  # A and B as YAML
    a, b = (sim.simulate(configs[s]).requests for s in form.SIDES)
    for col in ("arrival_time", "prompt_tokens", "output_tokens"):  # common random numbers
        assert a[col].tolist() == b[col].tolist()


def test_outdated_page_is_not_faded_during_a_rerun():
    """The page carries the rule that keeps Streamlit's outdated elements still while the
    next comparison computes (their fade costs a CPU-bound browser a CPU-second)."""
    at = new_app()
    assert views.STEADY_RERUN_CSS in [h.proto.body for h in at.get("html")]
    assert "[data-stale=true]" in views.STEADY_RERUN_CSS


def test_widgets_drive_gpu_policy_and_load():
    at = new_app()
    at.selectbox(key="A|hardware.gpu").set_value("a100")
    at.number_input(key="W|workload.rate").set_value(25.0)
    edit(at.run(), "B")
    at.selectbox(key="B|scheduler.policy").set_value("static")
    at.run()
    assert at.selectbox(key="B|scheduler.policy").value == "static"
    edit(at, "A")
    assert at.selectbox(key="A|hardware.gpu").value == "a100"  # kept while B was shown
    configs = assert_page_matches_simulate(at)
    assert configs["A"]["hardware"]["gpu"] == "a100"
    assert configs["B"]["scheduler"]["policy"] == "static"
    assert configs["A"]["workload"]["rate"] == configs["B"]["workload"]["rate"] == 25.0


def test_custom_gpu_specs_run_as_a_what_if_gpu():
    at = edit(new_app(), "B")
    at.selectbox(key="B|hardware.gpu").set_value(form.CUSTOM_GPU)
    at.run()
    at.selectbox(key="B|hardware.gpu.base").set_value("h100")
    at.number_input(key="B|hardware.gpu.memory_bw_gbps").set_value(6700.0)
    at.run()
    configs = assert_page_matches_simulate(at)
    assert configs["B"]["hardware"]["gpu"] == {"base": "h100", "memory_bw_gbps": 6700.0}
    faster = sim.simulate(configs["B"]).summary["median_tpot_ms"]
    assert faster < sim.simulate(configs["A"] | {"model": configs["B"]["model"]}).summary[
        "median_tpot_ms"]  # twice H100's bandwidth decodes faster


def test_values_in_closed_expanders_are_kept():
    """A widget is drawn only while its expander is open; its value outlives it."""
    at = edit(new_app(), "B")
    assert not [w for w in at.number_input if w.key == "B|speculative.num_draft_tokens"]
    at.session_state["expander|B|speculative"] = True
    at.run()
    at.number_input(key="B|speculative.num_draft_tokens").set_value(6)
    at.selectbox(key="B|speculative.method").set_value("eagle")
    at.run()
    at.session_state["expander|B|speculative"] = False
    edit(at.run(), "A")
    assert shown_yaml(at)["B"]["speculative"] == {"method": "eagle", "num_draft_tokens": 6}
    assert_page_matches_simulate(at)


def test_engine_preset_fills_the_widgets_it_sets():
    at = edit(new_app(), "B")
    at.selectbox(key="B|engine.preset").set_value("vllm")
    at.run()
    assert at.selectbox(key="B|scheduler.policy").value == "chunked_prefill"
    assert at.checkbox(key="B|kv_cache.enable_prefix_caching").value is True
    configs = assert_page_matches_simulate(at)
    assert configs["B"]["engine"] == {"preset": "vllm"}
    at.selectbox(key="B|engine.preset").set_value(None)
    at.run()
    assert at.selectbox(key="B|scheduler.policy").value == "continuous"  # back to the default
    assert "scheduler" not in shown_yaml(at)["B"]


def test_downloaded_yaml_runs_with_servesim_run(tmp_path):
    at = new_app()
    at.selectbox(key="A|model.kv_dtype").set_value("fp8")
    at.run()
    text = at.code[0].value
    path = tmp_path / "a.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli_app, ["run", str(path), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    shown = shown_metrics(at, "A")
    metric = next(m for m in compare.HEADLINE if m.key == "p99_tpot_ms")
    assert shown[metric.label][0] == compare.format_value(metric, summary["p99_tpot_ms"])


def test_uploaded_yaml_sets_the_widgets():
    at = new_app()
    upload = {"hardware": {"gpu": "h200", "num_gpus": 2}, "scheduler": {"max_num_seqs": 64},
              "workload": {"num_requests": 40, "rate": 12.0,
                           "output_tokens": {"dist": "uniform", "low": 8, "high": 64}}}
    at.file_uploader(key="upload|B").set_value(("b.yaml", yaml.safe_dump(upload).encode(),
                                               "application/x-yaml"))
    edit(at.run(), "B")
    assert at.selectbox(key="B|hardware.gpu").value == "h200"
    assert at.number_input(key="B|hardware.num_gpus").value == 2
    assert at.selectbox(key="W|workload.output_tokens").value == "uniform"
    configs = assert_page_matches_simulate(at)
    assert configs["B"]["hardware"] == {"gpu": "h200", "num_gpus": 2}
    assert configs["B"]["workload"]["output_tokens"] == {"dist": "uniform", "low": 8, "high": 64}
    assert configs["A"]["workload"] == configs["B"]["workload"]  # shared: same requests


def test_malformed_upload_is_a_readable_message():
    at = new_app()
    at.file_uploader(key="upload|A").set_value(
        ("bad.yaml", b"hardware: {gpu: h1000}\n", "application/x-yaml"))
    at.run()
    messages = [e.value for e in at.error]
    assert any("bad.yaml: hardware.gpu: unknown GPU 'h1000'" in m for m in messages), messages
    assert not at.exception


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("A|model.name", "llama-3.1-405b", "A: model: llama-3.1-405b in bf16 needs"),  # cannot fit
    ("W|workload.rate", 0.0, "workload.rate: out of range; allowed: 0 < rate"),
])
def test_bad_inputs_show_one_line_errors(key, value, expected):
    at = new_app()
    widget = at.selectbox(key=key) if key.endswith("name") else at.number_input(key=key)
    widget.set_value(value)
    at.run()
    assert not at.exception, at.exception
    messages = [e.value for e in at.error]
    assert any(expected in m for m in messages), messages
    assert all("\n" not in m for m in messages)


def test_malformed_trace_upload_is_a_readable_message():
    """A trace that cannot be parsed is an error box, not a traceback."""
    workload_keys = sim.Config.model_fields["workload"].annotation.model_fields
    at = new_app()
    if "trace" not in workload_keys:  # no trace key in the config: the app offers no trace
        assert "trace" not in at.selectbox(key="W|workload.arrival").options
        assert not [u for u in at.file_uploader if u.key == "upload|trace"]
        return
    at.file_uploader(key="upload|trace").set_value(("t.jsonl", b"{not json\n", "text/plain"))
    at.run()
    assert not at.exception, at.exception
    assert at.error, "a malformed trace shows an error"
    assert all("\n" not in e.value for e in at.error)


def test_uploaded_trace_replays_on_both_sides():
    """A real trace (first 40 rows of the Azure conversation trace) drives A and B."""
    trace = ROOT.parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
    head = "".join(trace.open().readlines()[:41]).encode()  # fails, never skips, if missing
    at = new_app()
    at.file_uploader(key="upload|trace").set_value(("azure_conv.csv", head, "text/csv"))
    at.run()
    assert not at.error, [e.value for e in at.error]
    configs = assert_page_matches_simulate(at)
    assert configs["A"]["workload"]["arrival"] == "trace"
    result = sim.simulate(configs["B"])
    assert len(result.requests) == 40
    assert result.requests["prompt_tokens"].iloc[0] == 374


def test_every_tab_renders_without_exception():
    at = new_app()
    for view in ("Overview", "Over time", "Memory & operators", "Table", "Validation"):
        at.session_state["view"] = view
        at.run()
        assert not at.exception, (view, at.exception)
        assert not at.error, (view, [e.value for e in at.error])
        if view in ("Overview", "Over time", "Memory & operators"):
            assert at.get("plotly_chart"), view


def test_advisor_remedies_are_measured_by_resimulating():
    at = new_app(**{"W|slo.tpot_ms": 8.0})  # a TPOT target A (bf16) misses
    configs = shown_yaml(at)
    at.session_state["view"] = "Advisor"
    at.session_state["advisor_side"] = "A"
    at.run()
    assert not at.exception, at.exception
    assert any("decode throughput" in w.value for w in at.warning)
    table = at.dataframe[-1].value  # the limits, then the remedies
    assert table.loc[0, "remedy"] == "(current)"
    base = sim.simulate(configs["A"])
    assert table.loc[0, "p99_tpot_ms"] == base.summary["p99_tpot_ms"]
    for remedy in advisor.remedies("decode throughput", base.config, base.steps):
        row = table[table["remedy"] == remedy.name].iloc[0]
        if row.get("error"):  # the column is shown only when a remedy failed
            continue
        again = sim.simulate(with_overrides(configs["A"], remedy.overrides))
        assert row["p99_tpot_ms"] == again.summary["p99_tpot_ms"], remedy.name
        assert row["change"] == pytest.approx(  # shown in percent
            100 * (again.summary["p99_tpot_ms"] / base.summary["p99_tpot_ms"] - 1))


def test_load_sweep_points_equal_simulate_at_that_load():
    at = new_app()
    configs = shown_yaml(at)
    at.session_state["view"] = "Load sweep"
    at.session_state["sweep_requests"] = 30
    at.run()
    assert not at.exception, at.exception
    frame = at.dataframe[0].value
    assert sorted(frame["config"].unique()) == ["A", "B"] and len(frame) == 10
    row = frame[(frame["config"] == "B")].iloc[-1]
    point = with_overrides(configs["B"], {"workload.rate": row["load"],
                                          "workload.num_requests": 30})
    assert row["output_throughput"] == sim.simulate(point).summary["output_throughput"]


def test_validation_page_shows_the_committed_reports(tmp_path, monkeypatch):
    from dashboard import validation

    png = (ROOT / "docs" / "dashboard.png").read_bytes()
    (tmp_path / "err.png").write_bytes(png)
    (tmp_path / "h100.md").write_text("# H100: sim vs real\n\n| metric | error |\n|---|---|\n"
                                      "| median TPOT | +3.1% |\n\n![errors](err.png)\n")
    monkeypatch.setattr(validation, "REPORTS_DIR", tmp_path)
    at = new_app()
    at.session_state["view"] = "Validation"
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="validation_report").value == tmp_path / "h100.md"
    assert any("median TPOT" in m.value for m in at.markdown)
    assert len(at.image) == 1
    assert not [c for c in at.caption if "missing image" in c.value]
