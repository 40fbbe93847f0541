"""Fit the roofline's GEMM and streaming parameters to operator microbenchmarks.

``python benchmarks/hw_fit_microbench.py benchmarks/data/h100_microbench.json`` reads the
timings of ``benchmarks/hw_microbench.py`` (run on the GPU), prices every measured GEMM and copy
with ``hwmodels``' own operator rows, and fits ``gemm_eff``, ``overlap_p``,
``gemm_m_half_tokens``, ``hbm_eff`` and ``gemm_latency_s`` (``kernel_gap_s`` is the measured
time of a trivial kernel replayed in a CUDA graph) to the bf16 GEMMs, then
``lowp_gemm_eff_ratio`` to the fp8 ones. Prints the fitted values and the per-shape errors.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from scipy.optimize import least_squares

from hwmodels import RooflineModel
from hwmodels.params import HwParams

FIT = ("gemm_eff", "overlap_p", "gemm_m_half_tokens", "hbm_eff", "gemm_latency_s")


def predict(ops, params: HwParams, row: dict, lowp: bool) -> float:
    op = ops.gemm("x", params, row["m"], row["n"], row["k"], 1, lowp=lowp)
    return op.time_s


def main(path: str) -> None:
    data = json.load(open(path))
    rows = [r for r in data["rows"] if "error" not in r]
    gap = next(r["time_s"] for r in rows if r["op"] == "tiny_kernel_graph")
    eager = next(r["time_s"] for r in rows if r["op"] == "tiny_kernel_eager")
    bf16 = [r for r in rows if r["op"] == "gemm_bf16"]
    fp8 = [r for r in rows if r["op"] == "gemm_fp8"]
    hw_bf16 = RooflineModel("h100", "llama-3.1-8b")
    hw_fp8 = RooflineModel("h100", "llama-3.1-8b", weight_dtype="fp8")
    base = hw_bf16.params.updated(kernel_gap_s=gap)
    x0 = np.array([getattr(base, n) for n in FIT])

    def res(scale: np.ndarray) -> np.ndarray:
        p = base.updated(**dict(zip(FIT, scale * x0, strict=True)))
        pred = np.array([predict(hw_bf16.operators, p, r, False) for r in bf16])
        return np.log(pred / np.array([r["time_s"] for r in bf16]))

    fit = least_squares(res, np.ones(len(FIT)), bounds=(0.05, 20.0))
    params = base.updated(**dict(zip(FIT, fit.x * x0, strict=True)))

    def res8(scale: np.ndarray) -> np.ndarray:
        p = params.updated(lowp_gemm_eff_ratio=float(scale[0]))
        pred = np.array([predict(hw_fp8.operators, p, r, True) for r in fp8])
        return np.log(pred / np.array([r["time_s"] for r in fp8]))

    fit8 = least_squares(res8, [0.88], bounds=(0.3, 1.2))
    params = params.updated(lowp_gemm_eff_ratio=float(fit8.x[0]))
    print(f"device: {data['info']}")
    print(
        f"trivial kernel in a CUDA graph: {gap * 1e6:.2f} us; eager PyTorch op: "
        f"{eager * 1e6:.2f} us"
    )
    for name in (*FIT, "lowp_gemm_eff_ratio"):
        print(f"  {name:22s} {getattr(params, name):.4g}")
    for label, subset, lowp, hw in (("bf16", bf16, False, hw_bf16), ("fp8", fp8, True, hw_fp8)):
        err = [100 * (predict(hw.operators, params, r, lowp) / r["time_s"] - 1) for r in subset]
        print(
            f"{label}: {len(subset)} GEMMs, mean |error| {np.mean(np.abs(err)):.1f}%, "
            f"max {np.max(np.abs(err)):.1f}%"
        )
        for r, e in zip(subset, err, strict=True):
            if abs(e) > 15:
                print(
                    f"    {r['shape']:8s} M={r['m']:5d} measured {r['time_s'] * 1e6:8.1f} us "
                    f"error {e:+.1f}%"
                )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/data/h100_microbench.json")
