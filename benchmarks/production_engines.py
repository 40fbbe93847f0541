"""Compare servesim with published end-to-end numbers of production serving engines.

The published numbers live in ``benchmarks/data/production_engines.yaml`` as their sources
printed them (TensorRT-LLM's performance overviews, NVIDIA NIM's benchmarking guide, NeMo's
inference tables, vLLM's CI latency tests), one table per published table. This script expands
the tables into rows (one published number each), builds one servesim config per setting from
what the source states (``engine.preset`` of the engine, the GPU, TP, precision, ISL/OSL and the
benchmark's load: offline, closed loop, a static batch), simulates it, and writes
``docs/validation/production-engines.md`` with the signed error of every row and the median
absolute error per metric, GPU, engine and source. Nothing is tuned per row: the same rules
build every config, so the study can be re-run unchanged after the hardware model or the
presets change.

    python benchmarks/production_engines.py                # the whole study -> the doc
    python benchmarks/production_engines.py --row ID       # one row: config, command, result
    python benchmarks/production_engines.py --list         # the row ids
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import pickle
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "benchmarks" / "data" / "production_engines.yaml"
DOC = ROOT / "docs" / "validation" / "production-engines.md"
RESULTS = ROOT / "out" / "production_engines.pkl"  # the last run's outcomes (out/ is ignored)

# Published metric -> how it is read off a simulated run's summary (per GPU: over the TP group).
METRICS = {
    "output_throughput": "output tokens/s of the whole deployment",
    "output_throughput_per_gpu": "output tokens/s divided by the GPUs of the deployment",
    "mean_ttft_ms": "mean time to first token (ms)",
    "mean_tpot_ms": "mean time per output token after the first (ms)",
    "mean_e2el_ms": "mean end-to-end request latency (ms)",
    "median_ttft_ms": "median time to first token (ms)",
    "median_tpot_ms": "median time per output token (ms)",
    "median_itl_ms": "median inter-token latency (ms)",
    "median_e2el_ms": "median end-to-end request latency (ms)",
    "request_throughput": "requests/s of the whole deployment",
}
LOADS = ("offline", "closed", "poisson", "static", "batch", "first_token")
ENGINE_PRESET = {"trtllm": "trtllm", "nim": "trtllm", "vllm": "vllm", "sglang": "sglang"}
SOURCE_FIELDS = ("title", "url", "date", "engine", "engine_version", "how", "retrieved")
ALL_AT_ONCE_RATE = 1e9  # requests/s: every request of an offline benchmark arrives at t ~ 0
OFFLINE_WAVES = 3  # offline runs send 3x the requests the engine can hold at once (see doc)
CLOSED_REQUESTS_PER_CLIENT, CLOSED_MIN_REQUESTS = 5, 50


@dataclass(frozen=True)
class Row:
    """One published number and the setting it was measured in."""

    id: str
    source: str
    table: str  # the published table's model line
    catalog_model: str | None
    gpu: str
    catalog_gpu: str | None
    tp: int
    pp: int
    precision: str
    kv_precision: str
    load: str
    isl: int
    osl: int
    concurrency: int | None
    batch: int | None
    rate: float | None
    metric: str
    published: float
    not_simulated: str | None = None
    assumed: str | None = None
    published_requests: int | None = None

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp

    def setting(self) -> tuple:
        """Rows that share a setting share one simulation."""
        return (self.source, self.catalog_model, self.catalog_gpu, self.tp, self.precision,
                self.kv_precision, self.load, self.isl, self.osl, self.concurrency, self.batch,
                self.rate)


@dataclass
class Outcome:
    row: Row
    predicted: float | None = None
    error_pct: float | None = None
    skipped: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    cpu_s: float | None = None  # CPU seconds of the row's simulation (shared by its setting)


# ------------------------------------------------------------------------------------ loading


def _fail(where: str, message: str) -> None:
    raise ValueError(f"{DATA.name}: {where}: {message}")


def _check_sources(sources: dict) -> None:
    for sid, src in sources.items():
        for key in SOURCE_FIELDS:
            if not src.get(key):
                _fail(f"sources.{sid}", f"missing '{key}'")
        if src["engine"] not in ENGINE_PRESET:
            allowed = ", ".join(ENGINE_PRESET)
            _fail(f"sources.{sid}.engine", f"'{src['engine']}'; allowed: {allowed}")
        if not str(src["url"]).startswith("https://"):
            _fail(f"sources.{sid}.url", "must be an https URL")


def _label_setting(label: str) -> dict[str, int]:
    """A table's row label: 'ISL/OSL', a concurrency, 'BATCHxTP', or 'published'."""
    text = str(label)
    if "/" in text:
        isl, osl = text.split("/")
        return {"isl": int(isl), "osl": int(osl)}
    if "x" in text:
        batch, tp = text.split("x")
        return {"batch": int(batch), "tp": int(tp)}
    if text.isdigit():
        return {"concurrency": int(text)}
    if text == "published":
        return {}
    raise ValueError(f"row label '{label}': expected ISL/OSL, a concurrency, BxTP or 'published'")


def _offline_requests(source: dict, isl: int, osl: int) -> int | None:
    """trtllm-bench's published request counts per ISL/OSL (its perf-overview table)."""
    counts = source.get("num_requests") or {}
    return counts.get(f"{isl}/{osl}")


def _slug(text: str) -> str:
    """'Llama 4 Scout (FP4 / FP8)' -> 'llama-4-scout'."""
    words = "".join(c if c.isalnum() or c in ". " else " " for c in text.split("(")[0]).split()
    return "-".join(words).lower()


def _row_id(source: str, s: dict, metric: str, table_model: str) -> str:
    model = s.get("catalog_model") or _slug(s.get("model_note") or table_model)
    parts = [source.split("-")[0] + source.split("-")[-1].replace(".", ""), model,
             (s.get("catalog_gpu") or s["gpu"]).split("-")[0],
             f"tp{s['tp']}" + (f"pp{s['pp']}" if s.get("pp", 1) > 1 else ""), s["precision"],
             f"{s['isl']}-{s['osl']}"]
    if s.get("concurrency"):
        parts.append(f"c{s['concurrency']}")
    if s.get("batch"):
        parts.append(f"b{s['batch']}")
    if s.get("rate"):
        parts.append(f"r{s['rate']:g}")
    if s.get("engine_note"):
        parts.append(_slug(s["engine_note"]))
    short = metric.replace("output_throughput", "thr").replace("_per_gpu", "gpu")
    short = short.replace("request_throughput", "reqthr").replace("_ms", "").replace("mean_", "")
    return "-".join(str(p).lower().replace(" ", "") for p in parts + [short])


def _expand(t: dict, ti: int, sources: dict) -> list[Row]:
    where = f"tables[{ti}] ({t.get('model', '?')})"
    for key in ("source", "model", "load", "metric", "columns", "cells"):
        if key not in t:
            _fail(where, f"missing '{key}'")
    if t["source"] not in sources:
        _fail(where + ".source", f"'{t['source']}' is not in sources")
    if t["load"] not in LOADS:
        _fail(where + ".load", f"'{t['load']}'; allowed: {', '.join(LOADS)}")
    metrics = t["metric"] if isinstance(t["metric"], list) else [t["metric"]]
    for m in metrics:
        if m not in METRICS:
            _fail(where + ".metric", f"'{m}'; allowed: {', '.join(METRICS)}")
    base = {k: t.get(k) for k in ("catalog_model", "gpu", "catalog_gpu", "precision",
                                   "kv_precision", "tp", "pp", "isl", "osl", "batch")}
    rows = []
    for label, values in (t["cells"] or {}).items():
        if len(values) != len(t["columns"]):
            _fail(f"{where}.cells.{label}", f"{len(values)} values for {len(t['columns'])} columns")
        for column, value in zip(t["columns"], values, strict=True):
            given = {k: v for k, v in column.items() if v is not None}
            s = {**base, **given, **_label_setting(label)}
            s.setdefault("pp", 1)
            s["pp"] = s["pp"] or 1
            s["kv_precision"] = s.get("kv_precision") or s.get("precision")
            for key in ("gpu", "precision", "tp", "isl", "osl"):
                if s.get(key) is None:
                    _fail(f"{where}.cells.{label}", f"no '{key}' in the table, column or label")
            cell = value if isinstance(value, list) else [value]
            if len(cell) != len(metrics):
                _fail(f"{where}.cells.{label}", f"{len(cell)} values for {len(metrics)} metrics")
            for metric, number in zip(metrics, cell, strict=True):
                if number is None:
                    continue  # the source left this cell empty
                rows.append(Row(
                    id=_row_id(t["source"], s, metric, t["model"]), source=t["source"],
                    table=column.get("model_note") or t["model"],
                    catalog_model=s.get("catalog_model"), gpu=str(s["gpu"]),
                    catalog_gpu=s.get("catalog_gpu"), tp=int(s["tp"]), pp=int(s["pp"]),
                    precision=s["precision"], kv_precision=s["kv_precision"], load=t["load"],
                    isl=int(s["isl"]), osl=int(s["osl"]), concurrency=s.get("concurrency"),
                    batch=s.get("batch"), rate=s.get("rate"), metric=metric,
                    published=float(number),
                    not_simulated=column.get("not_simulated") or t.get("not_simulated"),
                    assumed=t.get("assumed"),
                    published_requests=_offline_requests(sources[t["source"]], s["isl"], s["osl"])))
    return rows


def load_rows(path: Path = DATA) -> tuple[dict, list[Row], list[dict]]:
    """Sources, the expanded rows, and the tables (for the doc); ValueError on a bad file."""
    data = yaml.safe_load(Path(path).read_text())
    for key in ("sources", "tables"):
        if key not in data:
            _fail("top level", f"missing '{key}'")
    _check_sources(data["sources"])
    rows = [r for i, t in enumerate(data["tables"]) for r in _expand(t, i, data["sources"])]
    seen: set[str] = set()
    for r in rows:
        if r.id in seen:
            _fail("rows", f"duplicate row id '{r.id}'")
        seen.add(r.id)
    return data["sources"], rows, data["tables"]


# ---------------------------------------------------------------------------- configurations


def why_not_simulated(row: Row) -> str | None:
    """Why servesim cannot express this row, or None."""
    from hwmodels import list_gpus, list_models

    if row.not_simulated:
        return " ".join(row.not_simulated.split())
    if row.catalog_model is None or row.catalog_model not in list_models():
        return f"model '{row.table}' is not in the model catalog"
    if row.catalog_gpu is None or row.catalog_gpu not in list_gpus():
        return f"GPU '{row.gpu}' is not in the GPU catalog"
    if row.pp > 1:
        return "pipeline parallelism is not a `servesim run` setting"
    return None


def _steady_concurrency(row: Row, preset: dict) -> int:
    """Requests the engine holds at once: its sequence cap or its KV pool, the smaller."""
    from hwmodels.memory import plan_memory

    plan = plan_memory(row.catalog_gpu, row.catalog_model, tp=row.tp,
                       weight_dtype=row.precision, kv_dtype=row.kv_precision,
                       gpu_memory_utilization=preset.get("hardware.gpu_memory_utilization", 0.9),
                       max_num_batched_tokens=preset["scheduler.max_num_batched_tokens"],
                       block_size=preset["kv_cache.block_size"],
                       max_num_seqs=preset["scheduler.max_num_seqs"])
    return max(1, min(preset["scheduler.max_num_seqs"], plan.max_concurrent(row.isl + row.osl)))


def offline_requests(row: Row, preset: dict) -> int:
    """Offline runs: OFFLINE_WAVES times what fits at once, never more than the source sent."""
    n = OFFLINE_WAVES * _steady_concurrency(row, preset)
    return min(n, row.published_requests) if row.published_requests else n


def overrides(row: Row, engine: str) -> dict[str, Any]:
    """The dotted `--set` overrides that express the row (same rules for every row)."""
    from policies.presets import preset_overrides

    name = ENGINE_PRESET[engine]
    cfg: dict[str, Any] = {
        "engine.preset": name, "hardware.gpu": row.catalog_gpu, "hardware.tp": row.tp,
        "hardware.num_gpus": row.num_gpus, "model.name": row.catalog_model,
        "model.weight_dtype": row.precision, "model.kv_dtype": row.kv_precision,
        "workload.prompt_tokens": row.isl, "workload.output_tokens": row.osl, "seed": 0,
        # The benchmarks' prompts are random tokens (trtllm-bench's prepare_dataset, genai-perf's
        # synthetic prompts, benchmark_latency's dummy ids): no prefix is ever shared, so the
        # presets' prefix cache finds nothing. Off, it changes no result but lets the engine
        # fast-forward decode runs while requests wait (tests/test_production_engines.py).
        "kv_cache.enable_prefix_caching": False,
    }
    if row.load == "poisson":
        cfg.update({"workload.arrival": "poisson", "workload.rate": row.rate,
                    "workload.num_requests": row.published_requests or 1000})
        return cfg
    if row.load == "closed":
        # the first wave (every client's first request, all sent at t = 0) is warm-up: the
        # tools measure after it (perf_analyzer's stable windows behind genai-perf, AIPerf's
        # warm-up phase), so one request per client is left out and as many measured as before
        n = max(CLOSED_REQUESTS_PER_CLIENT * row.concurrency, CLOSED_MIN_REQUESTS)
        cfg.update({"workload.arrival": "closed", "workload.concurrency": row.concurrency,
                    "workload.num_requests": n + row.concurrency,
                    "workload.client.warmup_requests": row.concurrency})
        return cfg
    # In-process benchmarks (trtllm-bench, gptSessionBenchmark, benchmark_latency): every
    # request is handed to the engine at once.
    cfg.update({"workload.arrival": "poisson", "workload.rate": ALL_AT_ONCE_RATE})
    if row.load == "offline":
        cfg["workload.num_requests"] = offline_requests(row, preset_overrides(name))
    elif row.load == "static":  # one static batch of `batch` requests, whole prompts at once
        cfg.update({"workload.num_requests": row.batch, "scheduler.policy": "static",
                    "scheduler.max_num_seqs": row.batch,
                    "scheduler.max_num_batched_tokens": row.batch * row.isl})
    else:  # batch, first_token: `batch` requests under the engine's own scheduler
        cfg["workload.num_requests"] = row.batch
    return cfg


def command(cfg: dict[str, Any]) -> str:
    sets = " ".join(f"--set {k}={v}" for k, v in cfg.items())
    return f"servesim run --quiet --out /tmp/pe {sets}"


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def read_metric(summary: dict, metric: str, num_gpus: int) -> float:
    if metric == "output_throughput_per_gpu":
        return summary["output_throughput"] / num_gpus
    return float(summary[metric])


def _simulate_or_reason(cfg: dict[str, Any]) -> dict | str:
    started = time.process_time()
    try:
        summary = simulate_setting(cfg)
    except (ValueError, RuntimeError) as err:  # a config servesim refuses, one line
        return str(err).splitlines()[0]
    return {**summary, "study_cpu_s": time.process_time() - started}


def simulate_setting(cfg: dict[str, Any]) -> dict:
    """Simulate one setting; the summary dict (run in a worker process)."""
    from sim import simulate

    return simulate(_nest(cfg)).summary


# --------------------------------------------------------------------------------- the study


def run_study(rows: list[Row], sources: dict, jobs: int = 1) -> list[Outcome]:
    outcomes, todo = [], {}
    for row in rows:
        reason = why_not_simulated(row)
        if reason:
            outcomes.append(Outcome(row, skipped=reason))
            continue
        cfg = overrides(row, sources[row.source]["engine"])
        outcomes.append(Outcome(row, config=cfg))
        todo.setdefault(row.setting(), cfg)
    summaries = _simulate_all(todo, jobs)
    for o in outcomes:
        if o.skipped:
            continue
        result = summaries[o.row.setting()]
        if isinstance(result, str):
            o.skipped = f"servesim refused the config: {result}"
            continue
        o.predicted = read_metric(result, o.row.metric, o.row.num_gpus)
        o.cpu_s = result.get("study_cpu_s")
        o.error_pct = 100.0 * (o.predicted - o.row.published) / o.row.published
    return outcomes


def _simulate_all(todo: dict[tuple, dict], jobs: int) -> dict[tuple, dict | str]:
    results: dict[tuple, dict | str] = {}
    started = time.time()
    if jobs == 1:  # in this process (tests, --row): no worker start-up
        for i, (key, cfg) in enumerate(todo.items(), 1):
            results[key] = _simulate_or_reason(cfg)
            print(f"[{i}/{len(todo)}] {time.time() - started:6.0f}s", file=sys.stderr, flush=True)
        return results
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_simulate_or_reason, cfg): key for key, cfg in todo.items()}
        for i, future in enumerate(as_completed(futures), 1):
            results[futures[future]] = future.result()
            print(f"[{i}/{len(todo)}] {time.time() - started:6.0f}s", file=sys.stderr, flush=True)
    return results


# ------------------------------------------------------------------------------- statistics


def _median_abs(outcomes: list[Outcome]) -> str:
    errs = [abs(o.error_pct) for o in outcomes if o.error_pct is not None]
    return f"{statistics.median(errs):.1f}%" if errs else "-"


def _median_signed(outcomes: list[Outcome]) -> str:
    errs = [o.error_pct for o in outcomes if o.error_pct is not None]
    return f"{statistics.median(errs):+.1f}%" if errs else "-"


def _within(outcomes: list[Outcome], pct: float) -> str:
    errs = [abs(o.error_pct) for o in outcomes if o.error_pct is not None]
    return f"{sum(e <= pct for e in errs)}/{len(errs)}" if errs else "-"


def stats_table(outcomes: list[Outcome], key, title: str) -> list[str]:
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        if o.error_pct is not None:
            groups[key(o)].append(o)
    lines = [f"| {title} | rows | median abs err | median signed err | within 10% | within 25% "
             "| worst |", "|---|---:|---:|---:|---:|---:|---|"]
    for name in sorted(groups):
        g = groups[name]
        worst = max(g, key=lambda o: abs(o.error_pct))
        lines.append(f"| {name} | {len(g)} | {_median_abs(g)} | {_median_signed(g)} | "
                     f"{_within(g, 10)} | {_within(g, 25)} | {worst.error_pct:+.0f}% "
                     f"(`{worst.row.id}`) |")
    return lines


# ---------------------------------------------------------------------------------- the doc


def _gpu_name(r: Row) -> str:
    """'h100-sxm5-80gb' -> 'H100' (the catalog's chip, whatever the source called it)."""
    return (r.catalog_gpu or r.gpu).split("-")[0].upper()


def _shape(r: Row) -> str:
    """Where the time goes: prompt-heavy (ISL >= 4 OSL), output-heavy (OSL >= 4 ISL), mixed;
    long context when a sequence reaches 16k tokens."""
    if r.isl + r.osl >= 16384:
        return "long context (>= 16k)"
    if r.isl >= 4 * r.osl:
        return "prompt-heavy (ISL >= 4 OSL)"
    if r.osl >= 4 * r.isl:
        return "output-heavy (OSL >= 4 ISL)"
    return "mixed"


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}"


def _setting_text(r: Row) -> str:
    if r.load == "offline":
        load = "offline"
    elif r.load == "closed":
        load = f"closed c={r.concurrency}"
    elif r.load == "poisson":
        load = f"Poisson {r.rate:g} req/s"
    elif r.load == "static":
        load = f"static batch {r.batch}"
    elif r.load == "batch":
        load = f"batch {r.batch}"
    else:
        load = "batch 1, first token"
    return f"{r.gpu} TP{r.tp} {r.precision}, {r.isl}/{r.osl}, {load}"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_doc(outcomes: list[Outcome], sources: dict, argv: list[str], seconds: float,
              path: Path = DOC) -> None:
    done = [o for o in outcomes if o.error_pct is not None]
    skipped = [o for o in outcomes if o.skipped]
    dirty = _git("status", "--porcelain", "--", "hwmodels", "policies", "sim")
    costs = {o.row.setting(): (o.cpu_s, o.row.id) for o in done if o.cpu_s is not None}
    slowest = max(costs.values(), default=(0.0, "-"))
    lines = [
        "# Validation: servesim against published production-engine numbers",
        "",
        f"- **generated**: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, in "
        f"{seconds / 60:.1f} min on {platform.node()} ({platform.machine()}, "
        f"{_cpu_count()} CPUs), no GPU",
        f"- **commit**: `{_git('rev-parse', '--short', 'HEAD')}`"
        + (" (with uncommitted changes in hwmodels/, policies/ or sim/ of the working tree)"
           if dirty else ""),
        f"- **command**: `python benchmarks/{Path(__file__).name} {' '.join(argv)}`".rstrip(),
        f"- **cost**: {len(costs)} simulations, {sum(c for c, _ in costs.values()) / 60:.1f} "
        f"CPU-min in all; the slowest {slowest[0]:.0f} CPU-s (`{slowest[1]}`)",
        f"- **data**: `benchmarks/data/{DATA.name}` ({len(sources)} sources, "
        f"{len(outcomes)} published numbers: {len(done)} simulated, {len(skipped)} not "
        "expressible)",
        "",
        *_method_lines(),
        "## Error statistics",
        "",
        "Signed error = (servesim - published) / published. Median |err| by metric:",
        "",
        *stats_table(done, lambda o: o.row.metric, "metric"),
        "",
        *stats_table(done, lambda o: f"{o.row.metric} / {_gpu_name(o.row)}", "metric / GPU"),
        "",
        *stats_table(done, lambda o: f"{o.row.metric} / {sources[o.row.source]['engine']}",
                     "metric / engine"),
        "",
        *stats_table(done, lambda o: f"{o.row.metric} / {o.row.source}", "metric / source"),
        "",
        *stats_table(done, lambda o: f"{o.row.metric} / TP{o.row.tp}", "metric / TP"),
        "",
        *stats_table(done, lambda o: f"{o.row.metric} / {o.row.precision}", "metric / weights"),
        "",
        *stats_table(done, lambda o: f"{o.row.metric} / {_shape(o.row)}", "metric / shape"),
        "",
        "## Worst rows",
        "",
        "| row | setting | published | servesim | err |",
        "|---|---|---:|---:|---:|",
    ]
    for o in sorted(done, key=lambda o: -abs(o.error_pct))[:15]:
        lines.append(f"| `{o.row.id}` | {_setting_text(o.row)} | {_fmt(o.row.published)} | "
                     f"{_fmt(o.predicted)} | {o.error_pct:+.1f}% |")
    lines += ["", "## Sources", ""]
    for sid, s in sources.items():
        lines += [f"- **{sid}**: [{s['title']}]({s['url']}), {s['date']}. Engine "
                  f"{s['engine_version']}. How: {' '.join(s['how'].split())} "
                  f"(read via: {s['retrieved']})"]
    lines += ["", "## Every row", "",
              "Reproduce one row: `python benchmarks/production_engines.py --row ROW` (prints "
              "its config, the `servesim run` command and the result). The `servesim run` "
              "commands are listed under the table.", ""]
    by_source: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_source[o.row.source].append(o)
    for sid, group in by_source.items():
        lines += [f"### {sid}", "",
                  "| row | table | setting | metric | published | servesim | err |",
                  "|---|---|---|---|---:|---:|---:|"]
        for o in group:
            err = f"{o.error_pct:+.1f}%" if o.error_pct is not None else "not simulated"
            lines.append(f"| `{o.row.id}` | {o.row.table} | {_setting_text(o.row)} | "
                         f"{o.row.metric} | {_fmt(o.row.published)} | {_fmt(o.predicted)} | "
                         f"{err} |")
        notes = sorted({o.row.assumed for o in group if o.row.assumed})
        reasons = sorted({o.skipped for o in group if o.skipped})
        lines += [""] + [f"- Assumed: {' '.join(n.split())}" for n in notes]
        lines += [f"- Not simulated: {r}" for r in reasons]
        lines += ["", "<details><summary>servesim commands</summary>", "", "```"]
        settings: dict[tuple, list[Outcome]] = defaultdict(list)
        for o in group:
            if o.config:
                settings[o.row.setting()].append(o)
        for same in settings.values():
            lines.append(f"# {', '.join(o.row.id for o in same)}\n{command(same[0].config)}")
        lines += ["```", "", "</details>", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1


def _method_lines() -> list[str]:
    return [
        "## How each row is simulated",
        "",
        "Every published number is one row. The script builds the row's config from what its "
        "source states, with the same rules for every row, and nothing tuned per row:",
        "",
        "- `engine.preset` = the source's engine (`trtllm` for TensorRT-LLM and for NIM's "
        "TensorRT-LLM profiles, `vllm`, `sglang`); `hardware.gpu`, `hardware.tp` (= "
        "`num_gpus`), `model.name`, `model.weight_dtype` and `model.kv_dtype` as published "
        "(ModelOpt FP8/NVFP4 checkpoints: `fp8`/`nvfp4` weights with an FP8 KV cache); fixed "
        "ISL/OSL (`workload.prompt_tokens`/`output_tokens`); `seed=0`; "
        "`kv_cache.enable_prefix_caching=false` (the benchmarks send random tokens, so the "
        "cache never hits; off, the simulator can fast-forward decode runs; the results are "
        "the same, as a test checks).",
        "- **offline** (trtllm-bench `throughput`): every request at t ~ 0 (Poisson at "
        f"{ALL_AT_ONCE_RATE:.0e} req/s). Requests: {OFFLINE_WAVES} x the requests the engine "
        "holds at once (the preset's `max_num_seqs` or the simulated KV pool, the smaller), "
        "never more than the source sent: enough for the run to be mostly at its steady batch "
        "while keeping the study a few minutes long. Metric: output tokens / duration.",
        "- **closed** (genai-perf/AIPerf concurrency mode): `workload.arrival=closed` with the "
        f"published concurrency, {CLOSED_REQUESTS_PER_CLIENT} requests per client (at least "
        f"{CLOSED_MIN_REQUESTS}) measured after a warm-up of one request per client "
        "(`workload.client.warmup_requests` = the concurrency): the first wave, which every "
        "client sends at t = 0, is the start-up transient that perf_analyzer's stable "
        "measurement windows (behind genai-perf) and AIPerf's warm-up phase leave out; the "
        "benchmark client model (`workload.client.*`) otherwise at its defaults.",
        "- **static** (gptSessionBenchmark, NeMo): one batch of the published size at t ~ 0 under "
        "`scheduler.policy=static` with `max_num_seqs` = the batch and a token budget that holds "
        "the whole batch's prompts (as the engine was built for it).",
        "- **batch** (vLLM `benchmark_latency`): the batch's requests at t ~ 0 under the "
        "engine's preset; **first_token**: one request with one output token; TTFT.",
        "- Throughput per GPU divides by the deployment's GPUs; TPOT is compared with "
        "genai-perf's ITL, which is the same per-request quantity.",
        "",
    ]


# ---------------------------------------------------------------------------------- the CLI


def _one_row(rows: list[Row], sources: dict, row_id: str) -> int:
    match = [r for r in rows if r.id == row_id]
    if not match:
        print(f"--row: unknown row '{row_id}'; see --list", file=sys.stderr)
        return 2
    row = match[0]
    reason = why_not_simulated(row)
    print(f"{row.id}: {row.table}, {_setting_text(row)}; published {row.metric} = {row.published}")
    if reason:
        print(f"not simulated: {reason}")
        return 0
    cfg = overrides(row, sources[row.source]["engine"])
    print(command(cfg))
    predicted = read_metric(simulate_setting(cfg), row.metric, row.num_gpus)
    err = 100 * (predicted - row.published) / row.published
    print(f"servesim {row.metric} = {predicted:.4g}  (published {row.published:.4g}, {err:+.1f}%)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--row", help="simulate one row and print it")
    p.add_argument("--list", action="store_true", help="print the row ids")
    p.add_argument("--source", action="append", help="only rows of this source (repeatable)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--out", type=Path, default=DOC, help="the markdown written")
    p.add_argument("--from-results", action="store_true",
                   help=f"write the doc from the last run's results ({RESULTS.relative_to(ROOT)})"
                   " without simulating")
    args = p.parse_args(argv)
    if args.jobs < 1:
        print("--jobs: must be >= 1", file=sys.stderr)
        return 2
    sources, rows, _ = load_rows()
    if args.source:
        unknown = set(args.source) - set(sources)
        if unknown:
            print(f"--source: unknown {sorted(unknown)}; allowed: {', '.join(sources)}",
                  file=sys.stderr)
            return 2
        rows = [r for r in rows if r.source in args.source]
    if args.list:
        print("\n".join(r.id for r in rows))
        return 0
    if args.row:
        return _one_row(rows, sources, args.row)
    if args.from_results:
        outcomes, seconds, argv = pickle.loads(RESULTS.read_bytes())
    else:
        started = time.time()
        outcomes = run_study(rows, sources, args.jobs)
        seconds = time.time() - started
        RESULTS.parent.mkdir(parents=True, exist_ok=True)  # kept in case the doc fails
        RESULTS.write_bytes(pickle.dumps((outcomes, seconds, argv)))
    write_doc(outcomes, sources, argv, seconds, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
