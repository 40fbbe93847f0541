"""One priced operator row, and the soft roofline that prices it."""

from __future__ import annotations

from dataclasses import dataclass

ACT_BYTES = 2  # activations are 16-bit
LOGIT_BYTES = 4  # logits are upcast to fp32 for sampling


@dataclass(slots=True)
class Op:
    """One operator row of a step: totals over the layers it stands for, on one GPU."""

    name: str
    kind: str  # gemm | attn | mem | comm | host
    flops: float = 0.0
    bytes: float = 0.0
    kernels: int = 0
    compute_s: float = 0.0
    memory_s: float = 0.0
    time_s: float = 0.0
    floor_s: float = 0.0  # fixed per-call seconds included in time_s (launch, prologue, ...)
    eff: float = 0.0  # achieved fraction of the binding datasheet peak (floors included)

    @property
    def bound(self) -> str:
        if self.kind in ("comm", "host"):
            return self.kind
        return "compute" if self.compute_s >= self.memory_s else "memory"


def overlap1(compute_s: float, memory_s: float, power: float) -> float:
    """Soft maximum (c^p + m^p)^(1/p): the plain roofline max as p grows, and up to 2^(1/p)
    slower than it where compute and memory time are equal (they overlap imperfectly)."""
    top = compute_s if compute_s > memory_s else memory_s
    if power >= 64 or top <= 0.0:
        return top
    return top * ((compute_s / top) ** power + (memory_s / top) ** power) ** (1.0 / power)
