"""The unit of every output column and summary key, and the files that carry them.

The contract's names stay as they are (``ttft``, ``mean_ttft_ms``, ...: ``docs/architecture.md``)
and the tables keep seconds while the summary keeps milliseconds, as vLLM's benchmark does; so
that nobody has to guess, every saved file says its units itself: each Parquet column has a
``unit`` in its field metadata (and the schema metadata ``servesim.units`` maps every column to
its unit), and ``summary.json`` has a ``units`` entry for every key, plus ``notes`` where a
number needs a word (goodput without an SLO, the two prefix-cache rates).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

SECONDS = "s"
COLUMN_UNITS = {
    # requests.parquet
    "request_id": "id", "arrival_time": SECONDS, "first_scheduled_time": SECONDS,
    "first_token_time": SECONDS, "finish_time": SECONDS, "prompt_tokens": "tokens",
    "output_tokens": "tokens", "cached_tokens": "tokens", "preemptions": "count",
    "replica": "index", "kv_transfer_time": SECONDS, "accepted_draft_tokens": "tokens",
    "proposed_draft_tokens": "tokens", "ttft": SECONDS, "tpot": "s/token", "e2el": SECONDS,
    "queue_delay": SECONDS, "rejected": "bool", "rejected_reason": "text",
    # steps.parquet
    "start_time": SECONDS, "duration": SECONDS, "num_seqs": "sequences",
    "prefill_tokens": "tokens", "decode_tokens": "tokens", "kv_blocks_used": "KV blocks",
    "kv_blocks_total": "KV blocks", "num_waiting": "requests", "num_running": "requests",
    "decode_seqs": "sequences", "spec_seqs": "sequences", "draft_tokens": "tokens",
    # sessions.parquet and turns.parquet
    "session_id": "id", "name": "text", "requests": "requests",
    "end_time": SECONDS, "wait_time": SECONDS, "think_time": SECONDS, "mean_ttft": SECONDS,
    "user": "id", "agent": "id", "turn": "index", "after_request_id": "id",
    "ready_time": SECONDS, "delay": SECONDS,
}

SUMMARY_UNITS = {
    "completed": "requests", "rejected": "requests", "request_throughput": "req/s",
    "output_throughput": "tokens/s", "total_token_throughput": "tokens/s", "goodput": "req/s",
    "total_input_tokens": "tokens", "total_output_tokens": "tokens",
    "mean_kv_occupancy": "fraction", "peak_kv_occupancy": "fraction",
    "mean_num_waiting": "requests", "max_num_waiting": "requests", "num_replicas": "replicas",
    "num_gpus": "GPUs", "num_sessions": "sessions", "kv_pool_blocks": "KV blocks",
    "prefix_hit_blocks": "KV blocks", "evicted_blocks": "KV blocks",
    "spec_mean_acceptance_length": "tokens/verify step",
    "spec_tokens_per_step": "tokens/decode step",
}
# Summary keys by their name's form, for keys not listed above (first match wins).
SUMMARY_PATTERNS = (
    (r"_ms$", "ms"), (r"_s$", SECONDS), (r"_bytes$", "bytes"), (r"_rate$", "fraction"),
    (r"^(total_)?preemptions", "count"), (r"^rejected_", "requests"), (r"_requests", "requests"),
    (r"_tokens$", "tokens"),
)


def column_unit(name: str) -> str | None:
    """The unit of an output column, or None if it has none on record."""
    if name in COLUMN_UNITS:
        return COLUMN_UNITS[name]
    return SECONDS if name.endswith(("_time", "_s")) else None


def summary_unit(key: str) -> str | None:
    """The unit of a summary key, or None if it has none on record."""
    if key in SUMMARY_UNITS:
        return SUMMARY_UNITS[key]
    for pattern, unit in SUMMARY_PATTERNS:
        if re.search(pattern, key):
            return unit
    return None


def summary_notes(summary: dict, slo_set: bool) -> dict[str, str]:
    """Words for the summary numbers that need them (the printed table says the same)."""
    notes = {}
    if not slo_set:
        notes["goodput"] = ("no SLO set (slo.ttft_ms, slo.tpot_ms, slo.e2el_ms): every "
                            "completed request counts, so goodput equals request_throughput")
    if summary.get("prefix_cache_hit_rate") or summary.get("prefix_cache_block_hit_rate"):
        notes["prefix_cache_hit_rate"] = PREFIX_TOKENS_NOTE
        notes["prefix_cache_block_hit_rate"] = PREFIX_BLOCKS_NOTE
    return notes


PREFIX_TOKENS_NOTE = ("prompt tokens found in the prefix cache when each request was first "
                      "admitted / prompt tokens of the completed requests")
PREFIX_BLOCKS_NOTE = ("prompt blocks found in the cache / prompt blocks looked up, over every "
                      "admission: a request re-admitted after a preemption looks its prompt up "
                      "again and finds its own blocks still cached, so preemptions raise this "
                      "rate above the token rate; without preemptions the two agree to within "
                      "a block per request")


def summary_document(summary: dict, slo_set: bool) -> dict:
    """``summary.json``'s content: the summary, its ``units`` and its ``notes``."""
    units = {k: u for k in summary if (u := summary_unit(k)) is not None}
    return {**summary, "units": units, "notes": summary_notes(summary, slo_set)}


def write_parquet(frame: pd.DataFrame, path: str | Path) -> None:
    """``frame`` to ``path`` with each column's unit in the file's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    units = {f.name: u for f in table.schema if (u := column_unit(f.name)) is not None}
    fields = [f.with_metadata({"unit": units[f.name]}) if f.name in units else f
              for f in table.schema]
    metadata = {**(table.schema.metadata or {}), b"servesim.units": json.dumps(units)}
    pq.write_table(pa.Table.from_arrays(table.columns, schema=pa.schema(fields, metadata)), path)


def parquet_units(path: str | Path) -> dict[str, str]:
    """The per-column units a servesim Parquet file records (empty for other files)."""
    import pyarrow.parquet as pq

    return {f.name: f.metadata[b"unit"].decode() for f in pq.read_schema(path)
            if f.metadata and b"unit" in f.metadata}
