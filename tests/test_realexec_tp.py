"""Tensor parallelism on CPU (gloo): two ranks compute what one process computes."""

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
                       "prompt_tokens": {"dist": "uniform", "min": 5, "max": 30},
                       "output_tokens": {"dist": "uniform", "min": 2, "max": 6}}}


def test_tp2_logits_and_served_tokens_equal_tp1(tmp_path):
    launch(Job(check_job, {"fields": TINY, "config": CONFIG, "out_dir": str(tmp_path)}), tp=2,
           device="cpu")

    tp2 = torch.load(tmp_path / "logits.pt")
    tp1 = full_logits(TINY, torch.float32)
    assert len(tp2) == len(tp1) == 3
    for got, want in zip(tp2, tp1, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    served = torch.load(tmp_path / "engine.pt")
    single = copy.deepcopy(CONFIG)
    single["hardware"].update(tp=1, num_gpus=1, gpu_memory_utilization=0.25)
    factory = GpuExecutorFactory(device="cpu", model=TINY, backend="torch", keep_outputs=True,
                                 max_model_len=256)
    sim.simulate(single, executor_factory=factory)
    assert served["completed"] == 4
    assert served["outputs"] == factory.executors[0].finished_outputs
