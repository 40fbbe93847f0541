"""Catalog parameter counts against the counts their publishers state.

``tests/test_hw_catalog.py`` checks the counts against ``params_computed`` in the catalog, which
the same formula wrote. Here each model's count, computed by ``ModelSpec`` from the catalog's
config fields, must round to the number its model card (or release README) publishes, to the
digits published: a wrong field (intermediate size, KV heads, a tied embedding, an expert count)
moves the count by far more than that. The numbers below are typed from the cited pages, not read
from the catalog.

Conventions differ by publisher, and each row says which count the page gives: Qwen states the
non-embedding count beside the total; OpenAI's gpt-oss "active" leaves the embedding table out;
Mistral, Qwen and DeepSeek count it in active parameters; DeepSeek-V3's 671B leaves out its
14B multi-token-prediction module.
"""

from __future__ import annotations

import pytest

from hwmodels.modelspec import get_model

B = 1e9
HUB = "Hugging Face model page's safetensors parameter count: "

# (model, which count, published value in billions, digits after the point as published, source)
PUBLISHED = [
    ("llama-3.1-8b", "total", 8.03, 2, "Llama 3.1 card (meta-llama/Llama-3.1-8B)"),
    ("llama-3.1-70b", "total", 70.6, 1, "Llama 3.1 card (meta-llama/Llama-3.1-70B)"),
    ("llama-2-7b", "total", 6.74, 2, HUB + "meta-llama/Llama-2-7b-hf"),
    ("llama-2-70b", "total", 68.98, 2, HUB + "meta-llama/Llama-2-70b-hf"),
    ("mistral-7b-v0.1", "total", 7.24, 2, HUB + "mistralai/Mistral-7B-v0.1"),
    ("qwen2.5-7b", "total", 7.61, 2, "Qwen2.5-7B model card: Number of Parameters"),
    ("qwen2.5-7b", "non_embedding", 6.53, 2, "Qwen2.5-7B model card: Non-Embedding"),
    ("qwen2.5-72b", "total", 72.7, 1, "Qwen2.5-72B model card: Number of Parameters"),
    ("qwen3-8b", "total", 8.2, 1, "Qwen3-8B model card: Number of Parameters"),
    ("qwen3-8b", "non_embedding", 6.95, 2, "Qwen3-8B model card: Non-Embedding"),
    ("qwen3-32b", "total", 32.8, 1, "Qwen3-32B model card: Number of Parameters"),
    ("qwen3-32b", "non_embedding", 31.2, 1, "Qwen3-32B model card: Non-Embedding"),
    ("qwen3-30b-a3b", "total", 30.5, 1, "Qwen3-30B-A3B model card: Number of Parameters"),
    ("qwen3-30b-a3b", "active", 3.3, 1, "Qwen3-30B-A3B model card: Activated"),
    ("qwen3-30b-a3b", "non_embedding", 29.9, 1, "Qwen3-30B-A3B model card: Non-Embedding"),
    ("qwen3-235b-a22b", "total", 235, 0, "Qwen3-235B-A22B model card: Number of Parameters"),
    ("qwen3-235b-a22b", "active", 22, 0, "Qwen3-235B-A22B model card: Activated"),
    ("qwen3-235b-a22b", "non_embedding", 234, 0, "Qwen3-235B-A22B model card: Non-Embedding"),
    ("mixtral-8x7b", "total", 46.7, 1, "Mistral AI, 'Mixtral of experts': 46.7B total"),
    ("mixtral-8x7b", "active", 12.9, 1, "Mistral AI, 'Mixtral of experts': 12.9B per token"),
    ("deepseek-v3", "total", 671, 0, "DeepSeek-V3 README: 671B total (MTP module apart)"),
    ("deepseek-v3", "active", 37, 0, "DeepSeek-V3 README: 37B activated per token"),
    ("gpt-oss-120b", "total", 116.83, 2, "OpenAI gpt-oss model card: 116.83B total"),
    ("gpt-oss-120b", "active_excl_embedding", 5.13, 2, "gpt-oss model card: 5.13B active"),
    ("gpt-oss-20b", "total", 20.91, 2, "OpenAI gpt-oss model card: 20.91B total"),
    ("gpt-oss-20b", "active_excl_embedding", 3.61, 2, "OpenAI gpt-oss model card: 3.61B active"),
]
# Not checked: Qwen2.5-72B's card gives 70.0B non-embedding, 0.3% under its own total (72.7B)
# less the embedding and LM head (2 x 152064 x 8192 = 2.49B), whatever the rounding; the total is
# checked above.
# Published only as a name ("405B"): the count must be within 0.5% of it.
NAMED_ONLY = [("llama-3.1-405b", 405, "Meta Llama 3.1 model card: 405B")]


def _count(model: str, which: str) -> int:
    spec = get_model(model)
    embedding = spec.vocab_size * spec.hidden_size
    untied_head = 0 if spec.tie_embeddings else embedding
    return {
        "total": spec.total_params,
        "active": spec.active_params,
        # non-embedding: less the input embedding and an untied LM head (Qwen's convention)
        "non_embedding": spec.total_params - embedding - untied_head,
        "active_excl_embedding": spec.active_params - embedding,
    }[which]


@pytest.mark.parametrize(("model", "which", "billions", "digits", "source"), PUBLISHED,
                         ids=[f"{m}:{w}" for m, w, *_ in PUBLISHED])
def test_count_rounds_to_the_published_number(model, which, billions, digits, source):
    """Rounded or cut to the digits published (Qwen and DeepSeek cut: 7.6156B is "7.61B")."""
    count = _count(model, which)
    unit = 10.0 ** -digits * B
    assert billions * B - unit / 2 <= count < billions * B + unit, (
        f"{model} {which}: {count / B:.3f}B is not the published {billions}B ({source})")


@pytest.mark.parametrize(("model", "billions", "source"), NAMED_ONLY)
def test_count_matches_the_name(model, billions, source):
    assert _count(model, "total") == pytest.approx(billions * B, rel=0.005), source


def test_every_catalog_model_is_checked():
    from hwmodels.catalog import load_catalog

    checked = {m for m, *_ in PUBLISHED} | {m for m, *_ in NAMED_ONLY}
    assert {m["id"] for m in load_catalog("models")["models"]} <= checked
