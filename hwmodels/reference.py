"""Uncalibrated predictions next to published measurements: ``python -m hwmodels.reference``.

Each case replays the measured benchmark's steps through the roofline (default parameters, no
profile) and prints predicted vs published per-token (or per-run) time. docs/hardware-model.md
quotes this output; the sources are listed there and in ``source`` below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hwmodels.roofline import RooflineModel


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    gpu: str
    model: str
    measured_ms: float
    unit: str
    source: str
    predict: Callable[[RooflineModel], float]  # seconds


def _decode_run(prompt: int, output: int, batch: int = 1) -> Callable[[RooflineModel], float]:
    """Mean per-token decode time over ``output`` steps after a ``prompt``-token prefill."""

    def run(hw: RooflineModel) -> float:
        steps = [hw.step_time_s([(1, prompt + i)] * batch) for i in range(output - 1)]
        return sum(steps) / len(steps)

    return run


def _latency_run(prompt: int, output: int, batch: int) -> Callable[[RooflineModel], float]:
    """Whole-request latency: one batched prefill, then ``output - 1`` decode steps."""

    def run(hw: RooflineModel) -> float:
        first = hw.step_time_s([(prompt, 0)] * batch)
        return first + sum(hw.step_time_s([(1, prompt + i)] * batch) for i in range(output - 1))

    return run


CASES = [
    Case(
        "Llama-3.1-8B bf16, 1 request, 1024 in / 128 out (TPOT)",
        "a100-40gb",
        "llama-3.1-8b",
        1000 / 75,
        "ms/token",
        "johnmusgrave.com/p/vllm-throughput-latency-sweep-on (vLLM 0.23, ~75 tok/s at C=1)",
        _decode_run(1024, 128),
    ),
    Case(
        "Llama-3.1-8B bf16, batch 8, 32 in / 128 out (latency)",
        "h200",
        "llama-3.1-8b",
        833.4,
        "ms/run",
        "buildkite.com/vllm/performance-benchmark/builds/9515 (latency_llama8B_tp1, H200)",
        _latency_run(32, 128, 8),
    ),
    Case(
        "Llama-3.1-8B bf16, 1 request, 1024 in / 128 out (TPOT)",
        "h100",
        "llama-3.1-8b",
        6.5,
        "ms/token",
        "the usual H100 bf16 figure (issue #3: ~6-7 ms/token)",
        _decode_run(1024, 128),
    ),
]


def main() -> None:
    print(f"{'case':58s} {'gpu':10s} {'published':>10s} {'predicted':>10s} {'error':>7s}")
    for case in CASES:
        hw = RooflineModel(case.gpu, case.model)
        predicted = case.predict(hw) * 1e3
        error = 100 * (predicted / case.measured_ms - 1)
        print(
            f"{case.name:58s} {case.gpu:10s} {case.measured_ms:10.2f} {predicted:10.2f} "
            f"{error:+6.1f}%  {case.unit}"
        )
    for case in CASES:
        print(f"  source ({case.gpu}): {case.source}")


if __name__ == "__main__":
    main()
