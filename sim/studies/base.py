"""What every claim study returns, and the one rule that turns measurements into a verdict.

A claim is tested under several *conditions* (a batch size, a sharing fraction, a baseline...).
Each condition carries the measured number and whether it meets the claim's stated bar (a
pass/fail computed from the number, never written by hand). The verdict follows mechanically:

- ``holds``: every tested condition passes;
- ``holds only when``: some pass; the verdict names them (and the ones that fail);
- ``refuted``: none passes;
- ``cannot judge``: no condition could be judged (the simulator does not model what decides it).

So a verdict is only as good as the grid of conditions: each study says why it chose its grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

HOLDS = "holds"
HOLDS_ONLY_WHEN = "holds only when"
REFUTED = "refuted"
CANNOT_JUDGE = "cannot judge"
VERDICTS = (HOLDS, HOLDS_ONLY_WHEN, REFUTED, CANNOT_JUDGE)


@dataclass(frozen=True, slots=True)
class Scale:
    """How big the studies run: ``quick`` (CI: a few points, tens of requests) or ``full``."""

    name: str = "full"

    def __post_init__(self) -> None:
        if self.name not in ("quick", "full"):
            raise ValueError(f"scale: unknown '{self.name}'; allowed: quick, full")

    @property
    def quick(self) -> bool:
        return self.name == "quick"

    def pick(self, full: Any, quick: Any) -> Any:
        """The full-size value, or the reduced one in quick mode."""
        return quick if self.quick else full


def as_scale(scale: Scale | str) -> Scale:
    return scale if isinstance(scale, Scale) else Scale(scale)


@dataclass(slots=True)
class Condition:
    """One tested condition: what was varied, the measured number, and whether it passes.

    ``passed`` is None when the simulator cannot judge this condition (then ``why`` says so).
    """

    label: str
    value: float
    unit: str
    passed: bool | None
    why: str = ""

    def shown(self) -> str:
        return f"{fmt(self.value)} {self.unit}".strip()


@dataclass
class ClaimResult:
    """A claim, how it was tested, what was measured and the verdict computed from it."""

    number: int
    title: str
    claim: str
    rule: str  # the stated bar each condition is judged against
    setup: str  # what was simulated (models, GPUs, workloads), in a sentence or three
    conditions: list[Condition]
    headline: Condition  # the measured number the verdict table shows
    table: pd.DataFrame  # every measured point
    figure: Any = None  # a plotly Figure
    notes: list[str] = field(default_factory=list)  # caveats; what the simulator cannot judge
    seconds: float = 0.0  # wall time of the study
    verdict: str = ""
    verdict_detail: str = ""

    def __post_init__(self) -> None:
        self.verdict, self.verdict_detail = judge(self.conditions)


def judge(conditions: list[Condition]) -> tuple[str, str]:
    """The verdict of a claim from its conditions' pass/fail (module docstring)."""
    judged = [c for c in conditions if c.passed is not None]
    if not judged:
        return CANNOT_JUDGE, "no tested condition could be judged by the simulator"
    passed = [c.label for c in judged if c.passed]
    failed = [c.label for c in judged if not c.passed]
    if not failed:
        return HOLDS, f"all {len(judged)} tested conditions pass"
    if not passed:
        return REFUTED, f"none of {len(judged)} tested conditions passes"
    return HOLDS_ONLY_WHEN, f"passes: {'; '.join(passed)}. fails: {'; '.join(failed)}"


def fmt(value: float) -> str:
    """A number for a report: 3 significant digits, thousands separated, nan as n/a."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01:
        return f"{value:.2f}"
    return f"{value:.2g}"
