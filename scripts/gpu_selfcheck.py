"""Device self-check before a calibration run: are the fast paths right on this GPU?

1. The Triton paged-attention kernel (compiled, bf16, Llama-3.1-8B head shapes, split-KV on and
   off) against the float64 reference, on a batch mixing a prompt, a prompt on a cached prefix,
   a decode and a verify. The CPU tests run the same kernel only in Triton's interpreter.
2. Steps replayed from CUDA graphs with the compiled decoder pieces (decode graphs, and the
   token-count graphs: prefill, prefill on a cached prefix, mixed chunk + decodes, verify)
   against the same steps run eagerly with the plain pieces.

Prints one line per check; exit status 0 = all pass, 3 = Triton wrong (use --backend torch),
4 = graphs wrong (use --no-graphs). Usage: PYTHONPATH=. python3 scripts/gpu_selfcheck.py
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from policies.kv_paged import PagedAllocator
from realexec.arch import load_arch
from realexec.attention import build_metadata, reference_attention, torch_attention
from realexec.executor import GpuExecutor, StepInputs
from realexec.kvcache import PagedKVPool
from realexec.model import Decoder

CASES = [(0, 300), (200, 100), (1000, 1), (500, 4), (37, 1), (0, 1)]  # (cached, new)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def check_attention(dev: torch.device) -> bool:
    from realexec.triton_attention import triton_attention

    gen = torch.Generator(device=dev).manual_seed(0)
    bs, kvh, hd, heads = 16, 8, 128, 32
    need = [-(-(c + n) // bs) for c, n in CASES]
    num_blocks = sum(need) + 8
    perm = torch.randperm(num_blocks, device=dev, generator=gen).tolist()
    pool = PagedKVPool(num_layers=1, num_blocks=num_blocks, block_size=bs, num_kv_heads=kvh,
                       head_dim=hd, dtype=torch.bfloat16, device=dev)
    pool.k.normal_(generator=gen)
    pool.v.normal_(generator=gen)
    tables = []
    for k in need:
        tables.append(perm[:k])
        perm = perm[k:]
    q = torch.randn(sum(n for _, n in CASES), heads, hd, device=dev, dtype=torch.bfloat16,
                    generator=gen)
    ok = True
    for splits in (1, 8):
        meta = build_metadata([n for _, n in CASES], [c for c, _ in CASES], tables,
                              block_size=bs, scratch_block=pool.scratch_block, device=dev)
        meta.num_splits = splits
        want = reference_attention(q, *pool.layer(0), meta)
        got = triton_attention(q, *pool.layer(0), meta)
        sdpa = torch_attention(q, *pool.layer(0), meta)
        e_tri, e_sdpa = rel_err(got, want), rel_err(sdpa, want)
        passed = bool(torch.isfinite(got).all()) and e_tri < 2e-2
        ok &= passed
        print(f"attention splits={splits}: triton rel err {e_tri:.2e}, sdpa {e_sdpa:.2e} "
              f"-> {'PASS' if passed else 'FAIL'}")
    return ok


def _inputs(rows: list[tuple[int, int]], vocab: int, scratch: int, rng) -> StepInputs:
    """A step of ``(new, cached)`` rows over fresh consecutive blocks of 16 tokens."""
    ids, pos, slots, tables, logit_rows, start, block = [], [], [], [], [], 0, 0
    for n, c in rows:
        blocks = list(range(block, block + (c + n + 15) // 16))
        block += len(blocks)
        p = np.arange(c, c + n)
        ids.append(rng.integers(0, vocab, size=n))
        pos.append(p)
        slots.append(np.asarray(blocks)[p // 16] * 16 + p % 16)
        tables.append(blocks)
        start += n
        logit_rows.append(start - 1)
    tab = np.full((len(rows), max(len(t) for t in tables)), scratch, dtype=np.int32)
    for i, t in enumerate(tables):
        tab[i, : len(t)] = t
    return StepInputs(np.concatenate(ids).astype(np.int64), np.concatenate(pos),
                      np.concatenate(slots).astype(np.int64),
                      np.array([n for n, _ in rows], dtype=np.int32),
                      np.array([c for _, c in rows], dtype=np.int32), tab,
                      np.array(logit_rows, dtype=np.int64))


GRAPH_CASES = {  # name -> rows (new, cached)
    "decode b1": [(1, 2000)], "decode b5": [(1, c) for c in (17, 900, 2999, 64, 1500)],
    "decode b64": [(1, 40 * i + 7) for i in range(64)],
    "prefill 300": [(300, 0)], "prefill cached 200 on 1000": [(200, 1000)],
    "mixed 256 + 20 decodes": [(256, 0)] + [(1, 100 * i + 3) for i in range(20)],
    "verify 8 x 4 (k=3)": [(4, 300 * i + 11) for i in range(8)],
}


def check_graphs(dev: torch.device) -> bool:
    arch = load_arch("llama-3.1-8b").with_layers(2)
    model = Decoder(arch, dtype=torch.bfloat16, device=dev, max_position=4096)
    alloc = PagedAllocator(16384, 16)  # 64 rows of up to 3000 tokens
    ex = GpuExecutor(model, alloc, max_num_seqs=64, max_model_len=4096)
    if ex.graphs is None:
        print(f"graphs: not captured (backend {ex.backend}) -> SKIP")
        return True
    rng = np.random.default_rng(0)
    ok = True
    for name, rows in GRAPH_CASES.items():
        inputs = _inputs(rows, arch.vocab_size, ex.pool.scratch_block, rng)
        ex.pool.k.normal_()
        ex.pool.v.normal_()
        graphed = ex.execute(inputs)
        path = ex.last_path
        saved = ex.graphs, ex.token_graphs
        ex.graphs = ex.token_graphs = None
        model.compile(False)
        eager = ex.execute(inputs)
        model.compile(True)
        ex.graphs, ex.token_graphs = saved
        same = float(np.mean(np.array(graphed) == np.array(eager)))
        passed = same >= 0.9 and path != "eager"
        ok &= passed
        print(f"graphs {name} ({path}, compiled): {same:.0%} of sampled tokens equal eager "
              f"-> {'PASS' if passed else 'FAIL'}")
    return ok


def main() -> int:
    if not torch.cuda.is_available():
        print("selfcheck: CUDA is not available; nothing to check")
        return 0
    dev = torch.device("cuda")
    print(f"device {torch.cuda.get_device_name(dev)}, torch {torch.__version__}")
    try:
        attn_ok = check_attention(dev)
    except Exception as exc:  # a compile error is a failed check, reported on one line
        print(f"attention: triton raised {type(exc).__name__}: {exc} -> FAIL")
        attn_ok = False
    if not attn_ok:
        return 3
    try:
        graphs_ok = check_graphs(dev)
    except Exception as exc:
        print(f"graphs: raised {type(exc).__name__}: {exc} -> FAIL")
        graphs_ok = False
    return 0 if graphs_ok else 4


if __name__ == "__main__":
    sys.exit(main())
