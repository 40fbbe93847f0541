"""Static versus continuous batching on a workload with widely varying output lengths.

Static batching holds a batch until its longest request finishes; continuous batching refills
the batch every iteration. Both see exactly the same requests (same seed).

Run: python examples/static_vs_continuous.py [--requests N]
"""

from __future__ import annotations

import argparse

from sim import simulate

SCENARIO = {
    "hardware": {"gpu": "h100"},
    "model": {"name": "llama-3.1-8b"},
    "workload": {
        "arrival": "poisson",
        "rate": 20.0,  # requests/s: more than static batching can serve on one H100
        "prompt_tokens": {"dist": "uniform", "low": 128, "high": 1024},
        # outputs from a few tokens to 2,000: the case static batching handles worst
        "output_tokens": {"dist": "lognormal", "mean": 300, "sigma": 1.2, "min": 4, "max": 2000},
    },
    "scheduler": {"max_num_seqs": 64},
}


def compare(num_requests: int = 1000) -> dict[str, dict]:
    """Simulate both policies on the same requests; return their summaries."""
    out = {}
    for policy in ("static", "continuous"):
        cfg = {**SCENARIO, "workload": {**SCENARIO["workload"], "num_requests": num_requests},
               "scheduler": {**SCENARIO["scheduler"], "policy": policy}}
        out[policy] = simulate(cfg).summary
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    results = compare(args.requests)
    print(f"{'policy':<12}{'req/s':>8}{'out tok/s':>11}{'mean TTFT ms':>14}{'p99 E2E s':>11}")
    for policy, s in results.items():
        print(f"{policy:<12}{s['request_throughput']:>8.2f}{s['output_throughput']:>11.0f}"
              f"{s['mean_ttft_ms']:>14.0f}{s['p99_e2el_ms'] / 1e3:>11.1f}")
    ratio = results["continuous"]["output_throughput"] / results["static"]["output_throughput"]
    print(f"continuous / static output throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
