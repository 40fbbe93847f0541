"""Calibration: fit the roofline's efficiencies and overheads to measured step times.

Input: a DataFrame with one row per measured step and the columns ``gpu, model, tp,
weight_dtype, kv_dtype, seqs`` (JSON ``[[new, cached], ...]``), ``measured_ms``, and optionally
``num_layers`` (the measured model ran this many layers) and ``model_config`` (JSON of HF
fields, when ``model`` is not a catalog id). Output: a ``Profile``.

The fit is a bounded least squares on log(predicted / measured), so a 10% miss on a 5 ms
decode counts as much as on a 500 ms prefill. Parameters are fitted as multiples of their
starting values (they span nine orders of magnitude), and a parameter the data cannot see
(e.g. all-reduce latency when every step ran on one GPU) is left at its default instead of
being driven to a bound by noise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from hwmodels.errors import CatalogError
from hwmodels.params import FIT_BOUNDS, HwParams, default_params
from hwmodels.profile import Coverage, Profile
from hwmodels.roofline import RooflineModel
from hwmodels.specs import get_gpu

REQUIRED_COLUMNS = ("gpu", "model", "tp", "weight_dtype", "kv_dtype", "seqs", "measured_ms")
# gemm_m_half_tokens is fittable on request but not by default: with overlap_p it describes the
# same compute-memory transition, and the two cannot be told apart from step times (the fit's
# standard errors show it).
CORE_PARAMS = (
    "gemm_eff",
    "overlap_p",
    "hbm_eff",
    "attn_compute_eff",
    "attn_bw_eff",
    "kernel_gap_s",
    "step_overhead_s",
    "seq_overhead_s",
)
MULTI_GPU_PARAMS = ("comm_eff", "comm_latency_s")
EAGER_PARAMS = ("launch_cpu_s",)
KINK_START_FACTORS = (3.0, 10.0)  # start multiples tried for a parameter inert at its start
KINK_MIN_GAIN = 0.05  # ... whose fit must lower the objective by this share to be taken
MIN_SENSITIVITY = 1e-3  # d log(time) / d log(param), summed over steps, below which we don't fit
# Weight of the pull towards the starting (public-measurement) values, per parameter, in units
# of log-time residual per log-parameter deviation. Small enough that parameters the data pins
# down ignore it; it decides only directions the data cannot see (e.g. HBM efficiency vs. a
# fixed time per kernel when every step ran the same layer shape).
PRIOR_WEIGHT = 0.01


@dataclass(slots=True)
class _Step:
    hw: RooflineModel
    seqs: list[tuple[int, int]]
    measured_s: float


def _parse_seqs(raw: Any) -> list[tuple[int, int]]:
    items = json.loads(raw) if isinstance(raw, str) else raw
    seqs = [(int(n), int(c)) for n, c in items]
    if not seqs:
        raise CatalogError("calibrate: a row has an empty seqs list")
    return seqs


def _model_key(row: Mapping[str, Any]) -> Any:
    config = row.get("model_config")
    if isinstance(config, str) and config.strip():
        return json.loads(config)
    if isinstance(config, Mapping):
        return dict(config)
    return row["model"]


def load_steps(df: pd.DataFrame, base: HwParams | None = None) -> list[_Step]:
    """Rows of the measured table as (hardware model, seqs, seconds)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise CatalogError(
            f"calibrate: missing column(s) {', '.join(missing)}; "
            f"required: {', '.join(REQUIRED_COLUMNS)}"
        )
    gpus = {get_gpu(str(g)).base_id for g in df["gpu"].unique()}
    if len(gpus) != 1:
        raise CatalogError(f"calibrate: one GPU per fit, got {sorted(gpus)}")
    cache: dict[str, RooflineModel] = {}
    steps = []
    for row in df.to_dict("records"):
        layers = row.get("num_layers")
        layers = (
            None
            if layers is None or (isinstance(layers, float) and math.isnan(layers))
            else int(layers)
        )
        model = _model_key(row)
        key = json.dumps(
            [str(row["gpu"]), model, int(row["tp"]), row["weight_dtype"], row["kv_dtype"], layers],
            sort_keys=True,
            default=str,
        )
        if key not in cache:
            if isinstance(model, dict):
                model.setdefault("id", str(row["model"]))
            hw = RooflineModel(
                str(row["gpu"]),
                model,
                tp=int(row["tp"]),
                weight_dtype=str(row["weight_dtype"]),
                kv_dtype=str(row["kv_dtype"]),
                num_layers=layers,
            )
            cache[key] = hw.with_params(base or hw.params)
        steps.append(_Step(cache[key], _parse_seqs(row["seqs"]), float(row["measured_ms"]) / 1e3))
    return steps


def predict_s(steps: Iterable[_Step], params: HwParams) -> np.ndarray:
    return np.array([s.hw.with_params(params).step_time_s(s.seqs) for s in steps])


def _candidates(steps: list[_Step], params: HwParams) -> list[str]:
    names = list(CORE_PARAMS)
    if any(s.hw.tp > 1 or s.hw.pp > 1 for s in steps):
        names += MULTI_GPU_PARAMS
    eager = any(
        not (
            sum(n for n, _ in s.seqs) <= params.cuda_graph_max_tokens
            and (params.cuda_graph_mode == "all" or all(n == 1 for n, _ in s.seqs))
        )
        for s in steps
    )
    if eager:
        names += EAGER_PARAMS
    return names


def _sensitive(steps: list[_Step], params: HwParams, names: list[str]) -> list[str]:
    """Parameters whose 10% change moves some step's log-time by MIN_SENSITIVITY or more."""
    base = np.log(predict_s(steps, params))
    keep = []
    for name in names:
        value = getattr(params, name)
        bumped = params.updated(**{name: value * 1.1 if value else 1e-6})
        delta = np.abs(np.log(predict_s(steps, bumped)) - base)
        if delta.max() >= MIN_SENSITIVITY * 0.1:
            keep.append(name)
    return keep


def _kinked(steps: list[_Step], params: HwParams, names: list[str]) -> dict[str, list[float]]:
    """Parameters that move no step at their start value but do at a larger one, with those
    larger values: a cost inside a max() (the host's launch time, below the GPU time until it
    binds) has no gradient at the start, so a fit started there never moves it."""
    base = np.log(predict_s(steps, params))
    out: dict[str, list[float]] = {}
    for name in names:
        value, top = getattr(params, name), FIT_BOUNDS[name][1]
        starts = []
        for factor in KINK_START_FACTORS:
            trial = min(value * factor, top) if value else top / factor
            bumped = params.updated(**{name: trial})
            if np.abs(np.log(predict_s(steps, bumped)) - base).max() >= MIN_SENSITIVITY * 0.1:
                starts.append(trial)
        if starts:
            out[name] = starts
    return out


def fit(
    df: pd.DataFrame,
    *,
    params: Iterable[str] | None = None,
    fixed: Mapping[str, Any] | None = None,
    start: HwParams | None = None,
    source: Mapping[str, Any] | None = None,
    max_nfev: int = 200,
) -> Profile:
    """Fit a profile to the measured steps in ``df`` (see the module docstring).

    ``fixed`` sets parameters that are known, not fitted (e.g. ``{"cuda_graph_mode":
    "decode"}`` for an executor that graphs decode steps only, or ``{"hbm_eff": copy_gbps /
    datasheet_gbps}`` from a measured copy bandwidth). ``params`` restricts the fit to
    these names. ``source`` is recorded in the profile (card, command, ...).
    """
    probe = load_steps(df.head(1))
    gpu = probe[0].hw.gpu
    base = (start or default_params(gpu)).updated(**dict(fixed or {}))
    steps = load_steps(df, base)
    kinked: dict[str, list[float]] = {}
    if params is None:
        candidates = [n for n in _candidates(steps, base) if n not in (fixed or {})]
        names = _sensitive(steps, base, candidates)
        kinked = _kinked(steps, base, [n for n in candidates if n not in names])
        names += list(kinked)
    else:
        names = list(params)
    unknown = [n for n in names if n not in FIT_BOUNDS]
    if unknown:
        raise CatalogError(f"calibrate: cannot fit {unknown}; fittable: {', '.join(FIT_BOUNDS)}")
    measured = np.array([s.measured_s for s in steps])
    x0 = np.array([max(getattr(base, n), 1e-7) for n in names])
    lower = np.array([max(FIT_BOUNDS[n][0], 1e-9) for n in names]) / x0
    upper = np.array([FIT_BOUNDS[n][1] for n in names]) / x0

    def residuals(scale: np.ndarray) -> np.ndarray:
        p = base.updated(**{n: float(v) for n, v in zip(names, scale * x0, strict=True)})
        fit_part = np.log(predict_s(steps, p) / measured)
        return np.concatenate([fit_part, PRIOR_WEIGHT * np.log(scale)])

    if names:
        # from the start values, and from each value at which a kinked parameter binds; the
        # prior still pulls towards the start values, and the lowest objective wins
        starts = [np.ones(len(names))]
        for name, values in kinked.items():
            for value in values:
                scale = np.ones(len(names))
                scale[names.index(name)] = value / x0[names.index(name)]
                starts.append(scale)
        results = [least_squares(residuals, np.clip(start, lower, upper), bounds=(lower, upper),
                                 x_scale=1.0, diff_step=1e-3, max_nfev=max_nfev)
                   for start in starts]
        result = results[0]
        for other in results[1:]:  # a kinked start must explain the data clearly better
            if other.cost < result.cost * (1.0 - KINK_MIN_GAIN):
                result = other
        fitted = {n: float(v) for n, v in zip(names, result.x * x0, strict=True)}
        stderr = _relative_stderr(
            result.jac[: len(steps)], result.fun[: len(steps)], result.x, names
        )
    else:
        fitted, stderr = {}, {}
    final = base.updated(**fitted)
    for name in kinked:  # one that ended where it binds no step again: the data never saw it
        start = final.updated(**{name: getattr(base, name)})
        if np.array_equal(predict_s(steps, start), predict_s(steps, final)):
            final = start
            names.remove(name)
            stderr.pop(name, None)
    errors = 100.0 * (predict_s(steps, final) / measured - 1.0)
    return Profile(
        gpu=gpu.base_id,
        params=final.to_dict(),
        mape=float(np.mean(np.abs(errors))),
        p90_abs_error_pct=float(np.percentile(np.abs(errors), 90)),
        num_steps=len(steps),
        coverage=_coverage(steps),
        source={
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "fitted": names,
            "relative_stderr": stderr,
            "models": sorted({s.hw.model.id for s in steps}),
            **dict(source or {}),
        },
    )


def _relative_stderr(
    jac: np.ndarray, res: np.ndarray, scale: np.ndarray, names: list[str]
) -> dict[str, float]:
    """Standard error of each fitted parameter relative to its value, from the data alone
    (Gauss-Newton covariance). A large value means the data does not determine it."""
    dof = max(1, len(res) - len(names))
    sigma2 = float(res @ res) / dof
    cov = np.linalg.pinv(jac.T @ jac) * sigma2  # jac is d residual / d (param / start)
    return {n: float(math.sqrt(max(cov[i, i], 0.0)) / scale[i]) for i, n in enumerate(names)}


def _coverage(steps: list[_Step]) -> Coverage:
    return Coverage(
        max_tokens=max(sum(n for n, _ in s.seqs) for s in steps),
        max_context=max(max(c for _, c in s.seqs) for s in steps),
        max_batch=max(len(s.seqs) for s in steps),
    )


def residual_table(df: pd.DataFrame, profile: Profile) -> pd.DataFrame:
    """``df`` plus ``predicted_ms`` and ``error_pct`` under ``profile`` (for reports)."""
    steps = load_steps(df)
    params = profile.hw_params(default_params(steps[0].hw.gpu))
    out = df.copy()
    out["predicted_ms"] = predict_s(steps, params) * 1e3
    out["error_pct"] = 100.0 * (out["predicted_ms"] / out["measured_ms"] - 1.0)
    return out


fit_profile = fit  # the name other modules may look for
