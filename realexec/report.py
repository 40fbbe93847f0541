"""The validation report: per scenario and metric, real vs simulated and the error.

Rendered from the raw results JSON that ``realexec.validate`` saves, so a report can be rebuilt
(or restyled) without a GPU::

    python -m realexec.report RESULTS.json --md OUT.md --html OUT.html \
        [--profile PROFILE.json --table CALIBRATION.csv --notes NOTES.md] \
        [--repeat RESULTS2.json] [--bench BENCH.json]

Errors are ``(simulated - real) / real``; the headline is the median of their absolute values
over scenarios, next to the targets of ISSUE #5.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from realexec.validate import LATENCIES, STATS, metric_names

TARGETS_PCT = {"ttft": 10.0, "tpot": 5.0, "e2el": 5.0}
HEADLINE = [("mean", "ttft"), ("median", "ttft"), ("mean", "tpot"), ("median", "tpot"),
            ("mean", "e2el"), ("median", "e2el"), ("p99", "e2el")]


def rel_error(sim_value: float, real_value: float) -> float:
    if real_value is None or sim_value is None or not real_value or math.isnan(real_value):
        return math.nan
    return (sim_value - real_value) / real_value


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:+.1f}%"


def headline(scenarios: list[dict]) -> list[tuple[str, float, float | None, int]]:
    """(metric, median |error| in %, target %, scenarios counted) over scenarios that ran."""
    ok = [s for s in scenarios if not s.get("error")]
    rows = []
    for stat, name in HEADLINE:
        key = f"{stat}_{name}_ms"
        errs = [abs(rel_error(s["sim"].get(key), s["real"].get(key))) for s in ok]
        errs = [e for e in errs if not math.isnan(e)]
        med = 100 * float(np.median(errs)) if errs else math.nan
        rows.append((key, med, TARGETS_PCT.get(name), len(errs)))
    for key in ("output_throughput", "kv_blocks_used_mean"):
        errs = [abs(rel_error(s["sim"].get(key), s["real"].get(key))) for s in ok]
        errs = [e for e in errs if not math.isnan(e)]
        rows.append((key, 100 * float(np.median(errs)) if errs else math.nan, None, len(errs)))
    return rows


def step_errors(scenario: dict) -> np.ndarray:
    """Relative error of the roofline on each real step of a scenario (held-out steps)."""
    pairs = [(m, p) for _, m, p, *_ in scenario.get("steps", []) if p is not None and m > 0]
    return np.array([(p - m) / m for m, p in pairs if not math.isnan(p)])


def _title(meta: dict) -> str:
    """Model (and its depth when run on fewer layers than the catalog's), cards, TP degree."""
    model = str(meta.get("model"))
    if meta.get("num_layers"):
        model += f" ({meta['num_layers']} layers)"
    tp = f" x{meta['tp']}, tensor parallel" if (meta.get("tp") or 1) > 1 else ""
    return f"{model} on {meta.get('gpu_name')}{tp}"


def steps_by_kind(scenario: dict) -> list[tuple[str, int, float, float, float]]:
    """(kind, steps, mean measured ms, mean predicted ms, median signed error) of a scenario's
    served steps: decode-only steps apart from steps with prompt tokens, since the two are timed
    by different parts of the fit and miss for different reasons."""
    rows = []
    for kind, keep in (("decode", True), ("prefill/mixed", False)):
        pairs = np.array([(m, p) for seqs, m, p, *_ in scenario.get("steps", [])
                          if p is not None and m > 0 and not math.isnan(p)
                          and all(n == 1 for n, _ in seqs) == keep]).reshape(-1, 2)
        if len(pairs):
            err = (pairs[:, 1] - pairs[:, 0]) / pairs[:, 0]
            rows.append((kind, len(pairs), 1e3 * pairs[:, 0].mean(), 1e3 * pairs[:, 1].mean(),
                         float(np.median(err))))
    return rows


def within_targets(scenario: dict) -> tuple[bool, list[str]]:
    """Whether one scenario meets every target (mean TTFT, TPOT, E2E), and the misses."""
    misses = []
    for name, target in TARGETS_PCT.items():
        key = f"mean_{name}_ms"
        err = rel_error(scenario["sim"].get(key), scenario["real"].get(key))
        if math.isnan(err) or 100 * abs(err) > target:
            misses.append(f"{name} {_pct(err)}")
    return not misses, misses


def capacity_section(scenarios: list[dict]) -> list[str]:
    """Predicted (simulated probe) against measured (device probe) capacity, per policy."""
    seen, lines = {}, []
    for s in scenarios:
        measured = s.get("capacity_measured_rps")
        if measured is None or (isinstance(measured, float) and math.isnan(measured)):
            continue
        seen.setdefault(s["name"].rsplit("-", 1)[0], (s["capacity_rps"], measured))
    if not seen:
        return lines
    lines += ["", "## Capacity: simulated vs measured saturation probe", "",
              "The same closed loop (every sequence slot busy, the same seeded requests) run on "
              "the device and simulated; scenario loads are fractions of the measured value.",
              "", "| policy | measured (req/s) | simulated (req/s) | error | target |",
              "|---|---|---|---|---|"]
    for name, (predicted, measured) in seen.items():
        lines.append(f"| {name} | {measured:.2f} | {predicted:.2f} | "
                     f"{_pct(rel_error(predicted, measured))} | <= 5% |")
    return lines


def host_gpu_section(scenarios: list[dict]) -> list[str]:
    """Host time against GPU time of the served steps, per step kind and path."""
    rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for s in scenarios:
        for st in s.get("steps", []):
            if len(st) >= 7 and st[4] == st[4]:  # host, gpu, kind, path recorded; gpu not nan
                rows.setdefault((st[5], st[6]), []).append((st[3], st[4]))
    if not rows:
        return []
    lines = ["", "## Host vs GPU time of the served steps", "",
             "Host: building inputs, launching, reading the sampled ids back (the CPU's own "
             "work). GPU: CUDA events from the first input copy to the last kernel.", "",
             "| step kind | path | steps | median host (ms) | median GPU (ms) | host / GPU |",
             "|---|---|---|---|---|---|"]
    for (kind, path), pairs in sorted(rows.items()):
        arr = np.array(pairs)
        host, gpu = float(np.median(arr[:, 0])), float(np.median(arr[:, 1]))
        lines.append(f"| {kind} | {path} | {len(arr)} | {1e3 * host:.2f} | {1e3 * gpu:.2f} | "
                     f"{100 * host / gpu:.1f}% |")
    return lines


def disjointness_section(scenarios: list[dict]) -> list[str]:
    """How many served steps are exactly a calibration shape (the fit saw none of them)."""
    from realexec.calibrate import Grid, design_shapes

    designed = {tuple(sorted(shape.seqs)) for shape in design_shapes(Grid())}
    total = same = 0
    for s in scenarios:
        for st in s.get("steps", []):
            total += 1
            same += tuple(sorted(tuple(x) for x in st[0])) in designed
    if not total:
        return []
    return ["", "## Calibration and validation are disjoint", "",
            "The profile is fitted on designed steps run alone (`realexec/calibrate.py`: "
            "prefills, cached prefills, decode batch x context, mixed, verify), each a fixed "
            "shape with its KV allocated for it; the scenarios are whole workloads whose steps "
            "the scheduler forms from seeded requests. Of the "
            f"{total} served steps, {same} have exactly the (new, cached) tokens of a designed "
            "shape; the latencies compared are of requests, which no calibration step has."]


def calibration_section(profile: dict, table=None) -> list[str]:
    """The fit: parameters, quality overall and per shape kind, and the engine's decode speed."""
    src = profile.get("source", {})
    lines = ["", "## Calibration", "",
             f"Fit on {profile.get('num_steps')} designed steps: MAPE "
             f"{_fmt(profile.get('mape'), 1)}%, p90 abs error "
             f"{_fmt(profile.get('p90_abs_error_pct'), 1)}%; fitted "
             f"{', '.join(src.get('fitted', []))}.", "",
             "| parameter | value | relative stderr |", "|---|---|---|"]
    stderr = src.get("relative_stderr", {})
    for name, value in sorted(profile.get("params", {}).items()):
        lines.append(f"| {name} | {value:.4g} | {_fmt(stderr.get(name), 3)} |"
                     if isinstance(value, float) else f"| {name} | {value} | |")
    if table is not None and "error_pct" in table:
        lines += ["", "| step kind | steps | median abs error | max abs error |",
                  "|---|---|---|---|"]
        for kind, grp in table.groupby("kind"):
            err = grp["error_pct"].abs()
            lines.append(f"| {kind} | {len(grp)} | {err.median():.1f}% | {err.max():.1f}% |")
    speed = src.get("engine_speed") or []
    if speed:
        lines += ["", "## Engine speed (decode)", "",
                  f"Floor = weight bytes ({src.get('weight_bytes', 0) / 1e9:.2f} GB) / measured "
                  f"device copy bandwidth ({_fmt(src.get('copy_gbps'), 0)} GB/s, read + write).",
                  "", "| batch | context | step (ms) | floor (ms) | step / floor |",
                  "|---|---|---|---|---|"]
        for row in speed:
            lines.append(f"| {row['batch']} | {row['context']} | {row['measured_ms']:.2f} | "
                         f"{row['floor_ms']:.2f} | {row['ratio']:.2f}x |")
    return lines


def repeat_section(scenarios: list[dict], repeat: list[dict]) -> list[str]:
    """Two runs of the suite on two machines: each scenario's errors in both, and the spread."""
    other = {s["name"]: s for s in repeat if not s.get("error")}
    lines = ["", "## Two runs on two fresh machines", "",
             "| scenario | TTFT run 1 | TTFT run 2 | TPOT run 1 | TPOT run 2 | E2E run 1 "
             "| E2E run 2 | real E2E spread | both within targets |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in scenarios:
        r = other.get(s["name"])
        if s.get("error") or r is None:
            continue
        cells = []
        for name in TARGETS_PCT:
            key = f"mean_{name}_ms"
            cells += [_pct(rel_error(x["sim"].get(key), x["real"].get(key))) for x in (s, r)]
        spread = rel_error(r["real"].get("mean_e2el_ms"), s["real"].get("mean_e2el_ms"))
        both = within_targets(s)[0] and within_targets(r)[0]
        lines.append(f"| {s['name']} | " + " | ".join(cells) + f" | {_pct(spread)} | "
                     f"{'yes' if both else 'no'} |")
    return lines


def bench_section(bench: dict) -> list[str]:
    """The step-speed benchmark (``scripts/gpu_bench_steps.py``): each step kind's wall, host
    and GPU time, against the decode floor and the prefill's GEMM-bound time."""
    floor = bench["decode_floor_ms"]
    gemm = {f["tokens"]: f for f in bench.get("prefill_floors", [])}
    lines = ["", "## Engine speed: every step kind", "",
             f"`scripts/gpu_bench_steps.py` on {bench['device']}, {bench['date']}, torch "
             f"{bench['torch']}. Decode floor = weight bytes ({bench['weight_bytes'] / 1e9:.2f} "
             f"GB) / measured copy bandwidth ({bench['copy_gbps']:.0f} GB/s) = {floor:.2f} ms; "
             f"measured bf16 matrix rate {bench['matmul_tflops']:.0f} TFLOP/s. Compile + "
             f"capture took {bench['compile_capture_s']:.0f} s.", "",
             "| step | seqs | tokens | context | path | wall (ms) | host (ms) | GPU (ms) "
             "| host / GPU | eager, no graphs (ms) | vs floor |", "|---|---|---|---|---|---|---|"
             "---|---|---|---|"]
    eager = bench.get("eager") or [None] * len(bench["fast"])
    for r, e in zip(bench["fast"], eager, strict=True):
        versus = ""
        if r["kind"] == "decode" and r["num_seqs"] == 1:
            versus = f"{r['wall_ms'] / floor:.2f}x weight floor"
        elif r["kind"] == "prefill" and r["tokens"] in gemm:
            versus = f"{r['wall_ms'] / gemm[r['tokens']]['gemm_ms']:.2f}x GEMMs alone"
        lines.append(f"| {r['kind']} | {r['num_seqs']} | {r['tokens']} | {r['max_context']} | "
                     f"{r['path']} | {r['wall_ms']:.2f} | {r['host_ms']:.2f} | "
                     f"{r['gpu_ms']:.2f} | {100 * r['host_ms'] / r['gpu_ms']:.1f}% | "
                     f"{_fmt(e['wall_ms']) if e else 'n/a'} | {versus} |")
    for n, f in sorted(gemm.items()):
        lines.append(f"\nPrefill {n}: its GEMMs alone (cuBLAS, replayed from a graph) "
                     f"{f['gemm_ms']:.2f} ms; its FLOPs at the measured matrix rate "
                     f"{f['peak_ms']:.2f} ms.")
    return lines


def markdown(payload: dict, profile: dict | None = None, table=None) -> str:
    meta, scenarios = payload["meta"], payload["scenarios"]
    lines = [f"# Validation: {_title(meta)}", ""]
    for key in ("date", "gpu_name", "torch", "cuda", "backend", "tp", "profile", "command"):
        if key in meta:
            lines.append(f"- **{key}**: `{meta[key]}`")
    if meta.get("notes"):
        lines += ["", *meta["notes"]]
    lines += ["", "## Headline: median absolute error over scenarios", "",
              "| metric | median abs error | target | scenarios |", "|---|---|---|---|"]
    for key, med, target, n in headline(scenarios):
        tgt = f"<= {target:.0f}%" if target else ""
        lines.append(f"| {key} | {_fmt(med, 1)}% | {tgt} | {n} |")
    if meta.get("bench"):
        lines += bench_section(meta["bench"])
    lines += capacity_section(scenarios)
    if meta.get("repeat"):
        lines += repeat_section(scenarios, meta["repeat"])
    if profile is not None:
        lines += calibration_section(profile, table)
    lines += ["", "## Scenarios", "",
              "Errors are (simulated - real) / real; targets: mean TTFT within 10%, TPOT and E2E "
              "within 5%, each scenario.", "",
              "| scenario | rate (req/s) | requests | capacity (sim) | TTFT mean | TPOT mean "
              "| E2E mean | E2E p99 | throughput | KV blocks (mean) | step err (median abs) "
              "| targets |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in scenarios:
        wl = s["config"]["workload"]
        if s.get("error"):
            lines.append(f"| {s['name']} | {wl.get('rate')} | {wl.get('num_requests')} | "
                         f"{_fmt(s['capacity_rps'])} | not run: {s['error']} |||||||")
            continue
        errs = [_pct(rel_error(s["sim"].get(k), s["real"].get(k))) for k in
                ("mean_ttft_ms", "mean_tpot_ms", "mean_e2el_ms", "p99_e2el_ms",
                 "output_throughput", "kv_blocks_used_mean")]
        se = step_errors(s)
        step = f"{100 * np.median(np.abs(se)):.1f}%" if len(se) else "n/a"
        ok, misses = within_targets(s)
        lines.append(f"| {s['name']} | {wl.get('rate')} | {wl.get('num_requests')} | "
                     f"{_fmt(s['capacity_rps'])} | " + " | ".join(errs) + f" | {step} | "
                     + ("met" if ok else "missed: " + ", ".join(misses)) + " |")
    lines += ["", "## Served steps: measured vs predicted", "",
              "| scenario | steps | count | measured mean (ms) | predicted mean (ms) "
              "| median error |", "|---|---|---|---|---|---|"]
    for s in scenarios:
        for kind, n, measured, predicted, err in ([] if s.get("error") else steps_by_kind(s)):
            lines.append(f"| {s['name']} | {kind} | {n} | {measured:.2f} | {predicted:.2f} | "
                         f"{_pct(err)} |")
    lines += host_gpu_section(scenarios)
    lines += disjointness_section(scenarios)
    for s in scenarios:
        if s.get("error"):
            continue
        lines += ["", f"### {s['name']}", "", f"real wall time {s['wall_s']:.1f} s; "
                  f"{len(s.get('steps', []))} steps", "",
                  "| metric | real | simulated | error |", "|---|---|---|---|"]
        for key in metric_names():
            r, m = s["real"].get(key), s["sim"].get(key)
            lines.append(f"| {key} | {_fmt(r)} | {_fmt(m)} | {_pct(rel_error(m, r))} |")
    return "\n".join(lines) + "\n"


def html(payload: dict) -> str:
    """Plotly figures: errors per scenario, and every real step's measured vs predicted time."""
    import plotly.graph_objects as go

    ok = [s for s in payload["scenarios"] if not s.get("error")]
    names = [s["name"] for s in ok]
    bars = go.Figure()
    for stat in ("mean", "median", "p99"):
        for lat in ("ttft", "tpot", "e2el"):
            key = f"{stat}_{lat}_ms"
            bars.add_bar(name=key, x=names,
                         y=[100 * rel_error(s["sim"].get(key), s["real"].get(key)) for s in ok])
    bars.update_layout(title="Simulated vs real: error per scenario (%)", barmode="group",
                       yaxis_title="(sim - real) / real, %")
    scatter = go.Figure()
    for s in ok:
        steps = [(m, p) for _, m, p, *_ in s.get("steps", []) if p is not None]
        scatter.add_scatter(name=s["name"], mode="markers", marker={"size": 4},
                            x=[1e3 * m for m, _ in steps], y=[1e3 * p for _, p in steps])
    top = max([1e3 * st[1] for s in ok for st in s.get("steps", [])] or [1.0])
    scatter.add_scatter(name="y = x", x=[0, top], y=[0, top], mode="lines")
    scatter.update_layout(title="Every real step: measured vs roofline-predicted (ms)",
                          xaxis_title="measured ms", yaxis_title="predicted ms",
                          xaxis_type="log", yaxis_type="log")
    lat = go.Figure()
    for key in [f"{s}_{m}_ms" for m in LATENCIES for s in STATS]:
        lat.add_scatter(name=key, mode="markers", x=[s["real"].get(key) for s in ok],
                        y=[s["sim"].get(key) for s in ok], text=names)
    lat.update_layout(title="Latency metrics: real (x) vs simulated (y), ms", xaxis_type="log",
                      yaxis_type="log")
    parts = [fig.to_html(full_html=False, include_plotlyjs="cdn" if i == 0 else False)
             for i, fig in enumerate((bars, lat, scatter))]
    meta = payload["meta"]
    title = f"Validation: {_title(meta)}"
    return (f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            f"<h1>{title}</h1><p>{meta.get('date', '')} - torch {meta.get('torch', '')} - "
            f"backend {meta.get('backend', '')}</p>" + "".join(parts) + "</body></html>")


def write(payload: dict, md_path: str | Path | None, html_path: str | Path | None,
          profile: dict | None = None, table=None) -> None:
    if md_path:
        Path(md_path).write_text(markdown(payload, profile, table))
    if html_path:
        Path(html_path).write_text(html(payload))


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    usage = ("usage: python -m realexec.report RESULTS.json [--md OUT.md] [--html OUT.html] "
             "[--profile P.json] [--table CAL.csv] [--notes N.md] [--repeat R.json] "
             "[--bench B.json]")
    known = {"--md", "--html", "--profile", "--table", "--notes", "--repeat", "--bench"}
    opts = dict(zip(args[1::2], args[2::2], strict=False))
    if not args or args[0].startswith("-") or len(args) % 2 == 0 or set(opts) - known:
        print(usage)
        return 2
    payload = json.loads(Path(args[0]).read_text())
    if "--notes" in opts:  # markdown lines (how the run was made, caveats) after the header
        payload["meta"]["notes"] = Path(opts["--notes"]).read_text().strip().splitlines()
    if "--repeat" in opts:  # the same suite's results.json from a second fresh machine
        payload["meta"]["repeat"] = json.loads(Path(opts["--repeat"]).read_text())["scenarios"]
    if "--bench" in opts:  # scripts/gpu_bench_steps.py's JSON: the step-speed section
        payload["meta"]["bench"] = json.loads(Path(opts["--bench"]).read_text())
    profile = json.loads(Path(opts["--profile"]).read_text()) if "--profile" in opts else None
    table = None
    if "--table" in opts and profile is not None:
        import pandas as pd

        from hwmodels.calibrate import residual_table
        from hwmodels.profile import Profile

        table = residual_table(pd.read_csv(opts["--table"]), Profile.from_dict(profile))
    write(payload, opts.get("--md"), opts.get("--html"), profile, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
