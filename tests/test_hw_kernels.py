"""The op-level kernel model (``hwmodels.kernels``) against the packaged measurements.

Acceptance of issue #21: on the held-back half of ``hwmodels/catalog/kernels`` (rows whose
shape hashes odd, never fitted on), median |predicted / measured - 1| <= 5% for GEMM per
(chip, dtype), <= 7% for decode and prefill attention per (chip, KV dtype), <= 10% for
all-reduce per (chip, rank count). Predictions come from the public API functions, the same
ones the roofline composes its steps from.
"""

from __future__ import annotations

import math
from dataclasses import replace
from importlib import resources

import numpy as np
import pytest
import yaml

import hwmodels
from hwmodels import fit_kernels
from hwmodels.errors import CatalogError
from hwmodels.kernels import measured
from hwmodels.kernels.fits import RANKS, load_fits
from hwmodels.roofline import RooflineModel
from hwmodels.specs import get_gpu

CHIPS = ("h100_sxm", "a100_sxm")
# Issue #21's targets, and the groups that do not meet them yet, pinned at what they reach
# (docs/hardware-model.md lists them as not met): A100 GEMMs (cuBLAS's per-shape tile and
# split-K choices over the 108 SMs' waves, which no single rule followed).
TARGET = {"gemm": 0.05, "decode_attention": 0.07, "prefill_attention": 0.07, "allreduce": 0.10}
NOT_MET = {("a100_sxm", "gemm", "bf16"): 0.07}


def _bound(chip: str, op: str, group: str) -> float:
    return NOT_MET.get((chip, op, group), TARGET[op])


def _median_err(pred: np.ndarray, seconds: np.ndarray) -> float:
    return float(np.median(np.abs(pred / seconds - 1.0)))


def _api_gemm(chip: str, rows) -> np.ndarray:
    gpu = measured.CHIP_GPU[chip]
    return np.array([hwmodels.gemm_time_ms(gpu, m, n, k, measured.DTYPE[d]) * 1e-3
                     for m, n, k, d in zip(rows.m, rows.n, rows.k, rows.gemm_dtype, strict=True)])


def _api_attention(chip: str, rows, decode: bool) -> np.ndarray:
    gpu = measured.CHIP_GPU[chip]
    kv = rows.kv_cache_dtype.map(measured.DTYPE)
    new = [1] * len(rows) if decode else list(rows.isl)
    cached = list(rows.step) if decode else [0] * len(rows)
    return np.array([
        hwmodels.attention_time_ms(gpu, b, n, c, h, g, hd, d) * 1e-3
        for b, n, c, h, g, hd, d in zip(rows.batch_size, new, cached, rows.num_heads,
                                        rows.num_key_value_heads, rows.head_dim, kv, strict=True)])


@pytest.mark.parametrize("chip", CHIPS)
def test_gemm_held_back_median_error_is_within_5_percent(chip):
    frame = measured.table("gemm")
    frame = frame[(frame.system == chip) & frame.held_back]
    for dtype, rows in frame.groupby(frame.gemm_dtype.map(measured.DTYPE)):
        err = _median_err(_api_gemm(chip, rows), rows.seconds.to_numpy())
        assert err <= _bound(chip, "gemm", dtype), (chip, dtype, err)


@pytest.mark.parametrize("chip", CHIPS)
@pytest.mark.parametrize("table", ["decode_attention", "prefill_attention"])
def test_attention_held_back_median_error_is_within_7_percent(chip, table):
    frame = measured.table(table)
    frame = frame[(frame.system == chip) & frame.held_back]
    for dtype, rows in frame.groupby(frame.kv_cache_dtype.map(measured.DTYPE)):
        pred = _api_attention(chip, rows, table == "decode_attention")
        err = _median_err(pred, rows.seconds.to_numpy())
        assert err <= _bound(chip, table, dtype), (chip, table, dtype, err)


@pytest.mark.parametrize("chip", CHIPS)
def test_allreduce_held_back_median_error_is_within_10_percent_per_rank_count(chip):
    frame = measured.table("collectives")
    frame = frame[(frame.system == chip) & frame.held_back]
    gpu = measured.CHIP_GPU[chip]
    for ranks, rows in frame.groupby("num_gpus"):
        pred = np.array([hwmodels.allreduce_time_ms(gpu, n, b, impl) * 1e-3
                         for n, b, impl in zip(rows.num_gpus, rows.nbytes, rows.impl, strict=True)])
        err = _median_err(pred, rows.seconds.to_numpy())
        assert err <= 0.10, (chip, ranks, err)


def test_the_split_is_deterministic_and_about_half():
    frame = measured.table("gemm")
    again = measured.held_back(frame, "gemm")
    assert (again == frame.held_back).all()
    assert 0.4 < frame.held_back.mean() < 0.6


def test_committed_errors_match_the_committed_curves():
    """The errors the fit wrote (and the docs quote) are what the curves give today."""
    path = resources.files("hwmodels").joinpath("catalog", "kernel_fits.yaml")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    for chip in CHIPS:
        again = fit_kernels.held_back_errors(chip, load_fits()[chip])
        assert again == raw["held_back_errors"][chip]


def test_refitting_reproduces_the_committed_parameters():
    """Nobody hand-edits kernel_fits.yaml: re-fitting (here the A100's prefill attention and
    the H100's all-reduce from the fit's starting values, the custom kernels with the committed
    CTA cap and workspace, the quick ones) gives the committed values to the stored digits."""
    fits = load_fits()
    a100 = fits["a100_sxm"]
    gpu = get_gpu(measured.CHIP_GPU["a100_sxm"])
    refit = fit_kernels._fit_attention(a100, gpu, "a100_sxm", decode=False)
    assert refit.prefill == a100.prefill
    h100 = fits["h100_sxm"]
    coll = measured.table("collectives")
    coll = coll[(coll.system == "h100_sxm") & ~coll.held_back]
    h100_gpu = get_gpu(measured.CHIP_GPU["h100_sxm"])
    start = fit_kernels._start_curves("h100_sxm")
    refit = fit_kernels._fit_allreduce_impl(start, h100_gpu, coll, "nccl")
    chosen = {n: replace(c, max_ctas=h100.allreduce["custom"][n].max_ctas,
                         max_bytes=h100.allreduce["custom"][n].max_bytes)
              for n, c in refit.allreduce["custom"].items()}
    refit = replace(refit, allreduce={**refit.allreduce, "custom": chosen})
    refit = fit_kernels._fit_allreduce_impl(refit, h100_gpu, coll, "custom")
    for impl in ("nccl", "custom"):
        for n in RANKS:
            for name in ("small_latency_s", "small_bw_eff", "large_latency_s", "large_bw_eff",
                         "cta_bw_eff"):
                got = getattr(refit.allreduce[impl][n], name)
                want = getattr(h100.allreduce[impl][n], name)
                assert math.isclose(got, want, rel_tol=2e-3), (impl, n, name, got, want)


# ---- physics the issue names ---------------------------------------------------------------
def test_a_decode_attention_call_has_a_floor_of_several_microseconds():
    tiny = hwmodels.attention_time_ms("h100", 1, 1, 16, 32, 8, 128)
    assert 0.005 < tiny < 0.012  # 5-12 us for 16 cached tokens (measured: 8.4-8.9 us)
    big = hwmodels.attention_time_ms("h100", 64, 1, 8192, 32, 8, 128)
    kv_bytes = 64 * 8193 * 2 * 8 * 128 * 2
    fraction = kv_bytes / 3.35e12 / (big * 1e-3)
    assert 0.7 < fraction < 0.95  # large KV streams at 70-95% of HBM bandwidth (84% measured)


def test_allreduce_latency_grows_with_ranks_and_custom_kernels_are_faster_when_small():
    nccl = [hwmodels.allreduce_time_ms("h100", n, 1024, "nccl") for n in (2, 4, 8)]
    assert nccl[0] < nccl[1] < nccl[2]
    assert 0.004 < nccl[0] < 0.009 and 0.012 < nccl[2] < 0.020  # ~6 and ~16 us measured
    custom = [hwmodels.allreduce_time_ms("h100", n, 1024, "custom") for n in (2, 4, 8)]
    assert all(c < n for c, n in zip(custom, nccl, strict=True))
    assert all(0.002 < c < 0.006 for c in custom)  # one-shot kernels: 3-6 us
    # large messages: bandwidth-bound, the same for both (custom hands them to NCCL)
    big = 256 * 2**20
    assert hwmodels.allreduce_time_ms("h100", 8, big, "custom") == pytest.approx(
        hwmodels.allreduce_time_ms("h100", 8, big, "nccl"))
    assert hwmodels.allreduce_time_ms("h100", 8, big) > 0.5


def test_fp8_gemm_carries_a_quantization_kernel_and_streams_half_the_weights():
    small_bf16 = hwmodels.gemm_time_ms("h100", 1, 1024, 1024, "bf16")
    small_fp8 = hwmodels.gemm_time_ms("h100", 1, 1024, 1024, "fp8")
    assert small_fp8 > small_bf16  # the fixed cost of the extra kernel dominates tiny GEMMs
    big_bf16 = hwmodels.gemm_time_ms("h100", 1, 16384, 16384, "bf16")
    big_fp8 = hwmodels.gemm_time_ms("h100", 1, 16384, 16384, "fp8")
    assert 0.45 < big_fp8 / big_bf16 < 0.75  # weight streaming: half the bytes


def test_other_chips_are_predicted_from_their_datasheets():
    # H200 differs from H100 only in HBM: a bandwidth-bound GEMV speeds up by the bandwidth
    # ratio (minus the floor), a compute-bound GEMM not at all
    gemv = [hwmodels.gemm_time_ms(g, 1, 16384, 16384) for g in ("h100", "h200")]
    assert 1.3 < gemv[0] / gemv[1] < 4.8 / 3.35 + 1e-9
    big = [hwmodels.gemm_time_ms(g, 8192, 8192, 8192) for g in ("h100", "h200")]
    assert big[0] == pytest.approx(big[1], rel=0.01)
    # B200: its 2.27x bf16 peak speeds a compute-bound GEMM up by less (fixed floor)
    b200 = hwmodels.gemm_time_ms("b200", 8192, 8192, 8192)
    assert 1.8 < big[0] / b200 <= 2250 / 989.5 + 1e-9


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(CatalogError, match="dtype"):
        hwmodels.gemm_time_ms("h100", 1, 1, 1, "fp7")
    with pytest.raises(CatalogError, match="fp8"):
        hwmodels.gemm_time_ms("a100", 16, 1024, 1024, "fp8")
    with pytest.raises(CatalogError, match="m: must be >= 1"):
        hwmodels.gemm_time_ms("h100", 0, 1, 1)
    with pytest.raises(CatalogError, match="num_heads"):
        hwmodels.attention_time_ms("h100", 1, 1, 10, 6, 4, 128)
    with pytest.raises(CatalogError, match="impl"):
        hwmodels.allreduce_time_ms("h100", 2, 1024, "mpi")


# ---- the roofline composes the same functions ---------------------------------------------
def test_step_rows_are_the_op_functions_times_the_layers():
    hw = RooflineModel("h100", "llama-3.1-70b", tp=4)
    spec = hw.model
    batch = [(1, 2000)] * 16
    rows = {r.name: r for r in hw.breakdown(batch)}
    layers = spec.num_layers
    inter = spec.intermediate_size // 4
    down = hwmodels.gemm_time_ms("h100", 16, spec.hidden_size, inter) * 1e-3
    assert rows["down_proj"].time_s == pytest.approx(layers * down, rel=1e-9)
    attn = hwmodels.attention_time_ms("h100", 16, 1, 2000, spec.num_heads // 4,
                                      spec.num_kv_heads // 4, spec.head_dim) * 1e-3
    assert rows["attention_decode"].time_s == pytest.approx(layers * attn, rel=1e-9)
    ar = hwmodels.allreduce_time_ms("h100", 4, 16 * spec.hidden_size * 2) * 1e-3
    assert rows["tp_all_reduce"].time_s == pytest.approx(2 * layers * ar, rel=1e-9)
    for name in ("down_proj", "attention_decode", "tp_all_reduce"):
        assert 0 < rows[name].floor_s < rows[name].time_s
        assert 0 < rows[name].eff <= 1.0


def test_a_decode_call_pays_for_its_longest_sequence_not_for_each():
    """The longest sequence's serial walk over its keys (until split-KV spreads it) is paid
    once per call: measured on the H100 (TensorRT-LLM, 32/8 heads, bf16 KV), batch 1 goes
    from 8.5 us at 2 cached tokens to 11.1 us at 128, while at batch 2048 those 126 extra keys
    per sequence add 20 us (595 -> 615 us), far less than 2048 walks (5 ms) would."""
    def call_us(batch, cached):
        return hwmodels.attention_time_ms("h100", batch, 1, cached, 32, 8, 128) * 1e3

    one = call_us(1, 127) - call_us(1, 1)
    assert 1.5 < one < 4.0  # measured 2.6 us
    many = call_us(2048, 127) - call_us(2048, 1)
    assert many < 0.1 * 2048 * one  # one path per call plus the streams, not 2048 paths
    # beyond path_keys the path stops growing: a batch-1 call grows by its stream
    long = call_us(1, 8191) - call_us(1, 4095)
    stream = 4096 * 2 * 8 * 128 * 2 / 3.35e12 * 1e6  # 2.5 us at the datasheet bandwidth
    assert stream < long < 4 * stream  # measured 8.8 us (one sequence streams slowly)


def test_a100_custom_allreduce_fills_its_ctas_then_hands_large_messages_to_nccl():
    """TensorRT-LLM 1.0's one-shot kernel launches one CTA per 8 KB (up to 24): from 16 KB to
    64 KB each CTA does the same work, so the time stays nearly flat (measured on 4 A100s: 6.3, 6.0,
    6.0 us), then grows with the bytes once the grid is full (512 KB: 13.9 us). Beyond its
    workspace (fitted: 1 MB) the message goes to NCCL."""
    def us(nbytes, impl="custom"):
        return hwmodels.allreduce_time_ms("a100", 4, nbytes, impl) * 1e3

    assert us(65536) < 1.2 * us(16384)  # 4x the bytes on 4x the CTAs (model: +16%)
    assert us(524288) > 1.8 * us(65536)
    assert us(4 * 2**20) == pytest.approx(us(4 * 2**20, "nccl"))
    assert us(2**20) < 0.9 * us(2**20, "nccl")  # the custom kernel still runs 1 MB


def test_fp8_decode_picks_its_kernel_by_head_grouping_and_overlaps_its_floor():
    """TensorRT-LLM on the H100, FP8 KV cache, 16 cached tokens: grouped heads (32/8) run XQA
    (measured 5.9 us at batch 1), plain multi-head attention (32/32) the masked multi-head
    kernel (9.3 us). A small batch's sequences run while the call's floor passes (batch 32:
    6.6 us, not the floor plus 32 sequences' work); a large one is throughput (batch 2048:
    182 us)."""
    def us(batch, heads, kv_heads, cached=15):
        return hwmodels.attention_time_ms("h100", batch, 1, cached, heads, kv_heads, 128,
                                          "fp8") * 1e3

    assert 5.0 < us(1, 32, 8) < 6.5
    assert 8.5 < us(1, 32, 32) < 10.0
    assert us(32, 32, 8) < 1.3 * us(1, 32, 8)
    assert 165 < us(2048, 32, 8) < 200
    # beyond path_keys the longest walk keeps growing (a capped split count): batch 1 at
    # 32K / 64K keys measured 35.2 / 64.6 us
    assert 30 < us(1, 32, 8, 32767) < 40 and 55 < us(1, 32, 8, 65535) < 72
