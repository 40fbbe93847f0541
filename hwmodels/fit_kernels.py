"""Fit the kernel curves (``hwmodels.kernels``) to the packaged measurements and write
``hwmodels/catalog/kernel_fits.yaml``: ``python -m hwmodels.fit_kernels [--out PATH]``.

Each curve is fitted on the fit half of its chip's rows (``hwmodels.kernels.measured``: the
CRC-32 of the row's shape is even) by bounded least squares on log(predicted / measured), with a
soft-L1 loss so that a few anomalous rows (kernel heuristics picking a poor tile) do not pull
the physics; predictions come from the same functions the roofline prices steps with. The file
also records the median |error| on the held-back half, per chip, op and dtype (or rank count).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import least_squares

from hwmodels.kernels import measured
from hwmodels.kernels.api import allreduce_cost, attention_cost, gemm_cost
from hwmodels.kernels.fits import (
    FITS_FILE,
    MEASURED_CHIPS,
    RANKS,
    AllReduceCurve,
    ChipCurves,
    DecodeCurve,
    GemmCurve,
    PrefillCurve,
)
from hwmodels.params import params_from_curves
from hwmodels.specs import GpuSpec, get_gpu

SIGNIFICANT = 5  # digits kept in the file (the fit's precision is far coarser)
GEMM_TILES = (64, 128, 256)  # tile heights (M) of tensor-core GEMM kernels
# Custom all-reduce kernels: one-shot CTAs at most (0: the whole grid at any size; 24:
# TensorRT-LLM's MAX_ALL_REDUCE_BLOCKS) and the workspace beyond which they hand a message to
# NCCL (powers of two up to TensorRT-LLM's 64 MiB default, getMaxRequiredWorkspaceSize).
CUSTOM_MAX_CTAS = (0, 24)
CUSTOM_MAX_BYTES = tuple(float(2**e) for e in range(18, 27))
# A CTA cap or a smaller workspace is adopted only when it fits the chip's custom rows better by
# more than the scatter of these timings (neighbouring sizes differ non-monotonically by up to
# 4%): one percentage point of the fit half's median |error|.
CUSTOM_CHOICE_GAIN = 0.01
LOSS_SCALE = 0.1  # soft-L1: residuals beyond ~10% count linearly, not quadratically

# Starting values (physically plausible for any recent NVIDIA GPU) and bounds.
START = {
    GemmCurve: dict(floor_s=4e-6, compute_eff=0.75, k_half=200.0, stream_eff=0.85,
                    busy_half=4.0),
    DecodeCurve: dict(floor_s=8e-6, seq_s=5e-8, head_s=5e-9, bw_eff=0.85, overlap_p=2.0,
                      qhead_s=1e-9, key_s=1e-8, path_keys=400.0, split_key_s=1e-10,
                      call_overlap_p=2.0),
    PrefillCurve: dict(floor_s=1e-5, seq_s=1e-6, compute_eff=0.6, half_keys=500.0),
    AllReduceCurve: dict(small_latency_s=6e-6, small_bw_eff=0.3, large_latency_s=2e-5,
                         large_bw_eff=0.7, cta_bw_eff=0.04),
}
BOUNDS = {
    "floor_s": (1e-7, 1e-4), "compute_eff": (0.05, 1.0), "k_half": (1.0, 1e5),
    "stream_eff": (0.1, 1.0), "seq_s": (1e-10, 1e-4), "head_s": (1e-12, 1e-5),
    "bw_eff": (0.1, 1.0), "busy_half": (1e-2, 1e4),
    "half_keys": (1.0, 1e5), "small_latency_s": (5e-7, 1e-4), "small_bw_eff": (0.01, 1.0),
    "large_latency_s": (5e-7, 1e-3), "large_bw_eff": (0.05, 1.5), "overlap_p": (1.0, 64.0),
    "cta_bw_eff": (1e-3, 1.0),
    "qhead_s": (1e-12, 1e-5), "key_s": (1e-12, 1e-6), "path_keys": (1.0, 1e5),
    "split_key_s": (1e-13, 1e-7), "call_overlap_p": (1.0, 60.0),
}


def _round(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT}g}")


def _start_curves(chip: str) -> ChipCurves:
    return ChipCurves(
        chip=chip,
        gemm_overlap_p=4.0,
        gemm={d: GemmCurve(**START[GemmCurve]) for d in ("bf16", "fp8")},
        decode={d: DecodeCurve(**START[DecodeCurve]) for d in ("bf16", "fp8", "fp8_mha")},
        prefill={d: PrefillCurve(**START[PrefillCurve]) for d in ("bf16", "fp8")},
        allreduce={impl: {n: AllReduceCurve(**START[AllReduceCurve]) for n in RANKS}
                   for impl in ("nccl", "custom")},
    )


# ---- predictions of a table's rows -----------------------------------------------------------
def predict_gemm(gpu: GpuSpec, curves: ChipCurves, rows: pd.DataFrame) -> np.ndarray:
    p = params_from_curves(gpu, curves)
    return np.array([
        gemm_cost(gpu, m, n, k, measured.DTYPE[d], p, curves=curves).time_s
        for m, n, k, d in zip(rows.m, rows.n, rows.k, rows.gemm_dtype, strict=True)])


def predict_attention(gpu: GpuSpec, curves: ChipCurves, rows: pd.DataFrame,
                      decode: bool) -> np.ndarray:
    p = params_from_curves(gpu, curves)
    new = rows.isl if not decode else pd.Series(1, index=rows.index)
    cached = rows.step if decode else pd.Series(0, index=rows.index)
    kvb = rows.kv_cache_dtype.map({"bfloat16": 2.0, "fp8": 1.0})
    return np.array([
        attention_cost(gpu, b, n, c, h, kv, hd, e, p, curves=curves).time_s
        for b, n, c, h, kv, hd, e in zip(rows.batch_size, new, cached, rows.num_heads,
                                         rows.num_key_value_heads, rows.head_dim, kvb,
                                         strict=True)])


def predict_allreduce(gpu: GpuSpec, curves: ChipCurves, rows: pd.DataFrame) -> np.ndarray:
    p = params_from_curves(gpu, curves)
    return np.array([
        allreduce_cost(gpu, n, b, p, impl=impl, curves=curves).time_s
        for n, b, impl in zip(rows.num_gpus, rows.nbytes, rows.impl, strict=True)])


# ---- fitting -------------------------------------------------------------------------------
def _fit(
    start: dict[str, float],
    build: Callable[[dict[str, float]], ChipCurves],
    predict: Callable[[ChipCurves], np.ndarray],
    seconds: np.ndarray,
) -> ChipCurves:
    """The curves ``build(values)`` with ``values`` (started at ``start``, fitted in log
    space, rounded) making ``predict`` match ``seconds``."""
    names = list(start)
    lo = np.log([BOUNDS[n][0] for n in names])
    hi = np.log([BOUNDS[n][1] for n in names])
    x0 = np.clip(np.log([start[n] for n in names]), lo + 1e-6, hi - 1e-6)

    def values(x: np.ndarray) -> dict[str, float]:
        return {n: float(math.exp(v)) for n, v in zip(names, x, strict=True)}

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.log(predict(build(values(x))) / seconds)

    result = least_squares(residuals, x0, bounds=(lo, hi), loss="soft_l1", f_scale=LOSS_SCALE,
                           diff_step=1e-4, max_nfev=400)
    return build({n: _round(v) for n, v in values(result.x).items()})


def _values(curve: Any) -> dict[str, float]:
    return {f.name: getattr(curve, f.name) for f in fields(curve)
            if isinstance(getattr(curve, f.name), float)}


def _fit_gemm(cur: ChipCurves, gpu: GpuSpec, frame: pd.DataFrame) -> ChipCurves:
    for dtype in ("bf16", "fp8"):
        rows = frame[frame.gemm_dtype.map(measured.DTYPE) == dtype]
        if rows.empty:  # the A100 has no FP8 tensor cores: its FP8 curve is never used
            cur = replace(cur, gemm={**cur.gemm, dtype: cur.gemm["bf16"]})
            continue
        start = _values(cur.gemm[dtype])
        if dtype == "bf16":  # the chip's overlap exponent is fitted with its bf16 GEMMs
            start["overlap_p"] = cur.gemm_overlap_p
        best = None
        for tile in GEMM_TILES:  # the tile height is discrete: fitted by trying each
            base = replace(cur, gemm={**cur.gemm, dtype: replace(cur.gemm[dtype], tile_m=tile)})

            def build(v: dict[str, float], base: ChipCurves = base, d: str = dtype) -> ChipCurves:
                v = dict(v)
                p = v.pop("overlap_p", base.gemm_overlap_p)
                return replace(base, gemm_overlap_p=p,
                               gemm={**base.gemm, d: replace(base.gemm[d], **v)})
            fitted = _fit(start, build, lambda cc, r=rows: predict_gemm(gpu, cc, r),
                          rows.seconds.to_numpy())
            error = _median_error(predict_gemm(gpu, fitted, rows), rows)
            if best is None or error < best[0]:
                best = (error, fitted)
        cur = best[1]
    return cur


def _median_error(pred: np.ndarray, rows: pd.DataFrame) -> float:
    return float(np.median(np.abs(pred / rows.seconds.to_numpy() - 1.0)))


def _fit_attention(cur: ChipCurves, gpu: GpuSpec, chip: str, decode: bool) -> ChipCurves:
    frame = measured.table("decode_attention" if decode else "prefill_attention")
    frame = frame[(frame.system == chip) & ~frame.held_back]
    group = frame.num_heads // frame.num_key_value_heads
    for dtype in ("bf16", "fp8", "fp8_mha") if decode else ("bf16", "fp8"):
        kv = frame.kv_cache_dtype.map(measured.DTYPE)
        if not decode or dtype == "bf16":
            rows = frame[kv == dtype]
        else:  # fp8: TensorRT-LLM's XQA for grouped heads, its MMHA kernel for group 1
            rows = frame[(kv == "fp8") & ((group == 1) == (dtype == "fp8_mha"))]
        table = cur.decode if decode else cur.prefill
        if rows.empty:  # no fp8 KV measured: the bf16 curve with fp8's bytes
            cur = _set_attention(cur, decode, dtype, table["bf16"])
            continue

        def build(v: dict[str, float], base: ChipCurves = cur, d: str = dtype) -> ChipCurves:
            old = (base.decode if decode else base.prefill)[d]
            return _set_attention(base, decode, d, replace(old, **v))
        cur = _fit(_values(table[dtype]), build,
                   lambda cc, r=rows: predict_attention(gpu, cc, r, decode),
                   rows.seconds.to_numpy())
    return cur


def _fit_allreduce(cur: ChipCurves, gpu: GpuSpec, frame: pd.DataFrame) -> ChipCurves:
    """NCCL's curves, then the custom kernels' for each discrete choice of their CTA cap and
    workspace (the chip's kernel and engine: the same at every rank count). The simplest
    choice, no CTA cap and TensorRT-LLM's default 64 MiB workspace, is kept unless another
    lowers the fit half's median |error| of the chip's custom rows by more than
    ``CUSTOM_CHOICE_GAIN``."""
    cur = _fit_allreduce_impl(cur, gpu, frame, "nccl")  # custom kernels hand large ones to NCCL
    rows = frame[frame.impl == "custom"]
    tried = {}
    for ctas in CUSTOM_MAX_CTAS:
        for limit in CUSTOM_MAX_BYTES:
            table = {n: replace(c, max_ctas=ctas, max_bytes=limit)
                     for n, c in cur.allreduce["custom"].items()}
            fitted = _fit_allreduce_impl(replace(cur, allreduce={**cur.allreduce, "custom": table}),
                                         gpu, frame, "custom")
            tried[ctas, limit] = (_median_error(predict_allreduce(gpu, fitted, rows), rows), fitted)
    simplest = tried[0, CUSTOM_MAX_BYTES[-1]]
    best = min(tried.values(), key=lambda hit: hit[0])
    return best[1] if best[0] < simplest[0] - CUSTOM_CHOICE_GAIN else simplest[1]


def _fit_allreduce_impl(cur: ChipCurves, gpu: GpuSpec, frame: pd.DataFrame,
                        impl: str) -> ChipCurves:
    for ranks in RANKS:
        rows = frame[(frame.impl == impl) & (frame.num_gpus == ranks)]

        def build(v: dict[str, float], base: ChipCurves = cur, n: int = ranks) -> ChipCurves:
            table = {**base.allreduce[impl], n: replace(base.allreduce[impl][n], **v)}
            return replace(base, allreduce={**base.allreduce, impl: table})
        curve = cur.allreduce[impl][ranks]
        fitted = set(START[AllReduceCurve]) - (set() if curve.max_ctas else {"cta_bw_eff"})
        start = {k: v for k, v in _values(curve).items() if k in fitted}
        cur = _fit(start, build, lambda cc, r=rows: predict_allreduce(gpu, cc, r),
                   rows.seconds.to_numpy())
    return cur


def _set_attention(cur: ChipCurves, decode: bool, dtype: str, curve: Any) -> ChipCurves:
    if decode:
        return replace(cur, decode={**cur.decode, dtype: curve})
    return replace(cur, prefill={**cur.prefill, dtype: curve})


def fit_chip(chip: str) -> ChipCurves:
    """Every curve of ``chip``, fitted on its fit half."""
    gpu = get_gpu(measured.CHIP_GPU[chip])
    cur = _start_curves(chip)
    gemm = measured.table("gemm")
    cur = _fit_gemm(cur, gpu, gemm[(gemm.system == chip) & ~gemm.held_back])
    cur = _fit_attention(cur, gpu, chip, decode=True)
    cur = _fit_attention(cur, gpu, chip, decode=False)
    coll = measured.table("collectives")
    return _fit_allreduce(cur, gpu, coll[(coll.system == chip) & ~coll.held_back])


# ---- held-back errors ----------------------------------------------------------------------
def held_back_errors(chip: str, curves: ChipCurves) -> list[dict[str, Any]]:
    """Median and 90th-percentile |predicted / measured - 1| on ``chip``'s held-back rows,
    per op and dtype (all-reduce: per implementation and rank count)."""
    gpu = get_gpu(measured.CHIP_GPU[chip])
    out: list[dict[str, Any]] = []

    def record(op: str, group: str, rows: pd.DataFrame, pred: np.ndarray) -> None:
        err = np.abs(pred / rows.seconds.to_numpy() - 1.0)
        out.append({"op": op, "group": group, "rows": len(rows),
                     "median_abs_err": _round(float(np.median(err))),
                     "p90_abs_err": _round(float(np.quantile(err, 0.9)))})

    gemm = measured.table("gemm")
    gemm = gemm[(gemm.system == chip) & gemm.held_back]
    for dtype, rows in gemm.groupby(gemm.gemm_dtype.map(measured.DTYPE)):
        record("gemm", str(dtype), rows, predict_gemm(gpu, curves, rows))
    for decode, label in ((True, "decode_attention"), (False, "prefill_attention")):
        frame = measured.table(label)
        frame = frame[(frame.system == chip) & frame.held_back]
        for dtype, rows in frame.groupby(frame.kv_cache_dtype.map(measured.DTYPE)):
            record(label, f"kv {dtype}", rows, predict_attention(gpu, curves, rows, decode))
    coll = measured.table("collectives")
    coll = coll[(coll.system == chip) & coll.held_back]
    for (impl, ranks), rows in coll.groupby(["impl", "num_gpus"]):
        record("allreduce", f"{impl} {ranks} GPUs", rows, predict_allreduce(gpu, curves, rows))
    return out


def fit_all() -> dict[str, Any]:
    """The file's content: every measured chip's curves and held-back errors."""
    chips, errors = {}, {}
    for chip in MEASURED_CHIPS:
        curves = fit_chip(chip)
        chips[chip] = curves.to_dict()
        errors[chip] = held_back_errors(chip, curves)
    return {
        "generated_by": "python -m hwmodels.fit_kernels",
        "data": "hwmodels/catalog/kernels/ (NVIDIA aiconfigurator-core 0.12.0, Apache-2.0)",
        "split": "a row is held back when zlib.crc32 of its shape key is odd; fitted on the rest",
        "chips": chips,
        "held_back_errors": errors,
    }


CHIP_NAMES = {"h100_sxm": "H100 SXM", "a100_sxm": "A100 SXM 80GB"}
TARGETS = {"gemm": 0.05, "decode_attention": 0.07, "prefill_attention": 0.07, "allreduce": 0.10}


def markdown_tables(content: dict[str, Any]) -> str:
    """The held-back error table and each chip's parameter table of ``docs/hardware-model.md``,
    from the content of a fits file (``--tables`` prints them for the committed one)."""
    lines = ["| chip | op | group | held-back rows | median abs error | p90 abs error | target |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for chip, rows in content["held_back_errors"].items():
        for r in rows:
            target = TARGETS[r["op"]]
            verdict = "met" if r["median_abs_err"] <= target else "**not met**"
            lines.append(f"| {CHIP_NAMES[chip]} | {r['op']} | {r['group']} | {r['rows']} | "
                         f"{100 * r['median_abs_err']:.1f}% | {100 * r['p90_abs_err']:.1f}% | "
                         f"<= {100 * target:.0f}% ({verdict}) |")
    for chip, raw in content["chips"].items():
        lines += ["", f"**{CHIP_NAMES[chip]}** (`{chip}`): GEMM overlap exponent "
                      f"p = {raw['gemm_overlap_p']:.2f}.", "", "| curve | parameters |",
                  "| --- | --- |"]
        for table in ("gemm", "decode_attention", "prefill_attention"):
            for dtype, values in raw[table].items():
                lines.append(f"| {table} {dtype} | {_params(values)} |")
        for impl, by_ranks in raw["allreduce"].items():
            for ranks, values in by_ranks.items():
                lines.append(f"| all-reduce {impl} {ranks} GPUs | {_params(values)} |")
    return "\n".join(lines) + "\n"


def _params(values: dict[str, Any]) -> str:
    return ", ".join(f"`{k}` {v:.4g}" for k, v in values.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hwmodels.fit_kernels", description=__doc__)
    default = Path(__file__).parent / "catalog" / FITS_FILE
    parser.add_argument("--out", type=Path, default=default, help=f"output (default {default})")
    parser.add_argument("--tables", action="store_true",
                        help="print the markdown tables of the committed fits (no fitting)")
    args = parser.parse_args(argv)
    if args.tables:
        print(markdown_tables(yaml.safe_load(default.read_text(encoding="utf-8"))), end="")
        return 0
    content = fit_all()
    args.out.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    for chip, rows in content["held_back_errors"].items():
        for row in rows:
            print(f"{chip:9} {row['op']:18} {row['group']:16} n={row['rows']:4} "
                  f"median {100 * row['median_abs_err']:5.1f}%  "
                  f"p90 {100 * row['p90_abs_err']:5.1f}%")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
