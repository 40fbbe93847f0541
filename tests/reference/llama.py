"""A float64 NumPy Llama decoder: the published architecture, written for clarity, not speed.

Llama (Touvron et al. 2023; Llama 3, Grattafiori et al. 2024) as Hugging Face's
``modeling_llama`` defines it: pre-norm RMSNorm, rotary position embeddings in the rotate-half
layout (pairs ``(i, i + d/2)``), grouped-query attention (query head ``h`` reads KV head
``h // (H / KVH)``), causal softmax attention scaled by ``1/sqrt(head_dim)``, a SiLU-gated MLP
``down(silu(gate(x)) * up(x))``, a final RMSNorm and the LM head; optionally Qwen2's q/k/v
biases and Qwen3's per-head RMSNorm of queries and keys (before RoPE). Llama 3.1's long-context
RoPE scaling is written from its published formula, frequency by frequency.

Every step is an explicit loop or a plain matrix product in float64, so the decoder under test
(fused kernels, paged KV cache, bf16) is compared with the mathematics, not with itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class LayerWeights:
    """One layer, matrices ``[out, in]`` (as ``y = W @ x``)."""

    ln_attn: np.ndarray  # [D]
    wq: np.ndarray  # [H * hd, D]
    wk: np.ndarray  # [KVH * hd, D]
    wv: np.ndarray  # [KVH * hd, D]
    wo: np.ndarray  # [D, H * hd]
    ln_mlp: np.ndarray  # [D]
    w_gate: np.ndarray  # [I, D]
    w_up: np.ndarray  # [I, D]
    w_down: np.ndarray  # [D, I]
    bq: np.ndarray | None = None  # Qwen2-style q/k/v biases
    bk: np.ndarray | None = None
    bv: np.ndarray | None = None
    q_norm: np.ndarray | None = None  # Qwen3-style RMSNorm of each query/key head [hd]
    k_norm: np.ndarray | None = None


@dataclass
class LlamaWeights:
    embed: np.ndarray  # [V, D]
    layers: list[LayerWeights]
    norm: np.ndarray  # [D]
    lm_head: np.ndarray  # [V, D]
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    rope_scaling: dict | None = None


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (Zhang & Sennrich 2019)."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x) (Elfwing et al. 2018; "swish" with beta = 1)."""
    return x / (1.0 + np.exp(-x))


def rope_frequencies(head_dim: int, theta: float, scaling: dict | None) -> np.ndarray:
    """Rotation frequency of each pair ``i``: theta^(-2i/d), then Llama 3.1's scaling."""
    freqs = [theta ** (-(2 * i) / head_dim) for i in range(head_dim // 2)]
    if not scaling or scaling.get("rope_type") != "llama3":
        return np.array(freqs)
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    out = []
    for f in freqs:
        wavelength = 2 * math.pi / f
        if wavelength < original / high:  # high frequencies: unchanged
            out.append(f)
        elif wavelength > original / low:  # low frequencies: slowed down by the factor
            out.append(f / factor)
        else:  # in between: interpolate smoothly between the two
            smooth = (original / wavelength - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return np.array(out)


def rope_angles(positions: np.ndarray, head_dim: int, theta: float,
                scaling: dict | None) -> np.ndarray:
    """Angle of pair ``i`` at position ``p``: p x frequency_i, ``[T, hd / 2]``."""
    return np.outer(positions.astype(np.float64), rope_frequencies(head_dim, theta, scaling))


def rotate(x: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotate each pair (x_i, x_{i + d/2}) of every head by its angle: x ``[T, heads, hd]``,
    angles ``[T, hd / 2]``. Written as the 2x2 rotation it is."""
    half = x.shape[-1] // 2
    out = np.empty_like(x)
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    first, second = x[..., :half], x[..., half:]
    out[..., :half] = cos * first - sin * second
    out[..., half:] = sin * first + cos * second
    return out


def causal_gqa_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """q ``[T, H, hd]``, k/v ``[T, KVH, hd]`` -> ``[T, H, hd]``: token t sees tokens 0..t."""
    tokens, heads, hd = q.shape
    group = heads // k.shape[1]
    out = np.zeros_like(q)
    for h in range(heads):
        kv = h // group
        for t in range(tokens):
            scores = k[: t + 1, kv] @ q[t, h] / math.sqrt(hd)  # [t + 1]
            weights = np.exp(scores - scores.max())
            weights /= weights.sum()
            out[t, h] = weights @ v[: t + 1, kv]
    return out


def forward(w: LlamaWeights, tokens: np.ndarray) -> np.ndarray:
    """Logits ``[T, V]`` of a sequence starting at position 0 (row t predicts token t + 1)."""
    hd, heads, kv_heads = w.head_dim, w.num_heads, w.num_kv_heads
    angles = rope_angles(np.arange(len(tokens)), hd, w.rope_theta, w.rope_scaling)
    x = w.embed[tokens].astype(np.float64)  # [T, D]
    for layer in w.layers:
        h = rms_norm(x, layer.ln_attn, w.rms_norm_eps)
        q, k, v = h @ layer.wq.T, h @ layer.wk.T, h @ layer.wv.T
        if layer.bq is not None:
            q, k, v = q + layer.bq, k + layer.bk, v + layer.bv
        q, k = q.reshape(len(tokens), heads, hd), k.reshape(len(tokens), kv_heads, hd)
        if layer.q_norm is not None:
            q = rms_norm(q, layer.q_norm, w.rms_norm_eps)
            k = rms_norm(k, layer.k_norm, w.rms_norm_eps)
        q, k = rotate(q, angles), rotate(k, angles)
        v = v.reshape(len(tokens), kv_heads, hd)
        attn = causal_gqa_attention(q, k, v).reshape(len(tokens), heads * hd)
        x = x + attn @ layer.wo.T
        h = rms_norm(x, layer.ln_mlp, w.rms_norm_eps)
        x = x + (silu(h @ layer.w_gate.T) * (h @ layer.w_up.T)) @ layer.w_down.T
    return rms_norm(x, w.norm, w.rms_norm_eps) @ w.lm_head.T
