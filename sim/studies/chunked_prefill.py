"""Claim 3: chunked prefill keeps TTFT low for new requests while keeping decode throughput.

The reference is prefill-first continuous batching (vLLM v0's default), the policy that gives a
new request its first token soonest: every arriving prompt runs at once, in a step of its own,
and the running decodes wait for it. Chunked prefill (Sarathi-Serve, vLLM v1) runs the decodes
first in every step and fills the rest of a token budget with prompt chunks. The question is
what the chunking costs new requests (TTFT) and what it buys the running ones (inter-token
latency, and the throughput at capacity).

Llama-3.1-8B on an H100; long prompts (lognormal, mean 2,048 tokens) so that prefills are big
enough to stall decodes; Poisson arrivals at about half and about 80% of capacity, plus an
overload that measures capacity (output throughput). All variants see the same requests.
"""

from __future__ import annotations

import pandas as pd

from sim.studies.base import ClaimResult, Condition, Scale
from sim.studies.common import merge, simulate

TITLE = "Chunked prefill: TTFT and decode throughput"
CLAIM = "Chunked prefill keeps TTFT low for new requests while keeping decode throughput."
TTFT_BAR = 1.5  # p90 TTFT at most this multiple of prefill-first's
THROUGHPUT_BAR = 0.95  # capacity at least this fraction of prefill-first's
BASE = {
    "hardware": {"gpu": "h100"}, "model": {"name": "llama-3.1-8b"},
    "scheduler": {"max_num_seqs": 256},
    "workload": {"arrival": "poisson",
                 "prompt_tokens": {"dist": "lognormal", "mean": 2048, "sigma": 0.8,
                                   "min": 64, "max": 16384},
                 "output_tokens": {"dist": "lognormal", "mean": 256, "sigma": 0.8,
                                   "min": 8, "max": 2048}},
    "seed": 3,
}
LOADS = {"half load (4 req/s)": 4.0, "80% load (7 req/s)": 7.0, "overload (12 req/s)": 12.0}
BASELINE = "prefill-first (8192)"
POLICIES = {
    BASELINE: {"policy": "continuous", "max_num_batched_tokens": 8192},
    "chunked (8192)": {"policy": "chunked_prefill", "max_num_batched_tokens": 8192},
    "chunked (2048)": {"policy": "chunked_prefill", "max_num_batched_tokens": 2048},
    "chunked (512)": {"policy": "chunked_prefill", "max_num_batched_tokens": 512},
}
KEYS = ("output_throughput", "mean_ttft_ms", "p90_ttft_ms", "p99_ttft_ms", "mean_tpot_ms",
        "p99_tpot_ms", "p99_itl_ms")


def measure(scale: Scale) -> pd.DataFrame:
    n = scale.pick(1500, 60)
    loads = scale.pick(LOADS, {"80% load (7 req/s)": 7.0})
    policies = scale.pick(list(POLICIES), [BASELINE, "chunked (2048)"])
    rows = []
    for load, rate in loads.items():
        for name in policies:
            cfg = merge(BASE, {"workload": {"rate": rate, "num_requests": n},
                               "scheduler": POLICIES[name]})
            s = simulate(cfg).summary
            rows.append({"load": load, "rate": rate, "policy": name, **{k: s[k] for k in KEYS}})
    df = pd.DataFrame(rows)
    base = df[df["policy"] == BASELINE].set_index("load")
    for col in ("p90_ttft_ms", "p99_itl_ms", "output_throughput", "mean_tpot_ms"):
        df[f"{col}_vs_base"] = df[col] / df["load"].map(base[col])
    return df


def figure(df: pd.DataFrame):
    import plotly.graph_objects as go

    fig = go.Figure()
    for load, g in df[~df["load"].str.startswith("overload")].groupby("load", sort=False):
        fig.add_trace(go.Scatter(x=g["p99_itl_ms"], y=g["p90_ttft_ms"], mode="markers+text",
                                 text=g["policy"], textposition="top center", name=load))
    fig.update_layout(title="Claim 3: what chunking trades (lower left is better)",
                      xaxis_title="p99 inter-token latency (ms)",
                      yaxis_title="p90 time to first token (ms)")
    return fig


def measured_notes(df: pd.DataFrame) -> list[str]:
    """What the chunk budget trades, in the measured numbers, load by load."""
    out = []
    for load, g in df[~df["load"].str.startswith("overload")].groupby("load", sort=False):
        rows = g[g["policy"] != BASELINE]
        out.append(f"{load}: " + "; ".join(
            f"{r.policy} p90 TTFT {r.p90_ttft_ms_vs_base:.2f}x, p99 ITL "
            f"{r.p99_itl_ms_vs_base:.2f}x" for r in rows.itertuples())
            + " of prefill-first's. The budget caps the prompt tokens a step carries, so a "
              "smaller one smooths decodes and spreads a long prompt over more steps.")
    return out


def run(scale: Scale) -> ClaimResult:
    df = measure(scale)
    conditions = []
    for r in df[df["policy"] != BASELINE].itertuples():
        if r.load.startswith("overload"):
            conditions.append(Condition(
                f"{r.policy}, {r.load}: capacity vs prefill-first", r.output_throughput_vs_base,
                "x", bool(r.output_throughput_vs_base >= THROUGHPUT_BAR)))
            continue
        conditions.append(Condition(f"{r.policy}, {r.load}: p90 TTFT vs prefill-first",
                                    r.p90_ttft_ms_vs_base, "x",
                                    bool(r.p90_ttft_ms_vs_base <= TTFT_BAR)))
        conditions.append(Condition(f"{r.policy}, {r.load}: p99 ITL vs prefill-first",
                                    r.p99_itl_ms_vs_base, "x", bool(r.p99_itl_ms_vs_base <= 1.0)))
    pick = df[(df["policy"] == "chunked (2048)") & df["load"].str.startswith("80%")].iloc[0]
    headline = Condition("chunked (2048) at 80% load: p90 TTFT / prefill-first's",
                         float(pick["p90_ttft_ms_vs_base"]), "x", None)
    return ClaimResult(
        3, TITLE, CLAIM,
        rule=(f"vs prefill-first continuous batching: p90 TTFT <= {TTFT_BAR:g}x (TTFT kept "
              f"low), p99 inter-token latency <= 1x (decodes not stalled), and output "
              f"throughput at overload >= {THROUGHPUT_BAR:g}x (throughput kept)"),
        setup=("Llama-3.1-8B, one H100; prompts lognormal mean 2,048 (64-16,384), outputs "
               "lognormal mean 256 (8-2,048); Poisson arrivals; token budget per step in "
               "brackets"),
        conditions=conditions, headline=headline, table=df, figure=figure(df),
        notes=[*measured_notes(df),
               "Chunks are priced as ordinary prefill steps over the cached prefix; kernel "
               "effects of mixing prefill and decode in one launch are not modelled."])
