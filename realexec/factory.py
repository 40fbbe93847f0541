"""The bridge to ``sim.simulate(config, executor_factory=...)``: a GpuExecutor per replica.

The engine calls the factory once per replica with the replica's scheduler, whose allocator is
the policy object that will hand out KV blocks; the executor's pool is sized to exactly that
allocator, so block ids mean the same thing in both. The decoder (weights) is built once and
kept across runs: validation runs many scenarios on one model.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import Any

import torch

from realexec.arch import ModelArch, load_arch
from realexec.executor import AcceptFn, GpuExecutor
from realexec.model import Decoder


class DeviceError(ValueError):
    """The requested device cannot be used here (one line)."""


def resolve_device(device: str) -> torch.device:
    """``cuda`` only where CUDA is present; a clear one-line error otherwise."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {device}: CUDA is not available on this machine "
                          f"(torch {torch.__version__}); use --device cpu")
    return dev


class GpuExecutorFactory:
    """``(config, scheduler, plan) -> GpuExecutor``; keeps one decoder for every run."""

    def __init__(
        self,
        *,
        device: str = "cuda",
        dtype: torch.dtype | None = None,
        backend: str = "auto",
        cuda_graphs: bool = True,
        model: str | Mapping[str, Any] | None = None,
        num_layers: int | None = None,
        seed: int = 0,
        accept: AcceptFn | None = None,
        max_model_len: int = 8192,
        keep_outputs: bool = False,
        executor_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        # more GpuExecutor keywords (compile, buckets, graph_stand_in: tests and benchmarks)
        self.executor_options = dict(executor_options or {})
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.backend = backend
        self.cuda_graphs = cuda_graphs
        self.model_override = model
        self.num_layers = num_layers
        self.seed = seed
        self.accept = accept
        self.max_model_len = max_model_len
        self.keep_outputs = keep_outputs
        self._decoder: Decoder | None = None
        self.executors: list[GpuExecutor] = []
        self.backend_used: str | None = None  # what ``auto`` resolved to
        self.deadline: float | None = None  # perf_counter() after which executors stop

    def arch_for(self, config: Any) -> ModelArch:
        arch = load_arch(self.model_override or config.model.name)
        return arch.with_layers(self.num_layers) if self.num_layers else arch

    tp = 1  # ranks this factory's executors span

    def decoder(self, arch: ModelArch) -> Decoder:
        if self._decoder is None or self._decoder.arch != arch:
            self._decoder = None
            gc.collect()
            self._decoder = self._build_decoder(arch)
        return self._decoder

    def _build_decoder(self, arch: ModelArch) -> Decoder:
        return Decoder(arch, dtype=self.dtype, device=self.device, seed=self.seed,
                       max_position=self.max_model_len + 64)

    def _make_executor(self, model: Decoder, allocator: Any, **kwargs: Any) -> GpuExecutor:
        return GpuExecutor(model, allocator, **kwargs)

    def release(self) -> None:
        """Free the pools and graphs of earlier runs (the weights stay)."""
        for ex in self.executors:
            ex.close()
        self.executors.clear()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def __call__(self, config: Any, scheduler: Any, plan: Any) -> GpuExecutor:
        if getattr(config.hardware, "tp", 1) != self.tp:
            raise DeviceError(f"hardware.tp: {config.hardware.tp} in the config, but this "
                              f"executor runs on {self.tp} rank(s); pass --tp to the command")
        model = self.decoder(self.arch_for(config))
        self._check_fits(model, scheduler.allocator)
        ex = self._make_executor(model, scheduler.allocator, backend=self.backend,
                                 accept=self.accept or acceptance_for(config),
                                 cuda_graphs=self.cuda_graphs,
                                 max_num_seqs=config.scheduler.max_num_seqs,
                                 max_model_len=self.max_model_len,
                                 keep_outputs=self.keep_outputs, **self.executor_options)
        ex.deadline = self.deadline
        self.executors.append(ex)
        self.backend_used = ex.backend
        return ex

    def _check_fits(self, model: Decoder, allocator: Any) -> None:
        if self.device.type != "cuda":
            return
        a = model.arch
        elem = torch.tensor([], dtype=self.dtype).element_size()
        pool_bytes = (2 * a.num_layers * (allocator.num_blocks_total + 1) * allocator.block_size
                      * model.kv_heads * a.head_dim * elem)
        free, _ = torch.cuda.mem_get_info(self.device)
        if pool_bytes > free * 0.9:
            raise DeviceError(
                f"hardware.gpu_memory_utilization: a KV pool of {allocator.num_blocks_total} "
                f"blocks needs {pool_bytes / 2**30:.1f} GiB, {free / 2**30:.1f} GiB are free")


def acceptance_for(config: Any) -> AcceptFn | None:
    """The simulator's own acceptance model for this config (same seeded draws), or None.

    The real executor verifies drafts on the device but does not run a drafter: validate
    speculative decoding with methods whose drafting is off the GPU (``ngram``).
    """
    spec = getattr(config, "speculative", None)
    if spec is None or spec.method == "none":
        return None
    from sim.speculative import acceptance_from_config, proposer_from_config

    if spec.tree_width != 1:
        raise DeviceError("speculative.tree_width: realexec verifies chains only; allowed: 1")
    acceptance, proposer = acceptance_from_config(config), proposer_from_config(config)
    return lambda req, drafts: acceptance.accepted(req, proposer.depth_of(drafts), 1)
