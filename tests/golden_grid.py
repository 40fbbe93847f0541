"""A grid of small configurations whose summaries are recorded (``tests/golden_summaries.json``)
and must not change unless a change means to change them (issue #23 acceptance 4).

Why: a refactor of the engine (one core, policies written once, the fast paths behind one seam)
must leave every configuration's results unchanged bit for bit; the differential tests compare
the fast paths with the general engine, not the engine with what it gave before. This grid
covers each scheduler, allocator, preemption and admission mode, queue order, speculative
method, arrival process, several replicas with a router, disaggregated pools, tensor
parallelism, FP8 KV, an MLA and an MoE model, and the engine presets; each runs in well under a
second.

Record (only when a change is meant to move results; say which and why in the commit):
``python -m tests.golden_grid --record``.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path
from typing import Any

GOLDEN_FILE = Path(__file__).with_name("golden_summaries.json")

BASE: dict[str, Any] = {
    "seed": 7,
    "hardware": {"gpu": "h100"},
    "model": {"name": "llama-3.1-8b"},
    "workload": {"arrival": "poisson", "rate": 30.0, "num_requests": 40,
                 "prompt_tokens": {"dist": "lognormal", "mean": 600, "sigma": 0.8, "min": 8,
                                   "max": 4096},
                 "output_tokens": {"dist": "lognormal", "mean": 60, "sigma": 0.7, "min": 1,
                                   "max": 400}},
}
TIGHT = {"hardware.gpu_memory_utilization": 0.225, "workload.rate": 200.0,  # little KV
         "workload.prompt_tokens": {"dist": "lognormal", "mean": 1500, "sigma": 0.5, "min": 256,
                                    "max": 4000},
         "workload.output_tokens": {"dist": "lognormal", "mean": 300, "sigma": 0.5, "min": 16,
                                    "max": 1000}}

CASES: dict[str, dict[str, Any]] = {
    "continuous-paged": {"scheduler.policy": "continuous"},
    "chunked-paged": {"scheduler.policy": "chunked_prefill",
                      "scheduler.max_num_batched_tokens": 512},
    "chunked-chunk-size": {"scheduler.policy": "chunked_prefill", "scheduler.chunk_size": 256},
    "static": {"scheduler.policy": "static", "scheduler.max_num_seqs": 8},
    "contiguous": {"kv_cache.allocator": "contiguous"},
    "radix-sessions": {"scheduler.policy": "chunked_prefill", "kv_cache.allocator": "radix",
                       "workload.arrival": "sessions", "workload.num_requests": None,
                       "workload.num_sessions": 8},
    "hashed-prefix-sessions": {"kv_cache.enable_prefix_caching": True,
                               "workload.arrival": "sessions", "workload.num_requests": None,
                               "workload.num_sessions": 8},
    "recompute-pressure": {**TIGHT},
    "swap-pressure": {**TIGHT, "scheduler.preemption": "swap"},
    "no-evict-pressure": {**TIGHT, "scheduler.admission": "no_evict"},
    "priority": {"scheduler.order": "priority", "workload.rate": 80.0},
    "max-waiting": {"scheduler.max_waiting": 4, "scheduler.max_num_seqs": 4,
                    "workload.rate": 200.0},
    "gamma-bursty": {"workload.arrival": "gamma", "workload.cv": 3.0},
    "closed-loop-client": {"workload.arrival": "closed", "workload.concurrency": 6,
                           "workload.client.warmup_requests": 6},
    "spec-ngram": {"speculative": {"method": "ngram", "num_draft_tokens": 3}},
    "spec-eagle": {"speculative": {"method": "eagle", "num_draft_tokens": 4}},
    "replicas-prefix-router": {"hardware.num_gpus": 4, "kv_cache.allocator": "radix",
                               "cluster.router": "prefix_aware",
                               "workload.arrival": "sessions", "workload.num_requests": None,
                               "workload.num_sessions": 8},
    "disaggregated": {"model.name": "llama-3.1-70b", "scheduler.policy": "continuous",
                      "cluster": {"router": "least_outstanding", "decode_router": "least_kv",
                                  "pools": [{"role": "prefill", "num_gpus": 4, "tp": 2},
                                            {"role": "decode", "num_gpus": 4, "tp": 4}]}},
    "tp2-fp8": {"hardware.tp": 2, "hardware.num_gpus": 2, "model.weight_dtype": "fp8",
                "model.kv_dtype": "fp8"},
    "a100": {"hardware.gpu": "a100"},
    "mla-deepseek-h200": {"hardware.gpu": "h200", "hardware.tp": 8, "hardware.num_gpus": 8,
                          "model.name": "deepseek-v3", "model.weight_dtype": "fp8"},
    "moe-qwen3-30b": {"model.name": "qwen3-30b-a3b"},
    "preset-vllm": {"engine.preset": "vllm"},
    "preset-sglang": {"engine.preset": "sglang"},
    "preset-trtllm": {"engine.preset": "trtllm"},
    "slo-goodput": {"slo": {"ttft_ms": 200, "tpot_ms": 20}},
}


def config_of(overrides: dict[str, Any]) -> dict[str, Any]:
    """BASE with dotted-key overrides (a value of None removes nothing: it sets null)."""
    config = copy.deepcopy(BASE)
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = copy.deepcopy(value)
    return config


def summary_of(name: str) -> dict[str, Any]:
    """The case's summary, numbers as ``repr`` strings (exact, NaN-safe, JSON-safe)."""
    import sim

    summary = sim.simulate(config_of(CASES[name])).summary
    return {k: _exact(v) for k, v in sorted(summary.items())}


def _exact(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    return repr(value)


def record() -> None:
    golden = {name: summary_of(name) for name in CASES}
    GOLDEN_FILE.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(golden)} summaries in {GOLDEN_FILE}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python -m tests.golden_grid --record")
    record()
