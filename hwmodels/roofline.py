"""The roofline hardware model: seconds for one step from its batch shape.

``RooflineModel.step_time_s(seqs)`` sums the operator rows of ``hwmodels.operators`` (each a
roofline with fitted efficiencies) and adds what no operator accounts for: the host's work per
step and per sequence, and, in eager mode, the CPU's kernel launches when they outrun the GPU.
A step small enough to replay a captured CUDA graph pays no CPU launch cost.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hwmodels.modelspec import ModelSpec, get_model
from hwmodels.op import Op
from hwmodels.operators import StepOperators
from hwmodels.params import HwParams, default_params
from hwmodels.profile import Profile, resolve_profile
from hwmodels.specs import GpuSpec, get_gpu

Seqs = list[tuple[int, int]]
STEP_CACHE_SIZE = 1 << 14  # memoized step times per model and params (a few MB at most)
# Memos of models priced alike (same GPU, model, parallelism, precisions and parameters) are
# shared in the process: a dashboard, a sweep or a study simulates the same deployment again
# and again (a new seed, a new load), and meets the same prompt lengths and batch sizes.
SHARED_MEMOS = 8  # deployments whose memos are kept, least recently used dropped first
_SHARED_MEMOS: OrderedDict[tuple, tuple[dict, dict]] = OrderedDict()
_SHARED_MEMOS_LOCK = threading.Lock()  # Streamlit runs each session's script in a thread


@dataclass(frozen=True, slots=True)
class Prediction:
    """A step time with a band from the calibration residuals (zero width if uncalibrated)."""

    time_s: float
    low_s: float
    high_s: float
    extrapolating: bool


class RooflineModel:
    """Step time of a model on a GPU (or a TP/PP/EP group of them), per ``HardwareModel``.

    ``profile``: None (uncalibrated defaults), ``"auto"`` (the committed profile of the GPU,
    else defaults), a path to a profile JSON or a ``Profile``. ``params`` overrides single
    parameters on top (what-ifs such as ``{"cuda_graph_max_tokens": 0}``).
    """

    def __init__(
        self,
        gpu: str | GpuSpec | Mapping[str, Any],
        model: str | ModelSpec | Mapping[str, Any],
        tp: int = 1,
        weight_dtype: str = "bf16",
        kv_dtype: str = "bf16",
        profile: Any = None,
        *,
        pp: int = 1,
        ep: int = 1,
        attention_impl: str = "flash",
        dp_attention: bool = False,
        params: Mapping[str, Any] | None = None,
        num_layers: int | None = None,
    ) -> None:
        self.gpu = get_gpu(gpu)
        spec = get_model(model)
        self.model = spec.with_layers(num_layers) if num_layers else spec
        self.tp, self.pp, self.ep = tp, pp, ep
        self.weight_dtype, self.kv_dtype = weight_dtype, kv_dtype
        self.profile: Profile | None = resolve_profile(profile, self.gpu)
        base = default_params(self.gpu)
        self.params: HwParams = self.profile.hw_params(base) if self.profile else base
        if params:
            self.params = self.params.updated(**params)
        self.operators = StepOperators(
            self.gpu,
            self.model,
            tp=tp,
            pp=pp,
            ep=ep,
            weight_dtype=weight_dtype,
            kv_dtype=kv_dtype,
            attention_impl=attention_impl,
            dp_attention=dp_attention,
        )
        self.dp_attention = dp_attention
        self.attention_impl = attention_impl

    def with_params(self, params: HwParams) -> RooflineModel:
        """A copy sharing the operator shapes but priced with other parameters (calibration)."""
        clone = object.__new__(RooflineModel)
        for name in (
            "gpu",
            "model",
            "tp",
            "pp",
            "ep",
            "weight_dtype",
            "kv_dtype",
            "profile",
            "operators",
            "dp_attention",
            "attention_impl",
        ):
            setattr(clone, name, getattr(self, name))
        clone.params = params
        return clone

    def breakdown(self, seqs: Seqs) -> list[Op]:
        """Operator rows plus host/launch overhead rows; their ``time_s`` sum to the step."""
        p = self.params
        if not seqs:
            return [Op("idle", "host")]
        rows, tokens = self.operators.ops(seqs, p)
        gpu_s = sum(r.time_s for r in rows)
        kernels = sum(r.kernels for r in rows)
        graphed = 0 < tokens <= p.cuda_graph_max_tokens and (
            p.cuda_graph_mode == "all" or tokens == len(seqs)
        )
        if not graphed:
            cpu_s = kernels * p.launch_cpu_s / self.pp  # each stage's CPU launches its own
            if cpu_s > gpu_s:
                rows.append(Op("cpu_launch_bound", "host", kernels=0, time_s=cpu_s - gpu_s))
        host = p.step_overhead_s + len(seqs) * p.seq_overhead_s
        if p.host_overlap:  # hidden behind the device's time but for what exceeds it
            host = hidden_host_s(host, sum(r.time_s for r in rows))
        rows.append(Op("host_overhead", "host", time_s=host))
        return rows

    def step_time_s(self, seqs: Seqs) -> float:
        """Predicted seconds of one iteration over ``seqs`` = [(new, cached), ...].

        Memoized by (parameters, batch): a simulation meets the same prompt lengths and batch
        shapes again and again (every prefill of an N-token prompt alone costs the same)."""
        if not seqs:
            return 0.0
        key = tuple(seqs)
        cache = self._memo()[1]
        seconds = cache.get(key)
        if seconds is None:
            if len(cache) >= STEP_CACHE_SIZE:
                cache.clear()
            seconds = cache[key] = sum(r.time_s for r in self.breakdown(seqs))
        return seconds

    def _memo(self) -> tuple[HwParams, dict, dict]:
        """This model's memoized step times and decode-run constants, valid while its
        ``params`` stay the same object (looked up by identity: hashing the parameters on every
        step would cost more than some lookups save). A new parameters object finds the memos
        of any model priced alike by value (``SHARED_MEMOS``)."""
        memo = self.__dict__.get("_memo_of_params")
        if memo is None or memo[0] is not self.params:
            memo = self._memo_of_params = (self.params, *self._shared_memos())
        return memo

    def _shared_memos(self) -> tuple[dict, dict]:
        """The memos of every model with this one's pricing inputs: everything ``breakdown``
        and ``step_times_s`` read (the operator shapes follow from the constructor's
        arguments)."""
        key = (self.gpu, self.model, self.tp, self.pp, self.ep, self.weight_dtype,
               self.kv_dtype, self.attention_impl, self.dp_attention, self.params)
        with _SHARED_MEMOS_LOCK:
            memos = _SHARED_MEMOS.get(key)
            if memos is None:
                memos = _SHARED_MEMOS[key] = ({}, {})
                while len(_SHARED_MEMOS) > SHARED_MEMOS:
                    _SHARED_MEMOS.popitem(last=False)
            _SHARED_MEMOS.move_to_end(key)
        return memos

    def step_times_s(self, seqs: Seqs, n_steps: int) -> np.ndarray:
        """Seconds of each of ``n_steps`` decode steps from ``seqs``, contexts growing by one
        a step: element ``j`` equals ``step_time_s([(new, cached + j), ...])`` bit for bit.

        A decode run changes only the attention rows (the rest depends on the number of
        sequences and tokens), so those are priced once and attention as one array; the
        engine's fast-forward calls this to price a run at once. The sums follow
        ``breakdown`` and ``step_time_s`` addition by addition, so they round alike.
        """
        attention = self.operators.attention
        contexts = [c for n, c in seqs if n == 1]
        attn_s = None
        if n_steps > 0 and seqs and len(contexts) == len(seqs) and min(contexts) >= 0:
            attn_s = attention.decode_run_times(contexts, n_steps, self.params)
        if attn_s is None:  # prefill chunks, MLA, or nothing to do: step by step
            return np.array([self.step_time_s([(n, c + j) for n, c in seqs])
                             for j in range(max(n_steps, 0))], dtype=np.float64)
        p, num_seqs = self.params, len(seqs)
        before_s, after_s, kernels = self._decode_statics(num_seqs)
        gpu_s: Any = before_s + attn_s  # attn_s: the decode row's time, floors included
        if after_s is not None:  # the later rows added one by one, in one sequential call
            terms = np.empty((len(after_s) + 1, len(attn_s)))
            terms[0] = gpu_s
            terms[1:] = after_s
            gpu_s = np.add.accumulate(terms, axis=0)[-1]
        host_s = p.step_overhead_s + num_seqs * p.seq_overhead_s
        device_s = gpu_s
        if not 0 < num_seqs <= p.cuda_graph_max_tokens:  # eager: launches may bind
            cpu_s = kernels * p.launch_cpu_s / self.pp
            device_s = np.where(cpu_s > gpu_s, gpu_s + (cpu_s - gpu_s), gpu_s)
        if p.host_overlap:
            return device_s + np.maximum(0.0, host_s - device_s)
        return device_s + host_s

    def _decode_statics(self, num_seqs: int) -> tuple[Any, np.ndarray | None, int]:
        """What a decode step of ``num_seqs`` sequences costs besides attention: the rows
        before it summed (as ``breakdown`` adds them, from 0), the rows after it as a column,
        and every launch of the step. Memoized: a run of a batch size is priced many times."""
        p = self.params
        statics = self._memo()[2]
        hit = statics.get(num_seqs)
        if hit is None:
            before, after = self.operators.static_ops(float(num_seqs), num_seqs, p)
            before_s: Any = 0
            for row in before:
                before_s += row.time_s
            after_s = np.array([row.time_s for row in after])[:, None] if after else None
            kernels = sum(r.kernels for r in before) + self.operators.attention.kernels
            kernels += sum(r.kernels for r in after)
            if len(statics) > 4096:
                statics.clear()
            hit = statics[num_seqs] = (before_s, after_s, kernels)
        return hit

    def predict(self, seqs: Seqs) -> Prediction:
        """Step time with the profile's residual band and an extrapolation flag."""
        t = self.step_time_s(seqs)
        if self.profile is None or self.profile.borrowed:
            return Prediction(t, t, t, extrapolating=True)
        band = self.profile.band()
        return Prediction(t, t * (1 - band), t * (1 + band), not self.profile.coverage.covers(seqs))


def step_time_ms(
    gpu: str | GpuSpec | Mapping[str, Any],
    model: str | ModelSpec | Mapping[str, Any],
    seqs: Seqs,
    *,
    tp: int = 1,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
    profile: Any = None,
) -> float:
    """The contract: predicted milliseconds of one iteration (see ``RooflineModel``)."""
    hw = RooflineModel(
        gpu, model, tp=tp, weight_dtype=weight_dtype, kv_dtype=kv_dtype, profile=profile
    )
    return hw.step_time_s(seqs) * 1e3


def hidden_host_s(host_s: float, device_s: float) -> float:
    """The host's per-step seconds left over when it runs while the device works
    (``HwParams.host_overlap``): the step takes the longer of the two."""
    return max(0.0, host_s - device_s)
