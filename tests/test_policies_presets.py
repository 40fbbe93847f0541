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
