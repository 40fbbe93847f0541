"""``RooflineModel.step_times_s`` prices a decode run exactly as ``step_time_s`` does step by
step: the engine's fast-forward relies on it bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels.kernels.fits import load_fits
from hwmodels.roofline import RooflineModel

CASES = [  # (gpu, model, keyword arguments): dense, GQA under TP, sliding window, MoE, EP, DP
    ("h100", "llama-3.1-8b", {}),
    ("h100", "llama-3.1-70b", {"tp": 4}),
    ("a100", "mistral-7b-v0.1", {"kv_dtype": "fp8"}),
    ("h100", "gpt-oss-20b", {}),
    ("h200", "qwen3-30b-a3b", {"tp": 2, "ep": 2}),
    ("h100", "mixtral-8x7b", {"tp": 2, "weight_dtype": "fp8"}),
    ("h200", "llama-3.1-70b", {"tp": 2, "pp": 2}),
    ("h100", "llama-3.1-8b", {"params": {"cuda_graph_max_tokens": 0, "launch_cpu_s": 3e-5}}),
    ("h100", "llama-3.1-8b", {"attention_impl": "naive", "params": {"cuda_graph_max_tokens": 8}}),
]  # MLA runs are priced step by step by step_time_s itself: nothing to compare here
MODELS = [RooflineModel(gpu, model, **kw) for gpu, model, kw in CASES]


@settings(max_examples=120, deadline=None)
@given(which=st.integers(0, len(MODELS) - 1),
       contexts=st.lists(st.integers(0, 40_000), min_size=1, max_size=70),
       n_steps=st.integers(1, 200))
def test_a_run_equals_its_steps_bit_for_bit(which, contexts, n_steps):
    hw = MODELS[which]
    seqs = [(1, c) for c in contexts]
    run = hw.step_times_s(seqs, n_steps)
    steps = np.array([hw.step_time_s([(1, c + j) for c in contexts]) for j in range(n_steps)])
    assert run.dtype == np.float64 and run.shape == (n_steps,)
    assert np.array_equal(run, steps)


# Ideal hardware (every efficiency 1, no fixed costs, the plain roofline max), set explicitly.
IDEAL = {
    "gemm_eff": 1.0, "gemm_m_half_tokens": 0.0, "hbm_eff": 1.0, "attn_bw_eff": 1.0,
    "attn_compute_eff": 1.0, "overlap_p": 64.0, "kernel_gap_s": 0.0, "gemm_latency_s": 0.0,
    "step_overhead_s": 0.0, "seq_overhead_s": 0.0,
}


def test_prefill_chunks_grow_by_the_kv_each_step_adds():
    """A run with a prefill chunk is priced step by step; each step attends over one more
    cached token per sequence, and both attentions here are bandwidth-bound, so each step
    costs one token's K and V per sequence and layer more (Llama 3.1 8B: 32 layers, 8 KV heads
    of 128 in bf16; H100: 3.35 TB/s): a hand number, not step_time_s again. Long contexts, so
    that streaming the KV (not a kernel's latency floor) sets each attention's time. The
    longest decode sequence's walk, split over a capped number of CTAs beyond ``path_keys``,
    also grows by one key a step (the H100 bf16 curve's ``split_key_s`` per layer)."""
    hw = RooflineModel("h100", "llama-3.1-8b", params=IDEAL)
    seqs = [(1, 30_000), (37, 30_000)]
    run = hw.step_times_s(seqs, 5)
    kv_per_token_bytes = 32 * 2 * 8 * 128 * 2
    walk_s = 32 * load_fits()["h100_sxm"].decode["bf16"].split_key_s
    per_step_s = len(seqs) * kv_per_token_bytes / 3.35e12 + walk_s
    assert np.diff(run) == pytest.approx([per_step_s] * 4, rel=0.01)
    assert hw.step_times_s(seqs, 0).shape == (0,)


def test_decode_run_grows_by_the_kv_each_step_adds():
    """The vectorized decode run obeys the same hand increment (checked apart from
    step_time_s, which the hypothesis test above compares it with). A decode-only call
    overlaps its floor and longest walk with the streams (``decode_call_s``), which hides a
    few percent of the growth: within 5% of one token's KV per sequence plus one key of the
    walk."""
    hw = RooflineModel("h100", "llama-3.1-8b", params=IDEAL)
    contexts = [10_000, 20_000, 30_000]
    run = hw.step_times_s([(1, c) for c in contexts], 6)
    walk_s = 32 * load_fits()["h100_sxm"].decode["bf16"].split_key_s
    per_step_s = len(contexts) * 32 * 2 * 8 * 128 * 2 / 3.35e12 + walk_s
    assert np.diff(run) == pytest.approx([per_step_s] * 5, rel=0.05)


def test_models_of_one_shape_share_the_decode_table():
    a = RooflineModel("h100", "llama-3.1-8b")
    b = RooflineModel("h100", "llama-3.1-8b")
    a.step_times_s([(1, 5000)], 3)
    table_a = a.operators.attention._decode_table(a.params, 10)
    assert b.operators.attention._decode_table(b.params, 10) is table_a
    other = RooflineModel("h100", "llama-3.1-8b", params={"attn_bw_eff": 0.5})
    assert other.operators.attention._decode_table(other.params, 10) is not table_a
