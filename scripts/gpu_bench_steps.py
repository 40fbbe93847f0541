"""Step speed of the compiled, captured executor on the device, against its floors (issue #22).

One device call: the self-check, then Llama-3.1-8B (random weights, bf16) served through
``GpuExecutor.run`` with the decoder pieces compiled and every step kind captured, and the
same shapes with plain eager pieces and no graphs (the old path's cost on this card). Per
shape: wall, host and GPU time (medians). Floors: weight bytes over the measured copy
bandwidth for decode; for a prefill, its GEMMs alone (the same cuBLAS calls, replayed from a
graph) and its FLOPs at the measured 8192^3 matrix rate. Then the Triton paged-attention kernel
alone on decode shapes that ``shared/data/kernels/decode_attention.csv`` has FA-3 rows for.

Usage (device): PYTHONPATH=. python3 scripts/gpu_bench_steps.py --out $OUT/bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, "scripts")

from policies.kv_paged import PagedAllocator  # noqa: E402
from realexec.arch import load_arch  # noqa: E402
from realexec.attention import build_metadata  # noqa: E402
from realexec.calibrate import Shape, _batch_for, copy_bandwidth_gbps  # noqa: E402
from realexec.executor import GpuExecutor  # noqa: E402
from realexec.model import Decoder  # noqa: E402

SHAPES = [
    Shape("decode", ((1, 128),)), Shape("decode", ((1, 1024),)), Shape("decode", ((1, 4096),)),
    Shape("decode", ((1, 1024),) * 8), Shape("decode", ((1, 1024),) * 64),
    Shape("decode", ((1, 1024),) * 128),
    Shape("prefill", ((128, 0),)), Shape("prefill", ((512, 0),)), Shape("prefill", ((2048, 0),)),
    Shape("prefill", ((8192, 0),)), Shape("prefill_cached", ((512, 1024),)),
    Shape("prefill_batch", ((512, 0),) * 4),
    Shape("mixed", ((512, 0),) + ((1, 1024),) * 64),
    Shape("mixed", ((256, 0),) + ((1, 1024),) * 16),
    Shape("verify", ((4, 1024),) * 8, draft_tokens=3),
    Shape("verify", ((4, 1024),) * 64, draft_tokens=3),
]


def time_shape(ex: GpuExecutor, shape: Shape, first_id: int, warmup: int, reps: int) -> dict:
    batch = _batch_for(shape, ex.allocator, first_id)
    for _ in range(warmup):
        ex.run(batch)
    start = len(ex.timings)
    for _ in range(reps):
        ex.run(batch)
    rows = ex.timings[start:]
    for r in batch.requests:
        ex.allocator.free(r)
    ex._outputs.clear()
    med = statistics.median
    return {"kind": shape.kind, "num_seqs": len(shape.seqs), "tokens": shape.tokens,
            "max_context": max(c for _, c in shape.seqs), "path": rows[-1].path,
            "wall_ms": 1e3 * med(r.wall_s for r in rows),
            "host_ms": 1e3 * med(r.host_s for r in rows),
            "gpu_ms": 1e3 * med(r.gpu_s for r in rows), "reps": reps}


def graph_time_ms(fn, reps: int = 20) -> float:
    """Median time of ``fn``'s kernels replayed from a CUDA graph (events)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    times = []
    for _ in range(reps + 3):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times[3:])


def matmul_tflops(dev) -> float:
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    ms = graph_time_ms(lambda: a @ b, reps=10)
    return 2 * 8192**3 / (ms / 1e3) / 1e12


def prefill_gemm_floor(model: Decoder, tokens: int, tflops: float) -> dict:
    """The GEMMs of a ``tokens``-token prefill alone (cuBLAS, from a graph), and its FLOPs
    at the measured peak matrix rate."""
    d = model.arch.hidden_size
    x = torch.randn(tokens, d, device=model.device, dtype=model.dtype)
    q_out = model.heads * model.arch.head_dim
    o_in = torch.randn(tokens, q_out, device=model.device, dtype=model.dtype)
    inter = torch.randn(tokens, model.layers[0].w_down.shape[1], device=model.device,
                        dtype=model.dtype)

    def gemms():
        for layer in model.layers:
            F.linear(x, layer.w_qkv)
            F.linear(o_in, layer.w_o)
            F.linear(x, layer.w_gate_up)
            F.linear(inter, layer.w_down)
        F.linear(x[-1:], model.lm_head)

    flops = 2 * tokens * (model.weight_bytes / 2 - model.lm_head.numel()) \
        + 2 * model.lm_head.numel()
    return {"tokens": tokens, "gemm_ms": graph_time_ms(gemms), "flops": flops,
            "peak_ms": flops / (tflops * 1e12) * 1e3}


def attention_kernels(dev, splits_for) -> list[dict]:
    """The Triton kernel alone on Llama-3.1-8B decode shapes (32 q heads, 8 KV heads, 128)."""
    from realexec.kvcache import PagedKVPool
    from realexec.triton_attention import triton_attention

    rows = []
    for batch, kv_len in ((1, 128), (1, 1024), (1, 4096), (1, 8192), (8, 1024), (8, 4096),
                          (64, 1024), (64, 4096), (128, 1024), (128, 4096), (256, 1024)):
        per = -(-kv_len // 16)
        pool = PagedKVPool(num_layers=1, num_blocks=batch * per, block_size=16,
                           num_kv_heads=8, head_dim=128, dtype=torch.bfloat16, device=dev)
        pool.k.normal_()
        pool.v.normal_()
        perm = torch.randperm(batch * per).tolist()
        tables = [perm[i * per:(i + 1) * per] for i in range(batch)]
        meta = build_metadata([1] * batch, [kv_len - 1] * batch, tables, block_size=16,
                              scratch_block=pool.scratch_block, device=dev)
        meta.num_splits = splits_for(batch)
        q = torch.randn(batch, 32, 128, device=dev, dtype=torch.bfloat16)
        k, v = pool.layer(0)
        triton_attention(q, k, v, meta)  # builds the work list once (kept in meta.cache)
        ms = graph_time_ms(lambda q=q, k=k, v=v, meta=meta: triton_attention(q, k, v, meta),
                           reps=50)
        kv_bytes = 2 * batch * kv_len * 8 * 128 * 2
        rows.append({"batch": batch, "kv_len": kv_len, "splits": meta.num_splits,
                     "triton_ms": ms, "kv_gbps": kv_bytes / (ms / 1e3) / 1e9})
        del pool
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--skip-eager", action="store_true")
    ap.add_argument("--skip-attention", action="store_true")
    args = ap.parse_args()
    from gpu_selfcheck import main as selfcheck

    t0 = time.perf_counter()
    status = selfcheck()
    result: dict = {"selfcheck_status": status, "selfcheck_s": time.perf_counter() - t0,
                    "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(f"selfcheck exit status {status} ({result['selfcheck_s']:.0f} s)", flush=True)
    dev = torch.device("cuda")
    t0 = time.perf_counter()
    model = Decoder(load_arch("llama-3.1-8b"), dtype=torch.bfloat16, device=dev,
                    max_position=8256)
    alloc = PagedAllocator(12000, 16)
    t1 = time.perf_counter()
    ex = GpuExecutor(model, alloc, accept=lambda r, k: 0, max_num_seqs=128,
                     max_model_len=8192)
    result["build_s"] = t1 - t0
    result["compile_capture_s"] = time.perf_counter() - t1
    print(f"backend {ex.backend}; compile + capture {result['compile_capture_s']:.0f} s",
          flush=True)
    fast, eager = [], []
    result["fast"] = fast

    def save() -> None:  # after each stage: a run cut short still returns what it measured
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)

    for i, shape in enumerate(SHAPES):
        fast.append(time_shape(ex, shape, 10_000 * i, warmup=3, reps=args.reps))
        r = fast[-1]
        print(f"{r['kind']:15s} x{r['num_seqs']:<4d} {r['tokens']:5d} tok {r['path']:13s} wall "
              f"{r['wall_ms']:.2f} host {r['host_ms']:.2f} gpu {r['gpu_ms']:.2f} ms", flush=True)
    save()
    gbps = copy_bandwidth_gbps(dev)
    tflops = matmul_tflops(dev)
    floor_ms = 1e3 * model.weight_bytes / (gbps * 1e9)
    result.update(copy_gbps=gbps, matmul_tflops=tflops, weight_bytes=model.weight_bytes,
                  decode_floor_ms=floor_ms)
    result["prefill_floors"] = [prefill_gemm_floor(model, n, tflops) for n in (512, 2048)]
    print(f"floors: decode {floor_ms:.2f} ms, {result['prefill_floors']}", flush=True)
    save()
    result["attention"] = [] if args.skip_attention else attention_kernels(dev, ex.splits_for)
    save()
    if not args.skip_eager:
        saved = ex.graphs, ex.token_graphs
        ex.graphs = ex.token_graphs = None
        model.compile(False)
        for i, shape in enumerate(SHAPES):
            eager.append(time_shape(ex, shape, 10_000 * i, warmup=2, reps=5))
        ex.graphs, ex.token_graphs = saved
        model.compile(True)
    result["eager"] = eager
    save()
    print(f"\ncopy {gbps:.0f} GB/s, matmul {tflops:.0f} TFLOP/s, weights "
          f"{model.weight_bytes / 1e9:.2f} GB, decode floor {floor_ms:.2f} ms")
    for fl in result["prefill_floors"]:
        print(f"prefill {fl['tokens']}: GEMMs alone {fl['gemm_ms']:.2f} ms, at peak "
              f"{fl['peak_ms']:.2f} ms")
    print(f"{'kind':15s}{'seqs':>5s}{'tok':>6s}{'ctx':>6s} {'path':13s}{'wall':>8s}{'host':>8s}"
          f"{'gpu':>8s}{'host/gpu':>9s}{'eager':>8s}")
    for i, r in enumerate(fast):
        e = eager[i]["wall_ms"] if eager else float("nan")
        print(f"{r['kind']:15s}{r['num_seqs']:5d}{r['tokens']:6d}{r['max_context']:6d} "
              f"{r['path']:13s}{r['wall_ms']:8.2f}{r['host_ms']:8.2f}{r['gpu_ms']:8.2f}"
              f"{r['host_ms'] / r['gpu_ms']:9.1%}{e:8.2f}")
    for a in result["attention"]:
        print(f"attn b{a['batch']:<4d} kv {a['kv_len']:5d} splits {a['splits']:2d}: "
              f"{1e3 * a['triton_ms']:8.1f} us {a['kv_gbps']:6.0f} GB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
