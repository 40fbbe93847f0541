"""Model shapes read from Hugging Face ``config.json`` fields, by hand (issue #27: the mutmut
survivors of ``hwmodels/modelspec.py``; docs/mutation/hwmodels-modelspec.md). The configs
below spell fields the way the public configs do (DeepSeek-V3's ``n_routed_experts``,
Qwen-MoE's ``shared_expert_intermediate_size``, gpt-oss's ``layer_types`` list, Qwen2's
``architectures`` list); each expected count is arithmetic on those fields."""

from __future__ import annotations

import pytest

from hwmodels.errors import CatalogError
from hwmodels.modelspec import MoESpec, get_model, model_from_mapping

BASE = {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 8,
        "vocab_size": 1000}


def test_deepseek_style_moe_fields():
    # DeepSeek-V3 config.json spelling: n_routed_experts, n_shared_experts, noaux_tc
    spec = model_from_mapping({**BASE, "n_routed_experts": 16, "num_experts_per_tok": 4,
                               "moe_intermediate_size": 64, "n_shared_experts": 2,
                               "first_k_dense_replace": 1, "topk_method": "noaux_tc"})
    assert spec.moe == MoESpec(num_experts=16, top_k=4, expert_intermediate=64,
                               num_shared_experts=2, shared_intermediate=2 * 64,
                               first_dense_layers=1, score_bias=True)


def test_qwen_moe_shared_expert_width_and_top_k_spellings():
    # Qwen1.5-MoE-A2.7B config.json: 60 experts of 1408, top 4, one shared expert 5632 wide
    qwen = model_from_mapping({**BASE, "num_experts": 60, "num_experts_per_tok": 4,
                               "moe_intermediate_size": 1408,
                               "shared_expert_intermediate_size": 5632})
    assert (qwen.moe.top_k, qwen.moe.shared_intermediate, qwen.moe.num_shared_experts) == (
        4, 5632, 0
    )
    assert qwen.moe.score_bias is False
    # a config that calls it top_k; and one that says nothing takes the classic top-2
    mixtral_like = {**BASE, "num_local_experts": 8, "intermediate_size": 512}
    assert model_from_mapping({**mixtral_like, "top_k": 3}).moe.top_k == 3
    assert model_from_mapping(mixtral_like).moe.top_k == 2


@pytest.mark.parametrize("arch", ["gpt-oss", "gpt_oss", "GptOssForCausalLM"])
def test_gpt_oss_experts_carry_biases_however_the_architecture_is_spelled(arch):
    spec = model_from_mapping({**BASE, "architecture": arch, "num_local_experts": 4,
                               "intermediate_size": 512})
    assert spec.moe.expert_bias and spec.moe.router_bias


def test_layer_types_list_counts_the_sliding_layers():
    spec = model_from_mapping({**BASE, "sliding_window": 128, "layer_types": [
        "sliding_attention", "full_attention", "sliding_attention", "sliding_attention"]})
    assert (spec.sliding_window, spec.num_sliding_layers) == (128, 3)


def test_ids_defaults_and_the_architectures_list():
    assert model_from_mapping(BASE).id == "custom-model"
    assert model_from_mapping({**BASE, "_name_or_path": "org/m"}).id == "org/m"
    assert model_from_mapping({**BASE, "id": "mine", "_name_or_path": "org/m"}).id == "mine"
    plain = model_from_mapping(BASE)
    assert plain.intermediate_size == 4 * 256 and plain.head_dim == 256 // 8
    assert plain.tie_embeddings is False and plain.max_position_embeddings is None
    tied = model_from_mapping({**BASE, "tie_word_embeddings": True,
                               "max_position_embeddings": 32768})
    assert tied.tie_embeddings is True and tied.max_position_embeddings == 32768
    assert tied.param_counts()["lm_head"] == 0
    # HF configs list the class in "architectures": Qwen2 means q/k/v biases and no o bias
    qwen2 = model_from_mapping({**BASE, "architectures": ["Qwen2ForCausalLM"]})
    assert (qwen2.qkv_bias, qwen2.o_bias) == (True, False)


def test_mla_caches_one_latent_for_all_heads_whatever_kv_heads_say():
    spec = model_from_mapping({**BASE, "num_key_value_heads": 1, "kv_lora_rank": 32,
                               "q_lora_rank": 48, "qk_nope_head_dim": 16,
                               "qk_rope_head_dim": 8, "v_head_dim": 16})
    assert spec.num_kv_heads == 8


def test_missing_fields_and_unknown_models_are_one_line():
    with pytest.raises(CatalogError) as err:
        model_from_mapping({"num_hidden_layers": 2, "num_attention_heads": 2})
    assert str(err.value) == "model custom-model: missing config field(s) hidden_size, vocab_size"
    with pytest.raises(CatalogError) as err:
        get_model("llama-9")
    assert str(err.value).startswith(
        "model.name: unknown model 'llama-9'; allowed: deepseek-v3, gpt-oss-120b, gpt-oss-20b"
    )
    with pytest.raises(CatalogError) as err:
        get_model(3.5)
    assert str(err.value) == "model.name: expected a name or a mapping, got float"
    assert get_model("Mixtral").id == "mixtral-8x7b"


def test_attention_params_by_projection():
    # Llama 3.1 8B: q 4096 x 4096, k and v 4096 x 1024, o 4096 x 4096
    assert get_model("llama-3.1-8b").attention_params() == {
        "q": 4096 * 4096, "k": 4096 * 1024, "v": 4096 * 1024, "o": 4096 * 4096}
    # Qwen3-8B adds the q and k RMSNorms (2 x 128); gpt-oss-20b biases and 64 sinks
    assert get_model("qwen3-8b").attention_params()["qk_norm"] == 2 * 128
    assert get_model("gpt-oss-20b").attention_params()["sinks"] == 64
    # DeepSeek-V3 MLA (hidden 7168, 128 heads, q_lora 1536, kv_lora 512, nope 128, rope 64, v 128)
    assert get_model("deepseek-v3").attention_params() == {
        "kv_a": 7168 * 576 + 512, "kv_b": 512 * 128 * 256, "o": 128 * 128 * 7168,
        "q_a": 7168 * 1536 + 1536, "q_b": 1536 * 128 * 192}
    # without a q LoRA: one q projection, hidden x heads x (nope + rope)
    no_q_lora = model_from_mapping({**BASE, "kv_lora_rank": 32, "qk_nope_head_dim": 16,
                                    "qk_rope_head_dim": 8, "v_head_dim": 16})
    assert no_q_lora.attention_params()["q"] == 256 * 8 * 24


def test_deepseek_v3_param_counts_by_component():
    counts = get_model("deepseek-v3").param_counts()
    assert counts["experts"] == 58 * 256 * 3 * 7168 * 2048
    assert counts["shared_experts"] == 58 * 3 * 7168 * 2048
    assert counts["router"] == 58 * (7168 * 256 + 256)
    assert counts["attention"] == 61 * (7168 * 576 + 512 + 512 * 128 * 256 + 128 * 128 * 7168
                                        + 7168 * 1536 + 1536 + 1536 * 128 * 192)


def test_with_layers_cuts_dense_layers_and_sliding_layers_in_proportion():
    ds = get_model("deepseek-v3")
    two = ds.with_layers(2)
    assert two.num_layers == 2 and two.moe.first_dense_layers == 2 and two.num_moe_layers == 0
    ten = ds.with_layers(10)
    assert ten.moe.first_dense_layers == 3 and ten.moe.num_experts == 256
    three = ds.with_layers(3)
    assert three.moe.first_dense_layers == 3 and three.num_moe_layers == 0
    oss = get_model("gpt-oss-20b").with_layers(12)  # every other layer slides
    assert (oss.num_layers, oss.num_sliding_layers) == (12, 6)
    assert oss.moe == get_model("gpt-oss-20b").moe
