"""Aggregated versus disaggregated serving of Llama-3.1-70B on 8 H100s: goodput under SLOs.

Every deployment uses all 8 GPUs and sees the same requests (one seed). Goodput is the rate of
requests that meet both SLOs, TTFT and TPOT, each request on its own (as vLLM's benchmark counts
it), over the run's duration. Two SLO settings are scored on the same runs: a tight one (TPOT
25 ms, 40 tokens/s per user) and a loose one (TPOT 50 ms). The results and what they mean are
in docs/cluster.md.

    python examples/disagg_study.py           # the full study (the numbers in docs/cluster.md)
    python examples/disagg_study.py --quick   # a reduced run (the CI test)
    python examples/disagg_study.py --search chat 6   # cheapest deployment for chat at 6 req/s
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

import sim

MODEL, GPU, NUM_GPUS = "llama-3.1-70b", "h100", 8
SLOS = {"tight": (2000.0, 25.0), "loose": (2000.0, 50.0)}  # (TTFT ms, TPOT ms)
NUM_REQUESTS, QUICK_REQUESTS = 400, 40
SEED = 0

# Lengths: lognormal with a mean and a spread (sigma of the log), clipped.
WORKLOADS = {
    # Long documents, short answers (summarization, RAG): prefill-heavy.
    "long-prompt": ({"dist": "lognormal", "mean": 4000, "sigma": 0.5, "min": 256, "max": 16000},
                    {"dist": "lognormal", "mean": 200, "sigma": 0.6, "min": 8, "max": 1000}),
    # Conversations: medium prompts and answers.
    "chat": ({"dist": "lognormal", "mean": 1500, "sigma": 0.8, "min": 32, "max": 8000},
             {"dist": "lognormal", "mean": 300, "sigma": 0.8, "min": 8, "max": 2000}),
    # Short prompts, long generations (writing, reasoning): decode-heavy.
    "long-output": ({"dist": "lognormal", "mean": 300, "sigma": 0.6, "min": 16, "max": 2000},
                    {"dist": "lognormal", "mean": 1000, "sigma": 0.5, "min": 64, "max": 4000}),
}
RATES = {"long-prompt": (0.5, 1.0, 2.0, 3.0, 4.0), "chat": (1.0, 2.0, 4.0, 6.0, 8.0),
         "long-output": (1.0, 2.0, 4.0, 6.0, 8.0)}

CHUNKED = {"policy": "chunked_prefill", "max_num_batched_tokens": 2048}
PREFILL_FIRST = {"policy": "continuous", "max_num_batched_tokens": 8192}
P4_D4 = [{"role": "prefill", "num_gpus": 4, "tp": 4},
         {"role": "decode", "num_gpus": 4, "tp": 4, **CHUNKED}]
DEPLOYMENTS = {
    # Two tp4 replicas behind a least-outstanding-requests router.
    "agg 2x tp4, prefill-first": {
        "scheduler": PREFILL_FIRST,
        "cluster": {"router": "least_outstanding", "pools": [{"num_gpus": 8, "tp": 4}]}},
    "agg 2x tp4, chunked 2048": {
        "scheduler": CHUNKED,
        "cluster": {"router": "least_outstanding", "pools": [{"num_gpus": 8, "tp": 4}]}},
    # One tp4 prefill replica, one tp4 decode replica, KV over NVLink (one node).
    "disagg P 1x tp4 + D 1x tp4": {
        "scheduler": PREFILL_FIRST,
        "cluster": {"pools": P4_D4, "interconnect": {"kind": "nvlink"}}},
    # The same pools on two nodes joined by one 100 Gb/s Ethernet link (10 GB/s achieved).
    "disagg P 1x tp4 + D 1x tp4, one 100GbE link": {
        "scheduler": PREFILL_FIRST,
        "cluster": {"pools": P4_D4, "interconnect": {
            "kind": "roce", "bandwidth_gb_s": 10.0, "shared": True}}},
    # Two tp2 prefill replicas (less KV memory each), one tp4 decode replica.
    "disagg P 2x tp2 + D 1x tp4": {
        "scheduler": PREFILL_FIRST,
        "cluster": {"router": "least_outstanding",
                    "pools": [{"role": "prefill", "num_gpus": 4, "tp": 2},
                              {"role": "decode", "num_gpus": 4, "tp": 4, **CHUNKED}],
                    "interconnect": {"kind": "nvlink"}}},
}
QUICK = {"workloads": ("long-prompt",), "rates": (1.0, 3.0),
         "deployments": ("agg 2x tp4, chunked 2048", "disagg P 1x tp4 + D 1x tp4")}


def config(workload: str, deployment: str, rate: float, num_requests: int) -> dict:
    """The experiment config of one (workload, deployment, load) point."""
    prompt, output = WORKLOADS[workload]
    spec = DEPLOYMENTS[deployment]
    ttft_ms, tpot_ms = SLOS["tight"]
    return {
        "seed": SEED,
        "hardware": {"gpu": GPU},
        "model": {"name": MODEL},
        "scheduler": spec["scheduler"],
        "cluster": spec["cluster"],
        "workload": {"arrival": "poisson", "rate": rate, "num_requests": num_requests,
                     "prompt_tokens": prompt, "output_tokens": output},
        "slo": {"ttft_ms": ttft_ms, "tpot_ms": tpot_ms},
    }


def goodput(requests: pd.DataFrame, duration_s: float, ttft_ms: float, tpot_ms: float) -> float:
    """Requests meeting both targets per second (a one-token answer has no TPOT to miss)."""
    done = requests[~requests["rejected"]]
    ok = ~(done["ttft"].to_numpy(np.float64) * 1e3 > ttft_ms)
    ok &= ~(done["tpot"].to_numpy(np.float64) * 1e3 > tpot_ms)
    return float(ok.sum()) / duration_s


def run_point(workload: str, deployment: str, rate: float, num_requests: int) -> dict:
    result = sim.simulate(config(workload, deployment, rate, num_requests))
    s, df = result.summary, result.requests
    assert s["num_gpus"] == NUM_GPUS, s["num_gpus"]
    row = {"workload": workload, "deployment": deployment, "rate": rate,
           "throughput": s["request_throughput"], "p90_ttft_ms": s["p90_ttft_ms"],
           "p90_tpot_ms": s["p90_tpot_ms"],
           "mean_kv_transfer_ms": s.get("mean_kv_transfer_ms", 0.0)}
    for name, (ttft_ms, tpot_ms) in SLOS.items():
        row[f"goodput_{name}"] = goodput(df, s["duration_s"], ttft_ms, tpot_ms)
        row[f"attainment_{name}"] = row[f"goodput_{name}"] / s["request_throughput"]
    assert abs(row["goodput_tight"] - s["goodput"]) < 1e-9  # same rule as the summary's
    return row


def study(quick: bool = False, log=None) -> pd.DataFrame:
    """Every point of the study (or of its reduced version), one row each."""
    workloads = QUICK["workloads"] if quick else tuple(WORKLOADS)
    deployments = QUICK["deployments"] if quick else tuple(DEPLOYMENTS)
    rows = []
    for wl in workloads:
        rates = QUICK["rates"] if quick else RATES[wl]
        for dep in deployments:
            for rate in rates:
                rows.append(run_point(wl, dep, rate, QUICK_REQUESTS if quick else NUM_REQUESTS))
                if log:
                    log(f"{wl} | {dep} | {rate:g} req/s: goodput tight "
                        f"{rows[-1]['goodput_tight']:.2f}, loose {rows[-1]['goodput_loose']:.2f}")
    return pd.DataFrame(rows)


def _table(part: pd.DataFrame, values: str | None = None, cell=None) -> str:
    if cell is not None:
        part = part.assign(cell=part.apply(cell, axis=1))
        values = "cell"
    table = part.pivot(index="deployment", columns="rate", values=values)
    return table.reindex(part["deployment"].unique()).to_string(float_format="%.2f")


def report(df: pd.DataFrame) -> str:
    """Per workload: goodput under each SLO setting and the latencies behind it; deployments as
    rows, offered load (req/s) as columns."""
    slos = ", ".join(f"{n}: TTFT <= {a:g} ms and TPOT <= {b:g} ms" for n, (a, b) in SLOS.items())
    out = [f"{MODEL} on {NUM_GPUS}x {GPU}, {df.groupby(['workload', 'deployment', 'rate']).ngroups}"
           f" runs; per-request SLOs, {slos}"]
    for wl, part in df.groupby("workload", sort=False):
        for name in SLOS:
            out.append(f"\n## {wl}: goodput (req/s), {name} SLOs")
            out.append(_table(part, f"goodput_{name}"))
        out.append(f"\n## {wl}: p90 TTFT ms / p90 TPOT ms / mean KV transfer ms")
        out.append(_table(part, cell=lambda r: f"{r.p90_ttft_ms:.0f} / {r.p90_tpot_ms:.1f} / "
                                               f"{r.mean_kv_transfer_ms:.2f}"))
    return "\n".join(out)


def capacity(workload: str, rate: float, num_requests: int = NUM_REQUESTS) -> str:
    """The cheapest deployment (up to 8 GPUs, tp 2/4/8) meeting the tight SLOs at ``rate``."""
    from sim.capacity import search

    ttft_ms, tpot_ms = SLOS["tight"]
    base = config(workload, "agg 2x tp4, chunked 2048", rate, num_requests)
    base["cluster"] = {"router": "least_outstanding"}
    result = search(base, ttft_p90_ms=ttft_ms, tpot_p90_ms=tpot_ms, max_gpus=NUM_GPUS,
                    tps=(2, 4, 8))
    best = result.best.label if result.best else f"none within {NUM_GPUS} GPUs"
    lines = [f"capacity search: {workload} at {rate:g} req/s, p90 TTFT <= {ttft_ms:g} ms, "
             f"p90 TPOT <= {tpot_ms:g} ms (chunked prefill 2048 in every pool)",
             result.table.to_string(index=False, float_format="%.1f"), f"cheapest: {best}"]
    lines += [f"skipped tp={tp}: {why}" for tp, why in result.skipped_tps.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced run (CI)")
    parser.add_argument("--csv", help="also write every point to this CSV file")
    parser.add_argument("--search", nargs=2, metavar=("WORKLOAD", "RATE"),
                        help="instead, find the cheapest deployment meeting the tight SLOs")
    args = parser.parse_args(argv)
    if args.search:
        print(capacity(args.search[0], float(args.search[1])))
        return
    df = study(quick=args.quick, log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.csv:
        df.to_csv(args.csv, index=False)
    print(report(df))


if __name__ == "__main__":
    main(sys.argv[1:])
