"""TP = TP: the logits of a tensor-parallel step equal the unsplit model's (tests, self-checks).

``shard_logits`` runs on every rank (as a ``run_collective`` call): each builds its shard of
the same seeded model, runs one step over its own pool, and rank 0 saves the logits gathered
from all vocabulary shards. The caller compares them with ``full_logits`` from one process.
"""

from __future__ import annotations

from typing import Any

import torch

from realexec.arch import arch_from_hf
from realexec.attention import build_metadata, select_backend
from realexec.kvcache import PagedKVPool
from realexec.model import Decoder

BLOCK = 16
STEPS = [  # (cached, new) per sequence, three steps of a growing batch
    [(0, 40), (0, 7)],
    [(40, 1), (7, 20)],
    [(41, 1), (27, 1), (0, 5)],
]


def _run_steps(model: Decoder, backend: str) -> list[torch.Tensor]:
    """Logits (this rank's vocabulary shard) of every new token of every step."""
    dev = model.device
    pool = PagedKVPool(num_layers=model.arch.num_layers, num_blocks=32, block_size=BLOCK,
                       num_kv_heads=model.kv_heads, head_dim=model.arch.head_dim,
                       dtype=model.dtype, device=dev)
    _, attn = select_backend(backend, dev, BLOCK)
    tables = [[3, 9, 4, 0], [7, 1], [12]]
    gen = torch.Generator().manual_seed(11)
    out = []
    for step in STEPS:
        q = [n for _, n in step]
        ctx = [c for c, _ in step]
        meta = build_metadata(q, ctx, tables[: len(step)], block_size=BLOCK,
                              scratch_block=pool.scratch_block, device=dev)
        ids = torch.randint(0, model.arch.vocab_size, (sum(q),), generator=gen).to(dev)
        pos = torch.cat([torch.arange(c, c + n) for c, n in step]).to(dev)
        rows = torch.arange(sum(q), device=dev)
        out.append(model.forward(ids, pos, meta, pool, attn, rows).float().cpu())
    return out


def full_logits(fields: dict[str, Any], dtype: torch.dtype, device: str = "cpu",
                backend: str = "torch") -> list[torch.Tensor]:
    model = Decoder(arch_from_hf(fields), dtype=dtype, device=device, seed=5,
                    max_position=256)
    return _run_steps(model, backend)


def shard_logits(ctx, fields: dict[str, Any], dtype: torch.dtype, path: str,
                 backend: str = "torch") -> None:
    """Every rank: its shard's logits; rank 0 saves the gathered full-vocabulary logits."""
    model = ctx.decoder(arch_from_hf(fields), dtype, 5, 256)
    shards = _run_steps(model, backend)
    full = []
    for logits in shards:
        gathered = ctx.all_gather(logits.to(ctx.device))  # [tp, T, V / tp]
        full.append(torch.cat(list(gathered), dim=-1).cpu())
    if ctx.rank == 0:
        torch.save(full, path)


def engine_outputs(ctx, fields: dict[str, Any], config: dict, path: str) -> None:
    """Rank 0: serve ``config`` through the engine on all ranks; save the greedy tokens."""
    import sim
    from realexec.tp import TPExecutorFactory

    factory = TPExecutorFactory(ctx, model=fields, backend="torch", keep_outputs=True,
                                max_model_len=256)
    result = sim.simulate(config, executor_factory=factory)
    outputs = {rid: toks for ex in factory.executors for rid, toks in ex.finished_outputs.items()}
    torch.save({"outputs": outputs, "completed": int(result.summary["completed"])}, path)
    factory.release()


def check_job(ctx, fields: dict[str, Any], config: dict, out_dir: str) -> None:
    """Rank 0 job of the TP CPU test: logits of fixed steps, then a whole served workload."""
    from realexec.tp import run_collective

    run_collective(ctx, shard_logits, fields, torch.float32, f"{out_dir}/logits.pt")
    engine_outputs(ctx, fields, config, f"{out_dir}/engine.pt")
