"""Cost per million tokens from a run's throughput and a GPU hourly price.

The GPUs are paid for the whole run (``duration_s``), busy or idle, as a rented deployment is;
the price is the user's input (cloud list prices differ by provider and contract, so the
dashboard ships no price table).
"""

from __future__ import annotations

import math

DEFAULT_GPU_HOUR_USD = 3.0  # a placeholder the user is asked to replace with their own price


def usd_per_hour(num_gpus: int, gpu_hour_usd: float) -> float:
    return num_gpus * gpu_hour_usd


def usd_per_million_tokens(tokens_per_s: float, num_gpus: int, gpu_hour_usd: float) -> float:
    """Dollars per 1e6 tokens at ``tokens_per_s``; NaN when nothing was produced."""
    if tokens_per_s <= 0:
        return math.nan
    return usd_per_hour(num_gpus, gpu_hour_usd) / 3600.0 / tokens_per_s * 1e6


def cost_metrics(summary: dict, num_gpus: int, gpu_hour_usd: float) -> dict[str, float]:
    """The cost rows the dashboard adds to a run's summary."""
    return {
        "usd_per_hour": usd_per_hour(num_gpus, gpu_hour_usd),
        "usd_per_m_output_tokens": usd_per_million_tokens(
            summary["output_throughput"], num_gpus, gpu_hour_usd),
        "usd_per_m_total_tokens": usd_per_million_tokens(
            summary["total_token_throughput"], num_gpus, gpu_hour_usd),
    }
