"""Localize a device fault in batch-64 decode: attention alone, eager step, graph replay.

Run with CUDA_LAUNCH_BLOCKING=1 so the failing launch raises where it happens.
"""

from __future__ import annotations

import sys
import traceback

import numpy as np
import torch

from policies.kv_paged import PagedAllocator
from realexec.arch import load_arch
from realexec.attention import build_metadata, reference_attention
from realexec.executor import GpuExecutor, StepInputs
from realexec.kvcache import PagedKVPool
from realexec.model import Decoder
from realexec.triton_attention import triton_attention


def attention_only(dev, batch, max_ctx, splits):
    rng = np.random.default_rng(1)
    ctx = rng.integers(1, max_ctx, size=batch)
    tables, start = [], 0
    for c in ctx:
        tables.append(list(range(start, start + int(c) // 16 + 1)))
        start += len(tables[-1])
    pool = PagedKVPool(num_layers=1, num_blocks=start + 4, block_size=16, num_kv_heads=8,
                       head_dim=128, dtype=torch.bfloat16, device=dev)
    pool.k.normal_()
    pool.v.normal_()
    meta = build_metadata([1] * batch, ctx.tolist(), tables, block_size=16,
                          scratch_block=pool.scratch_block, device=dev)
    meta.num_splits = splits
    q = torch.randn(batch, 32, 128, device=dev, dtype=torch.bfloat16)
    got = triton_attention(q, *pool.layer(0), meta)
    torch.cuda.synchronize()
    want = reference_attention(q, *pool.layer(0), meta)
    err = float((got.double() - want.double()).norm() / want.double().norm())
    print(f"attention batch={batch} ctx<{max_ctx} splits={splits}: rel err {err:.2e}")


def step(dev, batch, graphs):
    arch = load_arch("llama-3.1-8b").with_layers(2)
    model = Decoder(arch, dtype=torch.bfloat16, device=dev, max_position=4096)
    ex = GpuExecutor(model, PagedAllocator(16384, 16), max_num_seqs=64, max_model_len=4096,
                     cuda_graphs=graphs)
    rng = np.random.default_rng(0)
    ctx = rng.integers(1, 3000, size=batch).astype(np.int32)
    tables, slots, start = [], [], 0
    for c in ctx:
        blocks = list(range(start, start + int(c) // 16 + 1))
        start += len(blocks)
        tables.append(blocks)
        slots.append(blocks[int(c) // 16] * 16 + int(c) % 16)
    tab = np.full((batch, max(map(len, tables))), ex.pool.scratch_block, dtype=np.int32)
    for i, t in enumerate(tables):
        tab[i, : len(t)] = t
    inputs = StepInputs(rng.integers(0, arch.vocab_size, size=batch).astype(np.int64),
                        ctx.astype(np.int64), np.array(slots, dtype=np.int64),
                        np.ones(batch, dtype=np.int32), ctx, tab,
                        np.arange(batch, dtype=np.int64))
    out = ex.execute(inputs)
    torch.cuda.synchronize()
    print(f"step batch={batch} graphs={graphs}: ok, {len(out)} tokens, max block {start}")


def main() -> int:
    dev = torch.device("cuda")
    checks = [lambda: attention_only(dev, 5, 3000, 8), lambda: attention_only(dev, 1, 3000, 16),
              lambda: attention_only(dev, 8, 3000, 8), lambda: attention_only(dev, 5, 3000, 1),
              lambda: attention_only(dev, 64, 3000, 1)]
    for check in checks:
        try:
            check()
        except Exception:  # noqa: BLE001 - print and stop: the context is unusable after a fault
            traceback.print_exc()
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
