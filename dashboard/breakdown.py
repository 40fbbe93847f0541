"""Where memory and step time go: rows for the memory and per-operator charts.

Memory comes from the run's ``MemoryPlan`` (one GPU of one replica), with the KV pool split
into the peak the run actually used and the rest. Step time comes from the roofline model's
``breakdown(seqs)`` of a *typical* step of the run, rebuilt from the per-step table: the median
decode-only step (median batch size, median context per sequence) and the median step that
carries prefill tokens. The per-step table records counts, not each sequence, so these are
representative shapes, not replays of one logged step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

GB = 1e9
Seqs = list[tuple[int, int]]


def _peak_kv_fraction(steps: pd.DataFrame) -> float:
    if steps.empty:
        return 0.0
    frac = steps["kv_blocks_used"] / steps["kv_blocks_total"].clip(lower=1)
    return float(frac.max())


def memory_rows(label: str, plan: Any, steps: pd.DataFrame) -> pd.DataFrame:
    """Per-GPU memory of one config by component, in GB (``config, component, gb``)."""
    peak = _peak_kv_fraction(steps)
    kv_pool = plan.kv_pool_bytes
    runtime, draft = getattr(plan, "runtime_bytes", 0.0), getattr(plan, "draft_bytes", 0.0)
    planned = plan.weights_bytes + plan.activation_bytes + runtime + draft + kv_pool
    parts = (
        ("weights", plan.weights_bytes),
        ("draft model", draft),
        ("activations", plan.activation_bytes),
        ("runtime reserve", runtime),
        ("KV cache (peak used)", kv_pool * peak),
        ("KV cache (never used)", kv_pool * (1 - peak)),
        ("not allocated", plan.gpu_memory_bytes - planned),
    )
    return pd.DataFrame([{"config": label, "component": name, "gb": value / GB}
                         for name, value in parts])


def _context_per_seq(steps: pd.DataFrame, block_size: int) -> np.ndarray:
    return steps["kv_blocks_used"] * block_size / steps["num_seqs"].clip(lower=1)


def typical_steps(steps: pd.DataFrame, block_size: int) -> dict[str, Seqs]:
    """Representative ``(new_tokens, context_tokens)`` batches of the run, by step kind."""
    out: dict[str, Seqs] = {}
    decode = steps[(steps["prefill_tokens"] == 0) & (steps["decode_tokens"] > 0)]
    mixed = steps[steps["prefill_tokens"] > 0]
    context = int(np.median(_context_per_seq(decode, block_size))) if len(decode) else 0
    if len(decode):
        n = max(1, int(np.median(decode["num_seqs"])))
        out["typical decode step"] = [(1, max(1, context - 1))] * n
    if len(mixed):
        prefill = max(1, int(np.median(mixed["prefill_tokens"])))
        decodes = int(np.median(mixed["decode_tokens"]))
        out["typical step with prefill"] = [(prefill, 0)] + [(1, max(1, context - 1))] * decodes
    return out


def operator_rows(label: str, hardware: Any, seqs: Seqs) -> pd.DataFrame:
    """Roofline operator rows of one step (``config, operator, time_ms, bound``)."""
    rows = [{"config": label, "operator": op.name, "time_ms": op.time_s * 1e3, "bound": op.bound}
            for op in hardware.breakdown(seqs) if op.time_s > 0]
    return pd.DataFrame(rows, columns=["config", "operator", "time_ms", "bound"])


def hardware_of(config: Any) -> Any:
    """The roofline model of one replica of ``config`` (what the simulation priced steps with)."""
    from sim.build import hardware_model

    return hardware_model(config)[0]
