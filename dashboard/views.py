"""The main area: headline metrics with deltas, then one tab per question.

Tabs are lazy (``st.tabs(..., on_change="rerun")``): only the open tab runs, so the load sweep
and the advisor, which re-simulate, cost nothing until their tab is opened.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import streamlit as st

from dashboard import advisor, breakdown, charts, compare, sweep, validation
from dashboard.runner import Outcome, RunCache, to_yaml, with_overrides
from dashboard.widgets import SideInput

TABS = ("Overview", "Over time", "Memory & operators", "Load sweep", "Advisor", "Table", "YAML",
        "Validation")
PLOTLY_CONFIG = {"displaylogo": False}
# While a rerun computes, Streamlit fades the outdated page to a third of its opacity over a
# second. A browser that composites on the CPU (no GPU: headless, remote desktops, small VMs)
# repaints the whole page for every frame of that fade, CPU taken from the simulations: about
# a CPU-second of Chromium per comparison on a 2-core machine. The spinner already says that a
# run is in progress, so outdated elements stay as they are: the element containers, and the
# tab bar, which Streamlit fades on its own.
STEADY_RERUN_CSS = ("<style>[data-stale=true], [data-testid=stTabs] [role=tablist] "
                    "{opacity: 1 !important; transition: none !important}</style>")


def steady_reruns() -> None:
    """Keep the outdated page still during a rerun (see ``STEADY_RERUN_CSS``)."""
    st.html(STEADY_RERUN_CSS)


def describe(outcome: Outcome) -> str:
    """A one-line name of a configuration: GPUs, model, precisions, policies."""
    cfg = outcome.config
    if cfg is None:
        return "invalid config"
    hw, m = cfg.hardware, cfg.model
    gpu = hw.gpu if isinstance(hw.gpu, str) else "custom GPU"
    text = (f"{hw.num_gpus}x {gpu} (tp {hw.tp}) · {m.name} · W {m.weight_dtype} / KV "
            f"{m.kv_dtype} · {cfg.scheduler.policy} · {cfg.kv_cache.allocator} KV")
    spec = getattr(cfg, "speculative", None)
    if spec is not None and spec.method != "none":
        text += f" · spec {spec.method}"
    if cfg.engine.preset:
        text += f" · preset {cfg.engine.preset}"
    return text


def summaries(outcomes: Mapping[str, Outcome], inputs: Mapping[str, SideInput]) -> dict:
    """Each completed run's summary plus its cost rows."""
    return {side: compare.full_summary(o.result.summary, o.config.hardware.num_gpus,
                                       inputs[side].gpu_hour_usd)
            for side, o in outcomes.items() if o.ok}


def errors(outcomes: Mapping[str, Outcome]) -> None:
    for side, outcome in outcomes.items():
        if outcome.error:
            st.error(f"{side}: {outcome.error}")


def headline(outcomes: Mapping[str, Outcome], sums: Mapping[str, dict]) -> None:
    """A and B side by side; B's metrics carry their change against A."""
    cols = st.columns(len(outcomes))
    for col, (side, outcome) in zip(cols, outcomes.items(), strict=True):
        with col, st.container(key=f"metrics-{side}", border=True):
            st.markdown(f"**{side}** · {describe(outcome)}")
            if side not in sums:
                st.caption("no result (see the error above)")
                continue
            grid = st.columns(3)
            for i, metric in enumerate(compare.HEADLINE):
                value = sums[side].get(metric.key)
                delta = None
                if side != "A" and "A" in sums:
                    delta = compare.format_delta(metric, sums["A"].get(metric.key), value)
                grid[i % 3].metric(metric.label, compare.format_value(metric, value), delta,
                                   delta_color="inverse" if metric.lower_is_better else "normal")
            st.caption(f"simulated in {outcome.seconds:.2f} s")


def _plot(fig) -> None:
    st.plotly_chart(fig, config=PLOTLY_CONFIG)


def overview_tab(ok: Mapping[str, Outcome], sums: Mapping[str, dict]) -> None:
    """Latency CDFs, then cost per million tokens and SLO attainment side by side."""
    _plot(charts.latency_cdfs({s: o.result.requests for s, o in ok.items()}))
    left, right = st.columns(2)
    with left:
        cost_chart(ok, sums)
    with right:
        goodput(ok)


def over_time_tab(ok: Mapping[str, Outcome]) -> None:
    steps = {s: o.result.steps for s, o in ok.items()}
    _plot(charts.kv_and_queue(steps))
    _plot(charts.batch_composition(steps))


def memory_tab(ok: Mapping[str, Outcome]) -> None:
    rows = pd.concat([breakdown.memory_rows(s, o.result.plan, o.result.steps)
                      for s, o in ok.items()], ignore_index=True)
    _plot(charts.memory_breakdown(rows))
    typical = {s: breakdown.typical_steps(o.result.steps, o.config.kv_cache.block_size)
               for s, o in ok.items()}
    kinds = sorted({kind for t in typical.values() for kind in t})
    if not kinds:
        st.info("no steps to break down")
        return
    kind = st.radio("step", kinds, horizontal=True, key="operator_step")
    frames = []
    for side, outcome in ok.items():
        seqs = typical[side].get(kind)
        if seqs:
            hardware = breakdown.hardware_of(outcome.config)
            frames.append(breakdown.operator_rows(side, hardware, seqs))
            st.caption(f"{side}: {len(seqs)} sequences, {sum(n for n, _ in seqs):,} new tokens, "
                       f"{max(c for _, c in seqs):,} context tokens each (median of the run)")
    _plot(charts.operator_breakdown(pd.concat(frames, ignore_index=True)))


def cost_chart(ok: Mapping[str, Outcome], sums: Mapping[str, dict]) -> None:
    kinds = (("output tokens", "usd_per_m_output_tokens"), ("all tokens", "usd_per_m_total_tokens"))
    costs = pd.DataFrame([{"config": s, "tokens": name, "usd_per_m": sums[s][key]}
                          for s in ok for name, key in kinds])
    _plot(charts.cost_chart(costs))


def goodput(ok: Mapping[str, Outcome]) -> None:
    attainment = pd.concat([compare.slo_attainment(o.result.requests, o.config.slo.model_dump())
                            .assign(config=s) for s, o in ok.items()], ignore_index=True)
    if attainment.empty:
        st.info("Set SLOs in the sidebar to see goodput: the share of requests meeting them.")
        return
    _plot(charts.goodput_chart(attainment))


def sweep_tab(inputs: Mapping[str, SideInput], ok: Mapping[str, Outcome],
              cache: RunCache) -> None:
    st.caption("Each point re-simulates the config at a scaled load (rate, or concurrency in "
               "closed loop) with the same seed.")
    default = min(200, min((o.config.workload.num_requests or 200) for o in ok.values()))
    n = st.number_input("requests per point", min_value=10, value=default, step=50,
                        key="sweep_requests")
    mappings = {s: inputs[s].mapping for s in ok}
    try:
        with st.spinner("Simulating the load sweep..."):
            cache.get_many([point for m in mappings.values()  # in parallel, then from cache
                            for _, point in sweep.load_points(m, num_requests=int(n))])
            frame = sweep.run_sweep(mappings, cache.get, num_requests=int(n))
    except ValueError as exc:
        st.error(str(exc))
        return
    for err in frame.loc[frame["error"] != "", ["config", "load", "error"]].itertuples():
        st.warning(f"{err.config} at load {err.load:g}: {err.error}")
    _plot(charts.throughput_latency(frame[frame["error"] == ""]))
    st.dataframe(frame, hide_index=True)


def advisor_tab(inputs: Mapping[str, SideInput], ok: Mapping[str, Outcome],
                cache: RunCache) -> None:
    side = st.radio("configuration", list(ok), horizontal=True, key="advisor_side")
    budget = st.number_input("cost budget ($ per million output tokens, optional)",
                             min_value=0.0, value=None, format="%g", key="advisor_budget")
    limits = advisor.diagnose(ok[side], inputs[side].gpu_hour_usd, budget or None)
    st.dataframe(pd.DataFrame([{"limit": lim.name, "pressure": lim.pressure,
                                "target": lim.target, "detail": lim.detail} for lim in limits]),
                 hide_index=True)
    worst = advisor.binding(limits)
    if worst is None:
        st.success("No limit binds (every target is met). Remedies below cut cost.")
        worst = next(lim for lim in limits if lim.name == "cost")
    else:
        st.warning(f"Binding limit: **{worst.name}** ({worst.detail}).")
    mapping, config, steps = inputs[side].mapping, ok[side].config, ok[side].result.steps
    with st.spinner(f"Re-simulating the {worst.name} remedies..."):
        cache.get_many([with_overrides(mapping, r.overrides)  # in parallel, then from cache
                        for r in advisor.remedies(worst.name, config, steps)])
        table = advisor.evaluate(mapping, worst, inputs[side].gpu_hour_usd, cache.get)
    st.markdown(f"Measured effect of each remedy (re-simulated, same requests); `change` is the "
                f"relative change of `{worst.metric}`, negative is better.")
    remedy_table(table)
    for remedy in advisor.idle_remedies(worst.name, config, steps):
        st.caption(f"Not offered: {remedy.name} ({remedy.idle}).")


# The remedy table's columns: short headers and number formats, so that every column fits the
# page's width instead of running off its right edge (the reasons, long text, are listed under
# the table); fractions are shown as percentages (``PERCENT_COLUMNS``).
REMEDY_COLUMNS = {
    "remedy": st.column_config.TextColumn("remedy", width="medium"),
    "change": st.column_config.NumberColumn(
        "change %", format="%+.1f", help="relative change of the binding limit's metric (%)"),
    "p99_ttft_ms": st.column_config.NumberColumn("p99 TTFT ms", format="%.0f"),
    "p99_tpot_ms": st.column_config.NumberColumn("p99 TPOT ms", format="%.1f"),
    "output_throughput": st.column_config.NumberColumn("out tok/s", format="%.0f"),
    "goodput": st.column_config.NumberColumn("goodput req/s", format="%.2f"),
    "peak_kv_fraction": st.column_config.NumberColumn("peak KV %", format="%.0f"),
    "preemptions": st.column_config.NumberColumn("preempt.", format="%d"),
    "usd_per_m_output_tokens": st.column_config.NumberColumn("$/M out tok", format="%.3f"),
    "note": st.column_config.TextColumn("note", width="medium"),
    "error": st.column_config.TextColumn("error", width="medium"),
}
PERCENT_COLUMNS = ("change", "peak_kv_fraction")


def remedy_table(table: pd.DataFrame) -> None:
    """The advisor's measured remedies, fitted to the page; their reasons listed below it."""
    shown = [c for c in REMEDY_COLUMNS if c in table and (
        c not in ("note", "error") or table[c].astype(bool).any())]
    display = table[shown].assign(**{c: table[c] * 100 for c in PERCENT_COLUMNS if c in shown})
    st.dataframe(display, hide_index=True, column_config=REMEDY_COLUMNS)
    st.markdown("\n".join(f"- **{row.remedy}**: {row.why}" for row in table.iloc[1:].itertuples()
                           if row.why))


def table_tab(sums: Mapping[str, dict]) -> None:
    if len(sums) == 2:
        st.dataframe(compare.compare_table(sums["A"], sums["B"]), hide_index=True)
    else:
        st.dataframe(pd.DataFrame(sums))


def yaml_tab(inputs: Mapping[str, SideInput]) -> None:
    st.caption("Each configuration as YAML: `servesim run FILE.yaml` runs the same experiment.")
    for col, (side, inp) in zip(st.columns(len(inputs)), inputs.items(), strict=True):
        with col:
            st.markdown(f"**{side}**")
            st.code(to_yaml(inp.mapping), language="yaml")


def validation_tab() -> None:
    reports = validation.list_reports()
    if not reports:
        st.info("No validation reports are committed yet (docs/validation/*.md).")
        return
    report = st.selectbox("report", reports, format_func=validation.title_of,
                          key="validation_report")
    for part in validation.split_report(report):
        if part.kind == "markdown":
            st.markdown(part.text)
        elif part.path is not None and part.path.is_file():
            st.image(str(part.path), caption=part.text or None)
        else:
            st.caption(f"(missing image: {part.text})")
