"""The fused Triton kernels (RoPE + KV write, split-KV merge) compute what the portable path
computes: same q, same K/V in the same slots, same merged output (CPU, Triton interpreter)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

from realexec.arch import arch_from_hf
from realexec.attention import build_metadata, select_backend
from realexec.kvcache import PagedKVPool
from realexec.model import Decoder, apply_rope
from realexec.triton_attention import _combine
from realexec.triton_rope_store import merge_splits, rope_and_store

TINY = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 96, "vocab_size": 211}


def _pool() -> PagedKVPool:
    return PagedKVPool(num_layers=2, num_blocks=12, block_size=4, num_kv_heads=2, head_dim=16,
                       dtype=torch.float32, device="cpu")


def test_rope_and_store_rotates_q_and_k_and_writes_k_and_v_to_their_slots():
    gen = torch.Generator().manual_seed(0)
    tokens, heads, kv_heads, dim = 19, 8, 2, 16  # 19: two programs, the second part-masked
    qkv = torch.randn(tokens, heads + 2 * kv_heads, dim, generator=gen)
    positions = torch.randint(0, 100, (tokens,), generator=gen)
    angles = torch.arange(128.0)[:, None] * (0.5 ** torch.arange(dim // 2.0))[None, :]
    cos, sin = angles.cos(), angles.sin()
    pool = _pool()
    slots = torch.randperm(12 * 4, generator=gen)[:tokens]
    q = rope_and_store(qkv, positions, cos, sin, *pool.layer(1), slots, heads, kv_heads)
    c, s = cos[positions][:, None, :], sin[positions][:, None, :]
    rotated = apply_rope(qkv[:, : heads + kv_heads], c, s)
    torch.testing.assert_close(q, rotated[:, :heads])
    k_flat = pool.k[1].view(-1, kv_heads, dim)
    v_flat = pool.v[1].view(-1, kv_heads, dim)
    torch.testing.assert_close(k_flat[slots], rotated[:, heads:])
    torch.testing.assert_close(v_flat[slots], qkv[:, heads + kv_heads :])
    untouched = torch.ones(12 * 4 + 4, dtype=torch.bool)
    untouched[slots] = False
    assert not pool.k[0].any() and not k_flat[untouched].any() and not v_flat[untouched].any()


@pytest.mark.parametrize("qk_norm", [False, True])
def test_fused_decoder_step_equals_the_portable_one(qk_norm):
    """Two steps (a prefill, then a decode reading it): logits and pools agree."""
    name = "Qwen3ForCausalLM" if qk_norm else "LlamaForCausalLM"
    arch = arch_from_hf({**TINY, "architectures": [name]})
    assert arch.qk_norm == qk_norm
    _, attention = select_backend("triton", torch.device("cpu"), 4)
    results = []
    for fused in (False, True):
        model = Decoder(arch, dtype=torch.float32, device="cpu", seed=2, max_position=64)
        model.fuse_rope_store(fused)
        pool, logits = _pool(), []
        for q_lens, ctx in (([5, 3], [0, 0]), ([1, 1], [5, 3])):
            meta = build_metadata(q_lens, ctx, [[0, 1], [2]], block_size=4,
                                  scratch_block=pool.scratch_block, device="cpu")
            pos = torch.cat([torch.arange(c, c + n) for n, c in zip(q_lens, ctx, strict=True)])
            ids = (pos * 5 + 1) % 211
            rows = torch.cumsum(torch.tensor(q_lens), 0) - 1
            logits.append(model.forward(ids, pos, meta, pool, attention, rows))
        results.append((logits, pool))
    (plain, plain_pool), (fast, fast_pool) = results
    for a, b in zip(plain, fast, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain_pool.k, fast_pool.k, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain_pool.v, fast_pool.v)


def test_merge_splits_equals_the_reference_merge_with_empty_slices():
    gen = torch.Generator().manual_seed(1)
    splits, tokens, heads, dim = 4, 3, 2, 16
    acc = torch.randn(splits, tokens, heads, dim, generator=gen)
    m = torch.randn(splits, tokens, heads, generator=gen)
    den = torch.rand(splits, tokens, heads, generator=gen) + 0.5
    m[2:, 0] = float("-inf")  # token 0: its last two slices saw no key
    den[2:, 0] = 0.0
    acc[2:, 0] = 0.0
    m[:, 1, 0] = float("-inf")  # token 1, head 0: no key at all -> zeros
    den[:, 1, 0] = 0.0
    acc[:, 1, 0] = 0.0
    got = merge_splits(acc, m, den, torch.float32)
    torch.testing.assert_close(got, _combine(acc, m, den, torch.float32))
    assert not got[1, 0].any()
    # by hand for one row: sum_s e^(m_s - max) acc_s / sum_s e^(m_s - max) den_s
    w = torch.exp(m[:, 2, 1] - m[:, 2, 1].max())
    by_hand = (w[:, None] * acc[:, 2, 1]).sum(0) / (w * den[:, 2, 1]).sum()
    torch.testing.assert_close(got[2, 1], by_hand)
