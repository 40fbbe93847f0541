"""Memory planner: what fits, KV pool size, clear refusals (hwmodels.memory)."""

from __future__ import annotations

import pytest

from hwmodels import DoesNotFitError, MemoryPlan, plan_memory

GB = 1e9


def test_llama70b_bf16_does_not_fit_one_h100():
    with pytest.raises(DoesNotFitError) as err:
        plan_memory("h100", "llama-3.1-70b")
    msg = str(err.value)
    assert "\n" not in msg
    assert "llama-3.1-70b in bf16 needs 141.1 GB of weights per GPU at tp=1" in msg
    assert "h100 has 77.3 GB usable" in msg and "gpu_memory_utilization 0.9" in msg
    assert isinstance(err.value, ValueError)


def test_llama70b_fits_at_tp2():
    plan = plan_memory("h100", "llama-3.1-70b", tp=2)
    assert isinstance(plan, MemoryPlan)
    assert plan.weights_bytes / GB == pytest.approx(70.6, abs=0.1)
    assert plan.kv_bytes_per_token == 80 * 2 * 4 * 128 * 2  # 4 of 8 KV heads per GPU
    assert plan.kv_pool_blocks > 100
    assert plan.kv_pool_tokens == plan.kv_pool_blocks * 16
    used = plan.weights_bytes + plan.activation_bytes + plan.runtime_bytes + plan.kv_pool_bytes
    assert used <= plan.usable_bytes


def test_kv_precision_grows_concurrency():
    """Max concurrent 8K requests: FP8 KV doubles it, KIVI-style INT4 (0.625 B/elem) ~3.2x."""
    counts = {
        kv: plan_memory("h100", "llama-3.1-70b", tp=4, kv_dtype=kv).max_concurrent(8192)
        for kv in ("bf16", "fp8", "int4", "int2")
    }
    assert counts["bf16"] >= 40
    assert counts["fp8"] == pytest.approx(2 * counts["bf16"], abs=2)
    assert counts["int4"] == pytest.approx(2 / 0.625 * counts["bf16"], abs=3)
    assert counts["int2"] > counts["int4"]


def test_weight_precision_frees_kv_memory():
    bf16 = plan_memory("h100", "llama-3.1-8b")
    fp8 = plan_memory("h100", "llama-3.1-8b", weight_dtype="fp8")
    int4 = plan_memory("h100", "llama-3.1-8b", weight_dtype="int4")
    assert bf16.kv_pool_bytes < fp8.kv_pool_bytes < int4.kv_pool_bytes
    assert bf16.weights_bytes / GB == pytest.approx(16.06, abs=0.01)


def test_planner_respects_utilization_and_block_size():
    a = plan_memory("h100", "llama-3.1-8b", gpu_memory_utilization=0.5, block_size=32)
    b = plan_memory("h100", "llama-3.1-8b", gpu_memory_utilization=0.9, block_size=32)
    assert a.kv_pool_blocks < b.kv_pool_blocks and a.block_size == 32
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        plan_memory("h100", "llama-3.1-8b", gpu_memory_utilization=1.5)


def test_activations_can_exhaust_memory():
    with pytest.raises(DoesNotFitError, match="activations") as err:
        plan_memory("h100", "llama-3.1-70b", tp=2, max_num_batched_tokens=400_000)
    assert "\n" not in str(err.value)


def test_draft_model_takes_memory_and_kv():
    base = plan_memory("h100", "llama-3.1-70b", tp=4)
    spec = plan_memory("h100", "llama-3.1-70b", tp=4, draft="llama-3.1-8b")
    assert spec.draft_bytes == pytest.approx(16.06e9 / 4, rel=0.02)
    assert spec.kv_bytes_per_token > base.kv_bytes_per_token
    assert spec.kv_pool_blocks < base.kv_pool_blocks


def test_mla_and_sliding_window_footprints():
    ds = plan_memory("h200", "deepseek-v3", tp=8, weight_dtype="fp8")
    assert ds.kv_bytes_per_token == 61 * 576 * 2  # latent replicated on every GPU
    mistral = plan_memory("h100", "mistral-7b-v0.1")
    # every layer slides over 4096 tokens: a 32K sequence holds ~4K tokens of KV
    assert mistral.kv_bytes_for_context(32768) <= mistral.kv_bytes_for_context(4096 + 16)
    oss = plan_memory("h100", "gpt-oss-20b")
    assert oss.max_concurrent(8192) > oss.kv_pool_tokens // 8192  # half the layers slide


def test_pipeline_parallel_splits_layers():
    pp1 = plan_memory("h100", "llama-3.1-70b", tp=4)
    pp2 = plan_memory("h100", "llama-3.1-70b", tp=2, pp=2)
    assert pp2.kv_bytes_per_token == pp1.kv_bytes_per_token  # 40 layers x 4 heads = 80 x 2
    assert pp2.weights_bytes == pytest.approx(pp1.weights_bytes, rel=0.02)


def test_parallelism_errors_are_one_line():
    with pytest.raises(ValueError, match="hardware.tp: 3 does not divide") as err:
        plan_memory("h100", "llama-3.1-8b", tp=3)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="hardware.ep"):
        plan_memory("h100", "llama-3.1-8b", tp=2, ep=2)


def test_dp_attention_memory_plan():
    tp = plan_memory("h200", "deepseek-v3", tp=8, weight_dtype="fp8")
    dp = plan_memory("h200", "deepseek-v3", tp=8, ep=8, weight_dtype="fp8", dp_attention=True)
    # experts still spread over 8 GPUs; attention, dense layers, embeddings replicated
    assert dp.weights_bytes > tp.weights_bytes
    # each GPU holds whole sequences: the replica's pool is the sum over its 8 GPUs
    assert dp.kv_pool_blocks > 4 * tp.kv_pool_blocks
    assert dp.kv_bytes_per_token == tp.kv_bytes_per_token  # MLA latent is never sharded
