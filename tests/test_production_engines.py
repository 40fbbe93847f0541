"""The production-engines study: its data file's schema and citations, and a few rows simulated.

The whole study (benchmarks/production_engines.py, minutes) is not run here; these tests check
that every published row is cited and well-formed, that every expressible row becomes a config
servesim accepts, and that a few cheap rows simulate end to end into the doc.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "production_engines.py"


@pytest.fixture(scope="module")
def pe():
    spec = importlib.util.spec_from_file_location("production_engines", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["production_engines"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study(pe):
    return pe.load_rows()


def test_every_source_is_cited_with_url_title_date_and_method(pe, study):
    sources, rows, _ = study
    assert len(sources) >= 5
    for sid, src in sources.items():
        assert src["url"].startswith("https://"), sid
        for key in ("title", "date", "engine_version", "how", "retrieved"):
            assert len(str(src[key])) > 3, (sid, key)
    assert {r.source for r in rows} == set(sources)  # every source gives rows


def test_rows_are_well_formed_and_unique(pe, study):
    _, rows, _ = study
    assert len(rows) >= 200
    assert len({r.id for r in rows}) == len(rows)
    for r in rows:
        assert r.published > 0, r.id
        assert r.metric in pe.METRICS and r.load in pe.LOADS, r.id
        assert r.isl >= 1 and r.osl >= 1 and r.tp >= 1, r.id
        if r.load == "closed":
            assert r.concurrency, r.id
        if r.load in ("static", "batch", "first_token"):
            assert r.batch, r.id


def test_a_published_cell_is_read_as_printed(pe, study):
    """Spot checks against the sources' tables (TRT-LLM v1.0 overview, NIM 1.8.0 guide)."""
    _, rows, _ = study
    by_id = {r.id: r for r in rows}
    h100 = by_id["trtllmv10-llama-3.1-8b-h100-tp1-fp8-128-128-thr"]
    assert h100.published == 28312 and h100.published_requests == 30000
    nim = by_id["nim10-llama-3.1-70b-h100-tp2-fp8-5000-500-c100-ttft"]
    assert nim.published == 7996.25 and nim.concurrency == 100


def test_every_row_is_simulated_or_says_why_not(pe, study):
    from sim.config import load_config

    sources, rows, _ = study
    simulated = 0
    for r in rows:
        reason = pe.why_not_simulated(r)
        if reason:
            assert len(reason) > 10, r.id
            continue
        simulated += 1
        cfg = pe.overrides(r, sources[r.source]["engine"])
        load_config(pe._nest(cfg))  # servesim accepts the config (ConfigError otherwise)
        assert cfg["engine.preset"] in ("trtllm", "vllm", "sglang")
    assert simulated >= 150


def test_offline_runs_hold_the_engine_full_but_never_exceed_the_source(pe, study):
    sources, rows, _ = study
    row = next(r for r in rows if r.id == "trtllmv10-llama-3.1-8b-h100-tp1-fp8-128-128-thr")
    cfg = pe.overrides(row, "trtllm")
    assert cfg["workload.num_requests"] <= 30000
    assert cfg["workload.num_requests"] >= 2 * 1024  # the batch the KV pool and preset admit


def test_every_row_has_a_printable_setting(pe, study):
    _, rows, _ = study
    assert all(pe._setting_text(r) for r in rows)


def test_a_bad_data_file_is_refused_naming_the_field(pe, tmp_path):
    data = yaml.safe_load(pe.DATA.read_text())
    del data["sources"]["nim-bench-1.0"]["url"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"sources\.nim-bench-1\.0.*url"):
        pe.load_rows(bad)
    data = yaml.safe_load(pe.DATA.read_text())
    data["tables"][0]["load"] = "sometimes"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"load.*allowed: offline"):
        pe.load_rows(bad)


def test_cheap_rows_simulate_into_the_doc(pe, study, tmp_path):
    sources, rows, _ = study
    wanted = {"trtllmv061-llama-2-7b-h100-tp1-fp8-128-1-b1-ttft",
              "nemoinference-llama-2-7b-h100-tp1-bf16-128-20-b1-e2el",
              "trtllmv10-llama-4-scout-b200-tp1-nvfp4-128-128-thr"}  # Llama 4 Scout: not simulated
    picked = [r for r in rows if r.id in wanted]
    assert len(picked) == 3
    outcomes = pe.run_study(picked, sources, jobs=1)
    done = [o for o in outcomes if o.error_pct is not None]
    assert len(done) == 2
    for o in done:
        assert o.predicted > 0
        assert o.error_pct == pytest.approx(100 * (o.predicted - o.row.published) / o.row.published)
    skipped = [o for o in outcomes if o.skipped]
    assert "not in the model catalog" in skipped[0].skipped
    doc = tmp_path / "doc.md"
    pe.write_doc(outcomes, sources, ["--source", "x"], 1.0, doc)
    text = doc.read_text()
    for r in picked:
        assert f"`{r.id}`" in text
    assert "median abs err" in text and "servesim run --quiet" in text


def test_prefix_caching_off_changes_no_result(pe, study):
    """The study turns the presets' prefix cache off (random-token benchmarks never hit it, and
    off the engine can fast-forward); a cheap offline row gives the same summary either way."""
    sources, rows, _ = study
    row = next(r for r in rows if r.id == "trtllmv10-llama-3.1-8b-h100-tp1-fp8-20000-2000-thr")
    cfg = pe.overrides(row, sources[row.source]["engine"])
    assert cfg["kv_cache.enable_prefix_caching"] is False
    cfg["workload.num_requests"] = 60  # more than the KV pool holds at once: some wait
    off = pe.simulate_setting(cfg)
    on = pe.simulate_setting({**cfg, "kv_cache.enable_prefix_caching": True})
    for key in ("output_throughput", "mean_ttft_ms", "mean_tpot_ms", "mean_e2el_ms"):
        assert off[key] == pytest.approx(on[key], rel=1e-12), key
