"""Engine presets: what each builds, user keys winning, and a run from the CLI per preset."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from policies.chunked import ChunkedPrefillScheduler
from policies.continuous import ContinuousScheduler
from policies.kv_contiguous import ContiguousAllocator
from policies.kv_paged import PrefixCachingAllocator
from policies.kv_radix import RadixAllocator
from policies.presets import PRESETS
from sim.build import apply_preset, build
from sim.config import ConfigError, load_config

EXPECTED = {  # preset: scheduler class, allocator class, block size, token budget, sequences
    "vllm": (ChunkedPrefillScheduler, PrefixCachingAllocator, 16, 8192, 1024),
    "sglang": (ContinuousScheduler, RadixAllocator, 1, 8192, 256),
    "trtllm": (ChunkedPrefillScheduler, PrefixCachingAllocator, 32, 8192, 2048),
    "llamacpp": (ChunkedPrefillScheduler, ContiguousAllocator, 1, 2048, 4),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_builds_its_engine(name):
    sched = build(load_config(None, [f"engine.preset={name}"])).replicas[0].scheduler
    cls, alloc_cls, block, budget, seqs = EXPECTED[name]
    assert type(sched) is cls and type(sched.allocator) is alloc_cls
    assert sched.allocator.block_size == block
    assert (sched.max_num_batched_tokens, sched.max_num_seqs) == (budget, seqs)


def test_preset_details():
    def sched(name):
        return build(load_config(None, [f"engine.preset={name}"])).replicas[0].scheduler

    assert sched("sglang").chunk_size == 8192
    trt = sched("trtllm")
    assert trt.admission == "no_evict" and trt.split_prompts is False
    assert sched("vllm").split_prompts is True and sched("vllm").swap is None
    assert trt.budget_counts_decodes is False and sched("vllm").budget_counts_decodes is True


GRAPHS = {  # preset: CUDA-graph token limit, graph mode, host seconds per sequence per step
    "vllm": (512, "all", 21e-6),
    "sglang": (256, "decode", None),
    "trtllm": (2048, "decode", None),
    "llamacpp": (1, "decode", None),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_sets_the_engines_host_side_hardware_parameters(name):
    deployment = build(load_config(None, [f"engine.preset={name}"]))
    params, (graph_tokens, mode, seq_s) = deployment.hardware.params, GRAPHS[name]
    assert (params.cuda_graph_max_tokens, params.cuda_graph_mode) == (graph_tokens, mode)
    plain = build(load_config(None, [])).hardware.params
    assert params.seq_overhead_s == (plain.seq_overhead_s if seq_s is None else seq_s)
    # a user's own hardware parameter wins, key by key
    mine = build(load_config(None, [f"engine.preset={name}",
                                    "hardware.params.cuda_graph_max_tokens=64"]))
    assert mine.hardware.params.cuda_graph_max_tokens == 64
    assert mine.hardware.params.cuda_graph_mode == mode


def test_unknown_or_malformed_hardware_params_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"^hardware.params: hardware parameters: unknown "
                                          r"\['warp_speed'\]; allowed: gemm_eff, "):
        load_config(None, ["hardware.params.warp_speed=9"])
    with pytest.raises(ConfigError, match=r"^hardware.params: seq_overhead_s: not a number "
                                          r"\('fast'\)$"):
        load_config(None, ["hardware.params.seq_overhead_s=fast"])


def test_explicit_keys_win_over_the_preset():
    cfg = apply_preset(load_config(None, ["engine.preset=vllm", "kv_cache.block_size=32",
                                          "scheduler.max_num_seqs=8",
                                          "kv_cache.enable_prefix_caching=false"]))
    assert cfg.kv_cache.block_size == 32 and cfg.scheduler.max_num_seqs == 8
    assert cfg.kv_cache.enable_prefix_caching is False
    assert cfg.scheduler.policy == "chunked_prefill"  # not set by the user: the preset's
    mapping = apply_preset(load_config({"engine": {"preset": "sglang"},
                                        "scheduler": {"chunk_size": None}}))
    assert mapping.scheduler.chunk_size is None and mapping.kv_cache.allocator == "radix"


def test_no_preset_changes_nothing():
    cfg = load_config(None, ["scheduler.max_num_seqs=8"])
    assert apply_preset(cfg) is cfg


def test_bad_preset_and_impossible_combinations_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"^engine.preset: unknown preset 'tgi'; allowed: "
                                          r"vllm, sglang, trtllm, llamacpp"):
        load_config(None, ["engine.preset=tgi"])
    with pytest.raises(ConfigError, match="^kv_cache.enable_prefix_caching: the contiguous "
                                          "allocator has no prefix cache"):
        build(load_config(None, ["kv_cache.allocator=contiguous",
                                 "kv_cache.enable_prefix_caching=true"]))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_runs_end_to_end_from_the_cli(name, tmp_path):
    out = tmp_path / name
    proc = subprocess.run(
        [sys.executable, "-m", "sim.cli", "run", "--set", f"engine.preset={name}",
         "--set", "workload.num_requests=40", "--set", "workload.rate=5", "--quiet",
         "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Mean TTFT" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == 40
