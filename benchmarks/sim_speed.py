"""How fast the simulator runs, and how much memory it needs (issue #8; the default scenario
for issue #2).

Cases, each in a fresh Python process (so its peak memory is its own), timed on one core:

Each case runs on one of three engines (``--engine``): ``lane``, the default ``Engine``, which
hands a run it applies to (one replica, open loop, chunked prefill, paged KV, the roofline) to
its compiled loop (``sim.lane``) and otherwise fast-forwards; ``forward``, the general engine
with fast-forwarding (``Engine(fast_lane=False)``); ``step``, the general engine stepping every
iteration (``Engine(fast_forward=False)``).

- ``azure``: the Azure LLM inference conversation trace pattern (2023): prompt and output
  lengths resampled from ``AzureLLMInferenceTrace_conv.csv``, Poisson arrivals at the trace's
  mean rate (5.53 req/s); Llama-3.1-8B on one H100, chunked prefill, paged KV. Step records
  are streamed to a temporary Parquet file (``MetricsRecorder(spool_dir=...)``), as a
  million-request run needs; the time includes the requests table and the summary.
- ``default``: ``servesim run`` with no config (``sim.simulate`` of the default scenario, all
  tables built in memory) at a given number of requests.
- The scaling table: 10k / 100k / 1M requests at low load (the trace's rate) and high load
  (3x), and output lengths x1, x4, x16 (arrival rate divided by the factor, so the decode load
  stays the same) on each engine: how the cost per request grows as outputs grow.

Run from the repository root (the trace is read from ``../shared/traces``):

    python benchmarks/sim_speed.py                 # headline cases, writes RESULTS.md
    python benchmarks/sim_speed.py --scaling       # plus the scaling table (long: 1M x 2)
    python benchmarks/sim_speed.py --case azure --requests 100000   # one case, JSON out
    python benchmarks/sim_speed.py --from-log benchmarks/sim_speed_scaling.log \
        --refresh-below 1000000   # measure the logged cases again, but the million-request ones
    python benchmarks/sim_speed.py --profile --requests 5000        # where the CPU goes

Appends (or replaces) its own section of ``benchmarks/RESULTS.md``, with machine, date and the
load average (the machine may be shared: CPU seconds of the process are reported beside wall
seconds because they are less disturbed by other processes).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_md import RESULTS, write_section

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
START, END = "<!-- sim_speed:start -->", "<!-- sim_speed:end -->"
TRACE_RATE = 5.53  # req/s: (19366 - 1) requests over the trace's 3501.7 s


# ---- one case, in this process ------------------------------------------------------------


def azure_config(requests: int, rate: float, output_scale: int) -> dict:
    """The conversation trace's length distributions (empirical) with Poisson arrivals."""
    import numpy as np

    with TRACE.open() as f:
        rows = list(csv.DictReader(f))
    prompt = np.array([int(r["ContextTokens"]) for r in rows])
    output = np.array([int(r["GeneratedTokens"]) for r in rows]) * output_scale
    pv, pc = np.unique(prompt, return_counts=True)
    ov, oc = np.unique(output, return_counts=True)
    return {
        "scheduler": {"policy": "chunked_prefill"},
        "kv_cache": {"allocator": "paged"},
        "workload": {
            "arrival": "poisson", "rate": rate, "num_requests": requests,
            "prompt_tokens": {"dist": "empirical", "values": pv.tolist(), "weights": pc.tolist(),
                              "max": 1 << 20},
            "output_tokens": {"dist": "empirical", "values": ov.tolist(), "weights": oc.tolist(),
                              "max": 1 << 20},
        },
    }


ENGINES = {"lane": "lane", "forward": "fast-forward", "step": "stepping"}


def engine_kwargs(engine: str) -> dict:
    """``Engine`` switches of a benchmark engine (see the module's docstring)."""
    return {"fast_forward": engine != "step", "fast_lane": engine == "lane"}


def run_azure(requests: int, rate: float, output_scale: int, engine: str,
              linear_hw: bool = False) -> dict:
    from sim.config import load_config

    return simulate_spooled(load_config(azure_config(requests, rate, output_scale)),
                            engine, linear_hw)


class LinearStepModel:
    """Step time = base + per new token + per cached token, fitted to the roofline: a stand-in
    hardware model that prices a whole decode run at once (``step_times_s``), as the engine
    would with a roofline that offered it. Its runs are bit-identical to its single steps."""

    def __init__(self, roofline) -> None:
        import numpy as np

        rng = np.random.default_rng(0)
        shapes, times = [], []
        for _ in range(200):
            b = int(rng.integers(1, 64))
            seqs = [(1 if rng.random() < 0.9 else int(rng.integers(2, 2048)),
                     int(rng.integers(0, 4096))) for _ in range(b)]
            shapes.append((1.0, sum(n for n, _ in seqs), sum(c for _, c in seqs)))
            times.append(roofline.step_time_s(seqs))
        coef = np.linalg.lstsq(np.array(shapes), np.array(times), rcond=None)[0]
        self.base_s, self.per_token_s, self.per_context_s = (float(max(c, 0.0)) for c in coef)

    def step_time_s(self, seqs: list[tuple[int, int]]) -> float:
        new = sum(n for n, _ in seqs)
        ctx = sum(c for _, c in seqs)
        return self.base_s + self.per_token_s * new + self.per_context_s * ctx

    def step_times_s(self, seqs: list[tuple[int, int]], n_steps: int):
        import numpy as np

        new = sum(n for n, _ in seqs)
        ctx = sum(c for _, c in seqs) + len(seqs) * np.arange(n_steps)  # exact integers
        return self.base_s + self.per_token_s * new + self.per_context_s * ctx.astype(float)


def simulate_spooled(cfg, engine_name: str, linear_hw: bool = False) -> dict:
    """``sim.simulate`` without the steps table in memory: step records go to a spool file."""
    from sim.api import workload_process
    from sim.build import build
    from sim.engine import Engine
    from sim.executors import RooflineExecutor
    from sim.metrics import SLO, MetricsRecorder, summarize

    requests = cfg.workload.num_requests
    with tempfile.TemporaryDirectory() as spool:
        wall, cpu = time.perf_counter(), time.process_time()
        deployment = build(cfg)
        if linear_hw:
            model = LinearStepModel(deployment.hardware)
            for replica in deployment.replicas:
                replica.executor = RooflineExecutor(model)
        metrics = MetricsRecorder(spool_dir=spool)
        engine = Engine(deployment.replicas, metrics, **engine_kwargs(engine_name))
        engine.run(workload_process(cfg))
        summary = summarize(metrics.requests_frame(), metrics.itl, SLO())
        steps = metrics.num_steps
        metrics.steps_path()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = _result(requests, wall, cpu, steps, engine.env.fast_forwarded_steps, summary)
    result["lane_steps"] = engine.lane_steps
    return result


def run_default(requests: int, engine: str = "lane") -> dict:
    import functools

    import sim.api
    from sim.config import load_config

    # simulate() has no switch: its Engine is given the engine's
    sim.api.Engine = functools.partial(sim.api.Engine, **engine_kwargs(engine))
    cfg = load_config(None, [f"workload.num_requests={requests}"])
    wall, cpu = time.perf_counter(), time.process_time()
    result = sim.api.simulate(cfg)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return _result(requests, wall, cpu, len(result.steps), None, result.summary)


def _result(requests: int, wall: float, cpu: float, steps: int, ff_steps: int | None,
            summary: dict) -> dict:
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"requests": requests, "wall_s": wall, "cpu_s": cpu, "steps": steps,
            "fast_forwarded_steps": ff_steps, "peak_rss_mb": peak_kib / 1024,
            "completed": summary["completed"], "mean_ttft_ms": summary["mean_ttft_ms"],
            "mean_tpot_ms": summary["mean_tpot_ms"], "duration_s": summary["duration_s"]}


def pin_to_one_core() -> None:
    """Run on one core: helper threads (Parquet writing) then share it instead of adding CPU."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


# ---- driver: every case in a fresh process ----------------------------------------------------


def measure(case: str, requests: int, rate: float = TRACE_RATE, output_scale: int = 1,
            engine: str = "lane") -> dict:
    cmd = [sys.executable, str(Path(__file__)), "--case", case, "--requests", str(requests),
           "--rate", str(rate), "--output-scale", str(output_scale), "--engine", engine]
    load = os.getloadavg()[0]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(case=case, rate=rate, output_scale=output_scale, engine=engine,
                  load_before=load, load_after=os.getloadavg()[0], commit=git_commit())
    print(json.dumps(result), flush=True)
    return result


def git_commit() -> str:
    """The commit measured (``+`` if the simulator's code had uncommitted changes), for rows
    measured at different times."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout
    code = ("sim", "policies", "hwmodels", "benchmarks/sim_speed.py")
    dirty = "+" if git("status", "--porcelain", "--untracked-files=no", "--", *code).strip() else ""
    return git("rev-parse", "--short", "HEAD").strip() + dirty


def refresh(log: Path, below: int) -> list[dict]:
    """Measure again every case of ``log`` with fewer than ``below`` requests (the longest
    ones keep their earlier line and commit); rewrite the log; return its results."""
    old = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    new = [r if r["requests"] >= below else
           measure(r["case"], r["requests"], r["rate"], r["output_scale"], engine_of(r))
           for r in old]
    log.write_text("".join(json.dumps(r) + "\n" for r in new))
    return new


def engine_of(r: dict) -> str:
    """A logged case's engine (lines from before the lane name only fast-forwarding)."""
    return r.get("engine") or ("forward" if r["fast_forward"] else "step")


def row(r: dict) -> str:
    per_req_ms = r["cpu_s"] / r["requests"] * 1e3
    ff = ENGINES[engine_of(r)]
    rate = "10 (default)" if r["case"] == "default" else f"{r['rate']:.2f}"
    return (f"| {r['case']} | {r['requests']:,} | {rate} | x{r['output_scale']} | {ff} "
            f"| {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {per_req_ms:.3f} | {r['steps']:,} "
            f"| {r['peak_rss_mb']:.0f} | {r['load_before']:.1f} / {r['load_after']:.1f} "
            f"| {r.get('commit', 'before 4215fb0')} |")


HEADER = ("| case | requests | rate (req/s) | output | engine | wall s | CPU s "
          "| CPU ms / request | steps | peak RSS MB | load avg before / after | commit |\n"
          "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["azure", "azure-linear-hw", "default"],
                        help="run one case, print JSON")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=TRACE_RATE)
    parser.add_argument("--output-scale", type=int, default=1)
    parser.add_argument("--engine", choices=sorted(ENGINES), default="lane",
                        help="lane (default Engine), forward (no lane), step (every iteration)")
    parser.add_argument("--scaling", action="store_true", help="also the scaling table")
    parser.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    parser.add_argument("--profile", action="store_true", help="CPU by package (azure case)")
    parser.add_argument("--from-log", type=Path, help="render the JSON lines a run printed")
    parser.add_argument("--refresh-below", type=int, metavar="N",
                        help="with --from-log: measure its cases of fewer than N requests "
                             "again and rewrite the log first")
    args = parser.parse_args()
    if args.case is not None:
        pin_to_one_core()
    if args.profile:
        text = profile(args.requests, args.rate)
        print(text)
        if not args.no_write:
            write_section(text, "<!-- sim_speed_profile:start -->",
                          "<!-- sim_speed_profile:end -->")
        return
    if args.from_log is not None:
        if args.refresh_below:
            refresh(args.from_log, args.refresh_below)
        results = [json.loads(line) for line in args.from_log.read_text().splitlines()
                   if line.startswith("{")]
        headline = [r for r in results if r["rate"] == TRACE_RATE and r["output_scale"] == 1
                    and (r["requests"] in (100_000, 1_000_000)
                         or (r["requests"] == 10_000 and engine_of(r) == "step"))
                    or r["case"] == "default"]
        command = f"python benchmarks/sim_speed.py --from-log {args.from_log}"
        if args.refresh_below:
            command += f" --refresh-below {args.refresh_below}"
        text = render(headline, [r for r in results if r not in headline], command)
        print(text)
        if not args.no_write:
            write_section(text, START, END)
        return
    if args.case in ("azure", "azure-linear-hw"):
        print(json.dumps(run_azure(args.requests, args.rate, args.output_scale,
                                   args.engine, args.case == "azure-linear-hw")))
        return
    if args.case == "default":
        print(json.dumps(run_default(args.requests, args.engine)))
        return
    rows = [measure("azure", 100_000), measure("azure", 1_000_000),
            measure("azure", 100_000, engine="forward"),
            measure("default", 10_000), measure("default", 100_000),
            measure("default", 100_000, engine="forward"),
            measure("azure", 10_000, engine="step"),
            measure("default", 10_000, engine="step")]
    scaling = []
    if args.scaling:
        scaling.append(measure("azure", 10_000))  # low load; 100k and 1M are above
        for n in (10_000, 100_000, 1_000_000):
            scaling.append(measure("azure", n, rate=3 * TRACE_RATE))
        for case, engines in SCALING_ENGINES.items():
            for scale in (1, 4, 16):
                for engine in engines:
                    scaling.append(measure(case, 2_000, rate=TRACE_RATE / scale,
                                           output_scale=scale, engine=engine))
    text = render(rows, scaling)
    print(text)
    if not args.no_write:
        write_section(text, START, END)
        print(f"wrote {RESULTS.relative_to(ROOT)}")


def profile(requests: int, rate: float) -> str:
    """Run the azure case under cProfile: its own CPU time summed by package (markdown)."""
    import cProfile
    import pstats
    from collections import Counter

    from sim.build import build
    from sim.config import load_config

    cfg = load_config(azure_config(requests, rate, 1))
    build(cfg)  # start-up work (the hardware catalogs) is not what is measured
    prof = cProfile.Profile()
    prof.runcall(simulate_spooled, cfg, "forward")
    groups = (("hwmodels/", "hardware model (hwmodels)"), ("policies/", "policies"),
              ("sim/", "engine, fast-forward, metrics, workload (sim)"), ("simpy", "simpy"),
              ("numpy", "numpy (Python part)"),
              ("pandas", "pandas (Python part)"))
    totals: Counter = Counter()
    for (path, _, _), (_, _, own_s, _, callers) in pstats.Stats(prof).stats.items():
        if path == "~":  # a C function: charge its time to the Python callers' packages
            for (caller, _, _), (_, _, own_from_caller_s, _) in callers.items():
                totals[_group(caller, groups)] += own_from_caller_s
        else:
            totals[_group(path, groups)] += own_s
    total = sum(totals.values())
    lines = [f"### Where the CPU goes (`python benchmarks/sim_speed.py --profile "
             f"--requests {requests}`, {dt.date.today().isoformat()})", "",
             f"The azure case on the general engine (fast-forwarding, no lane) under cProfile "
             f"({total:.1f} s with the profiler's overhead); time "
             "in C functions is charged to the package that called them.", "",
             "| package | CPU s | share |", "|---|---:|---:|"]
    for name, seconds in totals.most_common():
        lines.append(f"| {name} | {seconds:.2f} | {seconds / total:.1%} |")
    return "\n".join(lines)


def _group(path: str, groups: tuple[tuple[str, str], ...]) -> str:
    return next((name for key, name in groups if key in path), "other")


def verdicts(rows: list[dict]) -> list[str]:
    """The issue's targets against what was measured."""
    out = []
    for r in rows:
        if r["case"] == "azure" and r["requests"] == 100_000 and r["rate"] == TRACE_RATE:
            if engine_of(r) != "lane":
                out.append(f"- The same 100,000 requests on the general engine "
                           f"({ENGINES[engine_of(r)]}, `Engine(fast_lane=False)`): "
                           f"{r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU.")
                continue
            met = "met" if r["wall_s"] < 10 else "NOT met"
            out.append(f"- 100,000 Azure-pattern requests in under 10 s on one core: {met} "
                       f"({r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU; the default "
                       "`Engine`, which runs this case in its compiled lane).")
        if r["case"] == "azure" and r["requests"] == 1_000_000:
            met = "met" if r["peak_rss_mb"] < 2048 else "NOT met"
            out.append(f"- 1,000,000 requests under 2 GB peak memory: {met} "
                       f"({r['peak_rss_mb']:.0f} MB peak RSS).")
    return out


def render(rows: list[dict], scaling: list[dict],
           command: str = "python benchmarks/sim_speed.py --scaling") -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in
                     Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line)
    except (OSError, StopIteration):
        model = cpu
    lines = [
        f"## Simulator speed and memory (`{command}`)",
        "",
        f"Measured {dt.date.today().isoformat()} on {model}, {os.cpu_count()} logical CPUs "
        f"(shared with other jobs: see the load averages), Python {platform.python_version()}. "
        "One process per row, pinned to one core; CPU s is the process's own CPU time; "
        "commit: the code measured (+: with uncommitted changes).",
        "",
        HEADER, *(row(r) for r in rows), "", *verdicts(rows),
    ]
    if scaling:
        lines += ["", "Scaling (azure pattern; high load = 3x the trace's rate; output xk = "
                  "the trace's output lengths times k at 1/k the rate; azure-linear-hw: the "
                  "same with a linear fit of the roofline as the hardware model, a cheaper "
                  "one, for comparison):", "", HEADER, *(row(r) for r in scaling), "",
                  *growth(scaling)]
    return "\n".join(lines)


# the lane serves only the roofline: the linear hardware model takes the general engine
SCALING_ENGINES = {"azure": ("lane", "forward", "step"), "azure-linear-hw": ("forward", "step")}


def growth(scaling: list[dict]) -> list[str]:
    """How the CPU per request grows with the output lengths, on each engine."""
    out = []
    for case, engines in SCALING_ENGINES.items():
        for engine in engines:
            pts = sorted((r["output_scale"], 1e3 * r["cpu_s"] / r["requests"]) for r in scaling
                         if r["case"] == case and engine_of(r) == engine
                         and r["requests"] == 2000)
            if len(pts) > 1:
                series = ", ".join(f"x{k} {ms:.2f}" for k, ms in pts)
                out.append(f"- {case}, {ENGINES[engine]}: CPU ms per request "
                           f"{series} ({pts[-1][1] / pts[0][1]:.1f}x for {pts[-1][0]}x the "
                           "tokens).")
    return out


if __name__ == "__main__":
    main()
