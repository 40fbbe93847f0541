"""Uncalibrated predictions next to published measurements: ``python -m hwmodels.reference``.

Each case replays the measured benchmark's steps through the roofline (default parameters, no
profile) and prints predicted vs published per-token (or per-run) time. docs/hardware-model.md
quotes this output; the sources are listed there and in ``source`` below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hwmodels.roofline import RooflineModel

NIM = (
    "docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance (NIM 1.8.0, Llama-3.3-70b-instruct, "
    "2 x H100 80G, fp8 TP2, concurrency 1; Llama-3.3-70B has Llama-3.1-70B's shape)"
)


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    gpu: str
    model: str
    measured_ms: float
    unit: str
    source: str
    predict: Callable[[RooflineModel], float]  # seconds
    tp: int = 1
    weight_dtype: str = "bf16"


def _decode_run(prompt: int, output: int, batch: int = 1) -> Callable[[RooflineModel], float]:
    """Mean per-token decode time over ``output`` steps after a ``prompt``-token prefill."""

    def run(hw: RooflineModel) -> float:
        steps = [hw.step_time_s([(1, prompt + i)] * batch) for i in range(output - 1)]
        return sum(steps) / len(steps)

    return run


def _prefill(prompt: int) -> Callable[[RooflineModel], float]:
    """One prompt's prefill step (a time to first token without the server's own overhead)."""
    return lambda hw: hw.step_time_s([(prompt, 0)])


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
    Case(
        "Llama-3.3-70B fp8 TP2, 1 request, 5000 in / 500 out (ITL)",
        "h100",
        "llama-3.1-70b",
        18.58,
        "ms/token",
        NIM,
        _decode_run(5000, 500),
        tp=2,
        weight_dtype="fp8",
    ),
    Case(
        "Llama-3.3-70B fp8 TP2, 1 request, 500 in / 2000 out (ITL)",
        "h100",
        "llama-3.1-70b",
        18.91,
        "ms/token",
        NIM,
        _decode_run(500, 2000),
        tp=2,
        weight_dtype="fp8",
    ),
    Case(
        "Llama-3.3-70B fp8 TP2, 1 request, 5000 in (TTFT, incl. server)",
        "h100",
        "llama-3.1-70b",
        406.77,
        "ms",
        NIM,
        _prefill(5000),
        tp=2,
        weight_dtype="fp8",
    ),
]


def main() -> None:
    print(f"{'case':64s} {'gpu':10s} {'published':>10s} {'predicted':>10s} {'error':>7s}")
    for case in CASES:
        hw = RooflineModel(case.gpu, case.model, tp=case.tp, weight_dtype=case.weight_dtype)
        predicted = case.predict(hw) * 1e3
        error = 100 * (predicted / case.measured_ms - 1)
        print(
            f"{case.name:64s} {case.gpu:10s} {case.measured_ms:10.2f} {predicted:10.2f} "
            f"{error:+6.1f}%  {case.unit}"
        )
    for source in dict.fromkeys(case.source for case in CASES):
        print(f"  source: {source}")


if __name__ == "__main__":
    main()
