"""The protocols the engine, the policies and the executors meet at.

``Scheduler`` and ``KVAllocator`` are implemented in ``policies/``, ``Executor`` by the roofline
(``sim.executors``) and the GPU (``realexec``), ``HardwareModel`` by ``hwmodels``. Nothing here
is a base class: a structural match is enough.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from core.batch import Batch, StepResult
from core.request import Request


@runtime_checkable
class HardwareModel(Protocol):
    """Predicts the duration of one iteration from its shape."""

    def step_time_s(self, seqs: list[tuple[int, int]]) -> float: ...


@runtime_checkable
class Executor(Protocol):
    """Runs a batch: on a roofline model (simulated seconds) or a GPU (measured seconds)."""

    def run(self, batch: Batch) -> StepResult: ...


@runtime_checkable
class KVAllocator(Protocol):
    """Owns the KV-cache blocks of one replica.

    ``allocate`` is all-or-nothing: it either grows the request's holding to cover
    ``num_tokens`` tokens and returns True, or changes nothing and returns False.
    ``lookup_prefix`` has no side effect; the hit is taken by the first ``allocate``.
    ``commit`` tells a caching allocator that the request's computed blocks may now be shared.
    """

    block_size: int
    num_blocks_total: int

    def num_blocks_used(self) -> int: ...

    def lookup_prefix(self, request: Request) -> int: ...

    def allocate(self, request: Request, num_tokens: int) -> bool: ...

    def commit(self, request: Request) -> None: ...

    def free(self, request: Request) -> None: ...

    def block_table(self, request: Request) -> list[int]: ...


@runtime_checkable
class Scheduler(Protocol):
    """Decides each iteration's batch. Pure Python: no clock of its own, ``now`` is passed in."""

    allocator: KVAllocator

    def add_request(self, request: Request, now: float) -> bool: ...

    def schedule(self, now: float) -> Batch | None: ...

    def update(self, batch: Batch, result: StepResult, now: float) -> list[Request]: ...

    def has_unfinished(self) -> bool: ...

    @property
    def num_waiting(self) -> int: ...

    @property
    def num_running(self) -> int: ...
