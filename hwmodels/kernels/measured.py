"""The measured kernel tables packaged in ``catalog/kernels/`` (NVIDIA, Apache-2.0; see the
README there), as the fit and its check read them, with the fit / held-back split.

Split: a row is held back when the CRC-32 of its shape key (the columns that define the
problem, joined with ``|``) is odd, so the split is deterministic, independent of row order and
the same on every machine; the curves are fitted on the even rows only.
"""

from __future__ import annotations

import zlib
from functools import cache
from importlib import resources

import pandas as pd

from hwmodels.kernels.fits import MEASURED_GPU as CHIP_GPU  # the measured chips' catalog entries
DTYPE = {"bfloat16": "bf16", "fp8": "fp8", "half": "bf16", "int8": "int8"}
SHAPE_KEYS = {
    "gemm": ("system", "gemm_dtype", "m", "n", "k"),
    "decode_attention": ("system", "kernel_source", "kv_cache_dtype", "batch_size", "step",
                         "num_heads", "num_key_value_heads"),
    "prefill_attention": ("system", "kv_cache_dtype", "batch_size", "isl", "num_heads",
                          "num_key_value_heads"),
    "collectives": ("system", "kernel_source", "dtype", "num_gpus", "message_size"),
}
# Decode attention kernels the curves describe, by chip: TensorRT-LLM's on the H100; vLLM's
# FlashAttention-2 on the A100, whose TensorRT-LLM rows exceed its HBM bandwidth (README).
DECODE_SOURCE = {"h100_sxm": "torch_flow", "a100_sxm": "vllm_flash_attn"}
# Decode rows with more query heads per KV head than this are left out of fit and check: at 64
# (64 query heads on one KV head) TensorRT-LLM runs a CUDA-core path, 10-30x slower than its
# tensor-core kernels for the same bytes; the model describes the tensor-core kernels only.
MAX_DECODE_GROUP = 16
# Prefill rows of a one-token prompt are left out: a step prices one new token as decode.
MIN_PREFILL_TOKENS = 2


def held_back(frame: pd.DataFrame, table: str) -> pd.Series:
    """True for the rows of the held-back half."""
    keys = frame[list(SHAPE_KEYS[table])].astype(str).agg("|".join, axis=1)
    return keys.map(lambda key: zlib.crc32(key.encode()) % 2 == 1)


@cache
def _read(table: str) -> pd.DataFrame:
    path = resources.files("hwmodels").joinpath("catalog", "kernels", f"{table}.csv")
    with path.open("r", encoding="utf-8") as handle:
        frame = pd.read_csv(handle)
    frame["held_back"] = held_back(frame, table)
    frame["seconds"] = frame["latency_ms"] * 1e-3
    return frame


def table(name: str) -> pd.DataFrame:
    """A measured table with ``held_back`` and ``seconds`` columns (a copy)."""
    frame = _read(name).copy()
    if name == "decode_attention":
        wanted = frame["system"].map(DECODE_SOURCE)
        group = frame["num_heads"] // frame["num_key_value_heads"]
        frame = frame[(frame["kernel_source"] == wanted) & (group <= MAX_DECODE_GROUP)]
    if name == "prefill_attention":
        frame = frame[frame["isl"] >= MIN_PREFILL_TOKENS]
    if name == "collectives":
        frame = frame[frame["op_name"] == "all_reduce"].copy()
        frame["nbytes"] = frame["message_size"] * frame["dtype"].map(
            {"half": 2, "bfloat16": 2, "int8": 1})
        frame["impl"] = frame["kernel_source"].map({"NCCL": "nccl", "TRTLLM": "custom"})
    return frame.reset_index(drop=True)
