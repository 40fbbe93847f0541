"""Engine presets: the scheduling and KV-cache choices of well-known serving engines.

Each preset is a plain dict of dotted config keys to values, applied by ``sim.build`` under
``engine.preset``; any key the user sets explicitly wins over the preset. A preset holds only
what the engine's defaults decide about batching and KV memory; kernels, CUDA graphs and other
speed differences between engines are the hardware model's business, not a preset's. Values are
each engine's defaults for one H100/H200-class GPU (80 GiB or more), as read from its source or
docs; what a preset cannot express is said next to it (and in ``docs/policies.md``).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # vLLM v1 (0.8 and later). Chunked prefill is always on: decodes first, then prompt chunks in
    # one token budget. On GPUs with >= 70 GiB the API server defaults to 8,192 batched tokens and
    # 1,024 sequences (EngineArgs.get_batch_defaults). Paged KV in 16-token blocks with automatic
    # prefix caching (hashed blocks) on by default; preemption recomputes (v1 dropped swapping);
    # 90% of GPU memory for the engine.
    "vllm": {
        "scheduler.policy": "chunked_prefill",
        "scheduler.max_num_batched_tokens": 8192,
        "scheduler.max_num_seqs": 1024,
        "scheduler.order": "fcfs",
        "scheduler.preemption": "recompute",
        "scheduler.admission": "greedy",
        "kv_cache.allocator": "paged",
        "kv_cache.block_size": 16,
        "kv_cache.enable_prefix_caching": True,
        "hardware.gpu_memory_utilization": 0.9,
    },
    # SGLang. Prefill batches run before decodes (no mixed batches unless --enable-mixed-chunk);
    # a long prompt is cut into chunks of chunked_prefill_size = 8,192 on 80-160 GB GPUs, which
    # also bounds a prefill batch. KV is a radix tree (RadixAttention) over a token pool: page
    # size 1. mem_fraction_static 0.88 (its default at tp=1 in older releases; newer ones derive
    # it from the memory they reserve). Retraction (recompute) when the pool runs out. Its
    # max_running_requests follows from memory; servesim's scheduler.max_num_seqs still caps it.
    "sglang": {
        "scheduler.policy": "continuous",
        "scheduler.chunk_size": 8192,
        "scheduler.max_num_batched_tokens": 8192,
        "scheduler.order": "fcfs",
        "scheduler.preemption": "recompute",
        "scheduler.admission": "greedy",
        "kv_cache.allocator": "radix",
        "kv_cache.block_size": 1,
        "hardware.gpu_memory_utilization": 0.88,
    },
    # TensorRT-LLM (LLM API / trtllm-serve). In-flight batching mixes context and generation
    # requests in one step, but chunked context is off by default (enable_chunked_prefill=False):
    # a prompt waits until it fits whole. max_num_tokens 8,192, max_batch_size 2,048. The capacity
    # scheduler's default GUARANTEED_NO_EVICT admits a request only if its whole length fits, so
    # nothing is ever paused. Paged KV with tokens_per_block 32 and block reuse (prefix caching)
    # on by default. Its free_gpu_memory_fraction (0.9 of the memory left after weights) is not
    # the same knob as gpu_memory_utilization, so the preset leaves that one alone.
    "trtllm": {
        "scheduler.policy": "chunked_prefill",
        "scheduler.split_prompts": False,
        "scheduler.max_num_batched_tokens": 8192,
        "scheduler.max_num_seqs": 2048,
        "scheduler.order": "fcfs",
        "scheduler.admission": "no_evict",
        "kv_cache.allocator": "paged",
        "kv_cache.block_size": 32,
        "kv_cache.enable_prefix_caching": True,
    },
    # llama.cpp's llama-server. A fixed number of parallel slots (-np; "auto" = 4 since late
    # 2025, 1 before), each request's KV reserved contiguously in its slot for its whole length.
    # Each update adds one token per generating slot first, then prompt tokens of the slots
    # being filled, up to n_batch = 2,048 (run in 512-token micro-batches, which the roofline
    # sees as one step). KV cells are single tokens. Its prompt cache (a slot reusing its own
    # previous prompt) is not modelled.
    "llamacpp": {
        "scheduler.policy": "chunked_prefill",
        "scheduler.max_num_seqs": 4,
        "scheduler.max_num_batched_tokens": 2048,
        "scheduler.order": "fcfs",
        "scheduler.admission": "greedy",
        "kv_cache.allocator": "contiguous",
        "kv_cache.block_size": 1,
        "kv_cache.enable_prefix_caching": False,
    },
}


def preset_overrides(name: str) -> dict[str, Any]:
    """The dotted overrides of a preset; ``ValueError`` naming the allowed ones if unknown."""
    if name not in PRESETS:
        raise ValueError(f"engine.preset: unknown preset '{name}'; allowed: {', '.join(PRESETS)}")
    return dict(PRESETS[name])
