"""FLOPs and bytes of each operator against hand-computed values (hwmodels.operators).

The hand computations use the published shapes: Llama-3.1-8B (32 layers, hidden 4096, 32 query
and 8 KV heads of 128, MLP 14336, vocab 128256), Llama-3.1-70B (80 layers, 8192, 64/8 heads,
28672), Mixtral-8x7B (8 experts of 14336, top-2) and DeepSeek-V3 (MLA latent 512 + 64 RoPE,
256 experts of 2048, top-8, 1 shared, 3 dense layers).
"""

from __future__ import annotations

import pytest

from hwmodels import RooflineModel, get_model, weight_bytes
from hwmodels.memory import kv_bytes_per_token_layer

GB = 1e9


def rows(hw: RooflineModel, seqs) -> dict:
    return {r.name: r for r in hw.breakdown(seqs)}


def test_llama8b_decode_operators():
    hw = RooflineModel("h100", "llama-3.1-8b")
    ops = rows(hw, [(1, 1023)])
    layers, h = 32, 4096
    qkv_n = (32 + 2 * 8) * 128  # 6144
    assert ops["qkv_proj"].flops == 2 * 1 * qkv_n * h * layers
    assert ops["qkv_proj"].bytes == layers * (qkv_n * h * 2 + (h + qkv_n) * 2)
    assert ops["o_proj"].flops == 2 * h * h * layers
    assert ops["gate_up_proj"].flops == 2 * 2 * 14336 * h * layers
    assert ops["down_proj"].bytes == layers * (14336 * h * 2 + (14336 + h) * 2)
    assert ops["lm_head"].flops == 2 * 128256 * h
    # decode attention: 1024 keys, K and V of 8 heads x 128 read once per layer
    kv_read = 1024 * 2 * 8 * 128 * 2
    qo = 2 * 32 * 128 * 2
    assert ops["attention_decode"].bytes == layers * (kv_read + qo)
    # QK^T + PV = 4 x heads x head_dim FLOPs per key; the 4 query heads of a KV group fill
    # 4 of the 64 rows of a tile, so the kernel computes 16x the useful FLOPs (still memory bound)
    assert ops["attention_decode"].flops == layers * 4 * 32 * 128 * 1024 * 16
    assert ops["attention_decode"].bound == "memory"
    # weight bytes streamed in the step: all linears + LM head (the embedding is a gather)
    weights = sum(
        ops[n].bytes for n in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head")
    )
    assert weights == pytest.approx(
        get_model("llama-3.1-8b").total_params * 2 - 128256 * h * 2, rel=1e-3
    )


def test_llama8b_prefill_attention_is_causal():
    hw = RooflineModel("h100", "llama-3.1-8b")
    ops = rows(hw, [(2048, 0)])
    keys = 2048 * 2049 // 2  # token i attends to i keys
    assert ops["attention_prefill"].flops == 32 * 4 * 32 * 128 * keys
    assert ops["attention_prefill"].bound == "compute"
    assert ops["gate_up_proj"].bound == "compute"
    # a prefill on a cached prefix attends to the prefix too
    cached = rows(hw, [(512, 1536)])["attention_prefill"]
    assert cached.flops == 32 * 4 * 32 * 128 * (512 * 1536 + 512 * 513 // 2)


def test_llama70b_tp2_shards_heads_and_mlp():
    hw = RooflineModel("h100", "llama-3.1-70b", tp=2)
    ops = rows(hw, [(100, 0)])
    layers, h = 80, 8192
    assert ops["qkv_proj"].flops == 2 * 100 * (32 + 2 * 4) * 128 * h * layers
    assert ops["gate_up_proj"].flops == 2 * 100 * 2 * 14336 * h * layers
    # two all-reduces per layer of 100 x 8192 bf16, ring: 2 (n-1)/n of the payload sent
    assert ops["tp_all_reduce"].bytes == 2 * layers * 100 * h * 2 * (2 * 1 / 2)
    assert ops["tp_all_reduce"].kernels == 160
    assert ops["lm_head"].flops == 2 * 1 * (128256 // 2) * h  # one row: one sequence samples


def test_mixtral_routes_tokens_to_two_experts():
    hw = RooflineModel("h100", "mixtral-8x7b", tp=2)
    one = rows(hw, [(1, 100)])
    layers, h, inter = 32, 4096, 14336 // 2
    # one token reads the weights of exactly its 2 experts
    assert one["experts_gate_up"].bytes == pytest.approx(
        layers * (2 * 2 * inter * h * 2 + 2 * (h + 2 * inter) * 2), rel=1e-9
    )
    many = rows(hw, [(4096, 0)])
    assert many["experts_gate_up"].flops == pytest.approx(2 * 4096 * 2 * 2 * inter * h * layers)
    assert many["experts_down"].flops == pytest.approx(2 * 4096 * 2 * inter * h * layers)
    # with 4096 tokens every expert is hit: all 8 experts' weights are read
    w_all = layers * 8 * 2 * inter * h * 2
    assert many["experts_gate_up"].bytes > w_all
    assert get_model("mixtral-8x7b").active_params == 12_879_925_248


def test_deepseek_v3_mla_kv_and_active_params():
    model = get_model("deepseek-v3")
    assert model.active_params == 37_552_297_472
    assert kv_bytes_per_token_layer(model, "bf16") * 61 == 70_272  # (512 + 64) x 2 B x 61
    # the latent is shared by all heads: tensor parallelism does not shard it
    assert kv_bytes_per_token_layer(model, "bf16", tp=8) == 1152
    assert kv_bytes_per_token_layer(model, "fp8", tp=8) == 576


def test_deepseek_v3_decode_takes_the_absorbed_path():
    hw = RooflineModel("h200", "deepseek-v3", tp=8, weight_dtype="fp8")
    ops = rows(hw, [(1, 4095)] * 32)
    heads = 128 // 8
    keys = 4096
    # absorbed: scores over 576 latent dims, values over 512, per head; 16 heads x 1 token fill
    # 16 of 64 tile rows
    per_seq = 2 * heads * (576 + 512) * keys * (64 / 16)
    assert ops["attention_mla_absorbed"].flops == pytest.approx(61 * 32 * per_seq)
    assert ops["attention_mla_expanded"].flops == 0
    prefill = rows(hw, [(8192, 0)])
    assert prefill["attention_mla_expanded"].flops > 0
    assert prefill["attention_mla_absorbed"].flops == 0
    # 3 dense layers + 58 MoE layers with a shared expert
    assert prefill["gate_up_proj"].kernels == 3 and prefill["experts_gate_up"].kernels == 58
    assert prefill["shared_gate_up"].flops == pytest.approx(2 * 8192 * 2 * 2048 // 8 * 7168 * 58)


def test_guide_kv_and_weight_numbers():
    mha70 = get_model(
        {
            "num_hidden_layers": 80,
            "hidden_size": 8192,
            "num_attention_heads": 64,
            "num_key_value_heads": 64,
            "head_dim": 128,
            "intermediate_size": 28672,
            "vocab_size": 128256,
        }
    )
    per_request = kv_bytes_per_token_layer(mha70, "fp16") * 80 * 8192
    assert per_request / GB == pytest.approx(21.5, abs=0.1)  # "~21 GB per 8K request"
    gqa70 = get_model("llama-3.1-70b")
    assert kv_bytes_per_token_layer(gqa70, "fp16") * 80 * 8192 == per_request / 8  # 8 KV heads
    assert weight_bytes(gqa70, "fp16") / GB == pytest.approx(141.1, abs=0.1)  # "~140 GB"
    # INT4: the quantized decoder is ~35 GB (+ group scales); embeddings and LM head stay 16-bit
    decoder_params = gqa70.total_params - 2 * 128256 * 8192
    int4 = weight_bytes(gqa70, "int4")
    assert (int4 - 2 * 128256 * 8192 * 2) / GB == pytest.approx(decoder_params * 0.5 / GB, rel=0.05)
    assert gqa70.total_params * 0.5 / GB == pytest.approx(35.3, abs=0.1)
    assert 36 < int4 / GB < 41


def test_quantized_formats_move_fewer_bytes():
    seqs = [(1, 512)]
    bf16 = rows(RooflineModel("h100", "llama-3.1-8b"), seqs)["gate_up_proj"].bytes
    fp8 = rows(RooflineModel("h100", "llama-3.1-8b", weight_dtype="fp8"), seqs)
    int4 = rows(RooflineModel("h100", "llama-3.1-8b", weight_dtype="int4"), seqs)
    assert fp8["gate_up_proj"].bytes == pytest.approx(bf16 / 2, rel=1e-3)
    assert int4["gate_up_proj"].bytes == pytest.approx(bf16 * (0.5 + 2.5 / 128) / 2, rel=1e-3)
    kv = rows(RooflineModel("h100", "llama-3.1-8b", kv_dtype="int2"), [(1, 8191)])
    kv16 = rows(RooflineModel("h100", "llama-3.1-8b"), [(1, 8191)])
    # 2-bit values + fp16 scale and zero per 32 = 0.375 B per element vs 2
    ratio = (kv["attention_decode"].bytes - 32 * 2 * 32 * 128 * 2) / (
        kv16["attention_decode"].bytes - 32 * 2 * 32 * 128 * 2
    )
    assert ratio == pytest.approx(0.375 / 2)


def test_naive_attention_writes_scores():
    flash = rows(RooflineModel("h100", "llama-3.1-8b"), [(4096, 0)])["attention_prefill"]
    naive = rows(RooflineModel("h100", "llama-3.1-8b", attention_impl="naive"), [(4096, 0)])[
        "attention_prefill"
    ]
    scores = 32 * 32 * 4096 * 4096 * 2 * 4  # heads x S x S, bf16, written and read twice
    assert naive.bytes - flash.bytes == pytest.approx(scores, rel=0.01)
    assert naive.time_s > 2 * flash.time_s


def test_sliding_window_caps_attention():
    hw = RooflineModel("h100", "mistral-7b-v0.1")
    short = rows(hw, [(1, 4095)])["attention_decode"]
    long = rows(hw, [(1, 30000)])["attention_decode"]
    assert long.bytes == pytest.approx(short.bytes, rel=1e-3)
