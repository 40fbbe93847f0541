"""GpuExecutor under the real engine and policies, on CPU: tokens and timings come out right.

The decisive check: every request's generated tokens (greedy) equal those of the same model run
on that request alone with plain dense attention. That holds only if block tables, slots,
padding, preemption and the feedback of sampled tokens are all right.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

import sim
import sim.api as api
from policies.continuous import ContinuousScheduler
from policies.kv_paged import PagedAllocator
from realexec.arch import arch_from_hf
from realexec.attention import build_metadata, select_backend
from realexec.executor import GpuExecutor
from realexec.factory import DeviceError, GpuExecutorFactory, resolve_device
from realexec.kvcache import PagedKVPool
from realexec.model import Decoder
from realexec.tokens import prompt_token_ids
from sim.core import Batch, Request, advance

TINY = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 96, "vocab_size": 211}


def _config(policy: str) -> dict:
    return {"seed": 4, "hardware": {"gpu": "h100", "gpu_memory_utilization": 0.25},
            "scheduler": {"policy": policy, "max_num_seqs": 4, "max_num_batched_tokens": 64},
            "kv_cache": {"allocator": "paged", "block_size": 4},
            "workload": {"arrival": "poisson", "rate": 200, "num_requests": 10,
                         "prompt_tokens": {"dist": "uniform", "low": 5, "high": 40},
                         "output_tokens": {"dist": "uniform", "low": 1, "high": 12}}}


def _greedy_alone(model: Decoder, request: Request) -> list[int]:
    """The request's greedy tokens, run alone with dense attention (one token at a time)."""
    pool = PagedKVPool(num_layers=model.arch.num_layers, num_blocks=64, block_size=4,
                       num_kv_heads=model.kv_heads, head_dim=model.arch.head_dim,
                       dtype=torch.float32, device="cpu")
    _, ref = select_backend("reference", torch.device("cpu"), 4)
    new = torch.from_numpy(prompt_token_ids(request, 0, request.prompt_tokens,
                                            model.arch.vocab_size))
    out, ctx = [], 0
    for _ in range(request.output_tokens):
        meta = build_metadata([len(new)], [ctx], [list(range(64))], block_size=4,
                              scratch_block=pool.scratch_block, device="cpu")
        logits = model.forward(new, torch.arange(ctx, ctx + len(new)), meta, pool, ref,
                               torch.tensor([len(new) - 1]))
        ctx += len(new)
        out.append(int(logits.argmax(-1)))
        new = torch.tensor([out[-1]])
    return out


@pytest.mark.parametrize("policy", ["continuous", "static"])
def test_engine_drives_gpu_executor_and_tokens_match_dense(policy, monkeypatch):
    deployments = []
    build = api.build
    monkeypatch.setattr(api, "build", lambda cfg, f: deployments.append(build(cfg, f))
                        or deployments[-1])
    factory = GpuExecutorFactory(device="cpu", model=TINY, backend="torch", keep_outputs=True,
                                 max_model_len=256)
    result = sim.simulate(_config(policy), executor_factory=factory)

    ex, replica = factory.executors[0], deployments[0].replicas[0]
    assert replica.executor is ex and ex.allocator is replica.scheduler.allocator
    assert len(result.requests) == 10 and (result.steps["duration"] > 0).all()
    assert sorted(ex.finished_outputs) == sorted(result.requests["request_id"])
    for row in result.requests.itertuples():
        req = Request(row.request_id, row.arrival_time, row.prompt_tokens, row.output_tokens)
        assert ex.finished_outputs[row.request_id] == _greedy_alone(ex.model, req)


def test_prefix_hits_and_chunks_keep_tokens_exact():
    """Multi-turn sessions on the radix cache with chunked prefill: turns reuse the blocks of
    earlier turns and shared system prompts, and still decode exactly as alone."""
    config = _config("chunked_prefill")
    config["kv_cache"]["allocator"] = "radix"
    config["scheduler"]["max_num_batched_tokens"] = 24
    config["workload"] = {"arrival": "sessions", "rate": 50, "num_requests": 8, "session": {
        "system_prompt_tokens": 16, "num_system_prompts": 2, "block_tokens": 4,
        "turns": {"dist": "uniform", "low": 2, "high": 3}, "user_tokens": 6,
        "output_tokens": {"dist": "uniform", "low": 2, "high": 5}, "think_time_s": 0.001}}
    factory = GpuExecutorFactory(device="cpu", model=TINY, backend="torch", keep_outputs=True,
                                 max_model_len=256)
    result = sim.simulate(config, executor_factory=factory)
    ex = factory.executors[0]
    assert result.summary["prefix_cache_hit_rate"] > 0.3
    assert len(ex.finished_requests) == len(result.requests) >= 8  # sessions finish their turns
    for rid, req in ex.finished_requests.items():
        assert ex.finished_outputs[rid] == _greedy_alone(ex.model, req)


def test_preempted_requests_recompute_the_same_tokens():
    """A pool too small for all four requests forces recompute preemption mid-decode."""
    model = Decoder(arch_from_hf(TINY), dtype=torch.float32, device="cpu", seed=2,
                    max_position=256)
    sched = ContinuousScheduler(PagedAllocator(num_blocks=14, block_size=4), max_num_seqs=4,
                                max_num_batched_tokens=64)
    ex = GpuExecutor(model, sched.allocator, backend="torch", keep_outputs=True,
                     max_model_len=256)
    reqs = [Request(i, 0.0, 9 + 3 * i, 10) for i in range(4)]
    for r in reqs:
        sched.add_request(r, 0.0)
    now = 0.0
    while sched.has_unfinished():
        batch = sched.schedule(now)
        result = ex.run(batch)
        now += result.seconds
        sched.update(batch, result, now)
    assert sum(r.preemptions for r in reqs) > 0
    for r in reqs:
        assert ex.finished_outputs[r.request_id] == _greedy_alone(model, r)


def test_drafts_without_acceptance_model_is_an_error():
    model = Decoder(arch_from_hf(TINY), dtype=torch.float32, device="cpu", max_position=64)
    sched = ContinuousScheduler(PagedAllocator(num_blocks=8, block_size=4))
    ex = GpuExecutor(model, sched.allocator, backend="torch", max_model_len=64)
    req = Request(0, 0.0, 4, 3, num_output_tokens=1, num_computed_tokens=4)
    sched.allocator.allocate(req, 8)
    with pytest.raises(ValueError, match="no acceptance model"):
        ex.run(Batch([req], [3], [4], draft_tokens=[2]))


def test_cuda_device_without_cuda_is_one_line_error():
    assert not torch.cuda.is_available(), "CPU test: this machine has CUDA"
    with pytest.raises(DeviceError, match="CUDA is not available on this machine"):
        resolve_device("cuda")


def test_verify_step_emits_accepted_drafts():
    """k drafts verified in one step: the injected acceptance model decides how many count."""
    model = Decoder(arch_from_hf(TINY), dtype=torch.float32, device="cpu", max_position=64)
    sched = ContinuousScheduler(PagedAllocator(num_blocks=8, block_size=4))
    ex = GpuExecutor(model, sched.allocator, backend="torch", max_model_len=64,
                     accept=lambda req, k: k - 1)
    req = Request(0, 0.0, 4, 6)
    sched.allocator.allocate(req, 8)
    first = ex.run(Batch([req], [4], [0]))
    advance(req, 4, 0, 0, first.seconds)
    step = ex.run(Batch([req], [4], [4], draft_tokens=[3]))
    assert step.accepted_draft_tokens == [2] and step.seconds > 0
    assert len(ex._outputs[0]) == 1 + 3  # the prompt's token, then 1 + 2 accepted


def test_ngram_speculation_runs_with_the_simulators_acceptance_draws():
    config = _config("continuous")
    config["speculative"] = {"method": "ngram", "num_draft_tokens": 3, "ngram_match_prob": 1.0}
    config["workload"]["output_tokens"] = {"dist": "uniform", "low": 6, "high": 12}
    factory = GpuExecutorFactory(device="cpu", model=TINY, backend="torch", max_model_len=256,
                                 keep_outputs=True)
    result = sim.simulate(config, executor_factory=factory)
    ex = factory.executors[0]
    assert result.summary["completed"] == 10
    verify = [seqs for seqs, _ in ex.trace if any(n == 4 for n, _ in seqs)]
    assert verify, "no step verified 3 drafts"
    # the executor itself produced each request's tokens, as many as the request asked for
    # (counted on its side, not read back from the request), the first one the decoder's
    # greedy token after the prompt (later ones follow the simulator's acceptance draws)
    for row in result.requests.itertuples():
        produced = ex.finished_outputs[row.request_id]
        assert len(produced) == row.output_tokens
        alone = Request(row.request_id, 0.0, row.prompt_tokens, 1)
        assert produced[0] == _greedy_alone(factory._decoder, alone)[0]
