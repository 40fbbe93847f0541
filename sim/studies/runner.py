"""Runs the claim studies: one by number, or all of them (optionally in parallel processes).

Each study is a module with ``run(scale) -> ClaimResult``; the claim number maps to it here, a
plain dict, so adding a claim is one line.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed

from sim.studies.base import ClaimResult, Scale, as_scale

CLAIM_MODULES: dict[int, str] = {
    1: "sim.studies.roofline_phases",
    2: "sim.studies.batching",
    3: "sim.studies.chunked_prefill",
    4: "sim.studies.prefix_caching",
    5: "sim.studies.paged_attention",
    6: "sim.studies.kv_heads",
    7: "sim.studies.kv_quant",
    8: "sim.studies.weight_quant",
    9: "sim.studies.speculative",
    10: "sim.studies.worked_example",
    11: "sim.studies.serving_cost",
}


def run_claim(number: int, scale: Scale | str = "full") -> ClaimResult:
    """Test one claim (1-11) at ``scale`` (``"quick"`` or ``"full"``) and return its result."""
    if number not in CLAIM_MODULES:
        raise ValueError(f"claim: unknown claim {number}; allowed: 1-{max(CLAIM_MODULES)}")
    module = importlib.import_module(CLAIM_MODULES[number])
    start = time.perf_counter()
    result = module.run(as_scale(scale))
    result.seconds = time.perf_counter() - start
    return result


def preload(numbers: Iterable[int]) -> None:
    """Import every module the studies use before any runs, so that one run (and the worker
    processes it forks) sees one snapshot of the code even if files change meanwhile."""
    for name in ("sim.api", "sim.build", "sim.capacity", "hwmodels", "hwmodels.precision",
                 "sim.studies.report", *(CLAIM_MODULES[n] for n in numbers)):
        importlib.import_module(name)


def run_all(scale: Scale | str = "full", claims: Iterable[int] | None = None, jobs: int = 1,
            progress: Callable[[ClaimResult], None] | None = None) -> list[ClaimResult]:
    """Test several claims (default: all); ``jobs`` > 1 runs them in that many processes.

    Results come back in claim order whatever order they finish in.
    """
    numbers = sorted(set(claims)) if claims is not None else sorted(CLAIM_MODULES)
    for n in numbers:
        if n not in CLAIM_MODULES:
            raise ValueError(f"claim: unknown claim {n}; allowed: 1-{max(CLAIM_MODULES)}")
    scale = as_scale(scale)
    preload(numbers)
    results: dict[int, ClaimResult] = {}
    if jobs <= 1:
        for n in numbers:
            results[n] = run_claim(n, scale)
            if progress:
                progress(results[n])
    else:
        # the slowest claims first, so that the pool's last worker is not left with one
        order = sorted(numbers, key=lambda n: n not in (2, 11, 5, 7, 10))
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_claim, n, scale): n for n in order}
            for future in as_completed(futures):
                result = future.result()
                results[result.number] = result
                if progress:
                    progress(result)
    return [results[n] for n in numbers]
