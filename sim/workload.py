"""Synthetic workloads: arrival processes and length distributions.

Each random stream (arrival gaps, prompt lengths, output lengths) has its own seeded generator,
spawned from the run's seed, so two configurations that differ only in policy see exactly the
same requests (common random numbers) and a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.core import Request

LENGTH_DISTS = ("fixed", "uniform", "lognormal", "normal", "empirical")


class WorkloadError(ValueError):
    """A workload setting that cannot be used; the message names the field."""


@dataclass(frozen=True, slots=True)
class LengthDist:
    """A distribution of token counts, always drawn as integers >= ``min``.

    ``lognormal`` takes ``mean`` (of the lengths, not of the log) and ``sigma`` (of the log);
    ``empirical`` resamples ``values`` (with optional ``weights``), e.g. a trace's lengths.
    """

    dist: str
    value: int = 0
    low: int = 1
    high: int = 1
    mean: float = 0.0
    sigma: float = 0.0
    min: int = 1
    max: int = 1 << 30
    values: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.dist == "fixed":
            raw = np.full(n, self.value, dtype=np.float64)
        elif self.dist == "uniform":
            raw = rng.integers(self.low, self.high + 1, size=n).astype(np.float64)
        elif self.dist == "lognormal":
            mu = np.log(self.mean) - self.sigma**2 / 2  # so that E[X] = mean
            raw = rng.lognormal(mu, self.sigma, size=n)
        elif self.dist == "normal":
            raw = rng.normal(self.mean, self.sigma, size=n)
        else:
            p = np.asarray(self.weights, dtype=np.float64) if self.weights else None
            values = np.asarray(self.values, dtype=np.float64)
            raw = rng.choice(values, size=n, p=p / p.sum() if p is not None else None)
        return np.clip(np.rint(raw), self.min, self.max).astype(np.int64)

    def expected(self) -> float:
        """Mean length before clipping (used for load estimates in docs and studies)."""
        if self.dist == "fixed":
            return float(self.value)
        if self.dist == "uniform":
            return (self.low + self.high) / 2
        if self.dist in ("lognormal", "normal"):
            return self.mean
        return float(np.average(self.values, weights=self.weights or None))


def parse_length(spec: int | Mapping[str, Any], field: str) -> LengthDist:
    """Turn a config value (a number, or a mapping with ``dist``) into a LengthDist."""
    if isinstance(spec, bool):
        raise WorkloadError(f"{field}: expected a token count or a distribution mapping")
    if isinstance(spec, (int, float)):
        if spec < 1:
            raise WorkloadError(f"{field}: must be >= 1 token (got {spec})")
        return LengthDist("fixed", value=int(spec))
    if not isinstance(spec, Mapping):
        raise WorkloadError(f"{field}: expected a token count or a mapping with 'dist'")
    kind = spec.get("dist", "fixed")
    if kind not in LENGTH_DISTS:
        raise WorkloadError(f"{field}.dist: unknown '{kind}'; allowed: {', '.join(LENGTH_DISTS)}")
    kwargs = {k: v for k, v in spec.items() if k != "dist"}
    allowed = set(LengthDist.__dataclass_fields__) - {"dist"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise WorkloadError(
            f"{field}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    for key in ("values", "weights"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    dist = LengthDist(kind, **kwargs)
    _check_length(dist, field)
    return dist


def _check_length(d: LengthDist, field: str) -> None:
    if d.dist == "fixed" and d.value < 1:
        raise WorkloadError(f"{field}.value: must be >= 1 (got {d.value})")
    if d.dist == "uniform" and not 1 <= d.low <= d.high:
        raise WorkloadError(f"{field}: uniform needs 1 <= low <= high (got {d.low}, {d.high})")
    if d.dist in ("lognormal", "normal") and (d.mean <= 0 or d.sigma < 0):
        raise WorkloadError(f"{field}: {d.dist} needs mean > 0 and sigma >= 0")
    if d.dist == "empirical" and (not d.values or min(d.values) < 1):
        raise WorkloadError(f"{field}.values: empirical needs a non-empty list of lengths >= 1")
    if d.min < 1 or d.max < d.min:
        raise WorkloadError(f"{field}: needs 1 <= min <= max (got {d.min}, {d.max})")


class RequestFactory:
    """Draws request lengths in chunks (vectorised) from per-stream generators."""

    def __init__(self, prompt: LengthDist, output: LengthDist, seed: int, chunk: int = 4096):
        streams = np.random.SeedSequence(seed).spawn(3)
        self._prompt_rng = np.random.default_rng(streams[1])
        self._output_rng = np.random.default_rng(streams[2])
        self.arrival_rng = np.random.default_rng(streams[0])
        self._prompt, self._output, self._chunk = prompt, output, chunk
        self._buf: list[tuple[int, int]] = []
        self._next_id = 0

    def make(self, arrival_time: float, client_id: int | None = None) -> Request:
        if not self._buf:
            p = self._prompt.sample(self._prompt_rng, self._chunk)
            o = self._output.sample(self._output_rng, self._chunk)
            self._buf = list(zip(p.tolist(), o.tolist(), strict=True))[::-1]
        prompt, output = self._buf.pop()
        rid = self._next_id
        self._next_id += 1
        return Request(rid, arrival_time, prompt, output, client_id=client_id)


def arrival_times(
    kind: str, rate: float, cv: float, rng: np.random.Generator, chunk: int = 4096
) -> Iterator[float]:
    """Open-loop arrival instants (s): Poisson (exponential gaps) or Gamma gaps with a given CV.

    Gamma gaps with shape 1/cv^2 keep the mean rate and set burstiness: cv > 1 is burstier than
    Poisson, cv < 1 more regular, cv = 1 is Poisson.
    """
    t = 0.0
    while True:
        if kind == "poisson":
            gaps = rng.exponential(1.0 / rate, size=chunk)
        else:
            shape = 1.0 / (cv * cv)
            gaps = rng.gamma(shape, 1.0 / (rate * shape), size=chunk)
        for gap in gaps.tolist():
            t += gap
            yield t


def open_loop_requests(
    factory: RequestFactory,
    kind: str,
    rate: float,
    cv: float,
    num_requests: int | None,
    duration_s: float | None,
) -> Iterator[Request]:
    """Lazily yield requests in arrival order until the count or the duration is reached."""
    count = 0
    for t in arrival_times(kind, rate, cv, factory.arrival_rng):
        if num_requests is not None and count >= num_requests:
            return
        if duration_s is not None and t > duration_s:
            return
        yield factory.make(t)
        count += 1
