"""Replay decode graphs out of capture order (bucket 1, 8, 64), shared pool vs one pool each.

Run with CUDA_LAUNCH_BLOCKING=1. Each variant runs in its own process (a fault poisons it).
Usage: PYTHONPATH=. python3 scripts/gpu_debug_graphs.py shared|private [auto|torch]
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from policies.kv_paged import PagedAllocator
from realexec.arch import load_arch
from realexec.executor import GpuExecutor, StepInputs
from realexec.graphs import DEFAULT_BUCKETS, DecodeGraphs
from realexec.model import Decoder


def composite_rms_norm(x, weight, eps):
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def main(mode: str, backend: str = "auto", norm: str = "fused") -> int:
    if os.environ.get("MAX_SPLITS"):
        import realexec.executor

        realexec.executor.MAX_SPLITS = int(os.environ["MAX_SPLITS"])
    if norm == "composite":
        import realexec.model

        realexec.model.rms_norm = composite_rms_norm
    dev = torch.device("cuda")
    arch = load_arch("llama-3.1-8b").with_layers(2)
    model = Decoder(arch, dtype=torch.bfloat16, device=dev, max_position=4096)
    ex = GpuExecutor(model, PagedAllocator(16384, 16), max_num_seqs=64, max_model_len=4096,
                     cuda_graphs=False, backend=backend)
    buckets = [b for b in DEFAULT_BUCKETS if b <= 64]
    ex.graphs = DecodeGraphs(model, ex.pool, ex.attention, buckets=buckets, width=ex.width,
                             splits_for=ex.splits_for, share_pool=mode == "shared")
    rng = np.random.default_rng(0)
    batches = [int(b) for b in os.environ.get("BATCHES", "1,5,64,3,64").split(",")]
    for batch in batches:
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
        if os.environ.get("SYNC_BEFORE_REPLAY"):
            torch.cuda.synchronize()
        graphed = ex.execute(inputs)
        torch.cuda.synchronize()
        if os.environ.get("NO_EAGER"):
            print(f"{mode} pool, graph only, batch {batch}: ok", flush=True)
            continue
        saved, ex.graphs = ex.graphs, None
        eager = ex.execute(inputs)
        ex.graphs = saved
        torch.cuda.synchronize()
        same = float(np.mean(np.array(graphed) == np.array(eager)))
        print(f"{mode} pool, {ex.backend}, batch {batch}: {same:.0%} equal", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
