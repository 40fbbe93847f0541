"""The sidebar: one widget per config key (from ``dashboard.form``), for A, B and the shared
workload; YAML download and upload; the trace upload; the GPU hourly price.

Widgets take their values from session state only (never a ``value=`` argument), seeded from
``form.default_state()``; an uploaded YAML rewrites that state in the upload's callback, before
the widgets are drawn, which is the one moment Streamlit allows it.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st
import yaml

from dashboard import form
from dashboard.cost import DEFAULT_GPU_HOUR_USD
from dashboard.runner import from_yaml, to_yaml
from sim.config import load_config

# Keys drawn at the top of each side's tab; the rest go into one expander per section.
PRIMARY = ("hardware.gpu", "hardware.num_gpus", "hardware.tp", "model.name",
           "model.weight_dtype", "model.kv_dtype", "engine.preset", "scheduler.policy",
           "kv_cache.allocator", "speculative.method")
WORKLOAD_PRIMARY = ("workload.arrival", "workload.rate", "workload.concurrency", "workload.cv",
                    "workload.num_requests", "workload.duration_s", "workload.prompt_tokens",
                    "workload.output_tokens")
LENGTH_DEFAULTS = {"value": 512, "low": 128, "high": 1024, "mean": 512, "sigma": 0.5,
                   "min": 1, "max": 8192}
TRACE_DIR = Path(tempfile.gettempdir()) / "servesim-dashboard-traces"


@dataclass(frozen=True, slots=True)
class SideInput:
    """What the sidebar gives for one configuration."""

    mapping: dict  # YAML-shaped config (defaults left out)
    gpu_hour_usd: float


def price_key(side: str) -> str:
    return f"{side}|price"


def apply_query_params() -> None:
    """Once per session, take widget values from the URL: ``?W.workload.rate=20&A.hardware.gpu=
    a100`` (side, then the dotted key; values read as YAML) and ``view=`` the open tab, so a
    what-if can be linked."""
    if st.session_state.get("query_applied"):
        return
    st.session_state["query_applied"] = True
    for name, raw in st.query_params.items():
        if name == "view":
            st.session_state["view"] = raw
            continue
        side, _, key = name.partition(".")
        if side in (*form.SIDES, form.SHARED) and key:
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
            st.session_state[form.state_key(side, key)] = value


def seed_state() -> None:
    """Give every widget key a value: the URL's first, then defaults and what an upload left."""
    apply_query_params()
    for key, value in form.default_state().items():
        st.session_state.setdefault(key, value)
    for side in form.SIDES:
        st.session_state.setdefault(price_key(side), DEFAULT_GPU_HOUR_USD)
        st.session_state.setdefault(f"base|{side}", {})


def _label(spec: form.FieldSpec, short: bool) -> str:
    return spec.key.rsplit(".", 1)[-1] if short else spec.key.split(".", 1)[-1]


def field_widget(spec: form.FieldSpec, side: str, short: bool = True) -> None:
    """Draw the widget of one key; its value lands in session state under its state key."""
    key = form.state_key(form.side_of(spec, side), spec.key)
    label, help_ = _label(spec, short), spec.help or None
    if spec.kind == "length":
        return length_widget(spec, key)
    if spec.key == "hardware.gpu":
        return gpu_widget(spec, key)
    if spec.kind == "select":
        options = list(spec.options)
        if spec.optional:
            options = [None, *options]
        current = st.session_state.get(key)
        if current not in options:
            options.append(current)  # an uploaded value the catalog list does not name
        on_change = _switch_preset if spec.key == "engine.preset" else None
        st.selectbox(label, options, key=key, help=help_, placeholder="(none)",
                     format_func=lambda v: "(none)" if v is None else str(v),
                     on_change=on_change, args=(side,) if on_change else None)
    elif spec.kind == "bool":
        st.checkbox(label, key=key, help=help_)
    elif spec.kind == "int":
        _coerce(key, int)
        st.number_input(label, key=key, help=help_, step=1,
                        min_value=None if spec.min_value is None else int(spec.min_value))
    elif spec.kind == "float":
        _coerce(key, float)
        st.number_input(label, key=key, help=help_, format="%g",
                        min_value=None if spec.min_value is None else float(spec.min_value))
    else:
        st.text_input(label, key=key, help=help_)


def _switch_preset(side: str) -> None:
    """Show the chosen preset's values in the widgets (and clear the previous preset's)."""
    new = st.session_state.get(form.state_key(side, "engine.preset"))
    old = st.session_state.get(f"{side}|preset_shown")
    st.session_state.update(form.preset_state(side, old, new))
    st.session_state[f"{side}|preset_shown"] = new


def _coerce(key: str, kind: type) -> None:
    """Number widgets refuse a value of the other numeric type (an int typed into YAML)."""
    value = st.session_state.get(key)
    if value is not None and not isinstance(value, bool) and type(value) is not kind:
        st.session_state[key] = kind(value)


def length_widget(spec: form.FieldSpec, key: str) -> None:
    options = list(form.LENGTH_PARAMS)
    if st.session_state.get(key) not in options:
        options.append(st.session_state.get(key))  # e.g. empirical, from an uploaded YAML
    dist = st.selectbox(_label(spec, True), options, key=key, help=spec.help or None)
    params = form.LENGTH_PARAMS.get(dist, ())
    cols = st.columns(max(len(params), 1))
    for col, name in zip(cols, params, strict=False):
        sub = f"{key}.{name}"
        is_int = name not in ("mean", "sigma")
        st.session_state.setdefault(sub, LENGTH_DEFAULTS[name])
        _coerce(sub, int if is_int else float)
        col.number_input(name, key=sub, step=1 if is_int else None,
                         format=None if is_int else "%g")
    if dist not in form.LENGTH_PARAMS:
        st.caption("kept as the uploaded YAML gives it")


def gpu_widget(spec: form.FieldSpec, key: str) -> None:
    options = list(spec.options) + ([form.CUSTOM_GPU] if form.custom_gpu_supported() else [])
    if st.session_state.get(key) not in options:
        options.append(st.session_state.get(key))
    choice = st.selectbox("GPU", options, key=key, help=spec.help or None)
    if choice != form.CUSTOM_GPU:
        return
    st.session_state.setdefault(f"{key}.base", "h100")
    st.selectbox("base GPU (profile and unset fields)", list(spec.options), key=f"{key}.base")
    for suffix, _, label in form.CUSTOM_GPU_FIELDS:
        sub = f"{key}.{suffix}"
        st.session_state.setdefault(sub, None)
        _coerce(sub, float)
        st.number_input(label, key=sub, min_value=0.0, format="%g",
                        placeholder="as the base GPU")


def _is_switch(spec: form.FieldSpec) -> bool:
    """On/off policy keys (prefix caching, split prompts) sit with the primary keys."""
    return spec.kind == "bool" and spec.section in ("kv_cache", "scheduler", "engine")


def side_widgets(side: str) -> None:
    """Everything that belongs to one configuration."""
    specs = [s for s in form.field_specs() if not s.shared]
    by_key = {s.key: s for s in specs}
    for key in PRIMARY:
        if key in by_key:
            field_widget(by_key[key], side)
    for spec in filter(_is_switch, specs):
        field_widget(spec, side)
    st.number_input("GPU price ($ per GPU-hour)", key=price_key(side), min_value=0.0,
                    format="%g", help="your price: cost per million tokens uses it")
    sections: dict[str, list[form.FieldSpec]] = {}
    for spec in specs:
        if spec.key not in PRIMARY and not _is_switch(spec):
            sections.setdefault(spec.section, []).append(spec)
    for section, fields in sections.items():
        with st.expander(f"{section} settings"):
            for spec in fields:
                field_widget(spec, side, short=False)


def shared_widgets() -> None:
    """The workload and SLOs both configurations share (so they see the same requests)."""
    specs = {s.key: s for s in form.field_specs() if s.shared}
    st.subheader("Workload (same requests for A and B)")
    arrival = st.session_state.get(form.state_key(form.SHARED, "workload.arrival"))
    hidden = {"workload.cv": arrival != "gamma", "workload.concurrency": arrival != "closed",
              "workload.rate": arrival in ("closed", "trace")}
    for key in WORKLOAD_PRIMARY:
        if key in specs and not hidden.get(key, False):
            field_widget(specs[key], form.SHARED)
    if "workload.trace" in specs:
        trace_upload()
    rest = [s for s in specs.values()
            if s.key.startswith("workload.") and s.key not in WORKLOAD_PRIMARY]
    if rest:
        with st.expander("more workload settings"):
            for spec in rest:
                field_widget(spec, form.SHARED)
    if "seed" in specs:
        field_widget(specs["seed"], form.SHARED)
    st.subheader("SLOs (goodput, advisor)")
    for spec in specs.values():
        if spec.key.startswith("slo."):
            field_widget(spec, form.SHARED)


def _save_trace() -> None:
    upload = st.session_state.get("upload|trace")
    if upload is None:
        return
    data = upload.getvalue()
    TRACE_DIR.mkdir(parents=True, exist_ok=True)
    path = TRACE_DIR / f"{hashlib.sha256(data).hexdigest()[:16]}-{Path(upload.name).name}"
    path.write_bytes(data)
    st.session_state[form.state_key(form.SHARED, "workload.trace")] = str(path)
    st.session_state[form.state_key(form.SHARED, "workload.arrival")] = "trace"


def trace_upload() -> None:
    st.file_uploader("trace file (sets arrival: trace)", key="upload|trace",
                     on_change=_save_trace,
                     help="saved on the server; workload.trace names that copy, so a downloaded "
                     "YAML runs elsewhere once workload.trace points at your own file")


def _apply_upload(side: str) -> None:
    """Callback of a config upload: validate, then move its values into the widgets."""
    upload = st.session_state.get(f"upload|{side}")
    st.session_state[f"upload_error|{side}"] = None
    if upload is None:
        return
    try:
        data = from_yaml(upload.getvalue().decode("utf-8", errors="replace"))
    except ValueError as exc:
        st.session_state[f"upload_error|{side}"] = f"{upload.name}: {exc}"
        return
    from sim.build import apply_preset  # the widgets show what a preset fills in

    config = apply_preset(load_config(data))
    st.session_state.update(form.state_from_config(config, side))
    st.session_state[f"{side}|preset_shown"] = config.engine.preset
    st.session_state[f"base|{side}"] = data


def files_widgets(inputs: dict[str, SideInput]) -> None:
    """Download each configuration as YAML (``servesim run`` takes it) or upload one."""
    st.subheader("Config files")
    for side in form.SIDES:
        st.download_button(f"Download {side} as YAML", to_yaml(inputs[side].mapping),
                           file_name=f"servesim-{side}.yaml", mime="application/x-yaml",
                           key=f"download|{side}")
        st.file_uploader(f"Upload a YAML into {side}", type=["yaml", "yml"],
                         key=f"upload|{side}", on_change=_apply_upload, args=(side,))
        error = st.session_state.get(f"upload_error|{side}")
        if error:
            st.error(error)


def current_inputs() -> dict[str, SideInput]:
    """The configurations the widgets describe now."""
    state: dict[str, Any] = dict(st.session_state)
    return {side: SideInput(form.mapping_from_state(state, side, state.get(f"base|{side}")),
                            float(state.get(price_key(side)) or 0.0))
            for side in form.SIDES}


def sidebar() -> dict[str, SideInput]:
    """Draw the sidebar; return A's and B's configs and prices."""
    seed_state()
    with st.sidebar:
        st.title("servesim what-if")
        st.caption("Two configurations, the same requests. Every number is simulated.")
        tab_a, tab_b = st.tabs(["Config A", "Config B"])
        for side, tab in zip(form.SIDES, (tab_a, tab_b), strict=True):
            with tab:
                side_widgets(side)
        shared_widgets()
        inputs = current_inputs()
        files_widgets(inputs)
    return inputs
