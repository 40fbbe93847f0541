"""Model architectures: the shape fields of a Hugging Face ``config.json`` and what they imply.

``ModelSpec`` is built from the catalog (``models.yaml``) or from any mapping of HF config
fields, so a user can simulate a model the catalog lacks by pasting its ``config.json``.
Parameter counts are derived here, component by component, because the memory planner and the
roofline both need them split (embeddings stay 16-bit when the linears are quantized, experts
are read only when routed to, some projections are replicated under tensor parallelism).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from hwmodels.catalog import load_catalog, unwrap
from hwmodels.errors import CatalogError

MODEL_ALIASES: dict[str, str] = {
    "llama3-8b": "llama-3.1-8b",
    "llama-3-8b": "llama-3.1-8b",
    "llama3-70b": "llama-3.1-70b",
    "llama-3-70b": "llama-3.1-70b",
    "mixtral": "mixtral-8x7b",
    "deepseek-r1": "deepseek-v3",
    "mistral-7b": "mistral-7b-v0.1",
}


@dataclass(frozen=True, slots=True)
class MoESpec:
    """Mixture of experts: routed experts (top-k of ``num_experts``), shared experts, and the
    number of leading dense layers (DeepSeek-V3: 3)."""

    num_experts: int
    top_k: int
    expert_intermediate: int
    num_shared_experts: int = 0
    shared_intermediate: int = 0  # total width of the shared expert(s)
    first_dense_layers: int = 0
    expert_bias: bool = False  # gpt-oss: biases on expert projections and router
    router_bias: bool = False
    score_bias: bool = False  # DeepSeek-V3 e_score_correction_bias


@dataclass(frozen=True, slots=True)
class MLASpec:
    """Multi-head latent attention (DeepSeek-V2/V3): KV cached as one latent per token."""

    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """Elements cached per token per layer: compressed KV plus the shared RoPE key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder-only transformer's shape. ``num_sliding_layers`` of the ``num_layers`` use a
    ``sliding_window``; the rest attend to the whole context."""

    id: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False
    attention_sinks: bool = False
    sliding_window: int | None = None
    num_sliding_layers: int = 0
    max_position_embeddings: int | None = None
    mla: MLASpec | None = None
    moe: MoESpec | None = None

    # ---- layer structure -------------------------------------------------------------
    @property
    def num_moe_layers(self) -> int:
        if self.moe is None:
            return 0
        return self.num_layers - min(self.moe.first_dense_layers, self.num_layers)

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    @property
    def num_full_layers(self) -> int:
        return self.num_layers - self.num_sliding_layers

    @property
    def q_dim(self) -> int:
        """Width of all query heads (MLA: heads x (nope + rope))."""
        if self.mla:
            return self.num_heads * self.mla.qk_head_dim
        return self.num_heads * self.head_dim

    @property
    def attn_out_dim(self) -> int:
        """Width the output projection reads (MLA: heads x v_head_dim)."""
        if self.mla:
            return self.num_heads * self.mla.v_head_dim
        return self.num_heads * self.head_dim

    def kv_elems_per_token_layer(self) -> int:
        """Cache elements one token adds to one layer: 2 x kv_heads x head_dim, or the MLA
        latent (shared by all heads, hence never sharded by tensor parallelism)."""
        if self.mla:
            return self.mla.latent_dim
        return 2 * self.num_kv_heads * self.head_dim

    def with_layers(self, num_layers: int) -> ModelSpec:
        """The same model cut to ``num_layers`` (realexec may run fewer layers)."""
        sliding = round(self.num_sliding_layers * num_layers / self.num_layers)
        moe = self.moe
        if moe is not None and moe.first_dense_layers > num_layers:
            moe = replace(moe, first_dense_layers=num_layers)
        return replace(self, num_layers=num_layers, num_sliding_layers=sliding, moe=moe)

    # ---- parameter counts -------------------------------------------------------------
    def attention_params(self) -> dict[str, int]:
        """Per-layer attention parameters by projection (weights + biases + norms)."""
        h, hd = self.hidden_size, self.head_dim
        if self.mla:
            m = self.mla
            out = {
                "kv_a": h * m.latent_dim + m.kv_lora_rank,  # + kv_a_layernorm
                "kv_b": m.kv_lora_rank * self.num_heads * (m.qk_nope_head_dim + m.v_head_dim),
                "o": self.attn_out_dim * h,
            }
            if m.q_lora_rank:
                out["q_a"] = h * m.q_lora_rank + m.q_lora_rank  # + q_a_layernorm
                out["q_b"] = m.q_lora_rank * self.q_dim
            else:
                out["q"] = h * self.q_dim
            return out
        q = self.num_heads * hd
        kv = self.num_kv_heads * hd
        out = {"q": h * q, "k": h * kv, "v": h * kv, "o": q * h}
        if self.qkv_bias:
            out["q"] += q
            out["k"] += kv
            out["v"] += kv
        if self.o_bias:
            out["o"] += h
        if self.qk_norm:
            out["qk_norm"] = 2 * hd
        if self.attention_sinks:
            out["sinks"] = self.num_heads
        return out

    def expert_params(self) -> int:
        """Parameters of one routed expert (gate, up, down; plus biases where present)."""
        assert self.moe is not None
        inter, h = self.moe.expert_intermediate, self.hidden_size
        bias = (2 * inter + h) if self.moe.expert_bias else 0
        return 3 * h * inter + bias

    def router_params(self) -> int:
        assert self.moe is not None
        e = self.moe.num_experts
        return self.hidden_size * e + (e if (self.moe.router_bias or self.moe.score_bias) else 0)

    def param_counts(self) -> dict[str, int]:
        """Whole-model parameters by component (sums over layers)."""
        h, layers = self.hidden_size, self.num_layers
        counts = {
            "embedding": self.vocab_size * h,
            "lm_head": 0 if self.tie_embeddings else self.vocab_size * h,
            "attention": layers * sum(self.attention_params().values()),
            "norms": (2 * layers + 1) * h,
            "dense_mlp": self.num_dense_layers * 3 * h * self.intermediate_size,
            "experts": 0,
            "shared_experts": 0,
            "router": 0,
        }
        if self.moe:
            n = self.num_moe_layers
            counts["experts"] = n * self.moe.num_experts * self.expert_params()
            counts["shared_experts"] = n * 3 * h * self.moe.shared_intermediate
            counts["router"] = n * self.router_params()
        return counts

    @property
    def total_params(self) -> int:
        return sum(self.param_counts().values())

    @property
    def active_params(self) -> int:
        """Parameters one token touches: everything but the routed experts it skips."""
        counts = self.param_counts()
        if not self.moe:
            return sum(counts.values())
        skipped = self.num_moe_layers * (self.moe.num_experts - self.moe.top_k)
        return sum(counts.values()) - skipped * self.expert_params()


# ---- construction ----------------------------------------------------------------------
def _first(raw: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        value = raw.get(name)
        if value is not None:
            return value
    return default


def _moe_from(raw: Mapping[str, Any], arch: str) -> MoESpec | None:
    block = dict(raw.get("moe") or {})
    merged = {**raw, **block}
    experts = _first(merged, "num_experts", "num_local_experts", "n_routed_experts")
    if not experts:
        return None
    inter = _first(merged, "moe_intermediate_size", "intermediate_size")
    shared_n = int(_first(merged, "n_shared_experts", default=0))
    shared_inter = _first(merged, "shared_expert_intermediate_size", default=None)
    if shared_inter is None:
        shared_inter = shared_n * int(inter)
    is_gpt_oss = "gptoss" in arch.replace("-", "").replace("_", "")
    return MoESpec(
        num_experts=int(experts),
        top_k=int(_first(merged, "num_experts_per_tok", "top_k", default=2)),
        expert_intermediate=int(inter),
        num_shared_experts=shared_n,
        shared_intermediate=int(shared_inter),
        first_dense_layers=int(_first(merged, "first_k_dense_replace", default=0)),
        expert_bias=is_gpt_oss,
        router_bias=is_gpt_oss,
        score_bias=str(merged.get("topk_method", "")) == "noaux_tc",
    )


def _mla_from(raw: Mapping[str, Any]) -> MLASpec | None:
    block = dict(raw.get("mla") or {})
    merged = {**raw, **block}
    if not merged.get("kv_lora_rank"):
        return None
    return MLASpec(
        q_lora_rank=merged.get("q_lora_rank"),
        kv_lora_rank=int(merged["kv_lora_rank"]),
        qk_nope_head_dim=int(merged["qk_nope_head_dim"]),
        qk_rope_head_dim=int(merged["qk_rope_head_dim"]),
        v_head_dim=int(merged["v_head_dim"]),
    )


def _sliding_from(raw: Mapping[str, Any], num_layers: int) -> tuple[int | None, int]:
    window = raw.get("sliding_window")
    if not window or raw.get("use_sliding_window") is False:
        return None, 0
    types = raw.get("layer_types")
    if isinstance(types, list):
        return int(window), sum(1 for t in types if "sliding" in str(t))
    if isinstance(types, str) and "alternating" in types:
        return int(window), (num_layers + 1) // 2  # starts with a sliding layer
    return int(window), num_layers


def model_from_mapping(raw: Mapping[str, Any], model_id: str | None = None) -> ModelSpec:
    """A ``ModelSpec`` from HF ``config.json`` fields (or a ``models.yaml`` entry)."""
    raw = unwrap(dict(raw))
    mid = str(model_id or raw.get("id") or raw.get("_name_or_path") or "custom-model")
    required = ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")
    missing = [k for k in required if raw.get(k) is None]
    if missing:
        raise CatalogError(f"model {mid}: missing config field(s) {', '.join(missing)}")
    arch = str(_first(raw, "architecture", default="") or "")
    if not arch and raw.get("architectures"):
        arch = str(raw["architectures"][0])
    heads = int(raw["num_attention_heads"])
    hidden = int(raw["hidden_size"])
    layers = int(raw["num_hidden_layers"])
    window, sliding = _sliding_from(raw, layers)
    mla = _mla_from(raw)
    bias = bool(raw.get("attention_bias", False))
    qwen2 = arch.startswith("Qwen2")  # Qwen2/2.5 always carry q/k/v biases, never o
    return ModelSpec(
        id=mid,
        num_layers=layers,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=heads if mla else int(_first(raw, "num_key_value_heads", default=heads)),
        head_dim=int(_first(raw, "head_dim", default=hidden // heads)),
        intermediate_size=int(_first(raw, "intermediate_size", default=4 * hidden)),
        vocab_size=int(raw["vocab_size"]),
        tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
        qkv_bias=bias or qwen2,
        o_bias=bias and not qwen2,
        qk_norm=arch.startswith("Qwen3"),
        attention_sinks="GptOss" in arch,
        sliding_window=window,
        num_sliding_layers=sliding,
        max_position_embeddings=raw.get("max_position_embeddings"),
        mla=mla,
        moe=_moe_from(raw, arch.lower()),
    )


def _catalog_models() -> dict[str, Mapping[str, Any]]:
    return {m["id"]: m for m in load_catalog("models")["models"]}


def list_models() -> list[str]:
    """Every accepted model name: catalog ids, then aliases."""
    return sorted(_catalog_models()) + sorted(MODEL_ALIASES)


def get_model(model: str | ModelSpec | Mapping[str, Any]) -> ModelSpec:
    """A model by catalog id, alias, spec, or mapping of HF ``config.json`` fields."""
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, str):
        key = model.strip().lower()
        key = MODEL_ALIASES.get(key, key)
        catalog = _catalog_models()
        if key not in catalog:
            allowed = ", ".join(list_models())
            raise CatalogError(f"model.name: unknown model {model!r}; allowed: {allowed}")
        return model_from_mapping(catalog[key], key)
    if isinstance(model, Mapping):
        return model_from_mapping(model)
    raise CatalogError(f"model.name: expected a name or a mapping, got {type(model).__name__}")
