"""Claim 1: decode is memory-bandwidth bound, prefill is compute bound.

Measured on the roofline model's operator rows (``hwmodels.RooflineModel.breakdown``): for a
decode step of B sequences (one new token each on a fixed context) and a prefill of one prompt
of n tokens, the share of the step's operator time spent in rows whose memory time exceeds
their compute time, and the step's arithmetic intensity (FLOPs / HBM bytes) against the GPU's
ridge point. Host overhead and collectives are neither and are left out of the shares.

The batch sweep goes past the sizes engines run (256-1,024 sequences) on purpose: the question
is *where* each phase changes side, and that is the condition of the verdict.
"""

from __future__ import annotations

import pandas as pd

from sim.studies.base import ClaimResult, Condition, Scale
from sim.studies.common import grouped_conditions

TITLE = "Decode is memory bound, prefill compute bound"
CLAIM = ("Decode is memory-bandwidth bound and prefill is compute bound (roofline position of "
         "each phase across batch sizes).")
BAR = 0.5  # a phase is X-bound when X-bound rows take at least half its operator time
CONTEXTS = (256, 2048)  # decode context of every sequence: short chat turns, long documents
CASES = (  # (label, gpu, model, tp)
    ("Llama-3.1-8B, 1x H100, bf16", "h100", "llama-3.1-8b", 1),
    ("Llama-3.1-70B, 4x H100 TP4, bf16", "h100", "llama-3.1-70b", 4),
)


def point(hw, seqs: list[tuple[int, int]]) -> dict:
    """FLOPs, bytes, time and memory-bound share of one step's compute/memory rows."""
    rows = [r for r in hw.breakdown(seqs) if r.kind in ("gemm", "attn", "mem")]
    time_s = sum(r.time_s for r in rows)
    mem_s = sum(r.time_s for r in rows if r.bound == "memory")
    flops = sum(r.flops for r in rows)
    nbytes = sum(r.bytes for r in rows)
    return {"flops": flops, "bytes": nbytes, "op_time_s": time_s,
            "step_time_s": hw.step_time_s(seqs), "memory_share": mem_s / time_s,
            "intensity": flops / nbytes, "achieved_tflops": flops / time_s / 1e12}


def measure(scale: Scale) -> pd.DataFrame:
    import hwmodels

    batches = scale.pick([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048], [1, 64, 1024])
    prompts = scale.pick([16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384],
                         [16, 512, 8192])
    rows = []
    for label, gpu, model, tp in CASES[: scale.pick(len(CASES), 1)]:
        hw = hwmodels.RooflineModel(gpu, model, tp=tp, profile="auto")
        peak, bw = hw.gpu.peak("bf16"), hw.gpu.hbm_bw_bytes_s
        common = {"case": label, "peak_tflops": peak / 1e12, "hbm_tb_s": bw / 1e12}
        for ctx in scale.pick(CONTEXTS, CONTEXTS[-1:]):
            for b in batches:
                rows.append({**common, "phase": f"decode, context {ctx}", "size": b,
                             **point(hw, [(1, ctx)] * b)})
        for n in prompts:
            rows.append({**common, "phase": "prefill", "size": n, **point(hw, [(n, 0)])})
    return pd.DataFrame(rows)


def figure(df: pd.DataFrame):
    import plotly.graph_objects as go

    fig = go.Figure()
    for (case, phase), g in df.groupby(["case", "phase"], sort=False):
        unit = "n" if phase == "prefill" else "B"
        fig.add_trace(go.Scatter(
            x=g["intensity"], y=g["achieved_tflops"], mode="lines+markers", name=f"{phase}: {case}",
            text=[f"{unit}={s}" for s in g["size"]],
            hovertemplate="%{text}<br>%{x:.1f} FLOP/B<br>%{y:.0f} TFLOP/s<extra></extra>"))
    peak, bw = float(df["peak_tflops"].iloc[0]), float(df["hbm_tb_s"].iloc[0])
    xs = [0.5, peak / bw, 1e5]
    fig.add_trace(go.Scatter(x=xs, y=[min(x * bw, peak) for x in xs],
                             mode="lines", name="H100 roofline (datasheet)",
                             line={"dash": "dash", "color": "gray"}))
    fig.update_layout(title="Claim 1: roofline position of decode (B sequences, one new token "
                      "each) and prefill (one n-token prompt)",
                      xaxis={"type": "log", "title": "arithmetic intensity (FLOP / HBM byte)"},
                      yaxis={"type": "log", "title": "achieved TFLOP/s (operator time)"})
    return fig


def run(scale: Scale) -> ClaimResult:
    df = measure(scale)
    conditions: list[Condition] = []
    for (case, phase), g in df.groupby(["case", "phase"], sort=False):
        if phase == "prefill":
            conditions += grouped_conditions(
                f"prefill ({case}), prompt", g["size"].tolist(), (1 - g["memory_share"]).tolist(),
                [1 - s >= BAR for s in g["memory_share"]], "compute-bound share")
        else:
            conditions += grouped_conditions(
                f"{phase} ({case}), batch", g["size"].tolist(), g["memory_share"].tolist(),
                [s >= BAR for s in g["memory_share"]], "memory-bound share")
    first = df[(df["case"] == CASES[0][0]) & (df["phase"] == f"decode, context {CONTEXTS[-1]}")]
    at64 = first.iloc[(first["size"] - 64).abs().argsort().iloc[0]]
    headline = Condition(f"memory-bound share of a decode step, batch {int(at64['size'])}, "
                         f"context {CONTEXTS[-1]} ({CASES[0][0]})",
                         float(at64["memory_share"]), "", None)
    ridge = float(df["peak_tflops"].iloc[0] / df["hbm_tb_s"].iloc[0])
    return ClaimResult(
        1, TITLE, CLAIM,
        rule=(f"a phase counts as memory (compute) bound at a size when rows whose memory "
              f"(compute) time is the larger take >= {BAR:.0%} of its operator time"),
        setup=(f"roofline operator rows, uncalibrated unless a committed profile exists; decode: "
               f"B sequences x 1 new token on {' or '.join(map(str, CONTEXTS))} cached tokens; "
               f"prefill: one "
               f"prompt of n tokens, nothing cached"),
        conditions=conditions, headline=headline, table=df, figure=figure(df),
        notes=[f"GEMMs turn compute bound once a step carries more tokens than the ridge point "
               f"({ridge:.0f} FLOP/byte in bf16 on the H100's datasheet, i.e. a few hundred "
               "tokens), whatever the phase: a big enough decode batch is compute bound in its "
               "linear layers, "
               "while decode attention stays memory bound at any batch (each sequence reads its "
               "own KV).",
               "The shares are the simulator's roofline; they inherit its efficiencies "
               "(docs/hardware-model.md), not a profiler's measurement."])
