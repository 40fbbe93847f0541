"""Aggregated versus disaggregated serving of Llama-3.1-70B on 8 H100s: goodput under SLOs.

Every deployment uses all 8 GPUs and sees the same requests (one seed). Goodput is the rate of
requests that meet both SLOs (TTFT and TPOT, each request on its own, as vLLM's benchmark
counts it). The results and what they mean are in docs/cluster.md.

    python examples/disagg_study.py           # the full study (the numbers in docs/cluster.md)
    python examples/disagg_study.py --quick   # a reduced run (the CI test)
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

import sim

MODEL, GPU, NUM_GPUS = "llama-3.1-70b", "h100", 8
SLO_TTFT_MS, SLO_TPOT_MS = 2000.0, 50.0
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
DEPLOYMENTS = {
    # Two tp4 replicas behind a least-outstanding-requests router.
    "agg 2x tp4, prefill-first": {
        "scheduler": PREFILL_FIRST,
        "cluster": {"router": "least_outstanding", "pools": [{"num_gpus": 8, "tp": 4}]}},
    "agg 2x tp4, chunked 2048": {
        "scheduler": CHUNKED,
        "cluster": {"router": "least_outstanding", "pools": [{"num_gpus": 8, "tp": 4}]}},
    # One tp4 prefill replica, one tp4 decode replica, KV over NVLink (same node).
    "disagg P 1x tp4 + D 1x tp4": {
        "scheduler": PREFILL_FIRST,
        "cluster": {"pools": [{"role": "prefill", "num_gpus": 4, "tp": 4},
                              {"role": "decode", "num_gpus": 4, "tp": 4, **CHUNKED}],
                    "interconnect": {"kind": "nvlink"}}},
    # More prefill, less memory per prefill replica: two tp2 prefill replicas.
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
    return {
        "seed": SEED,
        "hardware": {"gpu": GPU},
        "model": {"name": MODEL},
        "scheduler": spec["scheduler"],
        "cluster": spec["cluster"],
        "workload": {"arrival": "poisson", "rate": rate, "num_requests": num_requests,
                     "prompt_tokens": prompt, "output_tokens": output},
        "slo": {"ttft_ms": SLO_TTFT_MS, "tpot_ms": SLO_TPOT_MS},
    }


def run_point(workload: str, deployment: str, rate: float, num_requests: int) -> dict:
    result = sim.simulate(config(workload, deployment, rate, num_requests))
    s = result.summary
    assert s["num_gpus"] == NUM_GPUS, s["num_gpus"]
    return {"workload": workload, "deployment": deployment, "rate": rate,
            "goodput": s["goodput"], "slo_attainment": s["goodput"] / s["request_throughput"],
            "throughput": s["request_throughput"], "p90_ttft_ms": s["p90_ttft_ms"],
            "p90_tpot_ms": s["p90_tpot_ms"],
            "mean_kv_transfer_ms": s.get("mean_kv_transfer_ms", 0.0)}


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
                    log(f"{wl} | {dep} | {rate:g} req/s: goodput {rows[-1]['goodput']:.2f}")
    return pd.DataFrame(rows)


def report(df: pd.DataFrame) -> str:
    """Goodput tables (req/s) per workload: deployments as rows, offered loads as columns."""
    out = [f"{MODEL} on {NUM_GPUS}x {GPU}; SLOs: TTFT <= {SLO_TTFT_MS:g} ms and "
           f"TPOT <= {SLO_TPOT_MS:g} ms per request"]
    for wl, part in df.groupby("workload", sort=False):
        out.append(f"\n## {wl}: goodput, req/s (offered load in the header)")
        table = part.pivot(index="deployment", columns="rate", values="goodput")
        out.append(table.reindex(part["deployment"].unique()).to_string(float_format="%.2f"))
        out.append(f"\n## {wl}: p90 TTFT ms / p90 TPOT ms / mean KV transfer ms")
        detail = part.assign(cell=part.apply(
            lambda r: f"{r.p90_ttft_ms:.0f} / {r.p90_tpot_ms:.1f} / {r.mean_kv_transfer_ms:.2f}",
            axis=1)).pivot(index="deployment", columns="rate", values="cell")
        out.append(detail.reindex(part["deployment"].unique()).to_string())
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced run (CI)")
    parser.add_argument("--csv", help="also write every point to this CSV file")
    args = parser.parse_args(argv)
    df = study(quick=args.quick, log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.csv:
        df.to_csv(args.csv, index=False)
    print(report(df))


if __name__ == "__main__":
    main(sys.argv[1:])
