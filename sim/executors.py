"""The simulated executor: a batch's duration from the roofline hardware model."""

from __future__ import annotations

from core import Batch, HardwareModel, StepResult
from policies.fastpath import ANY, records_options


class RooflineExecutor:
    """Runs a batch on a hardware model: no tokens are computed, only time passes."""

    FAST_PATH = {"hardware": ANY}  # sim/lane.py prices steps with the roofline's own terms

    @records_options
    def __init__(self, hardware: HardwareModel):
        self.hardware = hardware

    def run(self, batch: Batch) -> StepResult:
        return StepResult(self.hardware.step_time_s(batch.seqs()))
