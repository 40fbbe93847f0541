"""Operator microbenchmarks on a real GPU, to check the roofline's per-operator physics.

Run on the device: ``python benchmarks/hw_microbench.py --out DIR``. Writes ``microbench.json``
(every timing) and prints a short table. Times are per kernel, GPU side: each measured call is
captured 20 times in a CUDA graph and the replay is timed with CUDA events (median of 5), so
launch overhead is out and the inter-kernel gap of graph replay is in (as the roofline's
``kernel_gap_s`` assumes). Weights rotate over enough copies to defeat the 50 MB L2.

``python benchmarks/hw_fit_microbench.py FILE`` (no torch needed) compares these timings with
the roofline's GEMM/attention/copy rows and fits the efficiencies they imply.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

REPS_IN_GRAPH = 20
M_VALUES = (1, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048, 4096, 8192)
GEMM_SHAPES = {  # Llama-3.1-8B linears: (N, K)
    "qkv": (6144, 4096),
    "o": (4096, 4096),
    "gate_up": (28672, 4096),
    "down": (4096, 14336),
}
L2_BYTES = 64 << 20


def graph_time_s(fn, reps: int = REPS_IN_GRAPH, trials: int = 5) -> float:
    """Per-call GPU time of ``fn`` replayed ``reps`` times inside one CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(0)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(reps):
            fn(i)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(trials):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / reps)
    return statistics.median(times)


def bench_gemm(dtype: str) -> list[dict]:
    rows = []
    dev = "cuda"
    for name, (n, k) in GEMM_SHAPES.items():
        copies = max(2, -(-2 * L2_BYTES // (n * k * 2)))
        one = torch.ones((), device=dev)
        if dtype == "bf16":
            ws = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
        else:
            ws = [torch.randn(n, k, device=dev).to(torch.float8_e4m3fn) for _ in range(copies)]
        for m in M_VALUES:
            if dtype == "bf16":
                x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)

                def fn(i, x=x, ws=ws, copies=copies):
                    return x @ ws[i % copies].t()
            else:
                mm = max(16, -(-m // 16) * 16)  # fp8 GEMM needs M a multiple of 16
                x = torch.randn(mm, k, device=dev).to(torch.float8_e4m3fn)

                def fn(i, x=x, ws=ws, copies=copies, one=one):
                    return torch._scaled_mm(
                        x, ws[i % copies].t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16
                    )

            try:
                t = graph_time_s(fn)
            except Exception as exc:  # report and go on: one shape must not sink the run
                rows.append({"op": f"gemm_{dtype}", "shape": name, "m": m, "error": str(exc)[:200]})
                continue
            rows.append(
                {
                    "op": f"gemm_{dtype}",
                    "shape": name,
                    "m": m,
                    "n": n,
                    "k": k,
                    "time_s": t,
                    "tflops": 2 * m * n * k / t / 1e12,
                }
            )
    return rows


def bench_attention() -> list[dict]:
    """PyTorch SDPA (flash backend), Llama-8B heads: 32 query, 8 KV, head_dim 128."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rows = []
    dev, dt = "cuda", torch.bfloat16
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        for n in (256, 512, 1024, 2048, 4096, 8192, 16384):
            q = torch.randn(1, 32, n, 128, device=dev, dtype=dt)
            k = torch.randn(1, 8, n, 128, device=dev, dtype=dt)
            v = torch.randn(1, 8, n, 128, device=dev, dtype=dt)

            def fn(i, q=q, k=k, v=v):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

            try:
                t = graph_time_s(fn, reps=5)
                rows.append({"op": "attn_prefill", "new": n, "ctx": 0, "batch": 1, "time_s": t})
            except Exception as exc:
                rows.append({"op": "attn_prefill", "new": n, "error": str(exc)[:200]})
        for batch in (1, 8, 32, 128):
            for ctx in (512, 2048, 8192):
                if batch * ctx > 128 * 8192:
                    continue
                q = torch.randn(batch, 32, 1, 128, device=dev, dtype=dt)
                k = torch.randn(batch, 8, ctx, 128, device=dev, dtype=dt)
                v = torch.randn(batch, 8, ctx, 128, device=dev, dtype=dt)

                def fn(i, q=q, k=k, v=v):
                    return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

                try:
                    t = graph_time_s(fn, reps=10)
                    rows.append(
                        {"op": "attn_decode", "new": 1, "ctx": ctx, "batch": batch, "time_s": t}
                    )
                except Exception as exc:
                    rows.append(
                        {"op": "attn_decode", "ctx": ctx, "batch": batch, "error": str(exc)[:200]}
                    )
    return rows


def bench_memory_and_launch() -> list[dict]:
    rows = []
    for mb in (1, 8, 64, 512, 2048):
        n = mb * (1 << 20) // 2
        srcs = [torch.randn(n, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
        dst = torch.empty_like(srcs[0])
        t = graph_time_s(lambda i, d=dst, s=srcs: d.copy_(s[i % 2]), reps=10)
        rows.append({"op": "copy", "bytes": 2 * n * 2, "time_s": t, "gbps": 2 * n * 2 / t / 1e9})
    tiny = torch.zeros(1, device="cuda")
    t = graph_time_s(lambda i: tiny.add_(1), reps=200)
    rows.append({"op": "tiny_kernel_graph", "time_s": t})
    for _ in range(50):
        tiny.add_(1)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(2000):
        tiny.add_(1)
    torch.cuda.synchronize()
    rows.append({"op": "tiny_kernel_eager", "time_s": (time.perf_counter() - start) / 2000})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    torch.manual_seed(0)
    info = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    rows = []
    for part in (
        bench_memory_and_launch,
        lambda: bench_gemm("bf16"),
        lambda: bench_gemm("fp8"),
        bench_attention,
    ):
        t0 = time.perf_counter()
        rows += part()
        print(f"part done in {time.perf_counter() - t0:.1f} s", flush=True)
    out = Path(args.out) / "microbench.json"
    out.write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    for r in rows:
        if "error" in r:
            print("ERROR", r)
        elif r["op"].startswith("gemm") and r["shape"] == "gate_up":
            print(
                f"{r['op']:10s} {r['shape']:8s} M={r['m']:5d} {r['time_s'] * 1e6:9.1f} us "
                f"{r['tflops']:7.1f} TFLOP/s"
            )
        elif not r["op"].startswith("gemm"):
            print(r)


if __name__ == "__main__":
    main()
