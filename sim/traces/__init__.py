"""Loaders of real LLM-serving traces, and the options to replay them open loop.

Every loader yields ``Request`` objects in arrival order, reading the file lazily where the format
allows (CSV, JSON Lines). Formats and their quirks are described in ``docs/workloads.md``:

========= ============================================= =========================================
format    file                                          what a row gives
========= ============================================= =========================================
azure     Azure LLM inference CSV (2023 and 2024)       TIMESTAMP, ContextTokens, GeneratedTokens
mooncake  Mooncake JSON Lines                           timestamp (ms), lengths, 512-token hashes
agentic   kv-cache-tester session JSON (file, folder)   sessions: turns, think time, sub-agents
vidur     Vidur length CSV                              lengths only (``arrived_at`` if present)
burstgpt  BurstGPT CSV                                  Timestamp (s), Request/Response tokens
sharegpt  ShareGPT JSON (vLLM's serving benchmark)      text; tokens = ceil(characters / 4)
========= ============================================= =========================================

A bad row is never dropped silently (``on_bad_rows``: ``error`` raises ``TraceError``, ``skip``
keeps it in ``TraceReader.bad_rows`` and warns with ``TraceWarning``; see ``rows``).

Modules: ``reader`` (format detection, ``TraceReader``), ``row_formats`` (CSV and JSON Lines,
streamed), ``json_docs`` (whole-JSON files, ShareGPT), ``agentic`` (session traces), ``fields``
(one row's fields), ``rows`` (bad-row reporting), ``playback`` (open-loop replay options and the
``workload.arrival: trace`` entry point).
"""

from sim.traces.agentic import read_agentic
from sim.traces.fields import NAMESPACE_BITS
from sim.traces.json_docs import SHAREGPT_CHARS_PER_TOKEN, read_sharegpt
from sim.traces.playback import (
    TRACE_ARRIVAL_STREAM,
    TRACE_SAMPLE_STREAM,
    Replay,
    replay,
    trace_workload,
)
from sim.traces.reader import FORMATS, TraceReader, detect_format
from sim.traces.row_formats import (
    MOONCAKE_BLOCK_TOKENS,
    read_azure,
    read_burstgpt,
    read_mooncake,
    read_vidur,
)
from sim.traces.rows import BadRow, RowReport, TraceError, TraceWarning

__all__ = [
    "FORMATS", "MOONCAKE_BLOCK_TOKENS", "NAMESPACE_BITS", "SHAREGPT_CHARS_PER_TOKEN",
    "TRACE_ARRIVAL_STREAM", "TRACE_SAMPLE_STREAM", "BadRow", "Replay", "RowReport", "TraceError",
    "TraceReader", "TraceWarning", "detect_format", "read_agentic", "read_azure",
    "read_burstgpt", "read_mooncake", "read_sharegpt", "read_vidur", "replay", "trace_workload",
]
