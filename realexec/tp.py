"""Tensor parallelism: one process per GPU; rank 0 schedules and broadcasts each step.

``launch(job, tp)`` spawns ``tp`` processes. Each joins a NCCL group (gloo on CPU) for the
model's all-reduces and a gloo group for control. Rank 0 runs the job (calibration or
validation: the SimPy engine, the policies, the metrics); its executor sends every step's
``StepInputs`` over the control group before running it, and the other ranks run
``worker_loop``: receive, execute the same step on their shard, repeat. Model construction,
pool allocation and CUDA-graph capture are messages too, so every rank does them in the same
order (a graph capture of an all-reduce must happen on all ranks together).

NVLink multicast (NVLS) stays off: NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1,
NVSHMEM_DISABLE_NVLS=1 are set before any process group exists.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from realexec.arch import ModelArch
from realexec.executor import GpuExecutor, StepInputs
from realexec.factory import GpuExecutorFactory
from realexec.model import Decoder

NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                "NVSHMEM_DISABLE_NVLS": "1"}


@dataclass
class Job:
    """What rank 0 runs: ``fn(ctx, **kwargs)`` (picklable: a module-level function)."""

    fn: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)


class Channel:
    """Rank 0 -> all ranks, over a gloo group (host memory: no device sync)."""

    def __init__(self, group) -> None:
        self.group = group

    def send(self, message: tuple) -> None:
        dist.broadcast_object_list([message], src=0, group=self.group)

    def recv(self) -> tuple:
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]


@dataclass
class RankContext:
    """One process's place in the TP group."""

    rank: int
    tp: int
    device: torch.device
    channel: Channel

    def all_reduce(self, t: torch.Tensor) -> None:
        dist.all_reduce(t)

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """``[tp, *t.shape]``: every rank's ``t`` (one NCCL call on GPU; a list on gloo)."""
        if self.device.type == "cuda":
            out = torch.empty((self.tp, *t.shape), dtype=t.dtype, device=t.device)
            dist.all_gather_into_tensor(out, t.contiguous())
            return out
        parts = [torch.empty_like(t) for _ in range(self.tp)]
        dist.all_gather(parts, t.contiguous())
        return torch.stack(parts)

    def decoder(self, arch: ModelArch, dtype: torch.dtype, seed: int, max_position: int
                ) -> Decoder:
        return Decoder(arch, dtype=dtype, device=self.device, seed=seed, tp_rank=self.rank,
                       tp_size=self.tp, all_reduce=self.all_reduce, max_position=max_position)


@dataclass(frozen=True, slots=True)
class PoolShape:
    """What a worker needs of the allocator: the pool's size (block ids come with each step)."""

    block_size: int
    num_blocks_total: int


class TPExecutor(GpuExecutor):
    """Rank 0's executor: broadcasts each step to the workers, then runs its own shard."""

    def __init__(self, ctx: RankContext, model: Decoder, allocator: Any, **kwargs: Any) -> None:
        self.ctx = ctx
        spec = {k: v for k, v in kwargs.items() if k in EXECUTOR_KEYS}
        ctx.channel.send(("executor", PoolShape(allocator.block_size,
                                                allocator.num_blocks_total), spec))
        super().__init__(model, allocator, all_gather=ctx.all_gather, **kwargs)

    def launch(self, inputs: StepInputs):
        self.ctx.channel.send(("step", inputs))
        return super().launch(inputs)

    def close(self) -> None:
        self.ctx.channel.send(("release",))
        super().close()


EXECUTOR_KEYS = ("backend", "cuda_graphs", "compile", "max_num_seqs", "max_model_len",
                 "decode_buckets", "token_buckets")


class TPExecutorFactory(GpuExecutorFactory):
    """Rank 0's factory: every decoder and executor it makes spans all ranks of ``ctx``."""

    def __init__(self, ctx: RankContext, **kwargs: Any) -> None:
        super().__init__(device=str(ctx.device), **kwargs)
        self.ctx = ctx
        self.tp = ctx.tp

    def _build_decoder(self, arch: ModelArch) -> Decoder:
        return build_decoder(self.ctx, arch, self.dtype, self.seed, self.max_model_len + 64)

    def _make_executor(self, model: Decoder, allocator: Any, **kwargs: Any) -> GpuExecutor:
        return TPExecutor(self.ctx, model, allocator, **kwargs)


def build_decoder(ctx: RankContext, arch: ModelArch, dtype: torch.dtype, seed: int = 0,
                  max_position: int = 8192 + 64) -> Decoder:
    """Rank 0: build this rank's shard and have every worker build theirs."""
    ctx.channel.send(("build", arch, dtype, seed, max_position))
    return ctx.decoder(arch, dtype, seed, max_position)


def worker_loop(ctx: RankContext) -> None:
    """Ranks > 0: do what rank 0 says until it says stop."""
    model: Decoder | None = None
    executor: GpuExecutor | None = None
    while True:
        message = ctx.channel.recv()
        kind = message[0]
        if kind == "stop":
            return
        if kind == "build":
            model = executor = None
            model = ctx.decoder(*message[1:])
        elif kind == "executor":
            executor = GpuExecutor(model, message[1], all_gather=ctx.all_gather, **message[2])
        elif kind == "step":
            executor.execute(message[1])
        elif kind == "release":
            if executor is not None:
                executor.close()
            executor = None
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
        elif kind == "call":  # a collective benchmark every rank runs (see allreduce_times)
            message[1](ctx, *message[2:])


def allreduce_times(ctx: RankContext, sizes_bytes: list[int], reps: int = 20) -> list[dict]:
    """Median time of a bf16 all-reduce per payload size (run on every rank together)."""
    rows = []
    for size in sizes_bytes:
        t = torch.ones(max(1, size // 2), dtype=torch.bfloat16, device=ctx.device)
        for _ in range(3):
            dist.all_reduce(t)
        _sync(ctx.device)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            dist.all_reduce(t)
            _sync(ctx.device)
            times.append(time.perf_counter() - start)
        rows.append({"bytes": t.numel() * 2, "median_s": statistics.median(times)})
    return rows


def run_collective(ctx: RankContext, fn: Callable, *args: Any) -> Any:
    """Rank 0: run ``fn(ctx, *args)`` on every rank; return rank 0's result."""
    ctx.channel.send(("call", fn, *args))
    return fn(ctx, *args)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(job: Job, tp: int, device: str = "cuda") -> None:
    """Run ``job`` on rank 0 of ``tp`` spawned processes (one per GPU)."""
    if device == "cuda" and torch.cuda.device_count() < tp:
        raise ValueError(f"hardware.tp: {tp} GPUs needed, {torch.cuda.device_count()} visible")
    os.environ.update(NO_MULTICAST)
    mp.spawn(_rank_main, args=(job, tp, device, _free_port()), nprocs=tp, join=True)


def _rank_main(rank: int, job: Job, tp: int, device: str, port: int) -> None:
    if os.environ.get("REALEXEC_TP_WATCHDOG_S"):  # one-shot device runs: show where a rank hangs
        import faulthandler

        faulthandler.dump_traceback_later(float(os.environ["REALEXEC_TP_WATCHDOG_S"]), exit=True)
    os.environ.update(NO_MULTICAST)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    if device == "cuda":
        torch.cuda.set_device(rank)
        dev = torch.device("cuda", rank)
    else:
        dev = torch.device("cpu")
    dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=rank, world_size=tp,
                            device_id=dev if device == "cuda" else None)
    ctx = RankContext(rank, tp, dev, Channel(dist.new_group(backend="gloo")))
    try:
        if rank == 0:
            try:
                job.fn(ctx, **job.kwargs)
            finally:
                ctx.channel.send(("stop",))
        else:
            worker_loop(ctx)
    finally:
        dist.destroy_process_group()
