"""The sidebar: one widget per config key (from ``dashboard.form``), for A, B and the shared
workload; YAML download and upload; the trace upload; the GPU hourly price.

The values live in one plain dict in session state (``MODEL``: state key -> value), not in the
widgets: a widget is drawn only while it is visible (the side being edited, an open expander, a
length distribution's own parameters) and Streamlit forgets a widget's value once it is not
drawn. So each widget is set from the dict just before it is drawn and writes back to it when
it changes. Drawing only what is visible also keeps the page light for the browser. Uploads,
presets and URL parameters write to the dict; the next run shows them.
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

MODEL = "config_state"
EDIT_SIDE = "edit_side"
# Keys drawn at the top of a side; the rest go into one (lazy) expander per section.
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


def model() -> dict[str, Any]:
    """Every sidebar value by state key (``A|hardware.gpu``), drawn or not."""
    return st.session_state[MODEL]


def _url_values() -> dict[str, Any]:
    """Values from the URL: ``?W.workload.rate=20&A.hardware.gpu=a100`` (side, then the dotted
    key; values read as YAML), so a what-if can be linked; ``view=`` opens a tab."""
    values: dict[str, Any] = {}
    for name, raw in st.query_params.items():
        if name == "view":
            st.session_state["view"] = raw
            continue
        side, _, key = name.partition(".")
        if side in (*form.SIDES, form.SHARED) and key:
            try:
                values[form.state_key(side, key)] = yaml.safe_load(raw)
            except yaml.YAMLError:
                values[form.state_key(side, key)] = raw
    return values


def seed_state() -> None:
    """Fill the value dict: defaults, under values already in session state (set before the
    first run, e.g. by a test), under the URL's. Later runs only add keys that are new."""
    defaults = {**form.default_state(),
                **{price_key(side): DEFAULT_GPU_HOUR_USD for side in form.SIDES}}
    if MODEL not in st.session_state:
        values = {k: st.session_state.get(k, v) for k, v in defaults.items()}
        st.session_state[MODEL] = {**values, **_url_values()}
    for key, value in defaults.items():
        model().setdefault(key, value)


def _store(key: str, then=None, *args) -> None:
    """A widget changed: keep its value (and run the follow-up, e.g. a preset switch)."""
    model()[key] = st.session_state[key]
    if then is not None:
        then(*args)


def _bind(key: str, kind: type | None = None, default: Any = None, then=None, args=()) -> dict:
    """Set the widget ``key`` from the value dict just before it is drawn; return the widget
    arguments that write it back on change. ``kind`` coerces numbers (an int from YAML in a
    float box is refused by Streamlit)."""
    value = model().setdefault(key, default)
    if kind is not None and value is not None and not isinstance(value, bool):
        value = model()[key] = kind(value)
    st.session_state[key] = value
    return {"key": key, "on_change": _store, "args": (key, then, *args)}


def _label(spec: form.FieldSpec, short: bool) -> str:
    return spec.key.rsplit(".", 1)[-1] if short else spec.key.split(".", 1)[-1]


def field_widget(spec: form.FieldSpec, side: str, short: bool = True) -> None:
    """Draw the widget of one key, bound to its entry in the value dict."""
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
        if model().get(key) not in options:
            options.append(model().get(key))  # an uploaded value the catalog list does not name
        then = (_switch_preset, (side,)) if spec.key == "engine.preset" else (None, ())
        st.selectbox(label, options, help=help_, placeholder="(none)",
                     format_func=lambda v: "(none)" if v is None else str(v),
                     **_bind(key, then=then[0], args=then[1]))
    elif spec.kind == "bool":
        st.checkbox(label, help=help_, **_bind(key))
    elif spec.kind == "int":
        st.number_input(label, help=help_, step=1, **_bind(key, int),
                        min_value=None if spec.min_value is None else int(spec.min_value))
    elif spec.kind == "float":
        st.number_input(label, help=help_, format="%g", **_bind(key, float),
                        min_value=None if spec.min_value is None else float(spec.min_value))
    else:
        st.text_input(label, help=help_, **_bind(key, default=""))


def _switch_preset(side: str) -> None:
    """Show the chosen preset's values in the widgets (and clear the previous preset's)."""
    new = model().get(form.state_key(side, "engine.preset"))
    old = model().get(f"{side}|preset_shown")
    model().update(form.preset_state(side, old, new))
    model()[f"{side}|preset_shown"] = new


def length_widget(spec: form.FieldSpec, key: str) -> None:
    options = list(form.LENGTH_PARAMS)
    if model().get(key) not in options:
        options.append(model().get(key))  # e.g. empirical, from an uploaded YAML
    dist = st.selectbox(_label(spec, True), options, help=spec.help or None, **_bind(key))
    params = form.LENGTH_PARAMS.get(dist, ())
    cols = st.columns(max(len(params), 1))
    for col, name in zip(cols, params, strict=False):
        is_int = name not in ("mean", "sigma")
        col.number_input(name, step=1 if is_int else None, format=None if is_int else "%g",
                         **_bind(f"{key}.{name}", int if is_int else float,
                                 LENGTH_DEFAULTS[name]))
    if dist not in form.LENGTH_PARAMS:
        st.caption("kept as the uploaded YAML gives it")


def gpu_widget(spec: form.FieldSpec, key: str) -> None:
    options = list(spec.options) + ([form.CUSTOM_GPU] if form.custom_gpu_supported() else [])
    if model().get(key) not in options:
        options.append(model().get(key))
    choice = st.selectbox("GPU", options, help=spec.help or None, **_bind(key))
    if choice != form.CUSTOM_GPU:
        return
    st.selectbox("base GPU (profile and unset fields)", list(spec.options),
                 **_bind(f"{key}.base", default="h100"))
    for suffix, _, label in form.CUSTOM_GPU_FIELDS:
        st.number_input(label, min_value=0.0, format="%g", placeholder="as the base GPU",
                        **_bind(f"{key}.{suffix}", float))


def _is_switch(spec: form.FieldSpec) -> bool:
    """On/off policy keys (prefix caching, split prompts) sit with the primary keys."""
    return spec.kind == "bool" and spec.section in ("kv_cache", "scheduler", "engine")


def _lazy_expander(label: str, key: str):
    """An expander whose content is drawn only while it is open (``None`` when closed)."""
    box = st.expander(label, key=key, on_change="rerun")
    return box if box.open else None


def side_widgets(side: str) -> None:
    """Everything that belongs to one configuration."""
    specs = [s for s in form.field_specs() if not s.shared]
    by_key = {s.key: s for s in specs}
    for key in PRIMARY:
        if key in by_key:
            field_widget(by_key[key], side)
    for spec in filter(_is_switch, specs):
        field_widget(spec, side)
    st.number_input("GPU price ($ per GPU-hour)", min_value=0.0, format="%g",
                    help="your price: cost per million tokens uses it",
                    **_bind(price_key(side), float))
    sections: dict[str, list[form.FieldSpec]] = {}
    for spec in specs:
        if spec.key not in PRIMARY and not _is_switch(spec):
            sections.setdefault(spec.section, []).append(spec)
    for section, fields in sections.items():
        box = _lazy_expander(f"{section} settings", f"expander|{side}|{section}")
        if box is not None:
            with box:
                for spec in fields:
                    field_widget(spec, side, short=False)


def shared_widgets() -> None:
    """The workload and SLOs both configurations share (so they see the same requests)."""
    specs = {s.key: s for s in form.field_specs() if s.shared}
    st.subheader("Workload (same requests for A and B)")
    arrival = model().get(form.state_key(form.SHARED, "workload.arrival"))
    hidden = {"workload.cv": arrival != "gamma", "workload.concurrency": arrival != "closed",
              "workload.rate": arrival in ("closed", "trace")}
    for key in WORKLOAD_PRIMARY:
        if key in specs and not hidden.get(key, False):
            field_widget(specs[key], form.SHARED)
    if "workload.trace" in specs:
        trace_upload()
    rest = [s for s in specs.values()
            if s.key.startswith("workload.") and s.key not in WORKLOAD_PRIMARY]
    box = _lazy_expander("more workload settings", "expander|W|workload") if rest else None
    if box is not None:
        with box:
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
    model()[form.state_key(form.SHARED, "workload.trace")] = str(path)
    model()[form.state_key(form.SHARED, "workload.arrival")] = "trace"


def trace_upload() -> None:
    st.file_uploader("trace file (sets arrival: trace)", key="upload|trace",
                     on_change=_save_trace,
                     help="saved on the server; workload.trace names that copy, so a downloaded "
                     "YAML runs elsewhere once workload.trace points at your own file")


def _apply_upload(side: str) -> None:
    """Callback of a config upload: validate, then move its values into the value dict."""
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
    model().update(form.state_from_config(config, side))
    model()[f"{side}|preset_shown"] = config.engine.preset
    model()[f"base|{side}"] = data


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
    """The configurations the value dict describes now."""
    state = model()
    return {side: SideInput(form.mapping_from_state(state, side, state.get(f"base|{side}")),
                            float(state.get(price_key(side)) or 0.0))
            for side in form.SIDES}


def sidebar() -> dict[str, SideInput]:
    """Draw the sidebar; return A's and B's configs and prices."""
    seed_state()
    with st.sidebar:
        st.title("servesim what-if")
        st.caption("Two configurations, the same requests. Every number is simulated.")
        side = st.radio("Edit configuration", form.SIDES, horizontal=True, key=EDIT_SIDE)
        side_widgets(side)
        shared_widgets()
        inputs = current_inputs()
        files_widgets(inputs)
    return inputs
