"""Claim 7: KV quantization (FP8/INT8/INT4) halves or quarters KV memory; effect on max batch
and throughput.

Memory: KV bytes per token of each format from the memory planner, scale metadata included
(INT8: an fp16 scale per head vector; INT4: KIVI-style fp16 scale and zero per 32 values).
Batch: sequences of the workload's final length the KV pool holds. Throughput: a closed loop
of many clients (more than fit) served with each format, so the batch is as large as memory
allows; output tokens per second. Two settings decide whether the memory turns into speed:
long contexts where the KV pool limits the batch (Llama-3.1-70B, fp8 weights, 2x H100 TP2,
8K-token prompts) and short ones where it does not (Llama-3.1-8B on one H100, 512-token
prompts, 256 sequences at most).
"""

from __future__ import annotations

import pandas as pd

from sim.studies.base import ClaimResult, Condition, Scale
from sim.studies.common import merge, saturated_throughput, simulate, time_weighted_mean

TITLE = "KV-cache quantization"
CLAIM = ("KV quantization FP8/INT8/INT4 halves or quarters KV memory; effect on max batch and "
         "throughput.")
CLAIMED = {"fp8": 0.5, "int8": 0.5, "int4": 0.25}  # KV bytes vs bf16
MEM_TOL = 0.05  # within 5% of the claimed ratio
GAIN_BAR = 1.1  # a throughput gain counts when at least 10%
SETTINGS = {
    "KV-bound (70B fp8, 2x H100, 8K prompts)": {
        "hardware": {"gpu": "h100", "num_gpus": 2, "tp": 2},
        "model": {"name": "llama-3.1-70b", "weight_dtype": "fp8"},
        "scheduler": {"policy": "chunked_prefill", "max_num_seqs": 512},
        "workload": {"prompt_tokens": 8192, "output_tokens": 512}},
    "not KV-bound (8B, 1x H100, 512-token prompts)": {
        "hardware": {"gpu": "h100"}, "model": {"name": "llama-3.1-8b"},
        "scheduler": {"policy": "chunked_prefill", "max_num_seqs": 256},
        "workload": {"prompt_tokens": 512, "output_tokens": 256}},
}


def measure(scale: Scale) -> pd.DataFrame:
    dtypes = scale.pick(["bf16", "fp8", "int8", "int4"], ["bf16", "fp8"])
    settings = scale.pick(list(SETTINGS), list(SETTINGS)[:1])
    rows = []
    for name in settings:
        setting = SETTINGS[name]
        clients = setting["scheduler"]["max_num_seqs"]
        n = scale.pick(3 * clients, 24)
        final_len = setting["workload"]["prompt_tokens"] + setting["workload"]["output_tokens"]
        for dtype in dtypes:
            cfg = merge(setting, {"model": {"kv_dtype": dtype}, "seed": 7,
                                  "workload": {"arrival": "closed", "concurrency": clients,
                                               "num_requests": n}})
            if scale.quick:
                cfg["scheduler"]["max_num_seqs"] = cfg["workload"]["concurrency"] = 16
            result = simulate(cfg)
            plan = result.plan
            rows.append({"setting": name, "kv_dtype": dtype,
                         "kv_bytes_per_token": plan.kv_bytes_per_token,
                         "max_seqs": plan.max_concurrent(final_len),
                         "mean_batch": time_weighted_mean(result.steps, "num_seqs"),
                         "output_throughput": saturated_throughput(result.requests),
                         "mean_tpot_ms": result.summary["mean_tpot_ms"]})
    df = pd.DataFrame(rows)
    base = df[df["kv_dtype"] == "bf16"].set_index("setting")
    for col in ("kv_bytes_per_token", "max_seqs", "output_throughput"):
        df[f"{col}_vs_bf16"] = df[col] / df["setting"].map(base[col])
    return df


def figure(df: pd.DataFrame):
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, g in df.groupby("setting", sort=False):
        fig.add_trace(go.Bar(x=g["kv_dtype"], y=g["output_throughput_vs_bf16"],
                             name=f"throughput: {name}"))
    first = df[df["setting"] == df["setting"].iloc[0]]
    fig.add_trace(go.Scatter(x=first["kv_dtype"], y=first["max_seqs_vs_bf16"],
                             mode="lines+markers", name="sequences that fit (KV-bound setting)"))
    fig.add_trace(go.Scatter(x=first["kv_dtype"], y=1 / first["kv_bytes_per_token_vs_bf16"],
                             mode="lines+markers", name="1 / KV bytes per token"))
    fig.update_layout(title="Claim 7: KV formats relative to bf16", yaxis_title="x bf16")
    return fig


def run(scale: Scale) -> ClaimResult:
    from hwmodels.precision import kv_format

    df = measure(scale)
    conditions = []
    first = df[df["setting"] == df["setting"].iloc[0]]
    for r in first[first["kv_dtype"] != "bf16"].itertuples():
        claimed = CLAIMED[r.kv_dtype]
        conditions.append(Condition(f"{r.kv_dtype}: KV bytes vs bf16 (claimed {claimed:g})",
                                    r.kv_bytes_per_token_vs_bf16, "x",
                                    bool(abs(r.kv_bytes_per_token_vs_bf16 / claimed - 1)
                                         <= MEM_TOL)))
    for r in df[df["kv_dtype"] != "bf16"].itertuples():
        conditions.append(Condition(f"{r.kv_dtype}, {r.setting}: throughput vs bf16",
                                    r.output_throughput_vs_bf16, "x",
                                    bool(r.output_throughput_vs_bf16 >= GAIN_BAR)))
    fp8 = first[first["kv_dtype"] == "fp8"].iloc[0]
    headline = Condition(f"fp8 KV: sequences that fit vs bf16 ({fp8['setting']})",
                         float(fp8["max_seqs_vs_bf16"]), "x", None)
    return ClaimResult(
        7, TITLE, CLAIM,
        rule=(f"memory: KV bytes per token within {MEM_TOL:.0%} of the claimed 1/2 (fp8, int8) "
              f"or 1/4 (int4); effect: output throughput >= {GAIN_BAR:g}x bf16's"),
        setup=("closed loop with as many clients as max_num_seqs (every sequence slot busy), "
               "chunked prefill, paged KV; fixed prompt and output lengths per setting"),
        conditions=conditions, headline=headline, table=df, figure=figure(df),
        notes=[f"INT4 with per-group scales and zeros stores {kv_format('int4').bytes_per_elem:g}"
               f" bytes per value, not 0.5: a {2 / kv_format('int4').bytes_per_elem:.1f}x cut, "
               f"not 4x. INT8 with per-vector scales is "
               f"{kv_format('int8').bytes_per_elem:.3g} bytes.",
               *("{}: throughput vs bf16 {}.".format(
                   name, ", ".join(f"{r.kv_dtype} {r.output_throughput_vs_bf16:.2f}x"
                                   for r in g[g["kv_dtype"] != "bf16"].itertuples()))
                 for name, g in df.groupby("setting", sort=False)),
               *("{}: mean batch {}; mean TPOT {} ms.".format(
                   name, " -> ".join(f"{b:.0f}" for b in g["mean_batch"]),
                   " -> ".join(f"{t:.1f}" for t in g["mean_tpot_ms"]))
                 for name, g in df.groupby("setting", sort=False)),
               "Two effects add up: where the KV pool limits the batch, a smaller format fits "
               "more sequences (more throughput, and each step is bigger, so TPOT can rise); at "
               "any batch, decode attention reads fewer KV bytes, which counts once the "
               "batch's KV reads rival the weights.",
               "Accuracy is out of the simulator's reach: it cannot say whether a format keeps "
               "the model's quality. The dequantization cost inside attention kernels is not "
               "modelled (attention bytes shrink, its compute does not)."])
