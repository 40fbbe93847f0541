"""The decoder computes the same logits whether a sequence comes whole or in paged pieces."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

from realexec.arch import ArchError, arch_from_hf
from realexec.attention import build_metadata, select_backend
from realexec.kvcache import PagedKVPool
from realexec.model import Decoder, rope_cache, sample_greedy

TINY = {
    "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 8,
    "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 96, "vocab_size": 101,
    "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
}
BLOCK = 4


def _pool(model, num_blocks=40):
    return PagedKVPool(num_layers=model.arch.num_layers, num_blocks=num_blocks, block_size=BLOCK,
                       num_kv_heads=model.kv_heads, head_dim=model.arch.head_dim,
                       dtype=torch.float32, device="cpu")


def _step(model, pool, fn, seqs):
    """seqs: list of (tokens [n], ctx, table); returns logits of every new token."""
    meta = build_metadata([len(t) for t, _, _ in seqs], [c for _, c, _ in seqs],
                          [tb for _, _, tb in seqs], block_size=BLOCK,
                          scratch_block=pool.scratch_block, device="cpu")
    ids = torch.cat([t for t, _, _ in seqs])
    pos = torch.cat([torch.arange(c, c + len(t)) for t, c, _ in seqs])
    rows = torch.arange(len(ids))
    return model.forward(ids, pos, meta, pool, fn, rows)


def _dense(model, tokens):
    pool = _pool(model)
    _, ref = select_backend("reference", torch.device("cpu"), BLOCK)
    return _step(model, pool, ref, [(tokens, 0, list(range(-(-len(tokens) // BLOCK))))])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_chunked_prefix_decode_and_verify_match_whole_sequence(backend):
    model = Decoder(arch_from_hf(TINY), dtype=torch.float32, device="cpu", seed=3,
                    max_position=128)
    gen = torch.Generator().manual_seed(5)
    a = torch.randint(0, 101, (19,), generator=gen)
    b = torch.randint(0, 101, (9,), generator=gen)
    want_a, want_b = _dense(model, a), _dense(model, b)

    pool = _pool(model)
    perm = torch.randperm(pool.num_blocks, generator=gen).tolist()
    ta, tb = perm[:5], perm[5:8]
    _, fn = select_backend(backend, torch.device("cpu"), BLOCK)
    got = _step(model, pool, fn, [(a[:8], 0, ta), (b[:6], 0, tb)])  # two prompts (a: a chunk)
    torch.testing.assert_close(got, torch.cat([want_a[:8], want_b[:6]]), rtol=1e-5, atol=1e-5)
    got = _step(model, pool, fn, [(b[6:7], 6, tb), (a[8:15], 8, ta)])  # decode + next chunk
    torch.testing.assert_close(got, torch.cat([want_b[6:7], want_a[8:15]]), rtol=1e-5, atol=1e-5)
    got = _step(model, pool, fn, [(a[15:19], 15, ta), (b[7:9], 7, tb)])  # verify k=3, k=1
    torch.testing.assert_close(got, torch.cat([want_a[15:], want_b[7:]]), rtol=1e-5, atol=1e-5)


def test_prefix_shared_blocks_give_same_logits():
    """A second request reading a first one's cached prefix blocks sees the same logits."""
    model = Decoder(arch_from_hf(TINY), dtype=torch.float32, device="cpu", seed=1,
                    max_position=128)
    tokens = torch.randint(0, 101, (16,), generator=torch.Generator().manual_seed(2))
    want = _dense(model, tokens)
    pool = _pool(model)
    _, fn = select_backend("torch", torch.device("cpu"), BLOCK)
    _step(model, pool, fn, [(tokens[:12], 0, [7, 3, 9])])  # first request fills 3 blocks
    got = _step(model, pool, fn, [(tokens[12:], 12, [7, 3, 9, 20])])  # hit on 12 tokens
    torch.testing.assert_close(got, want[12:], rtol=1e-5, atol=1e-5)


def test_greedy_sampling_merges_vocab_shards():
    logits = torch.tensor([[0.1, 0.9, 0.3, 0.2], [0.5, 0.1, 0.2, 0.7]])
    shards = logits.chunk(2, dim=-1)  # as two TP ranks hold them

    def all_gather(t):  # what each rank contributes: (best logit, local index) per row
        return torch.stack([torch.stack([s.max(-1).values, s.max(-1).indices.float()], -1)
                            for s in shards])

    assert sample_greedy(logits).tolist() == [1, 3]
    assert sample_greedy(shards[0], all_gather).tolist() == [1, 3]


def test_llama3_rope_scaling_keeps_fast_frequencies():
    arch = arch_from_hf(TINY)
    cos, sin = rope_cache(arch, 8, "cpu")
    assert cos.shape == (8, 8)
    assert torch.allclose(cos[1, 0], torch.tensor(1.0).cos())  # highest frequency unscaled


def test_moe_and_bad_tp_are_one_line_errors():
    with pytest.raises(ArchError, match="MoE is not supported"):
        arch_from_hf({**TINY, "moe": {"num_experts": 8}}, name="mixtral")
    with pytest.raises(ValueError, match="hardware.tp: 3 does not divide"):
        Decoder(arch_from_hf(TINY), dtype=torch.float32, device="cpu", tp_size=3,
                all_reduce=lambda t: None)
