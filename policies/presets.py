"""Engine presets: the scheduling, KV-cache and host-side choices of well-known serving engines.

Each preset is a plain dict of dotted config keys to values, applied by ``sim.build`` under
``engine.preset``; any key the user sets explicitly wins over the preset (key by key, so
``hardware.params.seq_overhead_s`` may be overridden alone). A preset holds what the engine's
defaults decide about batching and KV memory, and the host-side facts that are the engine's
software rather than the GPU's: which steps replay a CUDA graph (``cuda_graph_max_tokens`` and
``cuda_graph_mode``, hardware-model parameters set through ``hardware.params``) and, where a
measurement of the engine exists, its host time per sequence per step. Kernel speed is the
hardware model's business, one model for all engines.

Values are each engine's defaults for one H100/H200-class GPU (80 GiB or more) in the version
named, as read from the source file named next to each; what a preset cannot express is said
there (and in ``docs/policies.md``).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # vLLM V1 engine, 0.10-0.11 (vllm/engine/arg_utils.py, vllm/config/). Chunked prefill is
    # always on: decodes first, then prompt chunks in one token budget. On GPUs with >= 70 GiB
    # the API server defaults to 8,192 batched tokens and 1,024 sequences
    # (EngineArgs.get_batch_defaults). Paged KV in 16-token blocks with automatic prefix
    # caching on; preemption recomputes (V1 dropped swapping); 90% of GPU memory.
    # CUDA graphs: cudagraph_mode FULL_AND_PIECEWISE captures every step (mixed ones piecewise)
    # up to max_cudagraph_capture_size = min(2 x max_num_seqs, 512), capped by the token budget
    # (vllm/config/vllm.py _set_cudagraph_sizes): 512 tokens, any step.
    # Host time per sequence: 5-6 ms between two decode steps at 256 running requests
    # (Llama-2-7B, vllm-project/vllm#10634, 2024-11): about 21 us per sequence per step of
    # scheduling, input preparation and output processing in Python. That was measured on the
    # V0 engine (0.6); no V1 measurement was found, so this is the nearest evidence, not V1's
    # own figure. Async scheduling (--async-scheduling, off by default in these versions)
    # would hide it behind the GPU: hardware.params.host_overlap=true models that option.
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
        "hardware.params.cuda_graph_max_tokens": 512,
        "hardware.params.cuda_graph_mode": "all",
        "hardware.params.seq_overhead_s": 21e-6,
    },
    # SGLang 0.4-0.5 (python/sglang/srt/server_args.py). Prefill batches run before decodes
    # (no mixed batches unless --enable-mixed-chunk); a long prompt is cut into chunks of
    # chunked_prefill_size = 8,192 on 80-160 GB GPUs (H100, A100, H200), which also bounds a
    # prefill batch. KV is a radix tree (RadixAttention) over a token pool: page size 1.
    # mem_fraction_static 0.88 (its default at tp=1 in older releases; newer ones derive it from
    # the memory they reserve). Retraction (recompute) when the pool runs out. Its
    # max_running_requests follows from memory; servesim's scheduler.max_num_seqs still caps it.
    # CUDA graphs for decode batches only, up to cuda_graph_max_bs = 256 on those GPUs at
    # tp < 4 (512 at tp >= 4). Its overlap scheduler (on unless --disable-overlap-schedule;
    # ServerArgs.disable_overlap_schedule = False) runs the CPU work of the next batch while the
    # GPU runs this one: host_overlap, the default host time hidden behind the GPU's.
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
        "hardware.params.cuda_graph_max_tokens": 256,
        "hardware.params.cuda_graph_mode": "decode",
        "hardware.params.host_overlap": True,
    },
    # TensorRT-LLM 1.x, PyTorch backend, as trtllm-bench runs it (the tool behind NVIDIA's
    # published numbers; tensorrt_llm/bench/benchmark/throughput.py and utils/general.py).
    # In-flight batching mixes context and generation requests in one step; chunked context is
    # off by default (LLM API enable_chunked_prefill=False; trtllm-bench
    # --enable_chunked_context off), so a prompt runs whole. The micro-batch scheduler
    # (cpp/tensorrt_llm/batch_manager/microBatchScheduler.cpp) counts each generation request's
    # token and each whole prompt against max_num_tokens and stops at the first prompt that
    # does not fit: with trtllm-serve's 8,192 a prompt of 8,192 tokens would wait until nothing
    # decodes. trtllm-bench therefore raises max_num_tokens to the longest prompt plus
    # max_batch_size when chunking is off: room for every running decode beside a whole prompt.
    # The preset models that as a prompt budget of 8,192 (the LLM API default) with decodes
    # outside it. max_batch_size 2,048. Capacity policy GUARANTEED_NO_EVICT: a request is
    # admitted only if its whole length fits, so nothing is ever paused. Paged KV with
    # tokens_per_block 32 and block reuse (prefix caching) on. Its free_gpu_memory_fraction (0.9
    # of the memory left after weights) is not the same knob as gpu_memory_utilization, so the
    # preset leaves that one alone. CUDA graphs: trtllm-bench captures generation-only batches
    # up to max_batch_size, padded (cuda_graph_config padding_enabled). The PyTorch executor's
    # overlap scheduler is on by default (LLM API disable_overlap_scheduler = False): the next
    # step is scheduled and its inputs prepared while the GPU runs this one (host_overlap).
    "trtllm": {
        "scheduler.policy": "chunked_prefill",
        "scheduler.split_prompts": False,
        "scheduler.budget_counts_decodes": False,
        "scheduler.max_num_batched_tokens": 8192,
        "scheduler.max_num_seqs": 2048,
        "scheduler.order": "fcfs",
        "scheduler.admission": "no_evict",
        "kv_cache.allocator": "paged",
        "kv_cache.block_size": 32,
        "kv_cache.enable_prefix_caching": True,
        "hardware.params.cuda_graph_max_tokens": 2048,
        "hardware.params.cuda_graph_mode": "decode",
        "hardware.params.host_overlap": True,
    },
    # llama.cpp's llama-server (builds of late 2025; tools/server/server.cpp). A fixed number of
    # parallel slots (-np; "auto" = 4 since late 2025, 1 before), each request's KV reserved
    # contiguously in its slot for its whole length. Each update adds one token per generating
    # slot first, then prompt tokens of the slots being filled, up to n_batch = 2,048 (run in
    # 512-token micro-batches, which the roofline sees as one step). KV cells are single
    # tokens. Its prompt cache (a slot reusing its own previous prompt) is not modelled.
    # CUDA graphs only for single-token batches: ggml-cuda turns them off for a batch of more
    # than one token ("disabling CUDA graphs due to batch size > 1", ggml/src/ggml-cuda/).
    "llamacpp": {
        "scheduler.policy": "chunked_prefill",
        "scheduler.max_num_seqs": 4,
        "scheduler.max_num_batched_tokens": 2048,
        "scheduler.order": "fcfs",
        "scheduler.admission": "greedy",
        "kv_cache.allocator": "contiguous",
        "kv_cache.block_size": 1,
        "kv_cache.enable_prefix_caching": False,
        "hardware.params.cuda_graph_max_tokens": 1,
        "hardware.params.cuda_graph_mode": "decode",
    },
}


def preset_overrides(name: str) -> dict[str, Any]:
    """The dotted overrides of a preset; ``ValueError`` naming the allowed ones if unknown."""
    if name not in PRESETS:
        raise ValueError(f"engine.preset: unknown preset '{name}'; allowed: {', '.join(PRESETS)}")
    return dict(PRESETS[name])
