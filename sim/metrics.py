"""Per-request and per-step records, and the summary a serving benchmark would print.

Records are kept column-wise in compact arrays (8 bytes a value) so a million-request run stays
small; the DataFrames are built once at the end. Inter-token latencies are far too many to keep
one by one, so they go to a log-binned histogram: the mean is exact, percentiles are within the
bin width (0.1 %).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core import Batch, Request

REQUEST_COLUMNS = (
    "request_id", "arrival_time", "first_scheduled_time", "first_token_time", "finish_time",
    "prompt_tokens", "output_tokens", "cached_tokens", "preemptions", "replica",
    "kv_transfer_time", "accepted_draft_tokens", "proposed_draft_tokens",
)
# Per step: tokens the GPU computed (``decode_tokens`` includes static batching's padding rows,
# ``decode_seqs`` does not), the KV blocks held during the step (finishers not yet freed), and
# the queue lengths after it.
STEP_COLUMNS = (
    "replica", "start_time", "duration", "num_seqs", "prefill_tokens", "decode_tokens",
    "kv_blocks_used", "kv_blocks_total", "num_waiting", "num_running",
    "decode_seqs", "spec_seqs", "draft_tokens",  # speculative decoding: who verified drafts
)
STEP_FLOAT_COLUMNS = ("start_time", "duration")  # the other step columns are counts (int32)


class LogHistogram:
    """Histogram over log-spaced bins (relative width ``rel_width``) with an exact mean.

    Values are buffered and binned in vectorised batches: one ``np.log`` per value in bulk
    instead of a Python call each, and the same binning code for single values and for the
    weighted runs of identical steps that fast-forwarding adds (so both give the same bins).
    """

    _BUFFER = 1 << 16

    def __init__(self, low: float = 1e-6, high: float = 1e5, rel_width: float = 1e-3):
        self._log_low = math.log(low)
        self._scale = 1.0 / math.log1p(rel_width)
        self._low, self._rel = low, rel_width
        self._counts = np.zeros(int(math.log(high / low) * self._scale) + 2, dtype=np.int64)
        self._count = 0
        self._total = 0.0
        self._values = array("d")
        self._weights = array("d")

    def add(self, value: float, weight: int = 1) -> None:
        self._values.append(value)
        self._weights.append(weight)
        if len(self._values) >= self._BUFFER:
            self._flush()

    def add_many(self, values: np.ndarray | list[float], weights: np.ndarray | int = 1) -> None:
        """Add ``values[i]`` ``weights[i]`` times each (a scalar weight applies to all)."""
        if isinstance(values, np.ndarray):
            self._values.frombytes(values.astype(np.float64, copy=False).tobytes())
        else:
            self._values.extend(values)
        if isinstance(weights, np.ndarray):
            self._weights.frombytes(weights.astype(np.float64).tobytes())
        else:
            self._weights.extend(array("d", (float(weights),)) * len(values))
        if len(self._values) >= self._BUFFER:
            self._flush()

    def _flush(self) -> None:
        if self._values:
            self._bin(np.frombuffer(self._values, dtype=np.float64),
                      np.frombuffer(self._weights, dtype=np.float64))
            self._values = array("d")
            self._weights = array("d")

    def _bin(self, values: np.ndarray, weights: np.ndarray) -> None:
        idx = ((np.log(np.maximum(values, self._low)) - self._log_low) * self._scale)
        idx = np.minimum(idx.astype(np.int64), len(self._counts) - 1)
        self._counts += np.rint(np.bincount(idx, weights, len(self._counts))).astype(np.int64)
        self._count += int(round(float(weights.sum())))
        # not np.dot: a long BLAS dot wakes OpenBLAS's threads, which then spin for a while
        # on the cores the simulation runs on
        self._total += float(np.add.reduce(values * weights))

    @property
    def count(self) -> int:
        self._flush()
        return self._count

    @property
    def total(self) -> float:
        self._flush()
        return self._total

    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        if not self.count:
            return math.nan
        cum = np.cumsum(self._counts)
        idx = int(np.searchsorted(cum, q * self.count, side="left"))
        return self._low * (1 + self._rel) ** (idx + 0.5)

    def counts(self) -> np.ndarray:
        """Values per bin (a copy); equal histograms have equal counts."""
        self._flush()
        return self._counts.copy()


@dataclass(frozen=True, slots=True)
class SLO:
    """Latency targets for goodput; ``None`` means no target on that metric."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None


class MetricsRecorder:
    """Collects what happened during a run; turns it into the contract's DataFrames."""

    def __init__(self, spool_dir: str | Path | None = None, spool_rows: int = 1 << 20) -> None:
        """``spool_dir``: stream the per-step records to ``spool_dir/steps.parquet`` every
        ``spool_rows`` rows instead of keeping them all in memory (a million-request run has
        tens of millions of steps)."""
        self._req = {c: array("d") for c in REQUEST_COLUMNS}
        self._step = _step_arrays()
        self._rejected: list[tuple[int, float, int, int, str]] = []
        self.itl = LogHistogram()
        self._spool = _StepSpool(Path(spool_dir), spool_rows) if spool_dir is not None else None

    def record_finished(self, r: Request, replica: int) -> None:
        values = (
            r.request_id, r.arrival_time, _nan(r.first_scheduled_time), _nan(r.first_token_time),
            _nan(r.finish_time), r.prompt_tokens, r.output_tokens, r.cached_tokens, r.preemptions,
            replica, r.kv_transfer_time, r.accepted_draft_tokens, r.proposed_draft_tokens,
        )
        for col, v in zip(REQUEST_COLUMNS, values, strict=True):
            self._req[col].append(v)

    def record_finished_columns(self, columns: dict[str, np.ndarray]) -> None:
        """Append many finished requests at once (``sim.lane``): an array per column of
        ``REQUEST_COLUMNS``, in finishing order."""
        for col in REQUEST_COLUMNS:
            self._req[col].frombytes(np.asarray(columns[col], dtype=np.float64).tobytes())

    def record_rejected(self, r: Request) -> None:
        self._rejected.append((r.request_id, r.arrival_time, r.prompt_tokens, r.output_tokens,
                               r.rejected_reason or ""))

    def record_step(self, replica: int, start: float, duration: float, batch: Batch,
                    blocks_used: int, blocks_total: int, waiting: int, running: int) -> None:
        prefill = decode = decoding = 0  # batch.token_split() and decode_mask() in one pass
        for req, new, draft, pad in zip(batch.requests, batch.new_tokens, batch.draft_tokens,
                                        batch.padding, strict=True):
            if pad or (req.num_output_tokens > 0 and new == 1 + draft):
                decode += new
                decoding += not pad
            else:
                prefill += new
        drafts = sum(batch.draft_tokens)
        values = (replica, start, duration, len(batch), prefill, decode, blocks_used,
                  blocks_total, waiting, running, decoding,
                  sum(1 for d in batch.draft_tokens if d) if drafts else 0, drafts)
        for col, v in zip(STEP_COLUMNS, values, strict=True):
            self._step[col].append(v)
        if self._spool is not None and len(self._step["start_time"]) >= self._spool.rows:
            self._step = self._spool.write(self._step)

    def record_steps(self, columns: dict[str, np.ndarray | int | float]) -> None:
        """Append many steps at once (a fast-forwarded run): per column an array, or a scalar
        for a value every step shares. Columns left out are zero."""
        n = len(columns["start_time"])
        get = columns.get
        for col, arr in self._step.items():
            value = get(col, 0)
            if isinstance(value, np.ndarray):
                dtype = np.float64 if col in STEP_FLOAT_COLUMNS else np.int32
                arr.frombytes(value.astype(dtype, copy=False).tobytes())
            else:
                arr.extend(array(arr.typecode, (value,)) * n)
        if self._spool is not None and len(self._step["start_time"]) >= self._spool.rows:
            self._step = self._spool.write(self._step)

    @property
    def num_steps(self) -> int:
        """Steps recorded so far (spooled ones included)."""
        spooled = self._spool.written if self._spool is not None else 0
        return spooled + len(self._step["start_time"])

    def steps_path(self) -> Path:
        """Flush and close the spool; the Parquet file of every step (spooling runs only)."""
        if self._spool is None:
            raise ValueError("steps_path: this recorder keeps its steps in memory (no spool_dir)")
        self._step = self._spool.write(self._step)
        return self._spool.close()

    @property
    def num_finished(self) -> int:
        return len(self._req["request_id"]) + len(self._rejected)

    def requests_frame(self) -> pd.DataFrame:
        df = pd.DataFrame({c: np.frombuffer(a, dtype=np.float64) for c, a in self._req.items()})
        for col in ("request_id", "prompt_tokens", "output_tokens", "cached_tokens",
                    "preemptions", "replica", "accepted_draft_tokens", "proposed_draft_tokens"):
            df[col] = df[col].astype(np.int64)
        df["ttft"] = df["first_token_time"] - df["arrival_time"]
        df["e2el"] = df["finish_time"] - df["arrival_time"]
        decode_tokens = (df["output_tokens"] - 1).where(df["output_tokens"] > 1)
        df["tpot"] = (df["finish_time"] - df["first_token_time"]) / decode_tokens
        df["queue_delay"] = df["first_scheduled_time"] - df["arrival_time"]
        df["rejected"] = False
        df["rejected_reason"] = ""
        if self._rejected:
            rej = pd.DataFrame(self._rejected, columns=[
                "request_id", "arrival_time", "prompt_tokens", "output_tokens", "rejected_reason"])
            rej["rejected"] = True
            df = pd.concat([df, rej], ignore_index=True)
        return df.sort_values("request_id", kind="stable").reset_index(drop=True)

    def steps_frame(self) -> pd.DataFrame:
        if self._spool is not None:
            return pd.read_parquet(self.steps_path())
        return _steps_df(self._step)


def _step_arrays() -> dict[str, array]:
    return {c: array("d" if c in STEP_FLOAT_COLUMNS else "i") for c in STEP_COLUMNS}


def _steps_df(step: dict[str, array]) -> pd.DataFrame:
    cols = {}
    for c, a in step.items():
        values = np.frombuffer(a, dtype=np.float64 if a.typecode == "d" else np.int32)
        cols[c] = values.copy() if a.typecode == "d" else values.astype(np.int64)
    return pd.DataFrame(cols)


class _StepSpool:
    """Per-step records streamed to one Parquet file, one row group per ``rows`` steps."""

    def __init__(self, directory: Path, rows: int):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "steps.parquet"
        self.rows = rows
        self.written = 0
        self._writer = None
        self._closed = False

    def write(self, step: dict[str, array]) -> dict[str, array]:
        """Write the buffered rows; return fresh, empty buffers."""
        if len(step["start_time"]):
            if self._closed:
                raise RuntimeError("steps were recorded after the step spool was closed")
            table = self._table(step)
            if self._writer is None:
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(self.path, table.schema)
            self._writer.write_table(table)
            self.written += table.num_rows
        return _step_arrays()

    def close(self) -> Path:
        if not self._closed:
            if self._writer is None:  # no step at all: still a file, with the columns
                self._table(_step_arrays()).to_pandas().to_parquet(self.path, index=False)
            else:
                self._writer.close()
            self._writer, self._closed = None, True
        return self.path

    @staticmethod
    def _table(step: dict[str, array]):
        import pyarrow as pa

        return pa.Table.from_pandas(_steps_df(step), preserve_index=False)


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def _stats(prefix: str, values_s: np.ndarray, out: dict) -> None:
    ms = values_s[~np.isnan(values_s)] * 1e3
    for name, fn in (("mean", np.mean), ("median", np.median)):
        out[f"{name}_{prefix}_ms"] = float(fn(ms)) if ms.size else math.nan
    for p in (90, 99):
        out[f"p{p}_{prefix}_ms"] = float(np.percentile(ms, p)) if ms.size else math.nan


def summarize(requests: pd.DataFrame, itl: LogHistogram, slo: SLO, *,
              window_start: float | None = None) -> dict:
    """The serving-benchmark summary (names as vLLM's ``benchmark_serving`` prints them).

    Rates divide by the run's duration from t = 0 to the last finish, as a benchmark's wall
    clock does; with warm-up left out, ``window_start`` (the first measured send) opens the
    measurement window instead, so the measured requests' tokens are not spread over the
    warm-up they were excluded from."""
    done = requests[~requests["rejected"]]
    start = float(requests["arrival_time"].min()) if len(requests) else 0.0
    end = float(done["finish_time"].max()) if len(done) else start
    opens = min(start, 0.0) if window_start is None else window_start
    duration = max(end - opens, 1e-12)
    out: dict = {
        "completed": int(len(done)),
        "rejected": int(requests["rejected"].sum()),
        "duration_s": duration,
        "total_input_tokens": int(done["prompt_tokens"].sum()),
        "total_output_tokens": int(done["output_tokens"].sum()),
        "request_throughput": len(done) / duration,
        "output_throughput": float(done["output_tokens"].sum()) / duration,
        "total_token_throughput": float(done["prompt_tokens"].sum()
                                        + done["output_tokens"].sum()) / duration,
    }
    for name in ("ttft", "tpot", "e2el"):
        _stats(name, done[name].to_numpy(dtype=np.float64), out)
    out["mean_itl_ms"] = itl.mean() * 1e3
    out["median_itl_ms"] = itl.quantile(0.5) * 1e3
    out["p90_itl_ms"] = itl.quantile(0.90) * 1e3
    out["p99_itl_ms"] = itl.quantile(0.99) * 1e3
    out["mean_queue_delay_ms"] = float(done["queue_delay"].mean() * 1e3) if len(done) else math.nan
    out["total_preemptions"] = int(done["preemptions"].sum())
    prompt = done["prompt_tokens"].sum()
    out["prefix_cache_hit_rate"] = float(done["cached_tokens"].sum() / prompt) if prompt else 0.0
    out["goodput"] = _goodput(done, slo) / duration
    return out


def speculative_summary(requests: pd.DataFrame, steps: pd.DataFrame, plan=None) -> dict:
    """Speculative decoding's effect, named as vLLM's spec-decode metrics name it.

    ``spec_draft_acceptance_rate``: accepted / proposed drafts. ``spec_mean_acceptance_length``:
    tokens a verify step emits per sequence (1 + accepted drafts). ``spec_tokens_per_step``:
    tokens a decoding sequence gains per iteration, speculating or not (1.0 without
    speculation). ``draft_bytes``: per-GPU memory the draft or heads take from the KV pool.
    Empty for a run that neither drafted nor reserved draft memory.
    """
    draft_bytes = float(getattr(plan, "draft_bytes", 0.0))
    done = requests[~requests["rejected"]]
    accepted = float(done["accepted_draft_tokens"].sum()) if len(done) else 0.0
    proposed = float(done["proposed_draft_tokens"].sum()) if len(done) else 0.0
    verify_steps = float(steps["spec_seqs"].sum()) if len(steps) else 0.0
    decode_steps = float(steps["decode_seqs"].sum()) if len(steps) else 0.0
    # a request's first token, and one after each recompute, come from a prefill step
    decode_tokens = float((done["output_tokens"] - 1 - done["preemptions"]).clip(lower=0).sum())
    if not proposed and not draft_bytes:
        return {}
    return {
        "spec_draft_acceptance_rate": accepted / proposed if proposed else math.nan,
        "spec_mean_acceptance_length": 1 + accepted / verify_steps if verify_steps else math.nan,
        "spec_tokens_per_step": decode_tokens / decode_steps if decode_steps else math.nan,
        "draft_bytes": draft_bytes,
    }


POLICY_COUNTERS = (
    "preemptions_recompute", "preemptions_swap", "swapped_out_bytes", "swapped_in_bytes",
    "swap_time_s", "rejected_too_long", "rejected_queue_full", "prefix_hit_blocks",
    "prefix_query_blocks", "evicted_blocks",
)


def policy_summary(schedulers: list, steps: pd.DataFrame | None = None) -> dict:
    """Scheduling and KV-cache events, summed over replicas, and KV/queue load over the run.

    Counters come from each scheduler's ``stats()`` (``policies.base``): preemptions by kind,
    bytes and seconds of swapping over PCIe, rejections by reason, prefix-cache blocks hit out
    of blocks looked up, cached blocks evicted. From the steps table, time-weighted over the
    steps that ran: ``mean_kv_occupancy`` (used / total KV blocks), ``peak_kv_occupancy``,
    ``mean_num_waiting`` and ``max_num_waiting`` (the queue, per replica).
    """
    totals = dict.fromkeys(POLICY_COUNTERS, 0.0)
    for sched in schedulers:
        stats = getattr(sched, "stats", None)
        for key, value in (stats() if callable(stats) else {}).items():
            if key in totals:
                totals[key] += value
    queried = totals.pop("prefix_query_blocks")
    out: dict = {k: (v if k.endswith(("_bytes", "_s")) else int(v)) for k, v in totals.items()}
    out["prefix_cache_block_hit_rate"] = totals["prefix_hit_blocks"] / queried if queried else 0.0
    if steps is not None and len(steps):
        weight = steps["duration"].to_numpy(dtype=np.float64)
        occupancy = (steps["kv_blocks_used"] / steps["kv_blocks_total"]).to_numpy(np.float64)
        waiting = steps["num_waiting"].to_numpy(dtype=np.float64)
        total_s = weight.sum()
        out["mean_kv_occupancy"] = float(occupancy @ weight / total_s) if total_s else math.nan
        out["peak_kv_occupancy"] = float(occupancy.max())
        out["mean_num_waiting"] = float(waiting @ weight / total_s) if total_s else math.nan
        out["max_num_waiting"] = int(waiting.max())
    return out


def _goodput(done: pd.DataFrame, slo: SLO) -> int:
    """Completed requests meeting every configured SLO (vLLM's request goodput)."""
    ok = np.ones(len(done), dtype=bool)
    for col, target_ms in (("ttft", slo.ttft_ms), ("tpot", slo.tpot_ms), ("e2el", slo.e2el_ms)):
        if target_ms is not None:
            ok &= ~(done[col].to_numpy(dtype=np.float64) * 1e3 > target_ms)
    return int(ok.sum())
