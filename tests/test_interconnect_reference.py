"""KV transfer times between pools of different TP and for MLA, against hand-derived numbers.

Every TP rank moves its own KV shard over its own link, so a transfer takes
``latency + tokens x per-GPU KV bytes / per-GPU bandwidth`` at the SLOWER end: a prefill GPU of
a TP=1 pool sends its whole KV while each GPU of a TP=2 decode pool receives half, and the
transfer ends when the TP=1 GPU has sent everything. Bytes per token come from the published
config.json fields (2 (K and V) x layers x KV heads x head_dim x 2 bytes; for MLA the latent
kv_lora_rank + qk_rope_head_dim per layer, which every TP rank holds whole).
"""

import pytest

import sim
from sim.executors import RooflineExecutor
from sim.interconnect import Interconnect, LinkEnd
from tests.helpers import LinearHardware

BF16 = 2
# config.json: layers, KV heads, head_dim
LLAMA_8B_KV = 2 * 32 * 8 * 128 * BF16  # 131072 bytes per token, whole model
QWEN3_30B_KV = 2 * 48 * 4 * 128 * BF16  # 98304: 4 KV heads
DEEPSEEK_V3_LATENT = 61 * (512 + 64) * BF16  # 70272: kv_lora_rank 512 + rope 64, 61 layers
LATENCY_S, BW = 50e-6, 10e9
TOKENS = 2000


def test_hand_values_of_the_bytes_per_token():
    assert (LLAMA_8B_KV, QWEN3_30B_KV, DEEPSEEK_V3_LATENT) == (131072, 98304, 70272)


# ---- the link on its own ----------------------------------------------------------------------


def test_a_link_between_tp1_and_tp2_runs_at_the_tp1_gpus_pace_both_ways():
    tp1, tp2 = LinkEnd(1, LLAMA_8B_KV, BW), LinkEnd(2, LLAMA_8B_KV / 2, BW)
    link = Interconnect({0: tp1, 1: tp2}, LATENCY_S)
    expected = LATENCY_S + TOKENS * 131072 / 10e9  # 0.0262644 s; the TP=2 end alone: 0.01316
    assert expected == pytest.approx(0.0262644)
    assert link.seconds(0, 1, TOKENS) == pytest.approx(expected, rel=1e-12)
    assert link.seconds(1, 0, TOKENS) == pytest.approx(expected, rel=1e-12)


def test_the_slower_end_may_be_the_one_with_fewer_bytes():
    """TP=2 GPUs on a 2 GB/s link (65536 / 2e9 = 32.8 us a token) against a TP=1 GPU on
    10 GB/s (131072 / 1e10 = 13.1 us): the TP=2 end sets the pace."""
    fast_tp1, slow_tp2 = LinkEnd(1, LLAMA_8B_KV, 10e9), LinkEnd(2, LLAMA_8B_KV / 2, 2e9)
    link = Interconnect({0: fast_tp1, 1: slow_tp2}, 0.0)
    assert link.seconds(0, 1, 1000) == pytest.approx(1000 * 65536 / 2e9, rel=1e-12)
    assert link.seconds(1, 0, 1000) == pytest.approx(0.032768, rel=1e-12)


def test_a_shared_link_carries_every_gpus_bytes():
    """One link for all: the side with more bytes in total (TP=1: 131072; TP=2: 2 x 65536)."""
    link = Interconnect({0: LinkEnd(1, LLAMA_8B_KV, BW), 1: LinkEnd(2, LLAMA_8B_KV / 2, BW)},
                        LATENCY_S, shared_bandwidth_bytes_s=5e9)
    assert link.seconds(0, 1, TOKENS) == pytest.approx(LATENCY_S + TOKENS * 131072 / 5e9,
                                                       rel=1e-12)


def test_a_shared_link_carries_the_replicated_copies_of_kv_heads():
    """Qwen3-30B-A3B's 4 KV heads on TP=8 GPUs: each of the 8 pulls its own head (24576
    bytes a token), 196608 in all, twice what the TP=1 side sends (98304): the larger total
    sets the pace of the one shared link."""
    tp1, tp8 = LinkEnd(1, QWEN3_30B_KV, BW), LinkEnd(8, QWEN3_30B_KV / 4, BW)
    link = Interconnect({0: tp1, 1: tp8}, 0.0, shared_bandwidth_bytes_s=5e9)
    assert link.seconds(0, 1, 1000) == pytest.approx(1000 * 196608 / 5e9, rel=1e-12)
    assert link.seconds(1, 0, 1000) == pytest.approx(0.0393216, rel=1e-12)


# ---- through the config: the memory plan's per-GPU bytes -----------------------------------------


def _linear(config, scheduler, plan):
    return RooflineExecutor(LinearHardware())


def _transfer_s(model: str, prefill_tp: int, decode_tp: int, gpu: str = "h100",
                shared: bool = False, **model_fields) -> float:
    cfg = {"seed": 1, "model": {"name": model, **model_fields}, "hardware": {"gpu": gpu},
           "workload": {"num_requests": 1, "prompt_tokens": TOKENS, "output_tokens": 3},
           "cluster": {"pools": [{"role": "prefill", "num_gpus": prefill_tp, "tp": prefill_tp},
                                 {"role": "decode", "num_gpus": decode_tp, "tp": decode_tp}],
                       "interconnect": {"kind": "roce", "bandwidth_gb_s": BW / 1e9,
                                        "latency_us": LATENCY_S * 1e6, "shared": shared}}}
    df = sim.simulate(cfg, executor_factory=_linear).requests
    assert len(df) == 1 and df["replica"].iloc[0] == 1  # decoded on the decode replica
    return float(df["kv_transfer_time"].iloc[0])


@pytest.mark.parametrize(("prefill_tp", "decode_tp"), [(1, 2), (2, 1), (1, 4), (2, 2)])
def test_llama_8b_transfers_at_the_pace_of_the_end_with_the_fewest_gpus(prefill_tp, decode_tp):
    per_gpu = LLAMA_8B_KV / min(prefill_tp, decode_tp)  # 8 KV heads split over the TP ranks
    expected = LATENCY_S + TOKENS * per_gpu / BW
    assert _transfer_s("llama-3.1-8b", prefill_tp, decode_tp) == pytest.approx(expected,
                                                                               rel=1e-9)


def test_kv_heads_replicated_past_their_count_do_not_shrink_the_shard():
    """Qwen3-30B-A3B has 4 KV heads: at TP=8 each GPU holds one head (pairs of GPUs hold the
    same one), 24576 bytes a token, not 98304 / 8. TP=1 -> TP=8: the TP=1 GPU's 98304 bytes
    set the pace; TP=8 -> TP=2: the TP=2 GPUs' 2 heads (49152 bytes) do."""
    one_head = QWEN3_30B_KV // 4
    assert _transfer_s("qwen3-30b-a3b", 1, 8) == pytest.approx(
        LATENCY_S + TOKENS * QWEN3_30B_KV / BW, rel=1e-9)
    assert _transfer_s("qwen3-30b-a3b", 8, 2) == pytest.approx(
        LATENCY_S + TOKENS * 2 * one_head / BW, rel=1e-9)


def test_mla_moves_the_latent_which_tp_does_not_split():
    """DeepSeek-V3 (MLA): every TP rank holds the whole 70272-byte latent of a token, so a
    TP=8 GPU moves all of it: 2000 tokens at 10 GB/s take 14.05 ms, not 1/8 of that; over one
    shared link, the 8 ranks' copies queue: 8x."""
    fp8 = {"weight_dtype": "fp8"}  # 671B parameters fit 8 H200s in FP8
    expected = LATENCY_S + TOKENS * DEEPSEEK_V3_LATENT / BW
    assert expected == pytest.approx(0.0141044)
    assert _transfer_s("deepseek-v3", 8, 8, gpu="h200", **fp8) == pytest.approx(expected,
                                                                                 rel=1e-9)
    assert _transfer_s("deepseek-v3", 8, 8, gpu="h200", shared=True, **fp8) == pytest.approx(
        LATENCY_S + TOKENS * 8 * DEEPSEEK_V3_LATENT / BW, rel=1e-9)
