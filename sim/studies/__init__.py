"""The inference-optimization study: the field's rules of thumb tested with the simulator.

Each claim (1-11, ``CLAIM_MODULES``) is a module whose ``run(scale)`` simulates the conditions
that decide it and returns a ``ClaimResult``: the measured numbers, the stated bar, and a
verdict computed from them (``base.judge``). ``report.write_report`` turns results into a
markdown and a self-contained HTML report; ``servesim study optimizations`` does both.

    from sim.studies import run_claim
    result = run_claim(4, scale="quick")
    result.verdict, result.headline.value, result.table
"""

from sim.studies.base import (
    CANNOT_JUDGE,
    HOLDS,
    HOLDS_ONLY_WHEN,
    REFUTED,
    VERDICTS,
    ClaimResult,
    Condition,
    Scale,
    judge,
)
from sim.studies.runner import CLAIM_MODULES, run_all, run_claim

__all__ = [
    "CANNOT_JUDGE",
    "CLAIM_MODULES",
    "ClaimResult",
    "Condition",
    "HOLDS",
    "HOLDS_ONLY_WHEN",
    "REFUTED",
    "Scale",
    "VERDICTS",
    "judge",
    "run_all",
    "run_claim",
]
