"""Calibration: time designed step shapes on the device and fit the roofline to them.

The shapes span what a serving engine runs: prefills of many lengths (fresh and on a cached
prefix), decode batches across batch size x context, mixed steps (a prompt chunk with decodes,
as chunked prefill makes them) and speculative verify widths. Each is run as a real step
through ``GpuExecutor.run`` (so the time includes host input building and sampling, as in
serving), warmed up, then repeated; the median is kept. The table goes to
``hwmodels.calibrate`` and the fitted profile is written as JSON.

None of these shapes is a validation workload: validation (``realexec/validate.py``) replays
whole workloads through the scheduler, whose steps the fit never saw.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd
import torch

from core import Batch, Request
from policies.kv_paged import PagedAllocator
from realexec.executor import GpuExecutor

Seqs = list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Shape:
    """One designed step: its kind (for the report) and sequences ``(new, context)``."""

    kind: str
    seqs: tuple[tuple[int, int], ...]
    draft_tokens: int = 0  # per sequence, for verify steps

    @property
    def tokens(self) -> int:
        return sum(n for n, _ in self.seqs)


@dataclass(frozen=True, slots=True)
class Grid:
    """The axes of the designed shapes."""

    prefill: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256)
    contexts: tuple[int, ...] = (128, 512, 1024, 2048, 4096, 8192)
    cached_prompts: tuple[int, ...] = (128, 512, 2048)
    chunks: tuple[int, ...] = (256, 512, 1024)
    mixed_batches: tuple[int, ...] = (4, 16, 64, 128)
    verify_batches: tuple[int, ...] = (1, 8, 32, 64, 128)
    drafts: tuple[int, ...] = (1, 3, 5)
    mid_context: int = 1024
    spread_batches: tuple[int, ...] = (16, 32, 48, 64, 96, 128)
    max_decode_kv_tokens: int = 256 * 2048  # decode shapes up to this many cached tokens


SMALL_GRID = Grid(prefill=(64, 256, 1024, 4096, 8192), batches=(1, 4, 16, 64, 128, 256),
                  contexts=(128, 1024, 4096), cached_prompts=(128, 1024), chunks=(512,),
                  mixed_batches=(16, 64, 128), verify_batches=(8, 64), drafts=(3,))
QUICK_GRID = Grid(prefill=(32, 128), batches=(1, 4), contexts=(16, 64), cached_prompts=(32,),
                  chunks=(32,), mixed_batches=(2,), verify_batches=(1, 4), drafts=(1, 3),
                  mid_context=64, spread_batches=(4,))


def design_shapes(grid: Grid = Grid(), *, max_batch: int = 256, max_tokens: int = 8192,
                  max_context: int = 8192) -> list[Shape]:
    """The designed shapes, trimmed to the engine's limits (batch, token budget, context)."""
    g = grid
    shapes = [Shape("prefill", ((n, 0),)) for n in g.prefill]
    shapes += [Shape("prefill_cached", ((n, c),)) for n in g.cached_prompts
               for c in g.contexts[1::2]]
    shapes += [Shape("prefill_batch", ((n, 0),) * b) for n in g.cached_prompts for b in (2, 4, 8)]
    shapes += [Shape("decode", ((1, c),) * b) for b in g.batches for c in g.contexts
               if b * c <= g.max_decode_kv_tokens]
    shapes += [Shape("decode_spread", spread_contexts(b, g.mid_context))
               for b in g.spread_batches]
    shapes += [Shape("mixed", ((chunk, 0),) + ((1, g.mid_context),) * b)
               for chunk in g.chunks for b in g.mixed_batches]
    shapes += [Shape("verify", ((k + 1, g.mid_context),) * b, draft_tokens=k)
               for k in g.drafts for b in g.verify_batches]
    return [s for s in shapes
            if len(s.seqs) <= max_batch and s.tokens <= max_tokens
            and max(c + n for n, c in s.seqs) <= max_context]


def spread_contexts(batch: int, mid: int) -> Seqs:
    """Decode rows whose contexts spread evenly over ``mid / 16 .. 2 mid`` (mean about
    ``mid``): a served batch mixes requests at every stage of their answers, and its attention
    waits on its longest row, which a batch of equal contexts never shows (decode steps of
    33-64 served rows ran 12-15% slower than the equal-context steps of the same size, H100
    2026-12-07)."""
    lo, hi = max(1, mid // 16), 2 * mid
    return tuple((1, lo + (hi - lo) * i // max(1, batch - 1)) for i in range(batch))


def _batch_for(shape: Shape, allocator: PagedAllocator, first_id: int) -> Batch | None:
    """Requests standing at the shape's progress, with their KV blocks allocated.

    A generating row (decode or verify) has ``c`` tokens cached and feeds back its last output
    token; a prompt row has ``c`` prompt tokens cached (a prefix hit or earlier chunks).
    """
    reqs, drafts = [], []
    for i, (n, c) in enumerate(shape.seqs):
        generating = c > 0 and n == 1 + shape.draft_tokens
        req = Request(first_id + i, 0.0, c if generating else c + n, 1 << 20,
                      num_computed_tokens=c, num_output_tokens=1 if generating else 0)
        if not allocator.allocate(req, c + n):
            for r in reqs:
                allocator.free(r)
            return None
        reqs.append(req)
        drafts.append(shape.draft_tokens if generating else 0)
    return Batch(reqs, [n for n, _ in shape.seqs], [c for _, c in shape.seqs],
                 draft_tokens=drafts)


def measure(executor: GpuExecutor, shapes: Iterable[Shape], *, warmup: int = 2, reps: int = 5,
            log: Callable[[str], None] | None = None) -> list[dict]:
    """Median wall time of each shape, run as a whole step; returns one row per shape."""
    allocator = executor.allocator
    rows, next_id = [], 0
    for shape in shapes:
        batch = _batch_for(shape, allocator, next_id)
        next_id += len(shape.seqs)
        if batch is None:
            if log:
                log(f"skip {shape.kind} {len(shape.seqs)}x: KV pool too small")
            continue
        times = []
        for i in range(warmup + reps):
            seconds = executor.run(batch).seconds
            if i >= warmup:
                times.append(seconds)
        for r in batch.requests:
            allocator.free(r)
        executor._outputs.clear()
        rows.append({"kind": shape.kind, "seqs": json.dumps([list(s) for s in shape.seqs]),
                     "measured_ms": 1e3 * statistics.median(times),
                     "min_ms": 1e3 * min(times), "max_ms": 1e3 * max(times),
                     "num_seqs": len(shape.seqs), "tokens": shape.tokens,
                     "max_context": max(c for _, c in shape.seqs), "reps": reps})
        if log:
            log(f"{shape.kind:15s} seqs={len(shape.seqs):4d} tokens={shape.tokens:5d} "
                f"ctx={rows[-1]['max_context']:5d} {rows[-1]['measured_ms']:9.3f} ms")
    return rows


def steps_table(rows: list[dict], *, gpu: str, model: str, tp: int, arch_hf: dict,
                num_layers: int, weight_dtype: str = "bf16", kv_dtype: str = "bf16"
                ) -> pd.DataFrame:
    """The measured table in the columns ``hwmodels.calibrate`` reads."""
    df = pd.DataFrame(rows)
    df.insert(0, "gpu", gpu)
    df.insert(1, "model", model)
    df.insert(2, "tp", tp)
    df.insert(3, "weight_dtype", weight_dtype)
    df.insert(4, "kv_dtype", kv_dtype)
    df["num_layers"] = num_layers
    df["model_config"] = json.dumps(arch_hf)
    return df


def copy_bandwidth_gbps(device: torch.device, size_bytes: int = 2 << 30, reps: int = 10
                        ) -> float | None:
    """Device-to-device copy rate (bytes read + written per second / 1e9): the decode floor."""
    if device.type != "cuda":
        return None
    src = torch.empty(size_bytes // 2, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    del src, dst
    return 2 * size_bytes / statistics.median(times) / 1e9


GPU_NAMES = (  # substrings of torch.cuda.get_device_name -> catalog id, most specific first
    ("H100 NVL", "h100-nvl-94gb"), ("H100 PCIe", "h100-pcie-80gb"), ("H100", "h100-sxm5-80gb"),
    ("H200", "h200-sxm-141gb"), ("A100-SXM4-40GB", "a100-sxm4-40gb"),
    ("A100 80GB PCIe", "a100-pcie-80gb"), ("A100", "a100-sxm4-80gb"), ("B200", "b200-sxm-180gb"),
    ("L40S", "l40s"),
)


def detect_gpu(device: torch.device) -> str | None:
    """The catalog id of the device, from its name; None if unknown."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((gpu for part, gpu in GPU_NAMES if part in name), None)


def pool_blocks_that_fit(model, block_size: int, fraction: float = 0.8,
                         cap_blocks: int = 40_000) -> int:
    """KV blocks that fit in ``fraction`` of the free device memory (capped on CPU)."""
    a = model.arch
    per_block = 2 * a.num_layers * block_size * model.kv_heads * a.head_dim * (
        torch.tensor([], dtype=model.dtype).element_size())
    if model.device.type != "cuda":
        return min(cap_blocks, 2_000)
    free, _ = torch.cuda.mem_get_info(model.device)
    return int(min(cap_blocks, free * fraction // per_block))


def engine_speed(table: pd.DataFrame, weight_bytes: int, copy_gbps: float | None
                 ) -> list[dict]:
    """Decode steps at batch 1 and 64 against the floor of reading every weight once."""
    if not copy_gbps:
        return []
    floor_ms = 1e3 * weight_bytes / (copy_gbps * 1e9)
    rows = []
    dec = table[table["kind"] == "decode"]
    for batch in (1, 64):
        sub = dec[dec["num_seqs"] == batch].sort_values("max_context")
        if sub.empty:
            continue
        row = sub.iloc[0]
        rows.append({"batch": batch, "context": int(row["max_context"]),
                     "measured_ms": float(row["measured_ms"]), "floor_ms": floor_ms,
                     "ratio": float(row["measured_ms"]) / floor_ms})
    return rows


def calibrate_executor(executor: GpuExecutor, *, model: str, gpu: str, tp: int, quick: bool,
                       reps: int, max_num_seqs: int, max_model_len: int, device_name: str,
                       command: str, fixed: dict | None = None, extra: dict | None = None,
                       log: Callable[[str], None] | None = None, grid: Grid | None = None):
    """Measure the designed grid on a ready executor and fit a profile.

    Returns ``(table, profile, meta)``. ``fixed`` pins parameters measured another way (the
    all-reduce model under TP); ``extra`` is recorded in the profile's source.
    """
    from datetime import datetime, timezone


    decoder, device = executor.model, executor.device
    shapes = design_shapes(grid or (QUICK_GRID if quick else Grid()), max_batch=max_num_seqs,
                           max_context=max_model_len)
    rows = measure(executor, shapes, reps=reps, log=log)
    df = steps_table(rows, gpu=gpu, model=model, tp=tp, arch_hf=decoder.arch.hf_config(),
                     num_layers=decoder.arch.num_layers)
    copy_gbps = copy_bandwidth_gbps(device)
    meta = {"gpu": gpu, "device_name": device_name, "torch": torch.__version__,
            "backend": executor.backend, "copy_gbps": copy_gbps,
            "compiled": executor.model.compiled,
            "weight_bytes": decoder.weight_bytes,
            "engine_speed": engine_speed(df, decoder.weight_bytes, copy_gbps),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "command": command,
            **(extra or {})}
    pinned = {"cuda_graph_mode": "decode",
              "cuda_graph_max_tokens": max_num_seqs if executor.graphs is not None else 0}
    if executor.token_graphs is not None:  # every step kind up to the largest token bucket
        pinned = {"cuda_graph_mode": "all",
                  "cuda_graph_max_tokens": max(executor.token_graphs.buckets)}
    pinned.update(fixed or {})
    source = {k: v for k, v in meta.items() if k not in ("gpu", "date")}
    profile = fit_profile(df, pinned, source | {"model": model, "tp": tp,
                                                "num_layers": decoder.arch.num_layers,
                                                "pinned": pinned})
    return df, profile, meta


LAUNCH_CPU_STARTS_S = (3e-5, 1e-4)  # extra starting points of the host launch cost


def fit_profile(df: pd.DataFrame, pinned: dict, source: dict):
    """``hwmodels.calibrate.fit``, started from the defaults and from launch costs at which
    eager steps are host-bound; the fit with the lowest training error wins.

    Why: the step time is a max of GPU time and host launch time. At the default launch cost
    the host side is below the GPU time for every step, its gradient is zero, and the fit never
    moves it, leaving eager (prefill, mixed, verify) steps unexplained and biasing the rest.
    """
    from hwmodels.calibrate import fit
    from hwmodels.params import default_params
    from hwmodels.specs import get_gpu

    best = fit(df, fixed=pinned, source=source)
    names = list(best.source.get("fitted", []))
    if "launch_cpu_s" not in names:
        names.append("launch_cpu_s")
    base = default_params(get_gpu(str(df["gpu"].iloc[0])))
    for start_s in LAUNCH_CPU_STARTS_S:
        start = base.updated(launch_cpu_s=start_s)
        candidate = fit(df, params=names, fixed=pinned, start=start,
                        source=source | {"launch_cpu_start_s": start_s})
        if candidate.mape < best.mape:
            best = candidate
    return best


def refit(table: str, profile_path: str):
    """Fit again from a measured table (no device): the same procedure, the old provenance."""
    import json

    df = pd.read_csv(table)
    old = json.loads(open(profile_path).read())
    source = {k: v for k, v in old.get("source", {}).items()
              if k not in ("fitted", "relative_stderr", "date", "models", "launch_cpu_start_s")}
    pinned = source.pop("pinned", None) or {
        k: old["params"][k] for k in ("cuda_graph_mode", "cuda_graph_max_tokens")}
    return fit_profile(df, pinned, source | {"pinned": pinned, "refit_of": profile_path,
                                            "refit_table": table})
