"""Pure chart functions: DataFrames in, plotly figures out (no Streamlit, no simulation).

Each function takes one frame per configuration label (``{"A": df, "B": df}``) or a long frame
with a ``config`` column. Long series are reduced before plotting (quantiles for CDFs, time bins
for step series), so a figure holds a few thousand points whatever the run's length: a browser
draws it quickly and the page stays small.

Figures are written as plain trace and layout mappings (subplots laid out by ``_grid``) and
validated once by ``go.Figure``: plotly's ``make_subplots`` and ``add_trace(row=, col=)`` cost
tens of milliseconds per call, which a page of charts redrawn on every widget change feels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

COLORS = {"A": "#1f77b4", "B": "#ff7f0e"}
BOUND_COLORS = {"compute": "#d62728", "memory": "#1f77b4", "comm": "#2ca02c", "host": "#7f7f7f"}
CDF_POINTS = 201
TIME_BINS = 300
# The legend sits at the bottom of the whole figure (container coordinates), below the x-axis
# tick labels and title, with a bottom margin that holds all three. Placed in plot coordinates
# (y=-0.2: a fifth of the plot's height below it) it landed on the axis title of short charts
# (the memory chart's "GB"). A legend that wraps to more rows widens the margin by itself.
MARGIN = dict(l=50, r=20, t=60, b=90)
LEGEND = dict(orientation="h", yref="container", y=0, yanchor="bottom")


def _color(label: str) -> str:
    return COLORS.get(label, "#2ca02c")


def _axis(k: int, letter: str) -> str:
    """Trace reference of subplot ``k`` (1-based): x, x2, x3, ..."""
    return letter if k == 1 else f"{letter}{k}"


def _grid(rows: int, cols: int, titles: Sequence[str], *, hgap: float = 0.07,
          vgap: float = 0.12, share_x: bool = False, share_y: bool = False) -> dict:
    """Layout of a ``rows x cols`` grid of subplots, numbered row-major from the top left."""
    width, height = (1 - hgap * (cols - 1)) / cols, (1 - vgap * (rows - 1)) / rows
    layout: dict = {"annotations": []}
    for k in range(1, rows * cols + 1):
        row, col = divmod(k - 1, cols)
        x0, top = col * (width + hgap), 1 - row * (height + vgap)
        x, y = _axis(k, "x"), _axis(k, "y")
        xaxis: dict = {"domain": [max(0.0, x0), min(1.0, x0 + width)], "anchor": y}
        yaxis: dict = {"domain": [max(0.0, top - height), min(1.0, top)], "anchor": x}
        if share_x and k > 1:
            xaxis["matches"] = "x"
        if share_x and row < rows - 1:
            xaxis["showticklabels"] = False
        if share_y and k > 1:
            yaxis["matches"] = "y"
            yaxis["showticklabels"] = False
        layout[f"xaxis{k if k > 1 else ''}"] = xaxis
        layout[f"yaxis{k if k > 1 else ''}"] = yaxis
        if k <= len(titles):
            layout["annotations"].append({
                "text": titles[k - 1], "x": x0 + width / 2, "y": top, "xref": "paper",
                "yref": "paper", "xanchor": "center", "yanchor": "bottom", "showarrow": False,
                "font": {"size": 13}})
    return layout


def _figure(data: list[dict], layout: dict, title: str, height: int) -> go.Figure:
    """A figure on plotly's own template, named, not taken from the process-wide default:
    importing streamlit switches that default to a bare placeholder (no axis automargin), so
    the same chart was laid out differently depending on what the process imported first (the
    legend then sat on the tick labels of a narrow column)."""
    return go.Figure({"data": data, "layout": {
        "template": "plotly", "title": {"text": title}, "height": height, "margin": MARGIN,
        "legend": LEGEND, **layout}})


def _cdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = values[~np.isnan(values)]
    if not values.size:
        return np.array([]), np.array([])
    q = np.linspace(0.0, 1.0, CDF_POINTS)
    return np.quantile(values, q), q


def latency_cdfs(requests: Mapping[str, pd.DataFrame]) -> go.Figure:
    """CDFs of TTFT, TPOT and end-to-end latency (ms) of completed requests, per config."""
    metrics = (("ttft", "TTFT (ms)"), ("tpot", "TPOT (ms)"), ("e2el", "E2E latency (ms)"))
    layout = _grid(1, 3, [t for _, t in metrics])
    data = []
    for label, df in requests.items():
        done = df[~df["rejected"]]
        for k, (name, title) in enumerate(metrics, start=1):
            x, y = _cdf(done[name].to_numpy(dtype=np.float64) * 1e3)
            data.append({"type": "scatter", "x": x, "y": y, "mode": "lines", "name": label,
                         "legendgroup": label, "showlegend": k == 1,
                         "line": {"color": _color(label)},
                         "xaxis": _axis(k, "x"), "yaxis": _axis(k, "y"),
                         "hovertemplate": f"{title}: %{{x:.1f}}<br>CDF %{{y:.2f}}"})
    for k, (_, title) in enumerate(metrics, start=1):
        layout[f"xaxis{k if k > 1 else ''}"]["title"] = {"text": title}
    layout["yaxis"]["title"] = {"text": "fraction of requests"}
    return _figure(data, layout, "Latency CDFs", 360)


def _binned(steps: pd.DataFrame, columns: list[str], bins: int = TIME_BINS) -> pd.DataFrame:
    """Per replica, the mean of ``columns`` over equal time bins; then summed over replicas
    for counts (tokens, queue) and averaged for fractions (columns ending in ``_frac``).
    Bins in which no replica ran a step are left out."""
    if steps.empty:
        return pd.DataFrame(columns=["time_s", *columns])
    end = float((steps["start_time"] + steps["duration"]).max())
    edges = np.linspace(0.0, max(end, 1e-9), bins + 1)
    idx = np.clip(np.searchsorted(edges, steps["start_time"].to_numpy(), side="right") - 1,
                  0, bins - 1)
    replicas = steps["replica"].to_numpy()
    means = {c: [] for c in columns}  # per column: one array of bin means per replica
    for replica in np.unique(replicas):
        mine = replicas == replica
        counts = np.bincount(idx[mine], minlength=bins).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            for col in columns:
                sums = np.bincount(idx[mine], weights=steps[col].to_numpy(np.float64)[mine],
                                   minlength=bins)
                means[col].append(sums / counts)  # NaN where the replica ran no step
    present = ~np.all(np.isnan(np.vstack(means[columns[0]])), axis=0)
    out = {"time_s": ((edges[:-1] + edges[1:]) / 2)[present]}
    for col in columns:
        stack = np.vstack(means[col])[:, present]
        out[col] = np.nanmean(stack, axis=0) if col.endswith("_frac") else np.nansum(stack, axis=0)
    return pd.DataFrame(out)


def kv_and_queue(steps: Mapping[str, pd.DataFrame]) -> go.Figure:
    """KV-cache occupancy (% of the pool) and waiting requests over simulated time."""
    layout = _grid(2, 1, ["KV-cache occupancy (%)", "Queue length (waiting requests)"],
                   share_x=True)
    data = []
    for label, df in steps.items():
        frame = df.assign(kv_frac=df["kv_blocks_used"] / df["kv_blocks_total"].clip(lower=1))
        cols = ["kv_frac"] + (["num_waiting"] if "num_waiting" in df else [])
        b = _binned(frame, cols)
        line = {"color": _color(label)}
        data.append({"type": "scatter", "x": b["time_s"], "y": b["kv_frac"] * 100,
                     "mode": "lines", "name": label, "legendgroup": label, "line": line})
        if "num_waiting" in b:
            data.append({"type": "scatter", "x": b["time_s"], "y": b["num_waiting"],
                         "mode": "lines", "name": label, "legendgroup": label,
                         "showlegend": False, "line": line, "xaxis": "x2", "yaxis": "y2"})
    layout["xaxis2"]["title"] = {"text": "simulated time (s)"}
    return _figure(data, layout, "KV cache and queue over time", 460)


def batch_composition(steps: Mapping[str, pd.DataFrame]) -> go.Figure:
    """Prefill and decode tokens per iteration over time (time-bin means), one row per config."""
    labels = list(steps)
    rows = len(labels) or 1
    layout = _grid(rows, 1, [f"{label}: tokens per iteration" for label in labels],
                   share_x=True, vgap=0.1)
    data = []
    for k, label in enumerate(labels, start=1):
        b = _binned(steps[label], ["prefill_tokens", "decode_tokens", "num_seqs"])
        axes = {"xaxis": _axis(k, "x"), "yaxis": _axis(k, "y")}
        for col, color, name in (("decode_tokens", "#9467bd", "decode tokens"),
                                 ("prefill_tokens", "#17becf", "prefill tokens")):
            data.append({"type": "scatter", "x": b["time_s"], "y": b[col], "mode": "lines",
                         "stackgroup": label, "name": name, "legendgroup": name,
                         "showlegend": k == 1, "line": {"width": 0.5, "color": color}, **axes})
        data.append({"type": "scatter", "x": b["time_s"], "y": b["num_seqs"], "mode": "lines",
                     "name": "sequences", "legendgroup": "seqs", "showlegend": k == 1,
                     "line": {"color": "#333333", "dash": "dot"}, **axes})
    layout[f"xaxis{rows if rows > 1 else ''}"]["title"] = {"text": "simulated time (s)"}
    return _figure(data, layout, "Batch composition over time", 220 + 200 * rows)


def memory_breakdown(rows: pd.DataFrame) -> go.Figure:
    """Per-GPU memory by component (GB), one stacked bar per config.

    ``rows``: columns ``config, component, gb`` in stacking order.
    """
    data = [{"type": "bar", "y": part["config"], "x": part["gb"], "name": component,
             "orientation": "h", "hovertemplate": f"{component}: %{{x:.2f}} GB"}
            for component, part in rows.groupby("component", sort=False)]
    layout = {"barmode": "stack", "xaxis": {"title": {"text": "GB"}},
              "yaxis": {"autorange": "reversed"}}
    return _figure(data, layout, "Memory of one GPU (GB)", 340)


def operator_breakdown(rows: pd.DataFrame) -> go.Figure:
    """Step time by operator (ms), coloured by what bounds it; one panel per config.

    ``rows``: columns ``config, operator, time_ms, bound`` (compute, memory, comm or host).
    """
    labels = list(dict.fromkeys(rows["config"]))
    totals = rows.groupby("config")["time_ms"].sum()
    layout = _grid(1, len(labels) or 1, [f"{label}: {totals[label]:.2f} ms" for label in labels],
                   share_y=True, hgap=0.04)
    data, shown = [], set()
    for k, label in enumerate(labels, start=1):
        part = rows[rows["config"] == label]
        for bound, group in part.groupby("bound", sort=False):
            data.append({"type": "bar", "y": group["operator"], "x": group["time_ms"],
                         "orientation": "h", "legendgroup": bound,
                         "name": f"{bound}-bound" if bound in ("compute", "memory") else bound,
                         "showlegend": bound not in shown,
                         "marker": {"color": BOUND_COLORS.get(bound, "#8c564b")},
                         "hovertemplate": "%{y}: %{x:.3f} ms",
                         "xaxis": _axis(k, "x"), "yaxis": _axis(k, "y")})
            shown.add(bound)
        layout[f"xaxis{k if k > 1 else ''}"]["title"] = {"text": "ms per step"}
    layout["barmode"] = "stack"
    return _figure(data, layout, "Step time by operator",
                   200 + 22 * rows["operator"].nunique())


def throughput_latency(sweep: pd.DataFrame) -> go.Figure:
    """Output throughput against TTFT and TPOT across loads, one curve per config.

    ``sweep``: columns ``config, load, output_throughput, p99_ttft_ms, median_tpot_ms``.
    """
    panels = (("p99_ttft_ms", "P99 TTFT (ms)"), ("median_tpot_ms", "Median TPOT (ms)"))
    layout = _grid(1, 2, [t for _, t in panels])
    data = []
    for label, part in sweep.groupby("config", sort=False):
        part = part.sort_values("load")
        for k, (key, _) in enumerate(panels, start=1):
            data.append({"type": "scatter", "x": part["output_throughput"], "y": part[key],
                         "mode": "lines+markers", "name": label, "legendgroup": label,
                         "showlegend": k == 1, "line": {"color": _color(label)},
                         "text": [f"load {v:g}" for v in part["load"]],
                         "hovertemplate": "%{text}<br>%{x:,.0f} tok/s<br>%{y:.1f} ms",
                         "xaxis": _axis(k, "x"), "yaxis": _axis(k, "y")})
    for k, (_, title) in enumerate(panels, start=1):
        suffix = k if k > 1 else ""
        layout[f"xaxis{suffix}"]["title"] = {"text": "output tokens/s"}
        layout[f"yaxis{suffix}"].update(title={"text": title}, type="log")
    return _figure(data, layout, "Throughput vs latency across loads", 380)


def cost_chart(costs: pd.DataFrame) -> go.Figure:
    """Dollars per million tokens; ``costs``: columns ``config, tokens, usd_per_m``."""
    data = [{"type": "bar", "x": part["tokens"], "y": part["usd_per_m"], "name": label,
             "marker": {"color": _color(label)}, "textposition": "outside",
             "text": [f"${v:.3f}" for v in part["usd_per_m"]]}
            for label, part in costs.groupby("config", sort=False)]
    layout = {"barmode": "group", "yaxis": {"title": {"text": "$ per 1M tokens"}}}
    return _figure(data, layout, "Cost per million tokens ($)", 340)


def goodput_chart(attainment: pd.DataFrame) -> go.Figure:
    """Share of requests meeting each SLO; ``attainment``: columns ``config, slo, met``."""
    data = [{"type": "bar", "x": part["slo"], "y": part["met"] * 100, "name": label,
             "marker": {"color": _color(label)}, "textposition": "outside",
             "text": [f"{v:.1%}" for v in part["met"]]}
            for label, part in attainment.groupby("config", sort=False)]
    layout = {"barmode": "group",
              "yaxis": {"title": {"text": "% of completed requests"}, "range": [0, 110]}}
    return _figure(data, layout, "Requests meeting the SLOs (%)", 340)
