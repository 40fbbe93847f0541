"""Memory plans by hand (issue #27: the mutmut survivors of ``hwmodels/memory.py``;
docs/mutation/hwmodels-memory.md). Every expected byte count is worked out below from the model
cards' config fields (layers, widths, heads, vocabulary: the catalog's cited values) and the H100
datasheet's 80 GiB, written as arithmetic, never read back from the planner."""

from __future__ import annotations

import pytest

from hwmodels import DoesNotFitError, plan_memory
from hwmodels.errors import CatalogError
from hwmodels.memory import (
    _attention_bytes,
    activation_bytes,
    kv_bytes_per_token_layer,
    weight_bytes,
)
from hwmodels.modelspec import get_model
from hwmodels.precision import weight_format

EXACT = {"rel": 1e-12}

# Llama 3.1 8B (config.json): 32 layers, hidden 4096, 32 query heads and 8 KV heads of 128,
# MLP 14336, vocabulary 128256, untied embeddings. Parameters by component:
L8_EMBED = 128256 * 4096  # = 525,336,576; the LM head is the same size
L8_ATTN = 4096 * 4096 * 2 + 4096 * 1024 * 2  # q, o and k, v per layer = 41,943,040
L8_MLP = 3 * 4096 * 14336  # gate, up, down per layer = 176,160,768
L8_NORMS = (2 * 32 + 1) * 4096  # two per layer and the final one = 266,240
# 2 x 525,336,576 + 32 x (41,943,040 + 176,160,768) + 266,240 = 8,030,261,248 (the card's 8.03B)
L8_PARAMS = 2 * L8_EMBED + 32 * (L8_ATTN + L8_MLP) + L8_NORMS
H100_USABLE = 80 * 2**30 * 0.9  # 80 GiB datasheet x gpu_memory_utilization 0.9
L8_KV_TOKEN = 32 * 2 * 8 * 128 * 2  # K and V, 8 heads of 128, bf16, 32 layers = 131,072 B


def test_llama8b_weights_are_two_bytes_per_published_parameter():
    assert L8_PARAMS == 8_030_261_248
    assert weight_bytes(get_model("llama-3.1-8b")) == 2 * L8_PARAMS  # default bf16, tp 1


def test_llama8b_weights_shard_by_tp_and_replicate_a_lone_kv_head():
    model = get_model("llama-3.1-8b")
    sharded = 2 * L8_EMBED + 32 * (L8_ATTN + L8_MLP)
    # tp 8: everything but the norms splits 8 ways (each GPU holds exactly one KV head)
    assert weight_bytes(model, "bf16", tp=8) == pytest.approx(2 * (sharded / 8 + L8_NORMS), **EXACT)
    # tp 16: q, o, MLP, embeddings split 16 ways, but one KV head (1/8 of k and v) stays whole
    per_gpu = (2 * L8_EMBED + 32 * (4096 * 4096 * 2 + L8_MLP)) / 16 + 32 * 4096 * 1024 * 2 / 8
    assert weight_bytes(model, "bf16", tp=16) == pytest.approx(2 * (per_gpu + L8_NORMS), **EXACT)


def test_llama8b_pipeline_stages_split_layers_and_the_last_holds_head_and_final_norm():
    model = get_model("llama-3.1-8b")
    layer = 2 * (L8_ATTN + L8_MLP + 2 * 4096)  # bytes of one layer, its two norms included
    # pp 2: 16 layers; the LM head (plus the final norm) outweighs the embedding by 8192 B
    assert weight_bytes(model, pp=2) == pytest.approx(16 * layer + 2 * (L8_EMBED + 4096), **EXACT)
    # pp 3: ceil(32 / 3) = 11 layers on the busiest stage
    assert weight_bytes(model, pp=3) == pytest.approx(11 * layer + 2 * (L8_EMBED + 4096), **EXACT)
    # tied embeddings: no separate head, so the first stage's embedding is the larger end
    tied = get_model({"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                      "intermediate_size": 128, "vocab_size": 1000, "tie_word_embeddings": True})
    tied_layer = 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64)
    assert weight_bytes(tied, pp=2) == pytest.approx(tied_layer + 2 * 1000 * 64, **EXACT)


# DeepSeek-V3 (config_671B.json): 61 layers (3 dense, MLP 18432), hidden 7168, 128 heads; MLA
# q_lora 1536, kv_lora 512, nope 128, rope 64, v 128; 256 routed experts of 2048 and one shared;
# vocabulary 129280; router with the noaux_tc score bias.
DS_KV_A = 7168 * (512 + 64) + 512  # down-projection + kv_a_layernorm = 4,129,280
DS_Q_A = 7168 * 1536 + 1536  # down-projection + q_a_layernorm = 11,011,584
DS_SPLIT = 512 * 128 * (128 + 128) + 128 * 128 * 7168 + 1536 * 128 * 192  # kv_b + o + q_b


def test_mla_down_projections_are_replicated_and_quantized():
    model = get_model("deepseek-v3")
    # fp8 (1 byte): the two down-projections whole on every GPU, the rest split 8 ways
    per_layer = DS_KV_A + DS_Q_A + DS_SPLIT / 8
    fp8 = weight_format("fp8")
    assert _attention_bytes(model, fp8, 8) == pytest.approx(61 * per_layer, **EXACT)


def test_deepseek_v3_fp8_weights_at_tp8_and_under_dp_attention():
    model = get_model("deepseek-v3")
    attention = 61 * (DS_KV_A + DS_Q_A + DS_SPLIT / 8)  # fp8, 1 byte each
    norms = 2 * 61 * 7168 * 2  # two per layer, bf16
    dense = 3 * 3 * 7168 * 18432  # fp8
    experts = 58 * 256 * 3 * 7168 * 2048  # fp8, spread over the 8 GPUs
    shared = 58 * 3 * 7168 * 2048  # fp8
    router = 58 * (7168 * 256 + 256) * 2  # bf16, replicated
    embed_head = 2 * 129280 * 7168 * 2  # bf16
    final_norm = 7168 * 2
    tp8 = embed_head / 8 + attention + norms + dense / 8 + experts / 8 + shared / 8 + router
    assert weight_bytes(model, "fp8", tp=8) == pytest.approx(tp8 + final_norm, **EXACT)
    # DP attention: only the routed experts are spread; attention, MLPs, embeddings replicated
    whole_attention = 61 * (DS_KV_A + DS_Q_A + DS_SPLIT)
    dp = embed_head + whole_attention + norms + dense + experts / 8 + shared + router
    assert weight_bytes(model, "fp8", tp=8, dp_attention=True) == pytest.approx(
        dp + final_norm, **EXACT
    )


def test_mixtral_bf16_experts_and_router_at_tp2():
    # Mixtral 8x7B: 32 layers of 8 experts (3 x 4096 x 14336 each) and a 4096 x 8 router; bf16
    # experts split over the 2 GPUs, the router replicated.
    model = get_model("mixtral-8x7b")
    attention = 32 * (4096 * 4096 * 2 + 4096 * 1024 * 2) / 2
    experts = 32 * 8 * 3 * 4096 * 14336 / 2
    router = 32 * 4096 * 8
    embed_head = 2 * 32000 * 4096 / 2
    norms = (2 * 32 + 1) * 4096
    assert weight_bytes(model, "bf16", tp=2) == pytest.approx(
        2 * (attention + experts + router + embed_head + norms), **EXACT
    )


def test_deepseek_v3_shared_experts_in_int4():
    # The shared expert (58 MoE layers x 3 x 7168 x 2048) costs int4's 0.5 + 2.5/128 bytes per
    # weight like the routed ones; fp8 (1 byte) cannot tell a weight count from its bytes.
    model, wb = get_model("deepseek-v3"), 0.5 + 2.5 / 128
    attention = 61 * ((DS_KV_A + DS_Q_A) * wb + DS_SPLIT * wb / 8)
    linears = (3 * 3 * 7168 * 18432 + 58 * 256 * 3 * 7168 * 2048 + 58 * 3 * 7168 * 2048) * wb / 8
    bf16 = 2 * 129280 * 7168 * 2 / 8 + 2 * 61 * 7168 * 2 + 58 * (7168 * 256 + 256) * 2 + 7168 * 2
    assert weight_bytes(model, "int4", tp=8) == pytest.approx(attention + linears + bf16, **EXACT)


def test_qk_norms_and_attention_sinks_stay_16_bit_and_whole():
    # int4 (AWQ: 0.5 B + a 2.5 B scale/zero per 128) at tp 2.
    wb = 0.5 + 2.5 / 128
    # Qwen3-8B: 36 layers, hidden 4096, 32 heads / 8 KV heads of 128, q and k RMSNorms (2 x 128)
    qwen = 36 * (4096 * 4096 * 2 * wb / 2 + 4096 * 1024 * 2 * wb / 2 + 2 * 128 * 2)
    assert _attention_bytes(get_model("qwen3-8b"), weight_format("int4"), 2) == pytest.approx(
        qwen, **EXACT
    )
    # gpt-oss-20b: 24 layers, hidden 2880, 64 heads / 8 KV heads of 64, biases on q/k/v/o, one
    # sink logit per head (64, bf16, replicated)
    q, kv = 2880 * 4096 + 4096, 2880 * 512 + 512
    o = 4096 * 2880 + 2880
    oss = 24 * ((q + o) * wb / 2 + 2 * kv * wb / 2 + 64 * 2)
    assert _attention_bytes(get_model("gpt-oss-20b"), weight_format("int4"), 2) == pytest.approx(
        oss, **EXACT
    )


def test_kv_bytes_per_token_and_layer():
    model = get_model("llama-3.1-8b")
    assert kv_bytes_per_token_layer(model) == 2 * 8 * 128 * 2  # default bf16
    assert kv_bytes_per_token_layer(model, "bf16", tp=8) == 2 * 1 * 128 * 2  # one head per GPU


# Activations of one forward pass over t tokens, 16-bit: attention holds the input and output
# hidden states (2h), q/k/v and the attention output; the MLP the hidden states (2h) and gate,
# up and the product (3 x width); a MoE layer the hidden states plus, per routed copy, its own
# hidden states in and out (2h) and the expert's three intermediates. Logits: fp32 values and
# probabilities (2 x 4 B) per vocabulary entry for min(sequences, tokens) sampled rows.
def test_llama8b_activation_peak_is_the_mlp_plus_the_logits():
    model, t, tp = get_model("llama-3.1-8b"), 8192, 2
    attn = t * (2 * 4096 + (4096 + 2 * 8 * 128) / tp + 4096 / tp)
    mlp = t * (2 * 4096 + 3 * 14336 / tp)
    assert mlp > attn
    logits = 256 * 128256 * 4 * 2  # default max_num_seqs 256
    assert activation_bytes(model, tp, t) == pytest.approx(mlp * 2 + logits, **EXACT)
    # a 100-token pass: still MLP-bound, and only 100 rows of logits (fewer tokens than seqs)
    assert activation_bytes(model, 1, 100, 256) == pytest.approx(
        100 * (2 * 4096 + 3 * 14336) * 2 + 100 * 128256 * 8, **EXACT
    )
    # naive attention adds scores and probabilities: heads/tp x t x t x 2 B, twice
    naive = activation_bytes(model, tp, 1024, 256, naive_attention=True)
    plain = (1024 * (2 * 4096 + 3 * 14336 / tp)) * 2 + 256 * 128256 * 8
    assert naive == pytest.approx(plain + 32 / tp * 1024 * 1024 * 2 * 2, **EXACT)


def test_attention_bound_activation_peak():
    # A wide-attention toy (no MLP wider than attention): hidden 1024, 16 heads of 128
    # (q 2048), 16 KV heads, MLP 256, vocabulary 1000.
    model = get_model({"num_hidden_layers": 2, "hidden_size": 1024, "num_attention_heads": 16,
                       "head_dim": 128, "intermediate_size": 256, "vocab_size": 1000})
    t, tp = 64, 2
    attn = t * (2 * 1024 + (2048 + 2 * 16 * 128) / tp + 2048 / tp)
    assert attn > t * (2 * 1024 + 3 * 256 / tp)
    assert activation_bytes(model, tp, t, 8) == pytest.approx(attn * 2 + 8 * 1000 * 8, **EXACT)


def test_moe_activation_peak_counts_each_routed_copy():
    # Mixtral 8x7B: top-2 of 8 experts of 14336, no dense layers, vocabulary 32000.
    model, t, tp = get_model("mixtral-8x7b"), 4096, 2
    moe = t * 2 * 4096 + 2 * t * (2 * 4096 + 3 * 14336 / tp)
    assert activation_bytes(model, tp, t, 64) == pytest.approx(moe * 2 + 64 * 32000 * 8, **EXACT)
    # A MoE model without dense layers ignores its (here huge) dense MLP width.
    toy = get_model({"num_hidden_layers": 2, "hidden_size": 1024, "num_attention_heads": 8,
                     "intermediate_size": 65536, "vocab_size": 1000, "num_experts": 4,
                     "num_experts_per_tok": 1, "moe_intermediate_size": 256})
    toy_moe = 32 * 2 * 1024 + 32 * (2 * 1024 + 3 * 256)
    toy_attn = 32 * (2 * 1024 + 3 * 1024 + 1024)
    assert activation_bytes(toy, 1, 32, 4) == pytest.approx(
        max(toy_moe, toy_attn) * 2 + 4 * 1000 * 8, **EXACT
    )


def _l8_plan_by_hand(acts_tokens: int = 8192, block: int = 16) -> tuple[float, int]:
    weights = 2 * L8_PARAMS
    acts = acts_tokens * (2 * 4096 + 3 * 14336) * 2 + min(256, acts_tokens) * 128256 * 8
    pool = H100_USABLE - weights - acts - 1e9  # 1 GB runtime reserve
    blocks = int(pool // L8_KV_TOKEN) // block
    return acts, blocks


def test_llama8b_on_h100_default_plan_exactly():
    plan = plan_memory("h100", "llama-3.1-8b")
    acts, blocks = _l8_plan_by_hand()
    assert plan.gpu_memory_bytes == 80 * 2**30
    assert plan.usable_bytes == H100_USABLE
    assert plan.weights_bytes == 2 * L8_PARAMS
    assert plan.activation_bytes == pytest.approx(acts, **EXACT)
    assert plan.kv_bytes_per_token == L8_KV_TOKEN
    assert plan.kv_pool_blocks == blocks and isinstance(plan.kv_pool_blocks, int)
    assert plan.kv_pool_tokens == blocks * 16
    assert plan.kv_pool_bytes == blocks * 16 * L8_KV_TOKEN
    assert plan.sliding_window is None and plan.sliding_fraction == 0.0
    # 1000 tokens take 63 blocks = 1008 tokens of KV
    assert plan.kv_bytes_for_context(1000) == 1008 * L8_KV_TOKEN
    assert plan.max_concurrent(1000) == blocks // 63


def test_one_token_batches_and_one_token_blocks_are_allowed():
    plan = plan_memory("h100", "llama-3.1-8b", max_num_batched_tokens=1, block_size=1)
    acts, blocks = _l8_plan_by_hand(acts_tokens=1, block=1)
    assert plan.activation_bytes == pytest.approx(acts, **EXACT)
    assert plan.kv_pool_blocks == blocks
    assert plan_memory("h100", "llama-3.1-8b", gpu_memory_utilization=1.0).usable_bytes == (
        80 * 2**30
    )


def test_bad_sizes_and_utilization_are_refused_with_their_field():
    with pytest.raises(ValueError) as err:
        plan_memory("h100", "llama-3.1-8b", block_size=0)
    assert str(err.value) == "block_size and max_num_batched_tokens: must be >= 1"
    with pytest.raises(ValueError, match="block_size and max_num_batched_tokens"):
        plan_memory("h100", "llama-3.1-8b", max_num_batched_tokens=0)
    with pytest.raises(ValueError, match="gpu_memory_utilization: must be in"):
        plan_memory("h100", "llama-3.1-8b", gpu_memory_utilization=0.0)
    with pytest.raises(CatalogError, match="hardware.dp_attention"):
        plan_memory("h100", "mixtral-8x7b", tp=2, ep=1, dp_attention=True)


def test_naive_attention_plan_holds_the_score_matrices():
    plan = plan_memory("h100", "llama-3.1-8b", max_num_batched_tokens=2048, attention_impl="naive")
    plain = 2048 * (2 * 4096 + 3 * 14336) * 2 + 256 * 128256 * 8
    assert plan.activation_bytes == pytest.approx(plain + 32 * 2048 * 2048 * 2 * 2, **EXACT)


def test_a_pool_of_exactly_one_block_fits_and_one_byte_less_does_not():
    acts, _ = _l8_plan_by_hand()
    spare = H100_USABLE - 2 * L8_PARAMS - acts - 16 * L8_KV_TOKEN  # leaves exactly one block
    plan = plan_memory("h100", "llama-3.1-8b", runtime_bytes=spare)
    assert plan.kv_pool_blocks == 1
    with pytest.raises(DoesNotFitError) as err:
        plan_memory("h100", "llama-3.1-8b", runtime_bytes=spare + 1)
    message = str(err.value)
    assert f"+ {acts / 1e9:.1f} GB of activations (max_num_batched_tokens=8192) + " in message
    assert f"+ {(spare + 1) / 1e9:.1f} GB runtime, leaving no room for one KV block; " in message


def test_the_refusals_name_the_weights_the_stages_and_the_draft():
    with pytest.raises(DoesNotFitError) as err:
        plan_memory("h100", "llama-3.1-70b")
    assert str(err.value) == (
        "llama-3.1-70b in bf16 needs 141.1 GB of weights per GPU at tp=1; h100 has 77.3 GB "
        "usable (80 GiB = 85.9 GB x gpu_memory_utilization 0.9)"
    )
    # Llama 3.1 405B over 2 stages: ~405.85e9 x 2 B / 2 = ~406 GB per GPU
    with pytest.raises(DoesNotFitError, match=r"per GPU at tp=1, pp=2; h100 has"):
        plan_memory("h100", "llama-3.1-405b", pp=2)
    with pytest.raises(DoesNotFitError) as err:
        plan_memory("h100", "llama-3.1-70b", tp=4, draft="llama-3.1-8b",
                    max_num_batched_tokens=700_000)
    # runtime 1 GB + the 8B draft's bf16 weights at tp 4
    draft = 2 * ((2 * L8_EMBED + 32 * (L8_ATTN + L8_MLP)) / 4 + L8_NORMS)
    assert (f"+ {(1e9 + draft) / 1e9:.1f} GB runtime and draft, leaving no room for one KV "
            "block") in str(err.value)


def test_weights_that_exactly_fill_the_budget_are_not_refused_for_their_weights():
    # A GPU of exactly Llama 8B's 16,060,522,496 weight bytes at utilization 1: the weights fit;
    # what does not is the activations and a KV block on top of them.
    exact = {"memory_gb": 2 * L8_PARAMS / 2**30, "memory_bw_gbps": 1000,
             "tflops_dense": {"bf16": 100}, "pcie": {"bw_gbps_bidirectional": 64}}
    with pytest.raises(DoesNotFitError, match="leaving no room for one KV block"):
        plan_memory(exact, "llama-3.1-8b", gpu_memory_utilization=1.0)


def test_a_draft_model_adds_its_weights_and_its_kv_at_the_target_tp():
    plan = plan_memory("h100", "llama-3.1-70b", tp=4, draft="llama-3.1-8b")
    # 70B: 80 layers x 2 of 8 KV heads per GPU; 8B draft: 32 layers x 2 of 8; 128 x 2 B each
    kv_token = 80 * 2 * 2 * 128 * 2 + 32 * 2 * 2 * 128 * 2
    assert plan.kv_bytes_per_token == kv_token
    draft = 2 * ((2 * L8_EMBED + 32 * (L8_ATTN + L8_MLP)) / 4 + L8_NORMS)
    assert plan.draft_bytes == pytest.approx(draft, **EXACT)
    pool = plan.usable_bytes - plan.weights_bytes - plan.activation_bytes - 1e9 - draft
    assert plan.kv_pool_blocks == int(pool // kv_token) // 16


def test_dp_attention_keeps_every_kv_head_and_splits_the_batch():
    # Mixtral at tp = ep = 4 with DP attention: each GPU caches all 8 KV heads of its own
    # sequences (32 x 2 x 8 x 128 x 2 B) and runs attention over 8190 // 4 = 2047 tokens.
    plan = plan_memory("h100", "mixtral-8x7b", tp=4, ep=4, dp_attention=True,
                       max_num_batched_tokens=8190)
    assert plan.kv_bytes_per_token == 32 * 2 * 8 * 128 * 2
    t = 2047
    moe = t * 2 * 4096 + 2 * t * (2 * 4096 + 3 * 14336)
    assert plan.activation_bytes == pytest.approx(moe * 2 + 256 * 32000 * 8, **EXACT)


def test_sliding_layers_cap_their_kv_at_the_window():
    # gpt-oss-20b: 24 layers, 8 KV heads of 64, every other layer slides over 128 tokens.
    plan = plan_memory("h100", "gpt-oss-20b")
    per_token = 24 * 2 * 8 * 64 * 2  # 49,152 B
    assert plan.kv_bytes_per_token == per_token
    assert plan.sliding_window == 128 and plan.sliding_fraction == 0.5
    # 1000 tokens = 63 blocks (1008 tokens): full layers hold all 1008, sliding ones the window
    # plus one block (144)
    assert plan.kv_bytes_for_context(1000) == pytest.approx(
        1008 * per_token / 2 + 144 * per_token / 2, **EXACT
    )
    # 100 tokens (7 blocks, 112 tokens) are inside the window
    assert plan.kv_bytes_for_context(100) == pytest.approx(112 * per_token, **EXACT)
