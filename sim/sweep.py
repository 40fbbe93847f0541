"""Parameter sweeps: grid or random search over config keys and seeds, one Parquet table.

A sweep file names a base config, the keys to vary (dotted, as ``--set`` takes them) and the
seeds::

    base: experiment.yaml          # a path (relative to this file) or an inline mapping
    set: {workload.num_requests: 2000}
    grid:                          # every combination
      scheduler.policy: [continuous, chunked_prefill]
      workload.rate: [5, 10, 20]
    random:                        # plus (or instead) random samples, crossed with the grid
      samples: 16
      seed: 0
      params:
        scheduler.max_num_batched_tokens: {low: 512, high: 16384, log: true, int: true}
        scheduler.max_num_seqs: [64, 128, 256]
    seeds: 3                       # 0, 1, 2 (or a list); the workload of a seed is the same
    metrics: [mean_ttft_ms, p99_tpot_ms, request_throughput]   # default: every number

Every point (a combination and a seed) is a ``sim.simulate`` run whose summary becomes one row.
Rows are appended to a journal (JSON Lines) the moment a point finishes, and the Parquet table
is rebuilt from the journal, sorted by point: a sweep killed mid-way loses only the points in
flight, and ``resume=True`` runs just the rest, giving exactly the table of an uninterrupted run
(``wall_s`` aside). Backends: a local process pool, or Ray (``backend="ray"``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.config import (
    ConfigError,
    check_files,
    check_writable,
    load_config,
    one_line,
    read_yaml,
    resolve_paths,
    set_dotted,
)

SPEC_KEYS = ("base", "set", "grid", "random", "seeds", "metrics")
BACKENDS = ("local", "ray")
JOURNAL_SUFFIX = ".journal.jsonl"
TMP_SUFFIX = ".tmp"
MAX_POINTS = 1_000_000  # points of one sweep: each is a whole simulation and a journal line
WRITE_EVERY_S = 1.0  # the table is rebuilt at most this often (the journal at every point)


class SweepError(ValueError):
    """A sweep file or option that cannot be used; the message is one line naming the field."""


@dataclass(frozen=True, slots=True)
class Point:
    """One run of a sweep: values of the swept keys, and a seed."""

    index: int
    params: dict[str, Any]
    seed: int

    @property
    def point_id(self) -> str:
        """Stable across runs of the same sweep: what ``resume`` matches finished points by."""
        key = json.dumps([sorted(self.params.items()), self.seed], default=str)
        return hashlib.sha1(key.encode()).hexdigest()[:16]


@dataclass(slots=True)
class SweepSpec:
    """A parsed sweep file."""

    base: dict[str, Any]
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    random: dict[str, Any] | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    metrics: list[str] | None = None

    def points(self) -> list[Point]:
        """Grid combinations x random samples x seeds, in a fixed order."""
        keys = list(self.grid)
        combos = [dict(zip(keys, values, strict=True))
                  for values in itertools.product(*(self.grid[k] for k in keys))]
        samples = _random_samples(self.random) if self.random else [{}]
        out = []
        for combo in combos:
            for sample in samples:
                for seed in self.seeds:
                    out.append(Point(len(out), {**combo, **sample}, seed))
        return out

    def digest(self) -> str:
        """Changes whenever the points or what is measured would change."""
        text = json.dumps([self.base, self.fixed, self.grid, self.random, self.seeds,
                           self.metrics], sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def config(self, point: Point) -> dict[str, Any]:
        """The YAML-shaped config of a point: base, then ``set``, then the point's values."""
        data = json.loads(json.dumps(self.base))
        for key, value in {**self.fixed, **point.params}.items():
            set_dotted(data, key, value)
        data["seed"] = point.seed
        return data


def load_spec(source: str | Path | Mapping[str, Any]) -> SweepSpec:
    """Parse a sweep file (or mapping); errors name the field."""
    root = Path(".")
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        path = Path(source)
        data = _read(path, "sweep")
        root = path.parent
    if not isinstance(data, dict):
        raise SweepError("sweep: the file must hold a mapping")
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise SweepError(f"sweep: unknown key(s) {unknown}; allowed: {', '.join(SPEC_KEYS)}")
    if not data.get("grid") and not data.get("random"):
        raise SweepError("sweep: give grid or random (or both): the keys to vary")
    spec = SweepSpec(base=_base(data.get("base"), root), fixed=_mapping(data, "set"),
                     grid=_grid(data.get("grid") or {}), random=_random(data.get("random")),
                     seeds=_seeds(data.get("seeds"), data), metrics=_metrics(data.get("metrics")))
    count = math.prod(len(v) for v in spec.grid.values()) * len(spec.seeds) * (
        spec.random["samples"] if spec.random else 1)
    if count > MAX_POINTS:
        raise SweepError(f"sweep: {count:,} points (grid x random samples x seeds); at most "
                         f"{MAX_POINTS:,}")
    points = spec.points()
    try:  # a typo in a key or a missing trace fails here, once, not in every point
        check_files(load_config(spec.config(points[0])))
    except ConfigError as exc:
        raise SweepError(f"sweep: the first point is not a valid config: {exc}") from None
    return spec


def _base(value: Any, root: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return json.loads(json.dumps(dict(value)))
    if isinstance(value, str):
        path = Path(value) if Path(value).is_absolute() else root / value
        data = _read(path, "sweep.base")
        if not isinstance(data, dict):
            raise SweepError(f"sweep.base: {path} must hold a mapping of config sections")
        resolve_paths(data, path.parent)  # its relative paths, as servesim run reads them
        return json.loads(json.dumps(data))
    raise SweepError("sweep.base: a config file path or a config mapping")


def _read(path: Path, what: str) -> Any:
    """A YAML file's document; its problems as a one-line SweepError (``sim.config``'s)."""
    try:
        return read_yaml(path, what)
    except ConfigError as exc:
        raise SweepError(str(exc)) from None


def _mapping(data: dict, name: str) -> dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, Mapping):
        raise SweepError(f"sweep.{name}: a mapping of dotted config keys to values")
    return dict(value)


def _grid(grid: Any) -> dict[str, list[Any]]:
    if not isinstance(grid, Mapping):
        raise SweepError("sweep.grid: a mapping of dotted config keys to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"sweep.grid.{key}: a non-empty list of values")
    return {str(k): list(v) for k, v in grid.items()}


def _random(rand: Any) -> dict[str, Any] | None:
    if rand is None:
        return None
    if not isinstance(rand, Mapping) or not isinstance(rand.get("params"), Mapping):
        raise SweepError("sweep.random: a mapping with samples, seed and params")
    samples = rand.get("samples", 10)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_POINTS:
        raise SweepError(f"sweep.random.samples: a count, 1 <= samples <= {MAX_POINTS} "
                         f"(got {samples!r})")
    seed = rand.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise SweepError(f"sweep.random.seed: an integer, 0 <= seed < 2**63 (got {seed!r})")
    for key, dist in rand["params"].items():
        if isinstance(dist, list) and dist:
            continue
        if not (isinstance(dist, Mapping) and {"low", "high"} <= set(dist)
                and set(dist) <= {"low", "high", "log", "int"}
                and all(_finite(dist[k]) for k in ("low", "high"))
                and dist["low"] <= dist["high"]):
            raise SweepError(f"sweep.random.params.{key}: a list of values to choose from, or "
                             "{low, high} (finite numbers, low <= high) with optional log: true, "
                             "int: true")
        if dist.get("log") and dist["low"] <= 0:
            raise SweepError(f"sweep.random.params.{key}: log needs low > 0")
    return {"samples": samples, "seed": seed, "params": dict(rand["params"])}


def _finite(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _random_samples(rand: dict[str, Any]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(rand["seed"])
    out = []
    for _ in range(rand["samples"]):
        sample = {}
        for key in sorted(rand["params"]):
            dist = rand["params"][key]
            if isinstance(dist, list):
                sample[key] = dist[int(rng.integers(len(dist)))]
                continue
            low, high = float(dist["low"]), float(dist["high"])
            if dist.get("log"):
                value = math.exp(rng.uniform(math.log(low), math.log(high)))
            else:
                value = rng.uniform(low, high)
            sample[key] = int(round(value)) if dist.get("int") else float(value)
        out.append(sample)
    return out


def _seeds(seeds: Any, data: dict) -> list[int]:
    if seeds is None:
        return [0]
    if isinstance(seeds, bool) or not isinstance(seeds, (int, list)):
        raise SweepError("sweep.seeds: a count (seeds 0..n-1) or a list of seeds")
    if isinstance(seeds, int):
        if not 1 <= seeds <= MAX_POINTS:
            raise SweepError(f"sweep.seeds: a count, 1 <= seeds <= {MAX_POINTS} (got {seeds})")
        return list(range(seeds))
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SweepError("sweep.seeds: a non-empty list of integer seeds")
    return list(seeds)


def _metrics(metrics: Any) -> list[str] | None:
    if metrics is None:
        return None
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise SweepError("sweep.metrics: a list of summary names (mean_ttft_ms, ...)")
    return list(metrics)


# ---- one point ----------------------------------------------------------------------------


def run_point(config: dict[str, Any], metrics: list[str] | None) -> dict[str, Any]:
    """Simulate one point (in a worker): its summary numbers, wall time and error, if any.

    A config the simulator refuses (a model that does not fit, a bad combination) is a result
    of the sweep, not a crash of it: the row says why, with no metrics. So is any other
    failure of one point (a bug met by one corner of the grid): the row names the exception,
    and the other points still run.
    """
    from sim.api import simulate

    start = time.perf_counter()
    try:
        summary = simulate(config).summary
    except Exception as exc:  # noqa: BLE001 (one point's failure is that point's result)
        return failed(exc, time.perf_counter() - start)
    keys = metrics if metrics is not None else sorted(summary)
    values = {}
    for key in keys:
        value = summary.get(key, math.nan)
        if isinstance(value, (bool, np.bool_)):
            value = float(value)
        if isinstance(value, (int, float, np.integer, np.floating)):
            values[key] = float(value) if isinstance(value, (float, np.floating)) else int(value)
    return {"metrics": values, "wall_s": time.perf_counter() - start, "error": None}


def run_sweep_point(spec: SweepSpec, point: Point) -> dict[str, Any]:
    """``run_point`` on a point's config; a point whose config cannot even be put together
    (a swept key that sets a section to a value) fails alone too."""
    try:
        config = spec.config(point)
    except Exception as exc:  # noqa: BLE001
        return failed(exc, 0.0)
    return run_point(config, spec.metrics)


def failed(exc: BaseException, wall_s: float) -> dict[str, Any]:
    """The result of a point that failed: no metrics, and why."""
    return {"metrics": {}, "wall_s": wall_s, "error": point_error(exc)}


def point_error(exc: BaseException) -> str:
    """One line for the error column: the message of a refusal (a ValueError says what is
    wrong), the exception's type and message otherwise."""
    text = one_line(str(exc))
    return text if isinstance(exc, ValueError) and text else f"{type(exc).__name__}: {text}"


# ---- results --------------------------------------------------------------------------------


class ResultStore:
    """The journal of finished points and the Parquet table rebuilt from it."""

    def __init__(self, out: Path, spec: SweepSpec, resume: bool):
        self.out = out
        self.journal = out.with_name(out.name + JOURNAL_SUFFIX)
        self.spec = spec
        self.records: dict[str, dict[str, Any]] = {}
        self._last_write = 0.0
        if self.check(out, spec, resume):
            self._read()
        else:
            with self.journal.open("w") as f:
                f.write(json.dumps({"sweep": spec.digest()}) + "\n")

    @staticmethod
    def check(out: Path, spec: SweepSpec, resume: bool) -> bool:
        """Whether ``out`` holds this sweep's results to resume (True) or nothing (False);
        anything else there is refused, never overwritten."""
        journal = out.with_name(out.name + JOURNAL_SUFFIX)
        if journal.is_file():
            if not resume:
                raise SweepError(f"--out: '{out}' has results already; pass --resume to finish "
                                 "that sweep, or choose another --out")
            with journal.open() as f:
                try:
                    header = json.loads(f.readline() or "{}")
                except json.JSONDecodeError:
                    header = {}
            if not isinstance(header, dict) or header.get("sweep") != spec.digest():
                raise SweepError(f"--resume: the sweep file changed since '{out}' was started; "
                                 "use another --out")
            return True
        if journal.exists() or out.exists():
            taken = journal if journal.exists() else out
            raise SweepError(f"--out: '{taken}' exists and is not this sweep's (it is never "
                             "overwritten); choose another --out")
        return False

    def discard_if_empty(self) -> None:
        """A sweep that failed before its first point leaves nothing beside its target."""
        if not self.records and self.journal.is_file() and not self.out.exists():
            self.journal.unlink()

    def _read(self) -> None:
        lines = self.journal.read_text().splitlines()
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: that point runs again
            self.records[record["point_id"]] = record

    def add(self, point: Point, result: dict[str, Any]) -> None:
        record = {"point": point.index, "point_id": point.point_id, "seed": point.seed,
                  "params": point.params, **result}
        with self.journal.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.records[point.point_id] = record
        if time.monotonic() - self._last_write >= WRITE_EVERY_S:
            self.write()

    def write(self) -> pd.DataFrame:
        """Rebuild the table (atomically: a reader never sees half a file)."""
        table = self.table()
        tmp = self.out.with_name(self.out.name + TMP_SUFFIX)
        try:
            table.to_parquet(tmp, index=False)
            os.replace(tmp, self.out)
        finally:
            tmp.unlink(missing_ok=True)  # gone after os.replace; a failed write leaves none
        self._last_write = time.monotonic()
        return table

    def table(self) -> pd.DataFrame:
        records = sorted(self.records.values(), key=lambda r: r["point"])
        params = list(self.spec.grid) + sorted((self.spec.random or {}).get("params", {}))
        metrics = self.spec.metrics or sorted({k for r in records for k in r["metrics"]})
        cols: dict[str, list[Any]] = {
            "point": [r["point"] for r in records],
            "point_id": [r["point_id"] for r in records],
            "seed": [r["seed"] for r in records],
        }
        for key in params:
            cols[key] = _param_column([r["params"].get(key) for r in records])
        for key in metrics:
            cols[key] = [r["metrics"].get(key, math.nan) for r in records]
        cols["wall_s"] = [r["wall_s"] for r in records]
        cols["error"] = [r["error"] or "" for r in records]
        df = pd.DataFrame(cols)
        for key in metrics:
            df[key] = df[key].astype(np.float64)
        return df


def _param_column(values: list[Any]) -> list[Any]:
    """One Parquet type per column: numbers, or strings, or JSON text for anything mixed."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values] if any(isinstance(v, float) for v in values) else values
    if all(isinstance(v, str) for v in values) or all(isinstance(v, bool) for v in values):
        return values
    return [json.dumps(v, sort_keys=True) for v in values]


# ---- running ----------------------------------------------------------------------------------


def run_sweep(spec: SweepSpec, out: str | Path, *, backend: str = "local",
              jobs: int | None = None, address: str | None = None, resume: bool = False,
              progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Run every point not finished yet; return the whole table (also written to ``out``).

    ``progress(done, total)`` is called at the start and as each point finishes.
    """
    # the store checks what --out holds itself (resume or refuse), so only the rest here
    store = ResultStore(_checked_target(out, backend, jobs, address), spec, resume)
    try:
        points = spec.points()
        todo = [p for p in points if p.point_id not in store.records]
        if progress:
            progress(len(points) - len(todo), len(points))
        runner = _run_ray if backend == "ray" else _run_local
        for point, result in runner(spec, todo, jobs, address):
            store.add(point, result)
            if progress:
                progress(len(store.records), len(points))
        return store.write()
    finally:
        store.discard_if_empty()


def check_run(spec: SweepSpec, out: str | Path, backend: str = "local", jobs: int | None = None,
              address: str | None = None, resume: bool = False) -> Path:
    """Every option of a run checked before any work (and before a progress bar): the
    backend, jobs, ``--out`` (a writable file path, not a folder, not someone else's file)."""
    path = _checked_target(out, backend, jobs, address)
    ResultStore.check(path, spec, resume)
    return path


def _checked_target(out: str | Path, backend: str, jobs: int | None,
                    address: str | None) -> Path:
    """The options of a run and ``--out`` as a writable file path, checked."""
    if backend not in BACKENDS:
        raise SweepError(f"--backend: unknown '{backend}'; allowed: {', '.join(BACKENDS)}")
    if jobs is not None and jobs < 1:
        raise SweepError(f"--jobs: must be >= 1 (got {jobs})")
    if backend == "local" and address is not None:
        raise SweepError("--address: only for --backend ray")
    return table_path(out)


def table_path(out: str | Path) -> Path:
    """``--out`` as a Parquet file path whose folder exists and takes new files, checked before
    any point runs; a folder is refused (the table, its journal and temporary file go beside
    the path, never inside a folder given by mistake)."""
    if str(out) == "":
        raise SweepError("--out: empty path; give the results table's file path (.parquet)")
    path = Path(out)
    if path.is_dir():
        raise SweepError(f"--out: '{path}' is a folder; give the results table's file path "
                         f"(e.g. {path / 'sweep.parquet'})")
    try:
        check_writable(path.parent, "--out")
    except ConfigError as exc:
        raise SweepError(str(exc)) from None
    return path


def _run_local(spec: SweepSpec, todo: list[Point], jobs: int | None,
               address: str | None) -> Iterator[tuple[Point, dict[str, Any]]]:
    jobs = min(jobs or os.cpu_count() or 1, max(1, len(todo)))
    if jobs == 1:  # in this process: no start-up cost, and what a debugger can follow
        for point in todo:
            yield point, run_sweep_point(spec, point)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # spawn: the workers do not inherit the parent's threads (a progress bar) or state
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    finished = False
    try:
        pending = {pool.submit(run_sweep_point, spec, p): p for p in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                error = future.exception()  # the worker died, or a result did not pickle
                yield pending.pop(future), (future.result() if error is None
                                            else failed(error, math.nan))
        finished = True
    finally:
        if not finished:  # interrupted (Ctrl-C): the points in flight are lost, as in a kill
            for process in (getattr(pool, "_processes", None) or {}).values():
                process.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)


def _run_ray(spec: SweepSpec, todo: list[Point], jobs: int | None,
             address: str | None) -> Iterator[tuple[Point, dict[str, Any]]]:
    try:
        import ray
    except ImportError:
        raise SweepError("--backend ray: Ray is not installed (pip install 'servesim[ray]')"
                         ) from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=jobs if address is None else None,
                 log_to_driver=False, include_dashboard=False)
    try:
        task = ray.remote(num_cpus=1)(run_sweep_point)
        pending = {task.remote(spec, p): p for p in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                point = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 (a lost worker fails its point alone)
                    result = failed(exc, math.nan)
                yield point, result
    finally:
        if started:
            ray.shutdown()
