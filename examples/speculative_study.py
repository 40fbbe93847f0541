"""Speculative decoding against load: Llama-3.1-70B on 4 H100s (TP=4), an 8B draft or an EAGLE head.

At low load a decode step is memory bound: verifying 5 tokens per sequence costs about what 1
does, so every accepted draft is a free token and speculation speeds decoding up. As the load
grows the verify batch turns compute bound, rejected drafts cost real GPU time and the draft
model's weights and KV shrink the KV pool: speculation becomes a throughput loss. The crossover
is reported by interpolating the throughput ratio where it crosses 1. The ``goodput`` policy
(dynamic k: the depth of most expected tokens per second, 0 when speculation does not pay) and
a fixed k switched off above a batch size keep the gain at low load and drop the compute loss at
high load. The 8B draft runs lazily (it computes only for sequences it drafts for); one more
row runs it in sync with the target on every token, as vLLM does, which keeps its cost when
speculation is off.

Load is a closed loop of N clients (a benchmark's max-concurrency mode); all variants see the
same requests (same seed). Acceptance is an assumption, not a measurement: each request's
per-token rate is drawn from the "chat" preset, Beta(mean 0.70, concentration 8), for both
drafters.

Run: python examples/speculative_study.py [--quick] [--csv FILE]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd

from sim import simulate

CONCURRENCY = (1, 4, 16, 64, 128, 256, 384, 512)
QUICK_CONCURRENCY = (1, 512)
DRAFT_TOKENS = 4
DISABLE_ABOVE_BATCH = 64  # the fixed-threshold variant's cut-off (decoding sequences)

BASE = {
    "seed": 1,
    "hardware": {"gpu": "h100", "num_gpus": 4, "tp": 4},
    "model": {"name": "llama-3.1-70b"},
    "scheduler": {"max_num_seqs": 512},
    "workload": {
        "arrival": "closed",
        "prompt_tokens": {"dist": "lognormal", "mean": 512, "sigma": 0.6, "min": 32,
                          "max": 4096},
        "output_tokens": {"dist": "lognormal", "mean": 512, "sigma": 0.6, "min": 16,
                          "max": 2048},
    },
}
ACCEPTANCE = {"model": "per_request", "dataset": "chat"}
DRAFTERS = {
    "draft 8B": {"method": "draft_model", "draft_model": "llama-3.1-8b", "draft_sync": "lazy"},
    "EAGLE": {"method": "eagle"},
}
VARIANTS = {
    "fixed k=4": {"policy": "fixed"},
    f"off above {DISABLE_ABOVE_BATCH}": {"policy": "fixed",
                                         "disable_above_batch_size": DISABLE_ABOVE_BATCH},
    "goodput k<=4": {"policy": "goodput"},
    "goodput, synced draft": {"policy": "goodput", "draft_sync": "eager"},
}
# (drafter, variant) pairs; a head is always in sync, so the synced row is the draft's only
SERIES = [(d, v) for d in DRAFTERS for v in VARIANTS if d == "draft 8B" or "synced" not in v]
QUICK_SERIES = [(d, v) for d in DRAFTERS for v in ("fixed k=4", "goodput k<=4")]


def config(concurrency: int, num_requests: int, speculative: dict | None,
           length_scale: float = 1.0) -> dict:
    """One point's config; ``length_scale`` shrinks prompts and outputs (the quick run)."""
    wl = {**BASE["workload"], "concurrency": concurrency, "num_requests": num_requests}
    for key in ("prompt_tokens", "output_tokens"):
        dist = wl[key]
        wl[key] = {**dist, "mean": dist["mean"] * length_scale,
                   "max": int(dist["max"] * length_scale)}
    cfg = {**BASE, "workload": wl}
    if speculative:
        cfg["speculative"] = {"num_draft_tokens": DRAFT_TOKENS, "acceptance": ACCEPTANCE,
                              **speculative}
    return cfg


NO_SPECULATION = {"spec_tokens_per_step": 1.0, "draft_bytes": 0.0}  # keys a plain run lacks


def steady_throughput(requests: pd.DataFrame) -> float:
    """Output tokens/s while all N clients are active: up to the last request's arrival.

    A closed-loop run ends with a drain in which fewer and fewer clients remain; a benchmark's
    whole-run throughput mixes that low-load tail into every point. The tokens a request had
    emitted at the cut are interpolated between its first and last token."""
    cut = float(requests["arrival_time"].max())
    first = requests["first_token_time"].to_numpy()
    last = requests["finish_time"].to_numpy()
    out = requests["output_tokens"].to_numpy(dtype=np.float64)
    span = np.maximum(last - first, 1e-12)
    partial = 1 + (out - 1) * np.clip((cut - first) / span, 0.0, 1.0)
    tokens = np.where(first > cut, 0.0, np.where(last <= cut, out, partial))
    return float(tokens.sum() / cut)


def run_point(concurrency: int, num_requests: int, speculative: dict | None,
              length_scale: float = 1.0) -> dict:
    result = simulate(config(concurrency, num_requests, speculative, length_scale))
    keys = ("output_throughput", "mean_tpot_ms", "kv_pool_blocks", "draft_bytes",
            "spec_tokens_per_step", "spec_draft_acceptance_rate", "total_preemptions")
    return {"steady_throughput": steady_throughput(result.requests),
            **{k: result.summary.get(k, NO_SPECULATION.get(k, math.nan)) for k in keys}}


def crossover(xs: list[int], ratios: list[float]) -> float | None:
    """First load where the ratio falls through 1, interpolated on log2(load); None if never."""
    points = list(zip(xs, ratios, strict=True))
    for (x0, r0), (x1, r1) in zip(points, points[1:]):  # noqa: B905 (one shorter by design)
        if r0 >= 1 > r1:
            t = (r0 - 1) / (r0 - r1)
            return 2 ** (math.log2(x0) + t * (math.log2(x1) - math.log2(x0)))
    return None


def study(concurrency: tuple[int, ...] = CONCURRENCY, requests_per_client: int = 3,
          min_requests: int = 32, series: list[tuple[str, str]] = SERIES,
          length_scale: float = 1.0) -> dict:
    """Baseline and every (drafter, variant) at every load; throughput ratios and crossovers."""
    rows = []
    for n in concurrency:
        num = max(requests_per_client * n, min_requests)
        base = run_point(n, num, None, length_scale)
        rows.append({"concurrency": n, "drafter": "none", "variant": "baseline", **base,
                     "throughput_ratio": 1.0, "tpot_speedup": 1.0})
        for drafter, variant in series:
            r = run_point(n, num, {**DRAFTERS[drafter], **VARIANTS[variant]}, length_scale)
            rows.append({"concurrency": n, "drafter": drafter, "variant": variant, **r,
                         "throughput_ratio": r["steady_throughput"] / base["steady_throughput"],
                         "tpot_speedup": base["mean_tpot_ms"] / r["mean_tpot_ms"]})
    crossovers = {}
    for drafter, variant in series:
        sel = [r for r in rows if r["drafter"] == drafter and r["variant"] == variant]
        crossovers[(drafter, variant)] = crossover([r["concurrency"] for r in sel],
                                                   [r["throughput_ratio"] for r in sel])
    return {"rows": rows, "crossovers": crossovers}


def report(result: dict) -> str:
    rows = result["rows"]
    loads = sorted({r["concurrency"] for r in rows})
    base = {r["concurrency"]: r for r in rows if r["drafter"] == "none"}
    lines = ["Output throughput while all N clients are active, relative to no speculation:",
             ""]
    lines.append("| drafter | variant | " + " | ".join(f"N={n}" for n in loads)
                 + " | crossover N |")
    lines.append("|---|---|" + "---:|" * (len(loads) + 1))
    lines.append("| none | baseline tok/s | "
                 + " | ".join(f"{base[n]['steady_throughput']:.0f}" for n in loads) + " | |")
    for (drafter, variant), x in result["crossovers"].items():
        sel = {r["concurrency"]: r for r in rows
               if r["drafter"] == drafter and r["variant"] == variant}
        cells = " | ".join(f"{sel[n]['throughput_ratio']:.2f}" for n in loads)
        lines.append(f"| {drafter} | {variant} | {cells} | "
                     f"{'none' if x is None else f'{x:.0f}'} |")
    lines += ["", f"KV pool and draft memory (per GPU); at the lowest and highest load (N="
              f"{loads[0]}, N={loads[-1]}): tokens a decoding sequence gains per step, "
              "preemptions:", ""]
    lines.append("| drafter | variant | KV blocks | draft GB | tokens/step lo | tokens/step hi "
                 "| preemptions hi |")
    lines.append("|---|---|---:|---:|---:|---:|---:|")
    for drafter, variant in [("none", "baseline"), *result["crossovers"]]:
        sel = {r["concurrency"]: r for r in rows
               if r["drafter"] == drafter and r["variant"] == variant}
        lo, hi = sel[loads[0]], sel[loads[-1]]
        lines.append(f"| {drafter} | {variant} | {lo['kv_pool_blocks']} | "
                     f"{lo['draft_bytes'] / 1e9:.2f} | {lo['spec_tokens_per_step']:.2f} | "
                     f"{hi['spec_tokens_per_step']:.2f} | {hi['total_preemptions']} |")
    return "\n".join(lines)


def quick() -> dict:
    """The reduced run CI checks: lowest and highest load, fewer requests, two variants."""
    return study(QUICK_CONCURRENCY, requests_per_client=2, min_requests=8,
                 series=QUICK_SERIES, length_scale=0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 loads, fewer and shorter requests (CI)")
    parser.add_argument("--csv", help="write every point to this CSV file")
    args = parser.parse_args()
    result = quick() if args.quick else study()
    print(report(result))
    if args.csv:
        import pandas as pd

        pd.DataFrame(result["rows"]).to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
