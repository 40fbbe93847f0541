"""Claim 10: the dense-70B chatbot worked example.

100 concurrent users, each request a 2,000-token system prompt (the same for everyone), a
200-token user message and a 500-token answer. The claim: unoptimized FP16 does not fit; with
AWQ INT4, GQA, FP8 KV, paged attention, prefix caching, continuous batching and speculative
decoding it fits about 2 H100s.

Memory: a ladder adds one optimization at a time to the unoptimized deployment (Llama-3.1-70B's
shape with multi-head attention, 64 KV heads, since GQA is one of the optimizations; FP16
weights and KV; every user's KV reserved at the maximum length ``MAX_LEN`` as a contiguous
engine does). The KV the worst case needs (every user at the end of an answer at once):
``users x MAX_LEN`` tokens reserved, ``users x 2,700`` with paging, ``2,000 + users x 700``
once the system prompt is shared. Each rung's smallest TP degree (1-8 H100s) whose KV pool
(memory planner: weights, activations, runtime and draft reserved) holds that is reported,
and, past 8, the GPUs the bytes alone need.

Latency: the simulator serves the 100 users in a closed loop (each sends the next message as
soon as the answer is complete: the heaviest load 100 users can make) on the deployments the
memory arithmetic allows; the first 100 requests (all sent at once) are the start-up
transient and are left out of the statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd

from sim.studies.base import ClaimResult, Condition, Scale
from sim.studies.common import latency_stats, merge, simulate

TITLE = "Worked example: 70B chatbot, 100 users"
CLAIM = ("Dense 70B chatbot, 2,000-token system prompt, 200-token user messages, 500-token "
         "answers, 100 concurrent users: unoptimized FP16 doesn't fit; with AWQ INT4, GQA, FP8 "
         "KV, paged attention, prefix caching, continuous batching and speculative decoding it "
         "fits about 2 H100s.")
USERS, SYSTEM, USER_MSG, ANSWER = 100, 2000, 200, 500
MAX_LEN = 4096  # the contiguous engine's per-request reservation (a configured max length)
TTFT_SLO_MS, TPOT_SLO_MS = 2000.0, 50.0  # interactive chat: p90 targets (assumptions)
ACCEPTANCE = 0.7
TPS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: what the deployment uses, cumulatively."""

    name: str
    gqa: bool
    weight_dtype: str
    kv_dtype: str
    paged: bool
    prefix_cache: bool
    continuous: bool
    speculative: bool


LADDER = (
    Rung("unoptimized FP16 (MHA, contiguous, static)", False, "bf16", "bf16", False, False,
         False, False),
    Rung("+ GQA (Llama-3.1-70B as released)", True, "bf16", "bf16", False, False, False, False),
    Rung("+ AWQ INT4 weights", True, "int4", "bf16", False, False, False, False),
    Rung("+ FP8 KV", True, "int4", "fp8", False, False, False, False),
    Rung("+ paged attention", True, "int4", "fp8", True, False, False, False),
    Rung("+ prefix caching", True, "int4", "fp8", True, True, False, False),
    Rung("+ continuous batching (chunked prefill)", True, "int4", "fp8", True, True, True, False),
    Rung("+ speculative decoding (EAGLE, k=4)", True, "int4", "fp8", True, True, True, True),
)


def kv_tokens_needed(rung: Rung) -> int:
    if not rung.paged:
        return USERS * MAX_LEN
    if rung.prefix_cache:
        return SYSTEM + USERS * (USER_MSG + ANSWER)
    return USERS * (SYSTEM + USER_MSG + ANSWER)


def config(rung: Rung, tp: int) -> dict:
    """The servesim config of a rung on ``tp`` GPUs (one replica); GQA rungs only."""
    cfg = {"hardware": {"gpu": "h100", "num_gpus": tp, "tp": tp},
           "model": {"name": "llama-3.1-70b", "weight_dtype": rung.weight_dtype,
                     "kv_dtype": rung.kv_dtype},
           "scheduler": {"policy": "chunked_prefill" if rung.continuous else "static",
                         "max_num_batched_tokens": 8192 if rung.continuous else 65536},
           "kv_cache": {"allocator": "paged" if rung.paged else "contiguous",
                        "enable_prefix_caching": rung.prefix_cache},
           "seed": 10}
    if rung.speculative:
        cfg["speculative"] = {"method": "eagle", "num_draft_tokens": 4,
                              "acceptance": {"model": "iid", "rate": ACCEPTANCE}}
    return cfg


def plan(rung: Rung, tp: int):
    """The memory plan of one replica, or None if the weights (or one block) do not fit."""
    import hwmodels
    from sim.build import hardware_model
    from sim.config import ConfigError, load_config

    try:
        if rung.gqa:
            return hardware_model(load_config(config(rung, tp)))[1]
        spec = hwmodels.get_model("llama-3.1-70b")
        mha = replace(spec, num_kv_heads=spec.num_heads)
        return hwmodels.plan_memory("h100", mha, tp=tp, weight_dtype=rung.weight_dtype,
                                    kv_dtype=rung.kv_dtype, max_num_batched_tokens=65536)
    except (ConfigError, ValueError):
        return None


def memory_row(rung: Rung) -> dict:
    needed = kv_tokens_needed(rung)
    row = {"rung": rung.name, "kv_tokens_needed": needed, "min_h100": math.nan}
    for tp in TPS:
        p = plan(rung, tp)
        if p is None:
            continue
        row.setdefault("weights_gb_total", p.weights_bytes * tp / 1e9)
        row.setdefault("kv_gb_needed", needed * p.kv_bytes_per_token * tp / 1e9)
        if p.kv_pool_tokens >= needed:
            row["min_h100"] = tp
            break
    if math.isnan(row["min_h100"]) and "weights_gb_total" in row:
        usable = plan_usable_bytes()
        row["gpus_by_bytes"] = math.ceil(
            (row["weights_gb_total"] + row["kv_gb_needed"]) * 1e9 / usable)
    return row


def plan_usable_bytes() -> float:
    """Bytes one H100 gives weights + KV after activations and the runtime reserve (TP8)."""
    import hwmodels

    p = hwmodels.plan_memory("h100", "llama-3.1-70b", tp=8)
    return p.usable_bytes - p.activation_bytes - p.runtime_bytes


def latency_row(rung: Rung, tp: int, n: int) -> dict:
    cfg = merge(config(rung, tp), {"workload": {
        "arrival": "sessions", "concurrency": USERS, "num_requests": n,
        "session": {"system_prompt_tokens": SYSTEM, "num_system_prompts": 1, "turns": 1,
                    "user_tokens": USER_MSG, "output_tokens": ANSWER, "think_time_s": 0}}})
    if not rung.paged:  # a contiguous engine: as many requests as max-length slots fit
        cfg["scheduler"]["max_num_seqs"] = max(1, plan(rung, tp).kv_pool_tokens // MAX_LEN)
    result = simulate(cfg)
    stats = latency_stats(result.requests, skip_first=USERS)
    stats["ok"] = bool(stats["p90_ttft_ms"] <= TTFT_SLO_MS and stats["p90_tpot_ms"] <= TPOT_SLO_MS)
    return {"rung": rung.name, "h100s": tp, **stats}


def measure(scale: Scale) -> tuple[pd.DataFrame, pd.DataFrame]:
    memory = pd.DataFrame([memory_row(r) for r in LADDER])
    n = scale.pick(6 * USERS, 2 * USERS)
    runs = scale.pick([(LADDER[1], None), (LADDER[-2], 1), (LADDER[-2], 2), (LADDER[-1], 1),
                       (LADDER[-1], 2)], [(LADDER[-1], 2)])
    rows = []
    for rung, tp in runs:
        if tp is None:  # the rung's own smallest deployment
            found = memory.loc[memory["rung"] == rung.name, "min_h100"].iloc[0]
            if math.isnan(found):
                continue
            tp = int(found)
        rows.append(latency_row(rung, tp, n))
    return memory, pd.DataFrame(rows)


def figure(memory: pd.DataFrame, latency: pd.DataFrame):
    import plotly.graph_objects as go

    gpus = memory["min_h100"].fillna(memory.get("gpus_by_bytes", pd.Series(dtype=float)))
    fig = go.Figure([go.Bar(
        x=memory["rung"], y=gpus,
        text=[f"{g:.0f} H100" + ("" if pd.notna(m) else " (bytes only; >8)")
              for g, m in zip(gpus, memory["min_h100"], strict=True)], name="H100s needed")])
    fig.add_hline(y=2, line_dash="dash", annotation_text="claimed: about 2 H100s")
    labels = [f"{r} on {h}x H100: p90 TTFT {t:,.0f} ms, p90 TPOT {p:.0f} ms"
              for r, h, t, p in zip(latency["rung"], latency["h100s"], latency["p90_ttft_ms"],
                                    latency["p90_tpot_ms"], strict=True)]
    fig.update_layout(title="Claim 10: H100s the 100-user chatbot needs, one optimization at a "
                      "time<br><sup>" + "<br>".join(labels) + "</sup>",
                      yaxis={"type": "log", "title": "H100s (memory)"}, margin={"t": 160})
    return fig


def measured_notes(memory: pd.DataFrame, latency: pd.DataFrame) -> list[str]:
    """What the runs say beyond the verdict: the memory budget, one H100, speculation here."""
    def get(rung: Rung, tp: int):
        hit = latency[(latency["rung"] == rung.name) & (latency["h100s"] == tp)]
        return hit.iloc[0] if len(hit) else None

    last = memory.iloc[-1]
    notes = [f"INT4 weights take the 70B to {last['weights_gb_total']:.0f} GB; with the shared "
             f"prompt stored once the {USERS} users' KV is {last['kv_gb_needed']:.0f} GB in FP8, "
             f"so memory alone allows {last['min_h100']:.0f} H100(s)."]
    one, one_plain = get(LADDER[-1], 1), get(LADDER[-2], 1)
    if one is not None and one_plain is not None:
        verdict = "meets" if one["ok"] else "misses"
        notes.append(
            f"On one H100, which the memory allows, the full stack {verdict} the targets: p90 "
            f"TTFT {one['p90_ttft_ms']:,.0f} ms, p90 TPOT {one['p90_tpot_ms']:.1f} ms "
            f"(without speculation {one_plain['p90_ttft_ms']:,.0f} ms and "
            f"{one_plain['p90_tpot_ms']:.1f} ms).")
    two, two_plain = get(LADDER[-1], 2), get(LADDER[-2], 2)
    if two is not None and two_plain is not None:
        note = (f"On two H100s speculation moves p90 TPOT from {two_plain['p90_tpot_ms']:.1f} to "
                f"{two['p90_tpot_ms']:.1f} ms and p90 TTFT from "
                f"{two_plain['p90_ttft_ms']:,.0f} to {two['p90_ttft_ms']:,.0f} ms.")
        if two["p90_tpot_ms"] > two_plain["p90_tpot_ms"]:
            note += (" With 100 busy users the verify steps are large, so drafts are not free "
                     "(claim 9)")
            if two["p90_ttft_ms"] < two_plain["p90_ttft_ms"]:
                note += ("; in a closed loop slower answers also mean fewer new prompts a "
                         "second, hence the shorter TTFT")
            note += "."
        notes.append(note)
    return notes


def run(scale: Scale) -> ClaimResult:
    memory, latency = measure(scale)
    first, last = memory.iloc[0], memory.iloc[-1]
    gpus0 = first["min_h100"] if pd.notna(first["min_h100"]) else first.get("gpus_by_bytes")
    conditions = [
        Condition("unoptimized FP16 (MHA, FP16 KV, max-length reservation): H100s needed",
                  float(gpus0), "H100s", bool(gpus0 > 2)),
        Condition("Llama-3.1-70B as released (GQA) in FP16, max-length reservation: H100s "
                  "needed", float(memory.iloc[1]["min_h100"]), "H100s",
                  bool(memory.iloc[1]["min_h100"] > 2)),
        Condition("full stack: H100s needed", float(last["min_h100"]), "H100s",
                  bool(last["min_h100"] <= 2)),
    ]
    on_two = latency[(latency["rung"] == LADDER[-1].name) & (latency["h100s"] == 2)]
    for r in on_two.itertuples():
        conditions.append(Condition(f"full stack on 2 H100s: p90 TPOT (p90 TTFT "
                                    f"{r.p90_ttft_ms:,.0f} ms)", r.p90_tpot_ms, "ms", r.ok))
    table = memory.merge(latency, on="rung", how="left")
    headline = Condition("H100s the full stack needs for 100 users (memory)",
                         float(last["min_h100"]), "H100s", None)
    return ClaimResult(
        10, TITLE, CLAIM,
        rule=(f"unoptimized needs > 2 H100s; the full stack <= 2; users see p90 TTFT <= "
              f"{TTFT_SLO_MS:,.0f} ms and p90 TPOT <= {TPOT_SLO_MS:g} ms (assumed interactive "
              f"targets)"),
        setup=(f"{USERS} users, {SYSTEM}-token shared system prompt, {USER_MSG}-token message, "
               f"{ANSWER}-token answer; contiguous reservation {MAX_LEN} tokens; EAGLE k=4 at "
               f"i.i.d. acceptance {ACCEPTANCE}; closed loop, no think time (heaviest load)"),
        conditions=conditions, headline=headline, table=table, figure=figure(memory, latency),
        notes=[*measured_notes(memory, latency),
               "The rungs are cumulative, in the claim's order; a different order credits the "
               "savings differently (with prefix caching the system prompt is stored once, so "
               "the KV format matters less).",
               "Real users pause between messages; a closed loop without think time is the "
               "heaviest load 100 users can make, so the latencies are an upper bound for this "
               "workload. Quality of AWQ INT4 and FP8 KV is out of the simulator's reach."])
