"""Where does a TP run hang? Stages with a printed line each, on every rank; a watchdog dumps
every thread's stack after 60 s. Usage: PYTHONPATH=. python3 scripts/gpu_tp_debug.py"""

from __future__ import annotations

import faulthandler
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

from realexec.tp import Job, launch


def say(ctx, text: str) -> None:
    print(f"[rank {ctx.rank}] {text}", flush=True)


def stage_call(ctx, name: str) -> None:
    say(ctx, f"call {name}")
    t = torch.ones(4, device=ctx.device) * (ctx.rank + 1)
    dist.all_reduce(t)
    torch.cuda.synchronize()
    say(ctx, f"all_reduce ok {t[0].item()}")


def job(ctx) -> None:
    from policies.kv_paged import PagedAllocator
    from realexec.arch import load_arch
    from realexec.executor import StepInputs
    from realexec.tp import TPExecutor, build_decoder, run_collective

    faulthandler.dump_traceback_later(60, exit=True)
    say(ctx, "job started")
    run_collective(ctx, stage_call, "eager all-reduce")
    arch = load_arch("llama-3.1-8b").with_layers(2)
    model = build_decoder(ctx, arch, torch.bfloat16, max_position=4160)
    say(ctx, "decoder built")
    graphs = os.environ.get("GRAPHS", "0") == "1"
    ex = TPExecutor(ctx, model, PagedAllocator(4096, 16), max_num_seqs=8, max_model_len=4096,
                    cuda_graphs=graphs)
    say(ctx, f"executor built, graphs {ex.graphs is not None}")
    inputs = StepInputs(np.array([5, 7], dtype=np.int64), np.array([0, 0], dtype=np.int64),
                        np.array([0, 16], dtype=np.int64), np.ones(2, dtype=np.int32),
                        np.zeros(2, dtype=np.int32), np.array([[0], [1]], dtype=np.int32),
                        np.arange(2, dtype=np.int64))
    say(ctx, f"step tokens {ex.execute(inputs)}")
    ex.close()
    say(ctx, "done")


if __name__ == "__main__":
    faulthandler.dump_traceback_later(100, exit=True)
    launch(Job(job, {}), tp=2, device="cuda")
    print("launch returned", flush=True)
    sys.exit(0)
