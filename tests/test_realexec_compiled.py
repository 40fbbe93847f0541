"""The compiled and captured step paths serve exactly the tokens of the eager reference (CPU).

What runs here: the decoder's pieces compiled by inductor's CPU backend (the same FX graphs,
lowered to C++ instead of Triton), the Triton attention kernel with its work list in Triton's
interpreter, and the captured-step machinery (buckets, padding, static inputs, the work list
of a padded bucket) with a stand-in for the CUDA graph whose replay re-runs the captured
function on the same static tensors and writes the same output tensor.

What only the GPU checks (``scripts/gpu_selfcheck.py``): that a real CUDA graph replays those
kernels (no host work or allocation escapes the capture), and the inductor Triton kernels.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest
import torch

import sim
from realexec.arch import arch_from_hf
from realexec.attention import build_metadata, max_tiles, select_backend, work_list
from realexec.factory import GpuExecutorFactory
from realexec.graphs import StepGraphs, bucket_for
from realexec.kvcache import PagedKVPool
from realexec.model import Decoder

torch._inductor.config.compile_threads = 1  # no compile-worker pool on a small CPU box

TINY = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 96, "vocab_size": 211}
FAST = {"compile": True, "graph_stand_in": True, "decode_buckets": (1, 2, 4),
        "token_buckets": (8, 24)}


def _config() -> dict:
    """Chunked prefill (steps over 24 tokens run uncaptured) with n-gram speculation (verify
    steps, some with a prompt chunk beside them)."""
    return {"seed": 3, "hardware": {"gpu": "h100", "gpu_memory_utilization": 0.25},
            "scheduler": {"policy": "chunked_prefill", "max_num_seqs": 4,
                          "max_num_batched_tokens": 32},
            "kv_cache": {"allocator": "paged", "block_size": 4},
            "speculative": {"method": "ngram", "num_draft_tokens": 3, "ngram_match_prob": 1.0},
            "workload": {"arrival": "poisson", "rate": 200, "num_requests": 8,
                         "prompt_tokens": {"dist": "uniform", "low": 3, "high": 30},
                         "output_tokens": {"dist": "uniform", "low": 6, "high": 12}}}


def _serve(options: dict):
    factory = GpuExecutorFactory(device="cpu", model=TINY, backend="triton", keep_outputs=True,
                                 max_model_len=64, executor_options=options)
    sim.simulate(_config(), executor_factory=factory)
    return factory.executors[0]


def test_compiled_and_captured_serving_equals_eager_tokens():
    eager = _serve({"compile": False})
    fast = _serve(FAST)
    assert not eager.model.compiled and fast.model.compiled
    assert fast.graphs is not None and fast.token_graphs is not None
    assert len(fast.finished_outputs) == 8
    assert fast.finished_outputs == eager.finished_outputs
    paths = {t.path for t in fast.timings}
    assert paths == {"decode_graph", "token_graph", "eager"}, paths
    captured = {t.kind for t in fast.timings if t.path == "token_graph"}
    assert {"prefill", "verify"} <= captured, captured
    assert {t.path for t in eager.timings} == {"eager"}
    assert all(t.host_s > 0 and t.wall_s >= t.host_s * 0.99 for t in fast.timings)
    assert all(np.isnan(t.gpu_s) for t in fast.timings)  # no CUDA events on CPU


def _model_and_pool():
    model = Decoder(arch_from_hf(TINY), dtype=torch.float32, device="cpu", seed=5,
                    max_position=128)
    pool = PagedKVPool(num_layers=2, num_blocks=40, block_size=4, num_kv_heads=2,
                       head_dim=16, dtype=torch.float32, device="cpu")
    return model, pool


def _step_arrays(q_lens, ctx, pool, first_block=0):
    """Host arrays of a step over fresh consecutive blocks (ids arbitrary, positions real)."""
    ids, pos, slots, tables, rows, start = [], [], [], [], [], 0
    block = first_block
    for n, c in zip(q_lens, ctx, strict=True):
        need = -(-(c + n) // pool.block_size)
        table = list(range(block, block + need))
        block += need
        p = np.arange(c, c + n)
        ids.append((p * 7 + 3) % 211)
        pos.append(p)
        slots.append(np.asarray(table)[p // 4] * 4 + p % 4)
        tables.append(table)
        start += n
        rows.append(start - 1)
    width = max(len(t) for t in tables)
    tab = np.full((len(tables), width), pool.scratch_block, dtype=np.int32)
    for i, t in enumerate(tables):
        tab[i, : len(t)] = t
    return (np.concatenate(ids), np.concatenate(pos), np.concatenate(slots),
            np.asarray(q_lens, np.int32), np.asarray(ctx, np.int32), tab,
            np.asarray(rows, np.int64), tables)


def test_stand_in_replay_pads_buckets_and_matches_eager_logits():
    """A token-count bucket serves steps of other sizes and splits: each replay reads the
    static inputs anew, writes the same output tensor, and samples what eager samples."""
    model, pool = _model_and_pool()
    _, attention = select_backend("triton", torch.device("cpu"), 4)
    graphs = StepGraphs(model, pool, attention, buckets=(8, 16), width=8, max_num_seqs=3,
                        decode=False)
    out16 = graphs.outputs[16]
    assert graphs.bucket_for(9, 3, 5) == 16 and graphs.bucket_for(17, 1, 17) is None
    assert graphs.bucket_for(8, 4, 2) is None  # more sequences than the bucket was built for
    for q_lens, ctx in (([5, 1, 3], [0, 6, 2]), ([11], [0]), ([2, 2], [4, 7])):
        *arrays, rows, tables = _step_arrays(q_lens, ctx, pool)
        got = graphs.run(*arrays, rows)
        assert graphs.outputs[16] is out16
        # eager reference on a copy of the pool (the replay above wrote the same K/V)
        ref_pool = PagedKVPool(num_layers=2, num_blocks=40, block_size=4, num_kv_heads=2,
                               head_dim=16, dtype=torch.float32, device="cpu")
        ref_pool.k.copy_(pool.k)
        ref_pool.v.copy_(pool.v)
        meta = build_metadata(q_lens, ctx, tables, block_size=4,
                              scratch_block=pool.scratch_block, device="cpu")
        ids, pos = (torch.from_numpy(a) for a in arrays[:2])
        logits = model.forward(ids, pos, meta, ref_pool, attention, torch.from_numpy(rows))
        assert got.tolist() == logits.argmax(-1).tolist()
        # every row sampled (a verify step): more logit rows than the graph samples itself
        every = np.arange(len(arrays[0]))
        assert len(every) > graphs.rows_of(16)
        got_all = graphs.run(*arrays, every)
        logits = model.forward(ids, pos, meta, ref_pool, attention, torch.from_numpy(every))
        assert got_all.tolist() == logits.argmax(-1).tolist()


def test_decode_family_takes_one_token_rows_only():
    model, pool = _model_and_pool()
    _, attention = select_backend("triton", torch.device("cpu"), 4)
    graphs = StepGraphs(model, pool, attention, buckets=(1, 2, 4), width=8, max_num_seqs=4,
                        decode=True)
    assert graphs.bucket_for(3, 3, 1) == 4 and graphs.bucket_for(6, 3, 2) is None
    *arrays, rows, _ = _step_arrays([1, 1, 1], [5, 9, 2], pool)
    first = graphs.run(*arrays, rows).clone()
    again = graphs.run(*arrays, rows)
    assert first.tolist() == again.tolist() and len(again) == 3


@pytest.mark.parametrize("seed", range(5))
def test_work_list_covers_every_row_once_within_the_bound(seed):
    rng = np.random.default_rng(seed)
    tokens, group, block_m = 300, 4, 64
    cuts = np.sort(rng.choice(np.arange(1, tokens), size=rng.integers(0, 20), replace=False))
    q_lens = np.diff(np.concatenate([[0], cuts, [tokens]])).tolist()
    bound = max_tiles(tokens, len(q_lens), group, block_m)
    tiles = work_list(q_lens, group, block_m, bound)
    live = tiles[:, tiles[0] >= 0]
    covered = sorted((s, r) for s, m in live.T for r in range(m * block_m, (m + 1) * block_m)
                     if r < q_lens[s] * group)
    assert covered == sorted((s, r) for s, n in enumerate(q_lens) for r in range(n * group))
    assert (tiles[0, live.shape[1]:] == -1).all()
    with pytest.raises(ValueError, match="exceed the captured"):
        work_list(q_lens, group, block_m, live.shape[1] - 1)


def test_bucket_for_picks_the_smallest_that_holds():
    assert bucket_for((4, 8, 16), 5) == 8 and bucket_for((4, 8), 4) == 4
    assert bucket_for((4, 8), 9) is None


@pytest.mark.parametrize("command", ["calibrate", "validate"])
def test_no_compile_under_tp_is_refused_not_ignored(command):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "sim.cli", command, "--device", "cpu", "--gpu",
                          "h100", "--tp", "2", "--no-compile"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: --no-compile: not wired through --tp > 1 (its ranks compile on CUDA); "
        "allowed with --tp: --compile"]
