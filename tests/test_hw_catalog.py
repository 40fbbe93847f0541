"""Catalog loading, names, what-if GPUs and model shapes (hwmodels.specs, hwmodels.modelspec)."""

from __future__ import annotations

import pytest

from hwmodels import CatalogError, get_gpu, get_model, list_gpus, list_models
from hwmodels.catalog import load_catalog, unwrap
from hwmodels.specs import GIB


def test_unwrap_accepts_uncertain_form():
    raw = {"a": {"value": 3, "uncertain": True, "note": "x"}, "b": [{"value": 1}], "c": 2}
    assert unwrap(raw) == {"a": 3, "b": [1], "c": 2}


def test_every_catalog_gpu_loads_with_positive_peaks():
    ids = [g["id"] for g in load_catalog("gpus")["gpus"]]
    assert len(ids) == 15
    for gid in ids:
        gpu = get_gpu(gid)
        assert gpu.memory_bytes > 30 * GIB and gpu.hbm_bw_bytes_s > 5e11
        assert gpu.peak("bf16") > 1e14
        assert gpu.nvlink_bw_bytes_s or gpu.pcie_bw_bytes_s


def test_aliases_and_units():
    h100 = get_gpu("h100")
    assert h100.id == "h100-sxm5-80gb" and get_gpu("H100-SXM5-80GB") == h100
    assert h100.hbm_bw_bytes_s == 3350e9
    assert h100.peak("bf16") == 989.5e12 and h100.peak("fp8") == 1979e12
    assert h100.peak("fp4") is None
    assert h100.nvlink_bw_bytes_s == 450e9  # per direction, half the 900 GB/s headline
    assert h100.pcie_bw_bytes_s == 64e9
    assert h100.memory_bytes == 80 * GIB
    assert get_gpu("b200").peak("fp4") == 9000e12


def test_interconnect_choice():
    assert get_gpu("h100-pcie").link_bw_bytes_s(2) == 300e9  # NVLink bridge joins a pair
    assert get_gpu("h100-pcie").link_bw_bytes_s(4) == 64e9  # beyond the pair: PCIe
    assert get_gpu("mi300x").link_bw_bytes_s(2) == 64e9  # one xGMI link per peer
    assert get_gpu("mi300x").link_bw_bytes_s(8) == 448e9
    assert get_gpu("l40s").link_bw_bytes_s(2) == 32e9  # no NVLink


def test_unknown_gpu_lists_allowed_names():
    with pytest.raises(CatalogError) as err:
        get_gpu("h1000")
    msg = str(err.value)
    assert "\n" not in msg and "'h1000'" in msg and "h100" in msg and "b200" in msg
    assert "h100" in list_gpus() and "a100" in list_gpus()


def test_what_if_gpu_from_base():
    fast = get_gpu({"base": "h100", "memory_bw_gbps": 6700})
    assert fast.hbm_bw_bytes_s == 6700e9 and fast.peak("bf16") == get_gpu("h100").peak("bf16")
    assert fast.base_id == "h100-sxm5-80gb" and fast.id != fast.base_id
    more = get_gpu({"base": "h100", "tflops_dense": {"bf16": 2000}})
    assert more.peak("bf16") == 2000e12 and more.peak("fp8") == 1979e12
    custom = get_gpu(
        {
            "id": "toy",
            "memory_gb": 24,
            "memory_bw_gbps": 1000,
            "tflops_dense": {"bf16": 100},
            "pcie": {"bw_gbps_bidirectional": 64},
        }
    )
    assert custom.memory_bytes == 24 * GIB and custom.peak("fp8") is None
    with pytest.raises(CatalogError, match="memory_bw_gbps"):
        get_gpu({"id": "bad", "memory_gb": 24, "tflops_dense": {"bf16": 1}})


@pytest.mark.parametrize("entry", load_catalog("models")["models"], ids=lambda m: m["id"])
def test_param_counts_match_catalog(entry):
    """Component-wise counts reproduce the catalog's exact totals and active counts."""
    model = get_model(entry["id"])
    assert model.total_params == entry["params_computed"]["total"]
    assert model.active_params == entry["params_computed"]["active_per_token"]
    per_token = 2 * model.num_layers * model.kv_elems_per_token_layer()
    assert per_token == entry["kv_cache_bytes_per_token_bf16"]


def test_model_from_hf_config_fields():
    mixtral_hf = {  # Mixtral's config.json names
        "architectures": ["MixtralForCausalLM"],
        "num_hidden_layers": 32,
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 32000,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
    }
    model = get_model(mixtral_hf)
    assert model.moe.num_experts == 8 and model.moe.expert_intermediate == 14336
    assert model.head_dim == 128
    assert model.total_params == get_model("mixtral-8x7b").total_params


def test_sliding_window_layers():
    assert get_model("mistral-7b-v0.1").num_sliding_layers == 32
    oss = get_model("gpt-oss-20b")
    assert oss.sliding_window == 128 and oss.num_sliding_layers == 12
    qwen = get_model(
        {
            "num_hidden_layers": 4,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "vocab_size": 10,
            "sliding_window": 4096,
            "use_sliding_window": False,
        }
    )
    assert qwen.num_sliding_layers == 0 and qwen.sliding_window is None


def test_unknown_model_and_missing_fields():
    with pytest.raises(CatalogError, match="llama-3.1-8b"):
        get_model("llama-9")
    with pytest.raises(CatalogError, match="hidden_size"):
        get_model({"num_hidden_layers": 2})
    assert "deepseek-v3" in list_models()


def test_with_layers_keeps_shape():
    cut = get_model("deepseek-v3").with_layers(2)
    assert cut.num_layers == 2 and cut.num_moe_layers == 0 and cut.num_dense_layers == 2
    oss = get_model("gpt-oss-120b").with_layers(4)
    assert oss.num_sliding_layers == 2
