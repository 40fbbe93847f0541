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

from core import Request

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
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return LengthDist("fixed", value=_tokens(spec, field))
    if not isinstance(spec, Mapping):
        raise WorkloadError(f"{field}: expected a token count or a mapping with 'dist' "
                            f"(got {shown(spec)})")
    kind = spec.get("dist", "fixed")
    if not isinstance(kind, str) or kind not in LENGTH_DISTS:
        raise WorkloadError(f"{field}.dist: unknown {shown(kind)}; "
                            f"allowed: {', '.join(LENGTH_DISTS)}")
    kwargs = {str(k): v for k, v in spec.items() if k != "dist"}
    allowed = set(LengthDist.__dataclass_fields__) - {"dist"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise WorkloadError(
            f"{field}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    for key, value in kwargs.items():
        where = f"{field}.{key}"
        if key in ("values", "weights"):
            if not isinstance(value, (list, tuple)) or not value:
                raise WorkloadError(f"{where}: a non-empty list (got {shown(value)})")
            kwargs[key] = tuple(_tokens(v, where) if key == "values" else _number(v, where)
                                for v in value)
        elif key in ("mean", "sigma"):
            kwargs[key] = _number(value, where)
        else:
            kwargs[key] = _tokens(value, where)
    missing = [key for key in REQUIRED_KEYS[kind] if key not in kwargs]
    if missing:  # a default here would silently draw one length (``min`` and ``max`` only clip)
        raise WorkloadError(f"{field}: {kind} needs {' and '.join(REQUIRED_KEYS[kind])} "
                            f"(missing {', '.join(missing)}; min and max only clip the draws)")
    dist = LengthDist(kind, **kwargs)
    _check_length(dist, field)
    return dist


REQUIRED_KEYS = {"fixed": ("value",), "uniform": ("low", "high"), "lognormal": ("mean", "sigma"),
                 "normal": ("mean", "sigma"), "empirical": ("values",)}


MAX_TOKENS = 2**31 - 1  # token counts and positions are int32 in serving engines


SHOWN_CHARS = 60  # an echoed bad value is cut to this many characters, to keep one line


def shown(value: Any) -> str:
    """A bad value as echoed in an error: its repr, cut short (``sim.config``'s errors too)."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def _number(value: Any, field: str) -> float:
    """A finite number, else a one-line error naming the field."""
    finite = isinstance(value, float) and np.isfinite(value) or (
        isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**1000)
    if not finite:
        raise WorkloadError(f"{field}: expected a finite number (got {shown(value)})")
    return float(value)


def _tokens(value: Any, field: str) -> int:
    """A whole token count in [1, 2**31 - 1], else a one-line error naming the field."""
    number = _number(value, field)
    if not number.is_integer() or not 1 <= number <= MAX_TOKENS:
        raise WorkloadError(f"{field}: must be a whole number of tokens, "
                            f"1 <= tokens <= {MAX_TOKENS} (got {shown(value)})")
    return int(number)


def _check_length(d: LengthDist, field: str) -> None:
    if d.dist == "uniform" and not d.low <= d.high:
        raise WorkloadError(f"{field}: uniform needs low <= high (got {d.low}, {d.high})")
    if d.dist in ("lognormal", "normal") and (d.mean <= 0 or d.sigma < 0):
        raise WorkloadError(f"{field}: {d.dist} needs mean > 0 and sigma >= 0 "
                            f"(got mean {d.mean}, sigma {d.sigma})")
    if d.dist == "empirical" and not d.values:
        raise WorkloadError(f"{field}.values: empirical needs a non-empty list of lengths >= 1")
    if d.weights and len(d.weights) != len(d.values):
        raise WorkloadError(f"{field}.weights: one weight per value: {len(d.values)} values, "
                            f"{len(d.weights)} weights")
    if d.weights and (min(d.weights) < 0 or not 0 < sum(d.weights) < np.inf):
        raise WorkloadError(f"{field}.weights: needs weights >= 0 with a positive sum")
    if d.max < d.min:
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


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """How a benchmark client's requests reach the server and its answers come back.

    A real client and server add a little time to every request: the request crosses the
    network and the server's front end (HTTP parsing and validation, chat template,
    tokenization) before the scheduler sees it, and the last token crosses back before a
    closed-loop client sends its next request. The front end handles one request at a time
    (vLLM tokenizes on a single worker thread), so requests sent together reach the scheduler
    one after another, spaced by their front-end time: the mechanism that breaks a closed
    loop's lock-step waves. ``docs/workloads.md`` gives the defaults and their sources.
    """

    latency_s: float = 0.0  # median one-way network + HTTP time, each way (lognormal)
    latency_sigma: float = 0.0  # spread of the log of that time
    frontend_s: float = 0.0  # front-end time per request (parse, validate, template)
    frontend_s_per_token: float = 0.0  # front-end tokenization time per prompt token
    ramp_up_s: float = 0.0  # closed loop: client i starts at i * ramp_up_s / clients

    @property
    def adds_latency(self) -> bool:
        return self.latency_s > 0 or self.frontend_s > 0 or self.frontend_s_per_token > 0


class ClientLatency:
    """Seeded per-request delays of a ``ClientSpec``: its own random stream, so turning it on
    or off leaves the requests' lengths and arrival instants exactly as they were."""

    STREAM = 3  # child 3 of the run's seed: children 0-2 are the RequestFactory's streams

    def __init__(self, spec: ClientSpec, seed: int):
        self.spec = spec
        self._rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(self.STREAM,)))
        self._frontend_free_s = 0.0  # when the front end finishes the requests it has

    def _network_s(self) -> float:
        s = self.spec
        if s.latency_s <= 0:
            return 0.0
        return s.latency_s * float(np.exp(s.latency_sigma * self._rng.standard_normal()))

    def send_delay(self, now: float, prompt_tokens: int) -> float:
        """Seconds from sending at ``now`` until the scheduler sees the request. Calls must come
        in send order: the front end serves requests first come, first served."""
        s = self.spec
        at_frontend = now + self._network_s()
        start = max(at_frontend, self._frontend_free_s)
        self._frontend_free_s = start + s.frontend_s + s.frontend_s_per_token * prompt_tokens
        return self._frontend_free_s - now

    def return_delay(self) -> float:
        """Seconds from the last token leaving the server until the client has it."""
        return self._network_s()

    def start_delay(self, client_id: int, clients: int) -> float:
        """When client ``client_id`` of ``clients`` sends its first request (ramp-up)."""
        return self.spec.ramp_up_s * client_id / clients
