"""Roofline step time: physics checks, public measurements, what-ifs, monotonicity."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels import CatalogError, Profile, RooflineModel, load_profile, step_time_ms
from hwmodels.profile import Coverage

MONOTONE_MODELS = [
    ("h100", "llama-3.1-8b", {}),
    ("h100", "mixtral-8x7b", {"tp": 2}),
    ("h200", "deepseek-v3", {"tp": 8, "weight_dtype": "fp8"}),
    ("h100", "gpt-oss-20b", {}),
    ("a100", "llama-2-7b", {"attention_impl": "naive", "kv_dtype": "int4"}),
    ("b200", "qwen3-235b-a22b", {"tp": 8, "ep": 8, "weight_dtype": "nvfp4"}),
    ("h200", "deepseek-v3", {"tp": 8, "ep": 8, "dp_attention": True, "weight_dtype": "fp8"}),
    ("h100", "llama-3.1-70b", {"tp": 2, "pp": 2, "params": {"cuda_graph_mode": "decode"}}),
]
HW = {f"{i}:{g}:{m}": RooflineModel(g, m, **kw) for i, (g, m, kw) in enumerate(MONOTONE_MODELS)}

seq = st.tuples(st.integers(1, 3000), st.integers(0, 40000))
batch = st.lists(seq, min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    batch=batch,
    index=st.integers(0, 39),
    grow_new=st.integers(0, 600),
    grow_ctx=st.integers(0, 5000),
    model=st.sampled_from(sorted(HW)),
)
def test_step_time_monotone_in_tokens_and_context(batch, index, grow_new, grow_ctx, model):
    hw = HW[model]
    i = index % len(batch)
    bigger = list(batch)
    bigger[i] = (batch[i][0] + grow_new, batch[i][1] + grow_ctx)
    assert hw.step_time_s(bigger) >= hw.step_time_s(batch) * (1 - 1e-12)
    assert hw.step_time_s([*batch, (1, 0)]) >= hw.step_time_s(batch) * (1 - 1e-12)


def test_decode_llama8b_h100_batch1_matches_public_measurements():
    """~6-7 ms/token is the usual bf16 figure (docs/hardware-model.md lists the sources)."""
    t = step_time_ms("h100", "llama-3.1-8b", [(1, 1088)])
    assert t == pytest.approx(6.5, rel=0.20)
    # A100 40GB, vLLM, 1024-in/128-out at concurrency 1: ~75 tok/s (johnmusgrave.com)
    assert step_time_ms("a100-40gb", "llama-3.1-8b", [(1, 1088)]) == pytest.approx(
        1000 / 75, rel=0.20
    )


def test_decode_is_bandwidth_bound_and_prefill_compute_bound():
    hw = RooflineModel("h100", "llama-3.1-8b")
    weights_s = 15.0e9 / 3.35e12  # linears + LM head at the datasheet bandwidth
    assert weights_s < hw.step_time_s([(1, 100)]) < 1.5 * weights_s
    flops_s = 2 * 8.0e9 * 8192 / 989.5e12
    assert flops_s < hw.step_time_s([(8192, 0)]) < 1.8 * flops_s
    # batching decodes is nearly free until compute catches up
    assert hw.step_time_s([(1, 128)] * 32) < 1.15 * hw.step_time_s([(1, 128)])


def test_gpu_what_ifs():
    base = RooflineModel("h100", "llama-3.1-8b")
    fast_mem = RooflineModel({"base": "h100", "memory_bw_gbps": 6700}, "llama-3.1-8b")
    decode, prefill = [(1, 1024)], [(8192, 0)]
    # twice the bandwidth halves what streams (the memory-bound rows beyond their fixed
    # per-call floors, less the fixed per-sequence work overlapped with attention's stream);
    # the floors and the host's work stay
    streaming = sum(r.time_s - r.floor_s for r in base.breakdown(decode) if r.bound == "memory")
    assert streaming > 0.6 * base.step_time_s(decode)  # batch-1 decode is mostly streaming
    assert fast_mem.step_time_s(decode) < base.step_time_s(decode) - 0.4 * streaming
    assert fast_mem.step_time_s(prefill) == pytest.approx(base.step_time_s(prefill), rel=0.05)
    assert RooflineModel("h200", "llama-3.1-8b").step_time_s(decode) < base.step_time_s(decode)
    assert RooflineModel("b200", "llama-3.1-8b").step_time_s(prefill) < 0.6 * base.step_time_s(
        prefill
    )


def test_precisions_change_the_right_side_of_the_roofline():
    seqs = [(1, 1024)]
    bf16 = step_time_ms("h100", "llama-3.1-8b", seqs)
    # FP8 halves the weights streamed, but each FP8 GEMM also runs its activation-quantization
    # kernels: measured TensorRT-LLM FP8 Linear at M = 1 costs 12.5 us of fixed time against
    # 3.2 us in bf16 (hwmodels/catalog/kernel_fits.yaml), 128 GEMMs a step for Llama-8B
    assert step_time_ms("h100", "llama-3.1-8b", seqs, weight_dtype="fp8") < 0.9 * bf16
    assert step_time_ms("h100", "llama-3.1-8b", seqs, weight_dtype="int4") < 0.5 * bf16
    prefill = [(8192, 0)]
    # W8A8 FP8 uses the 2x tensor peak; W4A16 computes in bf16 and pays for dequantizing
    assert step_time_ms("h100", "llama-3.1-8b", prefill, weight_dtype="fp8") < 0.8 * (
        step_time_ms("h100", "llama-3.1-8b", prefill)
    )
    assert step_time_ms("h100", "llama-3.1-8b", prefill, weight_dtype="int4") > (
        step_time_ms("h100", "llama-3.1-8b", prefill)
    )
    # FP8 on an A100 has no FP8 tensor cores: weight-only, bf16 compute
    assert step_time_ms("a100", "llama-3.1-8b", prefill, weight_dtype="fp8") > (
        step_time_ms("a100", "llama-3.1-8b", prefill)
    )
    long_decode = [(1, 32000)] * 16
    assert step_time_ms("h100", "llama-3.1-8b", long_decode, kv_dtype="fp8") < 0.8 * (
        step_time_ms("h100", "llama-3.1-8b", long_decode)
    )


def test_tensor_parallel_speeds_up_and_communicates():
    tp1 = RooflineModel("h100", "llama-3.1-8b")
    tp2 = RooflineModel("h100", "llama-3.1-8b", tp=2)
    seqs = [(4096, 0)]
    assert tp2.step_time_s(seqs) < 0.65 * tp1.step_time_s(seqs)
    names = {r.name for r in tp2.breakdown(seqs)}
    assert "tp_all_reduce" in names and "tp_all_reduce" not in {r.name for r in tp1.breakdown(seqs)}
    # the same TP=2 over PCIe (L40S) pays much more for its all-reduces
    l40s = {r.name: r for r in RooflineModel("l40s", "llama-3.1-8b", tp=2).breakdown(seqs)}
    h100 = {r.name: r for r in tp2.breakdown(seqs)}
    assert l40s["tp_all_reduce"].time_s > 5 * h100["tp_all_reduce"].time_s


def test_pipeline_and_expert_parallel():
    pp = RooflineModel("h100", "llama-3.1-70b", tp=2, pp=2)
    assert any(r.name == "pp_send" for r in pp.breakdown([(512, 0)]))
    ep = RooflineModel("h100", "qwen3-30b-a3b", tp=4, ep=4)
    tp = RooflineModel("h100", "qwen3-30b-a3b", tp=4)
    assert ep.step_time_s([(2048, 0)]) > 0 and tp.step_time_s([(2048, 0)]) > 0


def _busiest_rank_load_monte_carlo(tokens: int, experts: int, top_k: int, ranks: int) -> float:
    """Expected routed tokens on the busiest of ``ranks`` expert-parallel ranks when each token
    picks ``top_k`` distinct experts uniformly (no model code involved)."""
    rng = np.random.default_rng(7)
    per_rank = experts // ranks
    maxima = []
    for _ in range(60):
        picks = np.argpartition(rng.random((tokens, experts)), top_k, axis=1)[:, :top_k]
        loads = np.bincount(picks.ravel() // per_rank, minlength=ranks)
        maxima.append(loads.max())
    return float(np.mean(maxima))


def test_busiest_expert_parallel_rank_carries_more_than_the_mean():
    """Under EP the routed-expert GEMMs run at the busiest rank's load. The model's load
    (read off the expert GEMM's FLOPs) must exceed the mean by roughly what sampling the
    routing gives: a Monte Carlo of uniform top-k routing, not the model's own formula."""
    tokens, gpus = 2048, 4
    ep = RooflineModel("h100", "qwen3-30b-a3b", tp=gpus, ep=gpus)
    moe, h = ep.model.moe, ep.model.hidden_size
    rows = {r.name: r for r in ep.breakdown([(tokens, 0)])}
    inter = moe.expert_intermediate  # EP=TP: every rank holds whole experts
    per_token_flops = 2.0 * 2 * inter * h * ep.model.num_moe_layers
    model_load = rows["experts_gate_up"].flops / per_token_flops
    mean_load = tokens * moe.top_k / gpus
    sampled = _busiest_rank_load_monte_carlo(tokens, moe.num_experts, moe.top_k, gpus)
    assert sampled > mean_load * 1.005  # the straggler effect is real at this size
    # excess over the mean: the model's normal-approximation bound is the same order as sampled
    assert 0.5 * (sampled - mean_load) < model_load - mean_load < 2.5 * (sampled - mean_load)


def test_cuda_graphs_remove_cpu_launch_cost():
    graphs = RooflineModel("h100", "qwen3-30b-a3b")
    eager = RooflineModel("h100", "qwen3-30b-a3b", params={"cuda_graph_max_tokens": 0})
    seqs = [(1, 512)]
    assert eager.step_time_s(seqs) > 1.2 * graphs.step_time_s(seqs)
    assert any(r.name == "cpu_launch_bound" for r in eager.breakdown(seqs))
    decode_only = RooflineModel("h100", "qwen3-30b-a3b", params={"cuda_graph_mode": "decode"})
    assert decode_only.step_time_s(seqs) == graphs.step_time_s(seqs)
    assert decode_only.step_time_s([(2, 512)]) > graphs.step_time_s([(2, 512)])


# Ideal hardware: every efficiency 1, no fixed costs, the plain roofline max (p >= 64), every
# step graphed. Set explicitly so the hand numbers below do not hinge on fitted defaults.
IDEAL = {
    "gemm_eff": 1.0, "gemm_m_half_tokens": 0.0, "hbm_eff": 1.0, "attn_bw_eff": 1.0,
    "attn_compute_eff": 1.0, "overlap_p": 64.0, "kernel_gap_s": 0.0, "gemm_latency_s": 0.0,
    "step_overhead_s": 0.0, "seq_overhead_s": 0.0, "cuda_graph_max_tokens": 1 << 30,
}
# Llama 3.1 8B, from its model card and config.json: 8.03e9 parameters, hidden 4096, 32 layers,
# 8 KV heads of 128, vocabulary 128256. H100 SXM datasheet: 3.35 TB/s HBM3, 989.5 dense bf16
# TFLOP/s.
LLAMA8B_PARAMS, HIDDEN, LAYERS, KV_HEADS, HEAD_DIM, VOCAB = 8.03e9, 4096, 32, 8, 128, 128256
H100_BW, H100_BF16 = 3.35e12, 989.5e12


@pytest.mark.parametrize(("batch", "context"), [(1, 1087), (8, 8000), (64, 8000)])
def test_decode_step_is_the_hand_roofline_of_weights_and_kv(batch, context):
    """Decode reads every weight once except the input embedding (one row per sequence is
    gathered) plus each sequence's KV cache: a hand roofline from the model card and the
    datasheet. No step can beat it; with every efficiency at 1 the step stays within 30% of it
    (what measured kernel shapes, such as one sequence's attention not filling the GPU, add)."""
    hw = RooflineModel("h100", "llama-3.1-8b", params=IDEAL)
    weights = (LLAMA8B_PARAMS - VOCAB * HIDDEN) * 2  # bf16, the embedding table not streamed
    kv = batch * (context + 1) * LAYERS * 2 * KV_HEADS * HEAD_DIM * 2
    floor_s = (weights + kv) / H100_BW
    seqs = [(1, context)] * batch
    assert floor_s * (1 - 1e-3) <= hw.step_time_s(seqs) <= 1.3 * floor_s
    assert {r.bound for r in hw.breakdown(seqs)} <= {"memory", "host"}
    assert hw.step_time_s([]) == 0.0


def test_prefill_linears_are_the_hand_flop_count():
    """A 4096-token prefill: the linear layers (all weights but the two vocab-sized tables)
    do 2 FLOPs per weight per token at the bf16 peak; the whole step adds causal attention
    (4 x heads x head_dim FLOPs per query-key pair) and the elementwise kernels' traffic."""
    hw = RooflineModel("h100", "llama-3.1-8b", params=IDEAL)
    tokens = 4096
    rows = {r.name: r for r in hw.breakdown([(tokens, 0)])}
    linear_weights = LLAMA8B_PARAMS - 2 * VOCAB * HIDDEN  # less the embedding and LM head
    linears_s = sum(rows[n].time_s for n in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"))
    linears_floor_s = 2 * tokens * linear_weights / H100_BF16
    assert linears_floor_s * (1 - 1e-3) <= linears_s <= 1.05 * linears_floor_s
    attention_flops = 4 * 32 * HEAD_DIM * (tokens * (tokens + 1) // 2) * LAYERS
    assert attention_flops / H100_BF16 * (1 - 1e-3) <= rows["attention_prefill"].time_s
    assert rows["attention_prefill"].flops == pytest.approx(attention_flops, rel=1e-9)
    compute_floor_s = (2 * tokens * linear_weights + attention_flops) / H100_BF16
    assert compute_floor_s < hw.step_time_s([(tokens, 0)]) < 1.2 * compute_floor_s


def test_profiles(tmp_path):
    assert RooflineModel("h100", "llama-3.1-8b", profile="auto").params is not None
    profile = Profile(
        gpu="h100-sxm5-80gb",
        params={"hbm_eff": 0.5},
        mape=3.0,
        p90_abs_error_pct=5.0,
        coverage=Coverage(8192, 16384, 256),
    )
    path = profile.save(tmp_path / "p")
    assert json.loads(path.read_text())["params"] == {"hbm_eff": 0.5}
    loaded = load_profile(path)
    assert loaded == profile
    slow = RooflineModel("h100", "llama-3.1-8b", profile=path)
    assert slow.params.hbm_eff == 0.5
    fast = RooflineModel("h100", "llama-3.1-8b")
    assert slow.step_time_s([(1, 10)]) > 1.5 * fast.step_time_s([(1, 10)])
    pred = slow.predict([(1, 10)])
    assert pred.low_s == pytest.approx(0.95 * pred.time_s) and not pred.extrapolating
    assert slow.predict([(1, 100000)]).extrapolating
    with pytest.raises(CatalogError, match="no profile file"):
        RooflineModel("h100", "llama-3.1-8b", profile=tmp_path / "missing.json")


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="new_tokens >= 1"):
        step_time_ms("h100", "llama-3.1-8b", [(0, 5)])
    with pytest.raises(CatalogError, match="weight_dtype"):
        step_time_ms("h100", "llama-3.1-8b", [(1, 5)], weight_dtype="int3")
    with pytest.raises(CatalogError, match="kv_dtype"):
        step_time_ms("h100", "llama-3.1-8b", [(1, 5)], kv_dtype="fp4")
    with pytest.raises(CatalogError, match="attention_impl"):
        RooflineModel("h100", "llama-3.1-8b", attention_impl="sdpa")


def test_dp_attention_with_expert_parallel_all_to_all():
    tp = RooflineModel("h200", "deepseek-v3", tp=8, weight_dtype="fp8")
    dp = RooflineModel("h200", "deepseek-v3", tp=8, ep=8, dp_attention=True, weight_dtype="fp8")
    big = [(1, 2048)] * 256 + [(2048, 0)]
    rows = {r.name: r for r in dp.breakdown(big)}
    assert "ep_all_to_all" in rows and "tp_all_reduce" not in rows
    # 2 all-to-alls per MoE layer, each GPU sends its 1/8 of the tokens x top-8, 7/8 off-GPU
    tokens = 256 + 2048
    assert rows["ep_all_to_all"].bytes == pytest.approx(2 * 58 * tokens / 8 * 8 * 7168 * 2 * 7 / 8)
    # large batches: attention split by sequence beats tensor-parallel all-reduces ...
    assert dp.step_time_s(big) < tp.step_time_s(big)
    # ... small ones pay for every GPU reading the unsharded attention weights
    assert dp.step_time_s([(1, 2048)] * 8) > tp.step_time_s([(1, 2048)] * 8)
    with pytest.raises(CatalogError, match="dp_attention"):
        RooflineModel("h100", "llama-3.1-70b", tp=8, ep=8, dp_attention=True)


def test_memoized_step_times_follow_the_parameters():
    """step_time_s is memoized by batch; new parameters (a clone, or the attribute set anew)
    price afresh, and the memo never returns another parameter set's time."""
    hw = RooflineModel("h100-sxm5-80gb", "llama-3.1-8b")
    seqs = [(900, 0), (1, 300)]
    first = hw.step_time_s(seqs)
    assert hw.step_time_s(list(seqs)) == first
    slower = hw.params.updated(step_overhead_s=hw.params.step_overhead_s + 1e-3)
    clone = hw.with_params(slower)
    assert clone.step_time_s(seqs) == pytest.approx(first + 1e-3)
    assert hw.step_time_s(seqs) == first  # the original keeps its own memo
    hw.params = slower
    assert hw.step_time_s(seqs) == pytest.approx(first + 1e-3)
    assert hw.step_times_s([(1, 300), (1, 500)], 4)[0] == hw.step_time_s([(1, 300), (1, 500)])


def test_models_priced_alike_share_their_memo_and_only_they():
    """A second model built with the same inputs (a re-simulation) finds the first one's step
    prices; a model differing in any pricing input (precision, attention kernel, parameters)
    prices afresh, each in the direction its change implies."""
    from hwmodels import roofline

    seqs = [(700, 0), (1, 90)]
    first = RooflineModel("h100-sxm5-80gb", "llama-3.1-8b")
    price = first.step_time_s(seqs)
    again = RooflineModel("h100-sxm5-80gb", "llama-3.1-8b")
    assert again.params is not first.params and again._memo()[1] is first._memo()[1]
    assert again._memo()[1][tuple(seqs)] == price
    others = [RooflineModel("h100-sxm5-80gb", "llama-3.1-8b", kv_dtype="fp8"),
              RooflineModel("h100-sxm5-80gb", "llama-3.1-8b", attention_impl="naive"),
              RooflineModel("h100-sxm5-80gb", "llama-3.1-8b",
                            params={"step_overhead_s": first.params.step_overhead_s * 2})]
    for other in others:
        assert other._memo()[1] is not first._memo()[1]
    fp8_kv, naive, slower_host = (other.step_time_s(seqs) for other in others)
    long_decode = [(1, 32000)] * 16  # where KV bytes dominate (short ones: fp8's kernel floors)
    assert others[0].step_time_s(long_decode) < first.step_time_s(long_decode)
    assert fp8_kv != price
    assert naive > price  # the score matrix goes through HBM
    assert slower_host == pytest.approx(price + first.params.step_overhead_s)
    for i in range(roofline.SHARED_MEMOS + 1):  # bounded: the least recently used go first
        RooflineModel("h100-sxm5-80gb", "llama-3.1-8b",
                      params={"step_overhead_s": 1e-4 * (i + 1)}).step_time_s(seqs)
    assert len(roofline._SHARED_MEMOS) <= roofline.SHARED_MEMOS


def test_an_overlapped_host_costs_only_what_exceeds_the_device():
    """host_overlap (SGLang's and TensorRT-LLM's overlap schedulers): the CPU prepares the next
    step while the GPU runs this one, so a step takes the longer of the two, not their sum."""
    serial = RooflineModel("h100", "llama-3.1-8b", params={"seq_overhead_s": 1e-4})
    hidden = RooflineModel("h100", "llama-3.1-8b",
                           params={"seq_overhead_s": 1e-4, "host_overlap": True})
    for seqs in ([(1, 512)] * 8, [(1, 512)] * 1024):
        host = serial.params.step_overhead_s + len(seqs) * 1e-4
        device = serial.step_time_s(seqs) - host
        assert hidden.step_time_s(seqs) == pytest.approx(max(device, host), rel=1e-12)
        # the decode fast-forward prices a run the same way, step for step
        run = hidden.step_times_s(seqs, 3)
        assert run[1] == hidden.step_time_s([(1, 513)] * len(seqs))
    # 8 sequences: 1.1 ms of host work hides in a ~6.6 ms step; 1,024: 102.7 ms of it exceeds
    # the GPU's ~48 ms and sets the step
    small, large = [(1, 512)] * 8, [(1, 512)] * 1024
    assert hidden.step_time_s(small) == pytest.approx(serial.step_time_s(small) - 1.1e-3,
                                                      rel=1e-12)
    assert hidden.step_time_s(large) == pytest.approx(0.3e-3 + 1024 * 1e-4, rel=1e-12)
