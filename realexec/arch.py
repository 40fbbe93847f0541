"""The architecture a real model is built from: Hugging Face ``config.json`` fields.

realexec builds its decoder from the same architecture the roofline uses (a catalog id or a
mapping of HF fields), so a measured step and a predicted step describe the same shapes. Only
dense Llama/Qwen-style GQA decoders are supported: an MoE or MLA model is a clear error, not a
silently different model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ArchError(ValueError):
    """An architecture realexec cannot build (one line naming the field)."""


HF_FIELDS = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
)


@dataclass(frozen=True, slots=True)
class ModelArch:
    """A dense GQA decoder's shape. ``num_layers`` may be fewer than the published model's."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rope_theta: float = 10000.0
    rope_scaling: Mapping[str, Any] | None = None
    rms_norm_eps: float = 1e-5
    attention_bias: bool = False  # Qwen2.5: biases on q/k/v
    qk_norm: bool = False  # Qwen3: RMSNorm on each head of q and k
    name: str = "custom"

    @property
    def group_size(self) -> int:
        """Query heads per KV head (GQA)."""
        return self.num_heads // self.num_kv_heads

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token adds over all layers at 2 bytes per element."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * 2

    def with_layers(self, num_layers: int) -> ModelArch:
        """The same layer shape with another depth (calibrate on fewer layers, validate faster)."""
        fields = {f: getattr(self, f) for f in self.__slots__}
        fields["num_layers"] = num_layers
        return ModelArch(**fields)

    def hf_config(self) -> dict[str, Any]:
        """The HF ``config.json`` fields hwmodels needs to predict this exact model."""
        return {
            "num_hidden_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "attention_bias": self.attention_bias,
        }


def _plain(value: Any) -> Any:
    """Catalog values may be ``{value, uncertain, note}`` mappings (shared/data/README.md)."""
    if isinstance(value, Mapping) and "value" in value:
        return value["value"]
    return value


def arch_from_hf(fields: Mapping[str, Any], *, name: str = "custom") -> ModelArch:
    """Build a ModelArch from HF ``config.json`` fields; raise ArchError on what we cannot run."""
    f = {k: _plain(v) for k, v in fields.items()}
    missing = [k for k in HF_FIELDS if k not in f and k != "head_dim"]
    if missing:
        raise ArchError(f"model: missing field {missing[0]!r}; required: {', '.join(HF_FIELDS)}")
    if f.get("moe") or f.get("num_local_experts") or f.get("num_experts"):
        raise ArchError(f"model {name!r}: MoE is not supported by realexec; allowed: dense GQA")
    if f.get("mla") or f.get("kv_lora_rank"):
        raise ArchError(f"model {name!r}: MLA is not supported by realexec; allowed: dense GQA")
    heads, kv_heads = int(f["num_attention_heads"]), int(f["num_key_value_heads"])
    if heads % kv_heads:
        raise ArchError(f"model.num_key_value_heads: {kv_heads} does not divide {heads} heads")
    head_dim = f.get("head_dim") or int(f["hidden_size"]) // heads
    arch_name = str(f.get("architecture") or f.get("architectures") or "")
    return ModelArch(
        num_layers=int(f["num_hidden_layers"]),
        hidden_size=int(f["hidden_size"]),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=int(head_dim),
        intermediate_size=int(f["intermediate_size"]),
        vocab_size=int(f["vocab_size"]),
        rope_theta=float(f.get("rope_theta") or 10000.0),
        rope_scaling=f.get("rope_scaling"),
        rms_norm_eps=float(f.get("rms_norm_eps") or 1e-5),
        attention_bias=bool(f.get("attention_bias") or False),
        qk_norm="Qwen3" in arch_name,
        name=name,
    )


def load_arch(model: str | Mapping[str, Any]) -> ModelArch:
    """A catalog id (or alias) or a mapping of HF fields, as a ModelArch."""
    if isinstance(model, Mapping):
        return arch_from_hf(model, name=str(model.get("id", model.get("name", "custom"))))
    # the catalog entries are HF fields; hwmodels owns them (imported late: tests pass mappings)
    from hwmodels.catalog import load_catalog
    from hwmodels.modelspec import MODEL_ALIASES

    key = MODEL_ALIASES.get(model.strip().lower(), model.strip().lower())
    entries = {m["id"]: m for m in load_catalog("models")["models"]}
    if key not in entries:
        raise ArchError(f"model.name: unknown model {model!r}; allowed: {', '.join(entries)}")
    return arch_from_hf(entries[key], name=key)
