"""Claim 8: each bit less of weight precision roughly halves memory and raises max batch and
decode throughput proportionally (INT4 vs FP8 vs FP16).

Llama-3.1-70B on 2x H100 (TP2) in bf16, fp8 (W8A8) and int4 (AWQ/GPTQ-style W4A16), KV in
bf16. For each halving of the weight bits (16 -> 8, 8 -> 4):

- weight memory per GPU (memory planner);
- max batch: sequences of 2,560 tokens (2,048 prompt + 512 output) the KV pool holds;
- decode speed at batch 1 (roofline step of one sequence on 2,048 cached tokens);
- decode throughput at load: a closed loop with more clients than fit, output tokens/s.

"Proportional" is read as the claim's own factor, 2x per halving, within ``TOL``.
"""

from __future__ import annotations

import pandas as pd

from sim.studies.base import ClaimResult, Condition, Scale
from sim.studies.common import merge, saturated_throughput, simulate, time_weighted_mean

TITLE = "Weight quantization"
CLAIM = ("Weight quantization: each bit less roughly halves memory and raises max batch and "
         "decode throughput proportionally (INT4 vs FP8 vs FP16).")
TOL = 0.2  # 2x +- 20% counts as "halves" / "proportional"
STEPS = (("bf16", "fp8"), ("fp8", "int4"))
PROMPT, OUTPUT = 2048, 512
BASE = {"hardware": {"gpu": "h100", "num_gpus": 2, "tp": 2},
        "model": {"name": "llama-3.1-70b", "kv_dtype": "bf16"},
        "scheduler": {"policy": "chunked_prefill", "max_num_seqs": 512},
        "workload": {"arrival": "closed", "prompt_tokens": PROMPT, "output_tokens": OUTPUT},
        "seed": 8}


def measure(scale: Scale) -> pd.DataFrame:
    import hwmodels

    clients = scale.pick(512, 16)
    rows = []
    for dtype in ("bf16", "fp8", "int4"):
        cfg = merge(BASE, {"model": {"weight_dtype": dtype},
                           "workload": {"concurrency": clients,
                                        "num_requests": scale.pick(3 * clients, 24)}})
        if scale.quick:
            cfg["scheduler"]["max_num_seqs"] = clients
        result = simulate(cfg)
        plan = result.plan
        hw = hwmodels.RooflineModel("h100", "llama-3.1-70b", tp=2, weight_dtype=dtype,
                                    profile="auto")
        rows.append({"weight_dtype": dtype, "weights_gb_per_gpu": plan.weights_bytes / 1e9,
                     "kv_pool_gb_per_gpu": plan.kv_pool_bytes / 1e9,
                     "max_seqs": plan.max_concurrent(PROMPT + OUTPUT),
                     "batch1_tpot_ms": hw.step_time_s([(1, PROMPT)]) * 1e3,
                     "mean_batch": time_weighted_mean(result.steps, "num_seqs"),
                     "output_throughput": saturated_throughput(result.requests)})
    return pd.DataFrame(rows).set_index("weight_dtype", drop=False)


def step_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """Gain of each halving: memory saved (old/new), and batch and speed gained (new/old)."""
    rows = []
    for old, new in STEPS:
        a, b = df.loc[old], df.loc[new]
        rows.append({"step": f"{old} -> {new}",
                     "weight_memory": a["weights_gb_per_gpu"] / b["weights_gb_per_gpu"],
                     "max_batch": b["max_seqs"] / a["max_seqs"],
                     "batch1_decode_speed": a["batch1_tpot_ms"] / b["batch1_tpot_ms"],
                     "throughput_at_load": b["output_throughput"] / a["output_throughput"]})
    return pd.DataFrame(rows)


def figure(ratios: pd.DataFrame):
    import plotly.graph_objects as go

    fig = go.Figure()
    for col in ("weight_memory", "max_batch", "batch1_decode_speed", "throughput_at_load"):
        fig.add_trace(go.Bar(x=ratios["step"], y=ratios[col], name=col.replace("_", " ")))
    fig.add_hline(y=2, line_dash="dash", annotation_text="proportional (2x per halving)")
    fig.update_layout(title="Claim 8: gain per halving of weight bits (Llama-3.1-70B, 2x H100)",
                      barmode="group", yaxis={"type": "log", "title": "x previous precision"})
    return fig


def run(scale: Scale) -> ClaimResult:
    df = measure(scale)
    ratios = step_ratios(df)
    conditions = []
    for r in ratios.itertuples():
        for col, what in (("weight_memory", "weight memory cut"), ("max_batch", "max batch"),
                          ("batch1_decode_speed", "batch-1 decode speed"),
                          ("throughput_at_load", "throughput at load")):
            value = getattr(r, col)
            conditions.append(Condition(f"{r.step}: {what}", value, "x",
                                        bool(abs(value / 2 - 1) <= TOL)))
    table = df.reset_index(drop=True).merge(
        ratios.assign(weight_dtype=[new for _, new in STEPS]), on="weight_dtype", how="left")
    fp8 = ratios.iloc[0]
    headline = Condition("bf16 -> fp8: max batch gain", float(fp8["max_batch"]), "x", None)
    return ClaimResult(
        8, TITLE, CLAIM,
        rule=f"each gain within {TOL:.0%} of 2x per halving of the weight bits",
        setup=(f"Llama-3.1-70B, 2x H100 TP2, bf16 KV; max batch = sequences of "
               f"{PROMPT + OUTPUT} tokens that fit; batch-1 speed from the roofline; throughput: "
               f"closed loop, {PROMPT}-token prompts, {OUTPUT}-token outputs, chunked prefill"),
        conditions=conditions, headline=headline, table=table, figure=figure(ratios),
        notes=["KV pool per GPU after the weights: " + ", ".join(
                   f"{r.weight_dtype} {r.kv_pool_gb_per_gpu:.1f} GB" for r in df.itertuples())
               + ". The pool is what is left after the weights, so freeing weight memory helps "
                 "the batch most when the weights nearly fill the GPUs and little once they "
                 "are small.",
               "Batch-1 decode reads every weight once per token, so it tracks weight bytes "
               "until KV reads and fixed per-step costs dominate. At large batches the linear "
               "layers are compute bound, and W4A16 (int4) computes in 16 bits and dequantizes "
               "where fp8 (W8A8) uses FP8 tensor cores: fp8 -> int4 throughput at load "
               f"{ratios.iloc[1]['throughput_at_load']:.2f}x.",
               "Quality loss of each format is out of the simulator's reach."])
