"""Pure chart functions: DataFrames in, plotly figures out (no Streamlit, no simulation).

Each function takes one frame per configuration label (``{"A": df, "B": df}``) or a long frame
with a ``config`` column. Long series are reduced before plotting (quantiles for CDFs, time bins
for step series), so a figure holds a few thousand points whatever the run's length: a browser
draws it quickly and the page stays small.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLORS = {"A": "#1f77b4", "B": "#ff7f0e"}
CDF_POINTS = 201
TIME_BINS = 300
LAYOUT = dict(template="plotly_white", margin=dict(l=50, r=20, t=50, b=40),
              legend=dict(orientation="h", y=-0.18))


def _color(label: str) -> str:
    return COLORS.get(label, "#2ca02c")


def _cdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = values[~np.isnan(values)]
    if not values.size:
        return np.array([]), np.array([])
    q = np.linspace(0.0, 1.0, CDF_POINTS)
    return np.quantile(values, q), q


def latency_cdfs(requests: Mapping[str, pd.DataFrame]) -> go.Figure:
    """CDFs of TTFT, TPOT and end-to-end latency (ms) of completed requests, per config."""
    metrics = (("ttft", "TTFT (ms)"), ("tpot", "TPOT (ms)"), ("e2el", "E2E latency (ms)"))
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in metrics])
    for label, df in requests.items():
        done = df[~df["rejected"]]
        for col, (name, title) in enumerate(metrics, start=1):
            x, y = _cdf(done[name].to_numpy(dtype=np.float64) * 1e3)
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=label, legendgroup=label,
                                     showlegend=col == 1, line=dict(color=_color(label)),
                                     hovertemplate=f"{title}: %{{x:.1f}}<br>CDF %{{y:.2f}}"),
                          row=1, col=col)
            fig.update_xaxes(title_text=title, row=1, col=col)
    fig.update_yaxes(title_text="fraction of requests", row=1, col=1)
    fig.update_layout(title="Latency CDFs", height=360, **LAYOUT)
    return fig


def _binned(steps: pd.DataFrame, columns: list[str], bins: int = TIME_BINS) -> pd.DataFrame:
    """Per replica, the mean of ``columns`` over equal time bins; then summed over replicas
    for counts (tokens, queue) and averaged for fractions (columns ending in ``_frac``)."""
    if steps.empty:
        return pd.DataFrame(columns=["time_s", *columns])
    end = float((steps["start_time"] + steps["duration"]).max())
    edges = np.linspace(0.0, max(end, 1e-9), bins + 1)
    idx = np.clip(np.searchsorted(edges, steps["start_time"].to_numpy(), side="right") - 1,
                  0, bins - 1)
    frame = steps[["replica", *columns]].assign(bin=idx)
    per_replica = frame.groupby(["bin", "replica"], sort=True)[columns].mean()
    fracs = [c for c in columns if c.endswith("_frac")]
    counts = [c for c in columns if c not in fracs]
    out = pd.concat([per_replica[counts].groupby(level="bin").sum(),
                     per_replica[fracs].groupby(level="bin").mean()], axis=1)
    out["time_s"] = (edges[out.index] + edges[out.index + 1]) / 2
    return out.reset_index(drop=True)


def kv_and_queue(steps: Mapping[str, pd.DataFrame]) -> go.Figure:
    """KV-cache occupancy (% of the pool) and waiting requests over simulated time."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("KV-cache occupancy (%)",
                                        "Queue length (waiting requests)"))
    for label, df in steps.items():
        frame = df.assign(kv_frac=df["kv_blocks_used"] / df["kv_blocks_total"].clip(lower=1))
        cols = ["kv_frac"] + (["num_waiting"] if "num_waiting" in df else [])
        b = _binned(frame, cols)
        fig.add_trace(go.Scatter(x=b["time_s"], y=b["kv_frac"] * 100, mode="lines", name=label,
                                 legendgroup=label, line=dict(color=_color(label))), row=1, col=1)
        if "num_waiting" in b:
            fig.add_trace(go.Scatter(x=b["time_s"], y=b["num_waiting"], mode="lines", name=label,
                                     legendgroup=label, showlegend=False,
                                     line=dict(color=_color(label))), row=2, col=1)
    fig.update_xaxes(title_text="simulated time (s)", row=2, col=1)
    fig.update_layout(title="KV cache and queue over time", height=460, **LAYOUT)
    return fig


def batch_composition(steps: Mapping[str, pd.DataFrame]) -> go.Figure:
    """Prefill and decode tokens per iteration over time (time-bin means), one row per config."""
    labels = list(steps)
    fig = make_subplots(rows=len(labels) or 1, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=[f"{label}: tokens per iteration" for label in labels])
    for row, label in enumerate(labels, start=1):
        b = _binned(steps[label], ["prefill_tokens", "decode_tokens", "num_seqs"])
        for col, color, name in (("decode_tokens", "#9467bd", "decode tokens"),
                                 ("prefill_tokens", "#17becf", "prefill tokens")):
            fig.add_trace(go.Scatter(x=b["time_s"], y=b[col], mode="lines", stackgroup=label,
                                     name=name, legendgroup=name, showlegend=row == 1,
                                     line=dict(width=0.5, color=color)), row=row, col=1)
        fig.add_trace(go.Scatter(x=b["time_s"], y=b["num_seqs"], mode="lines", name="sequences",
                                 legendgroup="seqs", showlegend=row == 1,
                                 line=dict(color="#333333", dash="dot")), row=row, col=1)
    fig.update_xaxes(title_text="simulated time (s)", row=len(labels) or 1, col=1)
    fig.update_layout(title="Batch composition over time", height=220 + 200 * len(labels),
                      **LAYOUT)
    return fig


def memory_breakdown(rows: pd.DataFrame) -> go.Figure:
    """Per-GPU memory by component (GB), one stacked bar per config.

    ``rows``: columns ``config, component, gb`` in stacking order.
    """
    fig = go.Figure()
    for component, part in rows.groupby("component", sort=False):
        fig.add_trace(go.Bar(y=part["config"], x=part["gb"], name=component, orientation="h",
                             hovertemplate=f"{component}: %{{x:.2f}} GB"))
    fig.update_layout(barmode="stack", title="Memory of one GPU (GB)", height=300,
                      xaxis_title="GB", yaxis=dict(autorange="reversed"), **LAYOUT)
    return fig


BOUND_COLORS = {"compute": "#d62728", "memory": "#1f77b4", "comm": "#2ca02c", "host": "#7f7f7f"}


def operator_breakdown(rows: pd.DataFrame) -> go.Figure:
    """Step time by operator (ms), coloured by what bounds it; one panel per config.

    ``rows``: columns ``config, operator, time_ms, bound`` (compute, memory, comm or host).
    """
    labels = list(dict.fromkeys(rows["config"]))
    totals = rows.groupby("config")["time_ms"].sum()
    fig = make_subplots(rows=1, cols=len(labels) or 1, shared_yaxes=True,
                        subplot_titles=[f"{label}: {totals[label]:.2f} ms" for label in labels])
    shown: set[str] = set()
    for col, label in enumerate(labels, start=1):
        part = rows[rows["config"] == label]
        for bound, group in part.groupby("bound", sort=False):
            fig.add_trace(go.Bar(y=group["operator"], x=group["time_ms"], orientation="h",
                                 name=f"{bound}-bound" if bound in ("compute", "memory") else bound,
                                 legendgroup=bound, showlegend=bound not in shown,
                                 marker_color=BOUND_COLORS.get(bound, "#8c564b"),
                                 hovertemplate="%{y}: %{x:.3f} ms"), row=1, col=col)
            shown.add(bound)
        fig.update_xaxes(title_text="ms per step", row=1, col=col)
    fig.update_layout(title="Step time by operator", barmode="stack",
                      height=200 + 22 * rows["operator"].nunique(), **LAYOUT)
    return fig


def throughput_latency(sweep: pd.DataFrame) -> go.Figure:
    """Output throughput against TTFT and TPOT across loads, one curve per config.

    ``sweep``: columns ``config, load, output_throughput, median_ttft_ms, p99_ttft_ms,
    median_tpot_ms, p99_tpot_ms``.
    """
    panels = (("p99_ttft_ms", "P99 TTFT (ms)"), ("median_tpot_ms", "Median TPOT (ms)"))
    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t in panels])
    for label, part in sweep.groupby("config", sort=False):
        part = part.sort_values("load")
        for col, (key, title) in enumerate(panels, start=1):
            fig.add_trace(go.Scatter(
                x=part["output_throughput"], y=part[key], mode="lines+markers", name=label,
                legendgroup=label, showlegend=col == 1, line=dict(color=_color(label)),
                text=[f"load {v:g}" for v in part["load"]],
                hovertemplate="%{text}<br>%{x:,.0f} tok/s<br>%{y:.1f} ms"), row=1, col=col)
            fig.update_xaxes(title_text="output tokens/s", row=1, col=col)
            fig.update_yaxes(title_text=title, type="log", row=1, col=col)
    fig.update_layout(title="Throughput vs latency across loads", height=380, **LAYOUT)
    return fig


def cost_chart(costs: pd.DataFrame) -> go.Figure:
    """Dollars per million tokens; ``costs``: columns ``config, tokens, usd_per_m``."""
    fig = go.Figure()
    for label, part in costs.groupby("config", sort=False):
        fig.add_trace(go.Bar(x=part["tokens"], y=part["usd_per_m"], name=label,
                             marker_color=_color(label), textposition="outside",
                             text=[f"${v:.3f}" for v in part["usd_per_m"]]))
    fig.update_layout(title="Cost per million tokens ($)", barmode="group", height=340,
                      yaxis_title="$ per 1M tokens", **LAYOUT)
    return fig


def goodput_chart(attainment: pd.DataFrame) -> go.Figure:
    """Share of requests meeting each SLO; ``attainment``: columns ``config, slo, met``."""
    fig = go.Figure()
    for label, part in attainment.groupby("config", sort=False):
        fig.add_trace(go.Bar(x=part["slo"], y=part["met"] * 100, name=label,
                             marker_color=_color(label),
                             text=[f"{v:.1%}" for v in part["met"]], textposition="outside"))
    fig.update_layout(title="Requests meeting the SLOs (%)", barmode="group", height=340,
                      yaxis=dict(title="% of completed requests", range=[0, 110]), **LAYOUT)
    return fig
