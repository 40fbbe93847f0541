"""servesim what-if dashboard (``servesim dashboard``, or ``streamlit run dashboard/app.py``).

Thin on purpose: widgets -> config -> cached simulate -> charts. The logic lives in importable
modules (``form``, ``runner``, ``charts``, ``compare``, ``advisor``, ``sweep``, ...).
"""

from __future__ import annotations

import streamlit as st

from dashboard import views, widgets
from dashboard.runner import RunCache, default_workers


@st.cache_resource(on_release=RunCache.close)
def run_cache() -> RunCache:
    """One cache of simulated runs for the whole server (every session shares it)."""
    return RunCache(workers=default_workers())


def main() -> None:
    """One run of the page: sidebar, both simulations (cached), headline, the open tab."""
    st.set_page_config(page_title="servesim what-if", page_icon="⚙️", layout="wide")
    views.steady_reruns()
    inputs = widgets.sidebar()
    cache = run_cache()
    with st.spinner("Simulating A and B..."):
        outcomes = dict(zip(inputs, cache.get_many([inp.mapping for inp in inputs.values()]),
                            strict=True))
    views.errors(outcomes)
    ok = {side: o for side, o in outcomes.items() if o.ok}
    sums = views.summaries(outcomes, inputs)
    views.headline(outcomes, sums)
    render = {
        "Overview": lambda: views.overview_tab(ok, sums),
        "Over time": lambda: views.over_time_tab(ok),
        "Memory & operators": lambda: views.memory_tab(ok),
        "Load sweep": lambda: views.sweep_tab(inputs, ok, cache),
        "Advisor": lambda: views.advisor_tab(inputs, ok, cache),
        "Table": lambda: views.table_tab(sums),
        "YAML": lambda: views.yaml_tab(inputs),
        "Validation": views.validation_tab,
    }
    tabs = st.tabs(views.TABS, key="view", on_change="rerun")
    for name, tab in zip(views.TABS, tabs, strict=True):
        if tab.open:  # lazy: only the open tab runs (the sweep and advisor re-simulate)
            with tab:
                if ok or name in ("YAML", "Validation"):
                    render[name]()
                else:
                    st.info("Nothing to show: neither configuration ran (see the errors above).")


# Streamlit runs this file as __main__; a simulation worker process that re-imports it (as
# multiprocessing does with the main module) must not draw the page.
if __name__ == "__main__":
    main()
