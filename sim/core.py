"""Compatibility name: the vocabulary now lives in the top-level package ``core``.

``Request``, ``Batch``, ``StepResult``, ``advance`` and the protocols ``Scheduler``,
``KVAllocator``, ``Executor``, ``HardwareModel`` moved to ``core/`` (issue #23) so that
``policies/`` and ``hwmodels/`` import nothing above them. This module re-exports the same
objects (not copies: ``sim.core.Request is core.Request``), so scripts and tests that write
``from sim.core import Request`` keep working. New code imports from ``core``.
"""

from core import (
    Batch,
    Executor,
    HardwareModel,
    KVAllocator,
    Request,
    Scheduler,
    StepResult,
    advance,
)

__all__ = ["Batch", "Executor", "HardwareModel", "KVAllocator", "Request", "Scheduler",
           "StepResult", "advance"]
