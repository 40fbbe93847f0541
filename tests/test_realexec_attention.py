"""Paged attention equals plain dense attention, for every backend that runs on CPU.

Each case scatters whole sequences into a pool through random block tables, then asks a backend
for the attention of the last ``n`` tokens on top of ``ctx`` cached ones: a fresh prompt, a
prompt on a cached prefix, a chunk, a decode step and a speculative verify in one batch.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # the Triton kernel runs on CPU in the interpreter

import pytest
import torch

from realexec.attention import build_metadata, dense_attention, select_backend
from realexec.kvcache import PagedKVPool, slots_for

BLOCK = 4
KV_HEADS, GROUP, HEAD_DIM = 2, 4, 16
HEADS = KV_HEADS * GROUP
# (ctx, new): prompt, prompt on a cached prefix, chunk, decode, verify (k = 3), tiny prompt
CASES = [(0, 13), (8, 9), (20, 6), (37, 1), (11, 4), (0, 1)]


def _scatter(cases, seed):
    """A pool holding each sequence's K/V at random blocks; dense copies for the reference."""
    gen = torch.Generator().manual_seed(seed)
    need = [-(-(c + n) // BLOCK) for c, n in cases]
    num_blocks = sum(need) + 5
    perm = torch.randperm(num_blocks, generator=gen).tolist()
    pool = PagedKVPool(num_layers=1, num_blocks=num_blocks, block_size=BLOCK,
                       num_kv_heads=KV_HEADS, head_dim=HEAD_DIM, dtype=torch.float32,
                       device="cpu")
    tables, dense = [], []
    for (c, n), k in zip(cases, need, strict=True):
        table, perm = perm[:k], perm[k:]
        keys = torch.randn(c + n, KV_HEADS, HEAD_DIM, generator=gen)
        vals = torch.randn(c + n, KV_HEADS, HEAD_DIM, generator=gen)
        pool.write(0, keys, vals, torch.tensor(slots_for(table, 0, c + n, BLOCK)))
        tables.append(table)
        dense.append((keys, vals))
    q = torch.randn(sum(n for _, n in cases), HEADS, HEAD_DIM, generator=gen)
    return pool, tables, dense, q


def _expected(cases, dense, q):
    outs, start = [], 0
    for (c, n), (keys, vals) in zip(cases, dense, strict=True):
        outs.append(dense_attention(q[start : start + n], keys, vals, c))
        start += n
    return torch.cat(outs)


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paged_attention_matches_dense(backend, seed):
    gen = torch.Generator().manual_seed(100 + seed)
    order = torch.randperm(len(CASES), generator=gen).tolist()
    cases = [CASES[i] for i in order]
    pool, tables, dense, q = _scatter(cases, seed)
    meta = build_metadata([n for _, n in cases], [c for c, _ in cases], tables,
                          block_size=BLOCK, scratch_block=pool.scratch_block, device="cpu")
    _, fn = select_backend(backend, torch.device("cpu"), BLOCK)
    got = fn(q, *pool.layer(0), meta)
    torch.testing.assert_close(got, _expected(cases, dense, q), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("splits", [2, 3])
def test_triton_split_kv_decode_matches_dense(splits):
    """Split-KV (several context slices merged) gives the same result for decode and verify."""
    cases = [(37, 1), (5, 1), (60, 4), (0, 1)]
    pool, tables, dense, q = _scatter(cases, 7)
    meta = build_metadata([n for _, n in cases], [c for c, _ in cases], tables,
                          block_size=BLOCK, scratch_block=pool.scratch_block, device="cpu")
    meta.num_splits = splits
    _, fn = select_backend("triton", torch.device("cpu"), BLOCK)
    torch.testing.assert_close(fn(q, *pool.layer(0), meta), _expected(cases, dense, q),
                               rtol=1e-5, atol=1e-5)


def test_unknown_backend_is_one_line_error():
    with pytest.raises(ValueError, match="attention backend: unknown 'fast'; allowed"):
        select_backend("fast", torch.device("cpu"), 16)


def test_slots_for_rejects_short_table():
    with pytest.raises(ValueError, match="block table holds 1 blocks"):
        slots_for([3], 0, 5, 4)
