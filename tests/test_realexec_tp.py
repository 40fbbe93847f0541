"""Tensor parallelism on CPU (gloo): two and four ranks compute what one process computes."""

import copy

import torch

import sim
from realexec.factory import GpuExecutorFactory
from realexec.tp import Job, launch
from realexec.tp_check import check_job, full_logits

TINY = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 96, "vocab_size": 212}
CONFIG = {"seed": 3, "hardware": {"gpu": "h100", "tp": 2, "num_gpus": 2,
                       "gpu_memory_utilization": 0.15},
          "scheduler": {"policy": "continuous", "max_num_seqs": 4},
          "kv_cache": {"allocator": "paged", "block_size": 16},
          "workload": {"arrival": "poisson", "rate": 100, "num_requests": 4,
                       "prompt_tokens": {"dist": "uniform", "low": 5, "high": 16},
                       "output_tokens": {"dist": "uniform", "low": 2, "high": 4}}}


def _check_equals_tp1(tmp_path, tp: int, fields: dict) -> None:
    """Run the check job on ``tp`` gloo ranks; compare logits and served tokens with TP=1."""
    config = copy.deepcopy(CONFIG)
    config["hardware"].update(tp=tp, num_gpus=tp)
    launch(Job(check_job, {"fields": fields, "config": config, "out_dir": str(tmp_path)}), tp=tp,
           device="cpu")

    sharded = torch.load(tmp_path / "logits.pt")
    tp1 = full_logits(fields, torch.float32)
    assert len(sharded) == len(tp1) == 3
    for got, want in zip(sharded, tp1, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    served = torch.load(tmp_path / "engine.pt")
    single = copy.deepcopy(CONFIG)
    single["hardware"].update(tp=1, num_gpus=1, gpu_memory_utilization=0.25)
    factory = GpuExecutorFactory(device="cpu", model=fields, backend="torch", keep_outputs=True,
                                 max_model_len=256)
    sim.simulate(single, executor_factory=factory)
    assert served["completed"] == 4
    assert served["outputs"] == factory.executors[0].finished_outputs


def test_tp2_logits_and_served_tokens_equal_tp1(tmp_path):
    _check_equals_tp1(tmp_path, 2, TINY)


def test_tp4_logits_and_served_tokens_equal_tp1(tmp_path):
    """4 KV heads so that each of the 4 ranks holds one KV head and two query heads (ISSUE #13:
    the TP=4 device run skipped the TP=2-only device self-check; this is its CPU stand-in)."""
    _check_equals_tp1(tmp_path, 4, {**TINY, "num_key_value_heads": 4})
