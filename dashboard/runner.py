"""Running configurations for the dashboard: validated, cached, and errors kept as messages.

A widget change reruns the whole Streamlit script, so every simulation goes through one
``RunCache`` keyed by the canonical YAML of the config: changing B re-simulates B only, and the
advisor's and the load sweep's re-simulations are shared with the main comparison. A bad input
(``ValueError`` from ``load_config`` or ``simulate``: impossible memory, zero rate, a malformed
trace) becomes ``Outcome.error``, a one-line message the app shows instead of a traceback.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import yaml

from sim.api import Result, simulate
from sim.config import Config, load_config


@dataclass(frozen=True, slots=True)
class Outcome:
    """One configuration's run: the validated config and result, or the error message."""

    mapping: dict  # what the user asked for (YAML-shaped, defaults left out)
    config: Config | None = None
    result: Result | None = None
    error: str | None = None
    seconds: float = 0.0  # wall time of the simulation

    @property
    def ok(self) -> bool:
        return self.result is not None


def to_yaml(mapping: Mapping) -> str:
    """The YAML a user downloads; ``servesim run`` accepts it as is."""
    return yaml.safe_dump(dict(mapping), sort_keys=False, default_flow_style=False)


def from_yaml(text: str) -> dict:
    """Parse an uploaded config; ``ValueError`` with one line if it is not a config mapping."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ValueError(f"config: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ValueError("config: the file must hold a mapping of sections (hardware, model, ...)")
    load_config(data)  # validate now, so the message names the bad field
    return data


def cache_key(mapping: Mapping) -> str:
    """Canonical text of a config mapping: equal configs give equal keys."""
    return yaml.safe_dump(dict(mapping), sort_keys=True)


def run_mapping(mapping: Mapping) -> Outcome:
    """Validate and simulate one config; a ``ValueError`` becomes the outcome's message."""
    start = time.perf_counter()
    try:
        config = load_config(mapping)
    except ValueError as exc:
        return Outcome(dict(mapping), error=str(exc))
    try:
        result = simulate(config)
    except ValueError as exc:
        return Outcome(dict(mapping), config, error=str(exc))
    return Outcome(dict(mapping), config, result, seconds=time.perf_counter() - start)


def _warm_up() -> None:
    """Import what a simulation needs, so a worker's first real run starts at once."""
    import hwmodels

    hwmodels.list_gpus()


def default_workers() -> int:
    """Worker processes next to the app's own: one less than the cores, none on one core."""
    return max(0, min(2, os.cpu_count() or 1) - 1)


class RunCache:
    """Outcomes by config, least recently used dropped first. Safe to share between sessions.

    ``get_many`` runs the missing configs of one request side by side: the first in this
    process, the others in ``workers`` worker processes (A and B on two cores at once).
    Workers start with ``forkserver``, never ``fork``: the Streamlit server is multi-threaded.
    """

    def __init__(self, max_entries: int = 64,
                 runner: Callable[[Mapping], Outcome] = run_mapping,
                 workers: int = 0) -> None:
        self.max_entries = max_entries
        self._runner = runner
        self._entries: OrderedDict[str, Outcome] = OrderedDict()
        self._lock = threading.Lock()
        self._workers = workers if runner is run_mapping else 0
        self._pool: ProcessPoolExecutor | None = None

    def _lookup(self, key: str) -> Outcome | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        return None

    def _store(self, key: str, outcome: Outcome) -> None:
        with self._lock:
            self._entries[key] = outcome
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def pool(self) -> ProcessPoolExecutor | None:
        """The worker pool, started (and warmed up) on first use; None without workers."""
        if self._workers and self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context(
                "forkserver" if "forkserver" in methods else "spawn")
            if context.get_start_method() == "forkserver":
                # workers fork from a server that has imported the simulator once
                context.set_forkserver_preload(["dashboard.runner"])
            self._pool = ProcessPoolExecutor(self._workers, mp_context=context)
            for _ in range(self._workers):
                self._pool.submit(_warm_up)
        return self._pool

    def get(self, mapping: Mapping) -> Outcome:
        return self.get_many([mapping])[0]

    def get_many(self, mappings: list[Mapping]) -> list[Outcome]:
        """Outcomes of ``mappings`` in order; missing ones simulated in parallel."""
        keys = [cache_key(m) for m in mappings]
        missing = {k: m for k, m in zip(keys, mappings, strict=True) if self._lookup(k) is None}
        pool = self.pool() if len(missing) > 1 else None
        futures: dict[str, Future] = {}
        if pool is not None:
            for key, mapping in list(missing.items())[1:]:
                futures[key] = pool.submit(run_mapping, dict(mapping))
        for key, mapping in missing.items():
            if key not in futures:
                self._store(key, self._runner(mapping))
        for key, future in futures.items():
            try:
                outcome = future.result()
            except (BrokenProcessPool, OSError):  # a worker died: run it here instead
                self._pool = None
                outcome = self._runner(missing[key])
            self._store(key, outcome)
        found = [self._lookup(k) for k in keys]
        return [o if o is not None else self._runner(m) for o, m in zip(found, mappings,
                                                                        strict=True)]

    def __contains__(self, mapping: Mapping) -> bool:
        return cache_key(mapping) in self._entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def with_overrides(mapping: Mapping, overrides: Mapping[str, Any]) -> dict:
    """A copy of ``mapping`` with dotted keys set (``{"hardware.num_gpus": 2}``)."""
    data = yaml.safe_load(yaml.safe_dump(dict(mapping)))
    for key, value in overrides.items():
        if hasattr(value, "item"):  # a numpy scalar (e.g. from a DataFrame row): plain Python
            value = value.item()
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return data
