"""Swap preemption: a preempted request's KV goes to host memory over PCIe and comes back later.

The alternative to recomputing a preempted request (vLLM v0's ``preemption_mode="swap"``). Its
cost is PCIe time: vLLM v0 copied the blocks synchronously before the forward pass, so the whole
step waits for them. ``SwapSpace`` adds up the seconds of the swaps made while a batch was
formed, and ``SwapTimeExecutor`` adds them to that step's duration. The bandwidth is a number
handed in by the builder (from the GPU spec of ``hwmodels``), so policies stay free of hardware.

Swapping is modelled, not performed: a GPU executor (``realexec``) does not copy blocks, so swap
preemption is a simulation-only choice; recompute works on both.
"""

from __future__ import annotations

from dataclasses import dataclass

from core import Batch, Executor, Request, StepResult


@dataclass(slots=True)
class SwapStats:
    swap_outs: int = 0
    swap_ins: int = 0
    swapped_out_bytes: float = 0.0
    swapped_in_bytes: float = 0.0
    swap_time_s: float = 0.0


class SwapSpace:
    """Host memory of ``capacity_bytes`` for swapped-out KV, reached at ``host_bw_bytes_s``."""

    def __init__(self, capacity_bytes: float, kv_bytes_per_token: float, host_bw_bytes_s: float):
        if capacity_bytes < 0 or kv_bytes_per_token <= 0 or host_bw_bytes_s <= 0:
            raise ValueError("kv_cache.swap_space_gb: needs capacity >= 0, and KV bytes per token "
                             "and host bandwidth > 0")
        self.capacity_bytes = capacity_bytes
        self.kv_bytes_per_token = kv_bytes_per_token
        self.host_bw_bytes_s = host_bw_bytes_s
        self.used_bytes = 0.0
        self.stats = SwapStats()
        self._held: dict[int, float] = {}  # request id -> bytes on the host
        self._pending_s = 0.0  # transfer seconds of the batch being formed

    def fits(self, request: Request) -> bool:
        """True if the request's computed KV fits the free host space (else: recompute it)."""
        return self.used_bytes + self._bytes(request) <= self.capacity_bytes

    def holds(self, request: Request) -> bool:
        return request.request_id in self._held

    def swap_out(self, request: Request) -> None:
        size = self._bytes(request)
        self._held[request.request_id] = size
        self.used_bytes += size
        self.stats.swap_outs += 1
        self.stats.swapped_out_bytes += size
        self._charge(request, size)

    def swap_in(self, request: Request) -> None:
        size = self._held.pop(request.request_id)
        self.used_bytes -= size
        self.stats.swap_ins += 1
        self.stats.swapped_in_bytes += size
        self._charge(request, size)

    def take_pending_s(self) -> float:
        """Seconds of PCIe transfers made since the last call (the step's swap time)."""
        seconds, self._pending_s = self._pending_s, 0.0
        return seconds

    def _bytes(self, request: Request) -> float:
        return request.num_computed_tokens * self.kv_bytes_per_token

    def _charge(self, request: Request, size: float) -> None:
        seconds = size / self.host_bw_bytes_s
        request.kv_transfer_time += seconds
        self.stats.swap_time_s += seconds
        self._pending_s += seconds


class SwapTimeExecutor:
    """Wraps an executor: each step also lasts the PCIe time of the swaps made to form it."""

    def __init__(self, executor: Executor, swap: SwapSpace):
        self.executor = executor
        self.swap = swap

    def run(self, batch: Batch) -> StepResult:
        result = self.executor.run(batch)
        extra_s = self.swap.take_pending_s()
        if extra_s:
            result = StepResult(result.seconds + extra_s, result.accepted_draft_tokens)
        return result

    def __getattr__(self, name: str):
        if name == "executor":  # not yet set (copy, unpickling): do not recurse
            raise AttributeError(name)
        return getattr(self.executor, name)
