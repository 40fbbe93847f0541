"""realexec's decoder against an independent float64 NumPy Llama (``tests/reference/llama.py``).

The decoder's own tests compare it with itself (another attention backend, TP against TP=1);
here it is compared with the published mathematics: RMSNorm, RoPE (Llama 3.1 scaling) at every
position, GQA, the SiLU-gated MLP and the LM head, on CPU, in float32 and bfloat16, through a
prefill and then decode steps that read the paged KV cache.

Tolerances (logits are O(1): the final RMSNorm makes h unit-RMS and the LM head is scaled by
1/sqrt(D), so their RMS is about 1):
- float32: max |error| <= 2e-5. Measured 1.4e-6 to 2.0e-6 (the three architectures below,
  2026-12-07, this machine's CPU, torch 2.13); float32's unit roundoff is 6e-8
  and a logit goes through ~30 rounded reductions of length <= 96, so ~1e-6 is expected and
  the bound leaves 10x room. A GELU in place of SiLU moves logits by ~0.5.
- bfloat16: relative L2 error <= 2e-2 and max |error| <= 0.1. bf16 stores 8 significand bits
  (unit roundoff 2^-9 = 0.002); each layer rounds ~8 activations, and independent roundings add
  as a random walk: sqrt(2 layers x 8) x 0.002 ~ 0.008. Measured 0.0066-0.0069 relative, max
  0.026-0.043. A GELU in place of SiLU gives 0.11 relative, 5x the bound.
The RMSNorm weights are drawn at random (the decoder starts them at 1), so a norm that ignores
its weight (an error of ~2.4 here) or two swapped norms are caught too.
"""

import numpy as np
import pytest
import torch

from realexec.arch import arch_from_hf
from realexec.attention import build_metadata, select_backend
from realexec.kvcache import PagedKVPool
from realexec.model import Decoder, apply_rope, rope_cache
from tests.reference import llama as ref

LLAMA3 = {  # a small Llama 3.1: GQA 8 query heads on 2 KV heads, its long-context RoPE
    "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 8,
    "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 96, "vocab_size": 101,
    "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
    # wavelengths 6.3 (kept), 32.5 (ramp) and >= 168 (slowed 8x) against 64/4 and 64/1
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
}
QWEN2 = {**LLAMA3, "rope_scaling": None, "rope_theta": 10000.0, "attention_bias": True,
         "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 16}
QWEN3 = {**LLAMA3, "rope_scaling": None, "architectures": "Qwen3ForCausalLM",
         "rms_norm_eps": 1e-6}
ARCHS = {"llama3": LLAMA3, "qwen2_bias": QWEN2, "qwen3_qk_norm": QWEN3}
BLOCK = 4
FP32_ATOL = 2e-5
BF16_REL_L2, BF16_ATOL = 2e-2, 0.1


def _np(t: torch.Tensor) -> np.ndarray:
    return t.float().double().numpy()  # exact for bf16 and fp32


def randomize_norms(model: Decoder, seed: int) -> Decoder:
    """The decoder starts with every RMSNorm weight 1, under which a norm that ignored its
    weight, or two swapped norms, would go unseen: draw each from 1 + 0.3 N(0, 1) instead
    (a new tensor each, so q_norm and k_norm no longer share one)."""
    gen = torch.Generator().manual_seed(seed)

    def draw(like: torch.Tensor) -> torch.Tensor:
        return (1 + 0.3 * torch.randn(like.shape, generator=gen)).to(like.dtype)

    for layer in model.layers:
        layer.ln_attn, layer.ln_mlp = draw(layer.ln_attn), draw(layer.ln_mlp)
        if layer.q_norm is not None:
            layer.q_norm, layer.k_norm = draw(layer.q_norm), draw(layer.k_norm)
    model.norm = draw(model.norm)
    return model


def reference_weights(model: Decoder) -> ref.LlamaWeights:
    """The decoder's weights, unfused (q/k/v, gate/up split back), as float64 arrays."""
    a = model.arch
    q_rows, kv_rows = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
    layers = []
    for layer in model.layers:
        wq, wk, wv = layer.w_qkv.split([q_rows, kv_rows, kv_rows])
        gate, up = layer.w_gate_up.chunk(2)
        biases = (layer.b_qkv.split([q_rows, kv_rows, kv_rows]) if layer.b_qkv is not None
                  else (None, None, None))
        layers.append(ref.LayerWeights(
            ln_attn=_np(layer.ln_attn), wq=_np(wq), wk=_np(wk), wv=_np(wv), wo=_np(layer.w_o),
            ln_mlp=_np(layer.ln_mlp), w_gate=_np(gate), w_up=_np(up), w_down=_np(layer.w_down),
            bq=None if biases[0] is None else _np(biases[0]),
            bk=None if biases[1] is None else _np(biases[1]),
            bv=None if biases[2] is None else _np(biases[2]),
            q_norm=None if layer.q_norm is None else _np(layer.q_norm),
            k_norm=None if layer.k_norm is None else _np(layer.k_norm)))
    return ref.LlamaWeights(
        embed=_np(model.embed), layers=layers, norm=_np(model.norm), lm_head=_np(model.lm_head),
        num_heads=a.num_heads, num_kv_heads=a.num_kv_heads, head_dim=a.head_dim,
        rope_theta=a.rope_theta, rms_norm_eps=a.rms_norm_eps,
        rope_scaling=dict(a.rope_scaling) if a.rope_scaling else None)


def prefill_then_decode(model: Decoder, tokens: torch.Tensor, prefill: int) -> np.ndarray:
    """Logits of every position: one prefill step of ``prefill`` tokens, then one decode step
    per token reading the paged cache (blocks in reverse order, so slots != positions)."""
    num_blocks = -(-len(tokens) // BLOCK)
    pool = PagedKVPool(num_layers=model.arch.num_layers, num_blocks=num_blocks + 1,
                       block_size=BLOCK, num_kv_heads=model.kv_heads,
                       head_dim=model.arch.head_dim, dtype=model.dtype, device="cpu")
    table = list(range(num_blocks))[::-1]
    _, attention = select_backend("torch", torch.device("cpu"), BLOCK)
    logits, start = [], 0
    for n in [prefill] + [1] * (len(tokens) - prefill):
        meta = build_metadata([n], [start], [table], block_size=BLOCK,
                              scratch_block=pool.scratch_block, device="cpu")
        logits.append(model.forward(tokens[start:start + n], torch.arange(start, start + n),
                                    meta, pool, attention, torch.arange(n)))
        start += n
    return torch.cat(logits).double().numpy()


# ---- the reference itself, on hand-computed values --------------------------------------------


def test_reference_building_blocks_on_hand_values():
    assert ref.silu(np.array([1.0]))[0] == pytest.approx(1 / (1 + np.exp(-1)), rel=1e-15)
    assert ref.silu(np.array([0.0]))[0] == 0.0
    # [3, 4]: mean square 12.5
    np.testing.assert_allclose(ref.rms_norm(np.array([3.0, 4.0]), np.ones(2), 0.0),
                               np.array([3, 4]) / np.sqrt(12.5), rtol=1e-15)
    # a quarter turn of the pair (x_0, x_2) of a 4-dim head: (1, 0) -> (0, 1)
    x = np.array([[[1.0, 0.0, 0.0, 0.0]]])
    np.testing.assert_allclose(ref.rotate(x, np.array([[np.pi / 2, 0.0]])),
                               [[[0.0, 0.0, 1.0, 0.0]]], atol=1e-15)
    # theta^(-2i/d) for d = 4, theta = 100: 1, 1/10
    np.testing.assert_allclose(ref.rope_frequencies(4, 100.0, None), [1.0, 0.1], rtol=1e-15)
    # one query attending to two equal keys averages their values
    q = np.zeros((2, 1, 2))
    k = np.zeros((2, 1, 2))
    v = np.array([[[1.0, 3.0]], [[3.0, 5.0]]])
    np.testing.assert_allclose(ref.causal_gqa_attention(q, k, v)[1, 0], [2.0, 4.0])
    np.testing.assert_allclose(ref.causal_gqa_attention(q, k, v)[0, 0], [1.0, 3.0])


def test_llama3_frequencies_on_the_published_bands():
    """Llama 3.1 scaling, by hand for LLAMA3's 8 frequencies 500000^(-i/8)."""
    got = ref.rope_frequencies(16, 500000.0, LLAMA3["rope_scaling"])
    base = 500000.0 ** (-np.arange(8) / 8)
    assert got[0] == base[0]  # wavelength 2 pi < 64/4: kept
    smooth = (64 / (2 * np.pi / base[1]) - 1) / (4 - 1)  # wavelength 32.5: on the ramp
    assert got[1] == pytest.approx((1 - smooth) * base[1] / 8 + smooth * base[1], rel=1e-14)
    np.testing.assert_allclose(got[2:], base[2:] / 8, rtol=1e-14)  # wavelength > 64: slowed


# ---- RoPE at every position -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["llama3", "qwen2_bias"])
def test_rope_tables_match_the_reference_at_every_position(name):
    arch = arch_from_hf(ARCHS[name])
    positions = 4096
    cos, sin = rope_cache(arch, positions, "cpu")  # float32 [P, hd/2]
    angles = ref.rope_angles(np.arange(positions), arch.head_dim, arch.rope_theta,
                             dict(arch.rope_scaling) if arch.rope_scaling else None)
    # float32 rounding of a value in [-1, 1]: <= 6e-8
    np.testing.assert_allclose(cos.double().numpy(), np.cos(angles), rtol=0, atol=1e-7)
    np.testing.assert_allclose(sin.double().numpy(), np.sin(angles), rtol=0, atol=1e-7)


def test_apply_rope_rotates_every_pair_of_every_head_at_every_position():
    arch = arch_from_hf(LLAMA3)
    positions, heads = 512, 3
    cos, sin = rope_cache(arch, positions, "cpu")
    x = torch.randn(positions, heads, arch.head_dim, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    got = apply_rope(x, cos[:, None, :].double(), sin[:, None, :].double())
    angles = ref.rope_angles(np.arange(positions), arch.head_dim, arch.rope_theta,
                             dict(arch.rope_scaling))
    np.testing.assert_allclose(got.numpy(), ref.rotate(x.numpy(), angles), rtol=0, atol=1e-6)


# ---- the whole decoder --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("seed", [0, 1])
def test_float32_prefill_and_decode_match_the_float64_reference(name, seed):
    model = randomize_norms(Decoder(arch_from_hf(ARCHS[name]), dtype=torch.float32,
                                    device="cpu", seed=seed, max_position=128), seed)
    # 80 tokens: positions past the 64 the Llama 3.1 scaling was tuned on
    tokens = torch.randint(0, 101, (80,), generator=torch.Generator().manual_seed(10 + seed))
    want = ref.forward(reference_weights(model), tokens.numpy())
    got = prefill_then_decode(model, tokens, prefill=30)
    assert got.shape == want.shape == (80, 101)
    np.testing.assert_allclose(got, want, rtol=0, atol=FP32_ATOL)


@pytest.mark.parametrize("name", list(ARCHS))
def test_bfloat16_prefill_and_decode_match_the_float64_reference(name):
    model = randomize_norms(Decoder(arch_from_hf(ARCHS[name]), dtype=torch.bfloat16,
                                    device="cpu", seed=2, max_position=128), 2)
    tokens = torch.randint(0, 101, (48,), generator=torch.Generator().manual_seed(7))
    want = ref.forward(reference_weights(model), tokens.numpy())  # the same bf16 weights
    got = prefill_then_decode(model, tokens, prefill=20)
    rel_l2 = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert rel_l2 <= BF16_REL_L2, rel_l2
    assert np.abs(got - want).max() <= BF16_ATOL
