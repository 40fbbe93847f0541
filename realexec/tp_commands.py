"""``servesim calibrate --tp N`` and ``servesim validate --tp N``: the jobs rank 0 runs.

Each command spawns one process per GPU (``realexec.tp.launch``); rank 0 runs the same code as
the single-GPU command with a tensor-parallel decoder and executor, and the other ranks follow.
Calibration first measures the all-reduce itself (NCCL, payloads 16 KiB..256 MiB) and fits
``time = latency + bytes x 2(n-1)/n / bus_bandwidth``; those two numbers are pinned in the step
fit as ``comm_latency_s`` and ``comm_eff`` (bus bandwidth over the GPU's link bandwidth),
because whole steps cannot tell communication from the rest.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from realexec.command_log import PROFILES_DIR, command_line, device_name, log
from realexec.tp import Job, RankContext, allreduce_times, launch, run_collective
from realexec.validation_suite import run_validation, write_outputs

ALLREDUCE_SIZES = [16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20,
                   256 << 20]


def fit_allreduce(rows: list[dict], tp: int) -> dict:
    """Least squares of time on ring bytes, weighted to relative error: latency and bus bw."""
    ring = 2 * (tp - 1) / tp
    x = np.array([r["bytes"] * ring for r in rows], dtype=np.float64)
    t = np.array([r["median_s"] for r in rows], dtype=np.float64)
    a = np.stack([np.ones_like(x), x], axis=1) / t[:, None]
    (latency, inv_bw), *_ = np.linalg.lstsq(a, np.ones_like(t), rcond=None)
    big = rows[-1]
    return {"latency_s": float(max(latency, 1e-7)), "bus_gbps": float(1 / inv_bw / 1e9),
            "bus_gbps_largest": float(big["bytes"] * ring / big["median_s"] / 1e9),
            "largest_bytes": int(big["bytes"]), "points": rows}


def _calibrate_job(ctx: RankContext, *, model: str, gpu: str | None, layers: int | None,
                   out: str | None, table: str | None, quick: bool, reps: int, backend: str,
                   cuda_graphs: bool, command: str, max_num_seqs: int = 256,
                   max_model_len: int = 8192, small: bool = False) -> None:
    import torch

    import hwmodels
    from policies.kv_paged import PagedAllocator
    from realexec.arch import load_arch
    from realexec.calibrate import SMALL_GRID, calibrate_executor, detect_gpu, pool_blocks_that_fit
    from realexec.tp import TPExecutor, build_decoder

    gpu = gpu or detect_gpu(ctx.device) or "h100"
    sizes = ALLREDUCE_SIZES[:4] if quick else ALLREDUCE_SIZES
    comm = fit_allreduce(run_collective(ctx, allreduce_times, sizes), ctx.tp)
    link = hwmodels.get_gpu(gpu).link_bw_bytes_s(ctx.tp)
    log(f"all-reduce over {ctx.tp} ranks: latency {comm['latency_s'] * 1e6:.1f} us, bus "
        f"{comm['bus_gbps']:.0f} GB/s fitted, {comm['bus_gbps_largest']:.0f} GB/s at "
        f"{comm['largest_bytes'] >> 20} MiB; link {link / 1e9:.0f} GB/s")
    arch = load_arch(model)
    arch = arch.with_layers(layers) if layers else arch
    dtype = torch.bfloat16 if ctx.device.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    decoder = build_decoder(ctx, arch, dtype, max_position=max_model_len + 64)
    allocator = PagedAllocator(pool_blocks_that_fit(decoder, 16), 16)
    executor = TPExecutor(ctx, decoder, allocator, backend=backend, accept=lambda r, k: 0,
                          max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                          cuda_graphs=cuda_graphs)
    log(f"model {model} ({arch.num_layers} layers, tp {ctx.tp}): backend {executor.backend}, "
        f"pool {allocator.num_blocks_total} blocks, graphs {executor.graphs is not None}, "
        f"ready in {time.perf_counter() - t0:.1f} s")
    fixed = {"comm_latency_s": comm["latency_s"], "comm_eff": comm["bus_gbps"] * 1e9 / link}
    df, profile, meta = calibrate_executor(
        executor, model=model, gpu=gpu, tp=ctx.tp, quick=quick, reps=reps,
        max_num_seqs=max_num_seqs, max_model_len=max_model_len,
        device_name=device_name(ctx.device), command=command, fixed=fixed,
        extra={"allreduce": comm}, log=log, grid=SMALL_GRID if small else None)
    executor.close()
    path = Path(out) if out else PROFILES_DIR / meta["gpu"] / f"{model}-tp{ctx.tp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    profile.save(path)
    if table:
        Path(table).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(table, index=False)
    log(f"profile: {path} (fit on {profile.num_steps} steps, MAPE {profile.mape:.1f}%)")


def calibrate_tp(*, model: str, device: str, tp: int, out: Path | None, gpu: str | None,
                 layers: int | None, table: Path | None, quick: bool, reps: int,
                 backend: str = "auto", cuda_graphs: bool = True, small: bool = False) -> None:
    launch(Job(_calibrate_job, {
        "model": model, "gpu": gpu, "layers": layers, "out": str(out) if out else None,
        "table": str(table) if table else None, "quick": quick, "reps": reps,
        "backend": backend, "cuda_graphs": cuda_graphs, "command": command_line(),
        "small": small}), tp=tp, device=device)


def _validate_job(ctx: RankContext, *, out: str, layers: int | None, backend: str,
                  cuda_graphs: bool, model_config: dict | None, **kwargs: Any) -> None:
    from realexec.tp import TPExecutorFactory

    factory = TPExecutorFactory(ctx, backend=backend, cuda_graphs=cuda_graphs,
                                num_layers=layers, model=model_config)
    payload = run_validation(factory=factory, layers=layers, tp=ctx.tp,
                             on_result=lambda p: write_outputs(p, Path(out), quiet=True),
                             **kwargs)
    write_outputs(payload, Path(out))


def validate_tp(*, tp: int, device: str, out: Path, **kwargs: Any) -> None:
    launch(Job(_validate_job, {"out": str(out), **kwargs}), tp=tp, device=device)
