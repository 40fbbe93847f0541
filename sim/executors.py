"""The simulated executor: a batch's duration from the roofline hardware model."""

from __future__ import annotations

from sim.core import Batch, HardwareModel, StepResult


class RooflineExecutor:
    """Runs a batch on a hardware model: no tokens are computed, only time passes."""

    def __init__(self, hardware: HardwareModel):
        self.hardware = hardware

    def run(self, batch: Batch) -> StepResult:
        return StepResult(self.hardware.step_time_s(batch.seqs()))
