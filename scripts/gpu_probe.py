"""A short device probe before the long run: fast paths correct, and how fast a few steps are.

Runs the self-check (Triton kernel vs float64 reference, graphs vs eager), then builds
Llama-3.1-8B with the auto backend and times a handful of step shapes through
``GpuExecutor.run`` (decode with and without CUDA graphs, prefills, a mixed step, a verify),
against the floor of reading the weights once at the measured copy bandwidth.
Usage: PYTHONPATH=. python3 scripts/gpu_probe.py
"""

from __future__ import annotations

import sys
import time

import torch

sys.path.insert(0, "scripts")

from gpu_selfcheck import main as selfcheck  # noqa: E402

from policies.kv_paged import PagedAllocator  # noqa: E402
from realexec.arch import load_arch  # noqa: E402
from realexec.calibrate import Shape, copy_bandwidth_gbps, measure  # noqa: E402
from realexec.executor import GpuExecutor  # noqa: E402
from realexec.model import Decoder  # noqa: E402

SHAPES = [
    Shape("decode", ((1, 128),)), Shape("decode", ((1, 4096),)),
    Shape("decode", ((1, 1024),) * 8), Shape("decode", ((1, 128),) * 64),
    Shape("decode", ((1, 1024),) * 64), Shape("decode", ((1, 1024),) * 128),
    Shape("prefill", ((64, 0),)), Shape("prefill", ((512, 0),)), Shape("prefill", ((2048, 0),)),
    Shape("prefill", ((8192, 0),)), Shape("mixed", ((512, 0),) + ((1, 1024),) * 64),
    Shape("verify", ((4, 1024),) * 64, draft_tokens=3),
]


def main() -> int:
    status = selfcheck()
    print(f"selfcheck exit status {status}")
    dev = torch.device("cuda")
    t0 = time.perf_counter()
    model = Decoder(load_arch("llama-3.1-8b"), dtype=torch.bfloat16, device=dev,
                    max_position=8256)
    ex = GpuExecutor(model, PagedAllocator(12000, 16), accept=lambda r, k: 0,
                     max_num_seqs=128, max_model_len=8192,
                     backend="auto" if status != 3 else "torch", cuda_graphs=status == 0)
    print(f"backend {ex.backend}, graphs {ex.graphs is not None}, "
          f"ready in {time.perf_counter() - t0:.1f} s")
    rows = measure(ex, SHAPES, warmup=2, reps=5, log=print)
    if ex.graphs is not None:
        saved, ex.graphs = ex.graphs, None
        for row in measure(ex, SHAPES[:4], warmup=2, reps=5):
            print(f"eager  {row['kind']} x{row['num_seqs']}: {row['measured_ms']:.2f} ms")
        ex.graphs = saved
    gbps = copy_bandwidth_gbps(dev)
    floor_ms = 1e3 * model.weight_bytes / (gbps * 1e9)
    print(f"copy {gbps:.0f} GB/s; weights {model.weight_bytes / 1e9:.2f} GB; floor "
          f"{floor_ms:.2f} ms; decode b1 {rows[0]['measured_ms'] / floor_ms:.2f}x floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
