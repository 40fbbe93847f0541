"""The experiment configuration (pydantic, YAML-shaped) and ``build(config)``.

This is the only module that picks concrete policies and hardware models by name. Every field
has a one-line description; every bad value is reported as one line naming the field and what
is allowed (``ConfigError``), which the CLI prints without a traceback.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sim.workload import MAX_TOKENS, LengthDist, parse_length, shown

# libyaml's safe loader and dumper where installed (the same documents, several times faster)
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

LengthSpec = int | dict[str, Any]


# Resource bounds, checked before any work: past them a run cannot be simulated on one machine.
MAX_GPUS = 1024  # each replica holds its KV pool's free list (~1.3 GB for 1024 H100 replicas)
MAX_SEED = 2**63 - 1  # seeds stay int64 (numpy's generators and the compiled lane)
MAX_SEQS = 2**20  # the compiled lane holds arrays of max_num_seqs entries
MAX_CLIENTS = 100_000  # each closed-loop client is a live SimPy process
MAX_REQUESTS = 10**7  # the compiled lane holds ~0.9 KB per request (1M: 872 MB, docs/scale.md)
MAX_KV_BLOCKS = 2**25  # KV blocks of all replicas together: each is an entry in a Python list
_NAMES_FIELD = re.compile(r"[A-Za-z_]\w*(\.\w+)+: ")  # a dotted key first: "hardware.tp: ..."


class ConfigError(ValueError):
    """A configuration value that cannot be used. The message is one line naming the field."""


def with_field(field: str, message: object) -> str:
    """``field: message``, unless the message already starts by naming a field (a nested check
    that knows better, e.g. ``hardware.tp: ...`` inside a model check): one prefix, never two."""
    text = one_line(str(message))
    named = _NAMES_FIELD.match(text) or text.startswith(f"{field}: ")
    return text if named else f"{field}: {text}"


def one_line(message: str) -> str:
    """The message with its line breaks (from a library or an echoed value) made spaces."""
    return " ".join(message.split())


def _unit(unit: str) -> dict[str, str]:
    """A field's unit, where its name has no unit suffix (``servesim config --schema``)."""
    return {"unit": unit}


def check_writable(folder: Path, option: str) -> None:
    """Make ``folder`` if missing and create (and drop) a file in it: the only sure test that
    results can be written there (as root, ``os.access`` says yes to a read-only mount).
    Checked before any work, so a run's results are never lost to a bad ``option`` path."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(f"{option}: cannot write in '{folder}' ({exc.strerror or exc})"
                          ) from None


def usable_path(value: str | None) -> str | None:
    """A path the OS can look up (a file there or not: that is checked where it is read); a
    name too long or with a NUL byte is refused here, naming the field, not by ``os.stat``."""
    if value is None or value in ("auto", "none"):
        return value
    try:
        os.stat(value)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ValueError(f"not a usable path ({reason})") from None
    return value


class _Section(BaseModel):
    # inf and NaN are never a setting (null means "unset"): refused with the field named
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class HardwareConfig(_Section):
    gpu: str | dict[str, Any] = Field(
        "h100", description="GPU catalog id or alias (h100, a100, h200, b200, ...), or a what-if "
        "spec mapping in catalog names and units: {base: h100, memory_bw_gbps: 4000, ...}")
    num_gpus: int = Field(1, ge=1, le=MAX_GPUS,
                          description="GPUs in the deployment; replicas = num_gpus / tp")
    tp: int = Field(1, ge=1, le=MAX_GPUS, description="tensor-parallel degree of one replica",
                    json_schema_extra=_unit("GPUs"))
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="fraction of GPU memory the engine may use (vLLM's knob)",
        json_schema_extra=_unit("fraction"))
    profile: str = Field(
        "auto", description="calibration profile: auto (committed one if any), none, or a path")
    _usable_profile = field_validator("profile")(usable_path)
    params: dict[str, Any] = Field(
        default_factory=dict, description="hardware-model parameters set on top of the profile "
        "(hwmodels.HwParams names: step_overhead_s, seq_overhead_s, cuda_graph_max_tokens, ...)")

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        from dataclasses import fields

        from hwmodels.params import HwParams

        HwParams().updated(**params)  # unknown names: a one-line error naming the allowed ones
        kinds = {f.name: str(f.type) for f in fields(HwParams)}
        out: dict[str, Any] = {}
        for name, value in params.items():
            if kinds[name] == "str":
                out[name] = value
                continue
            if kinds[name] == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"{name}: not true or false ({shown(value)}); "
                                     "allowed: true, false")
                out[name] = value
                continue
            try:  # YAML reads 2e-5 (no dot) as a string
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name}: not a number ({shown(value)})") from None
            integral = kinds[name] == "int" and number.is_integer()
            out[name] = int(number) if integral else number
        return out

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, name: str | dict[str, Any]) -> str | dict[str, Any]:
        from hwmodels import get_gpu, list_gpus

        if isinstance(name, dict):  # a what-if GPU: hwmodels builds it (one-line ValueError)
            get_gpu(name)
            return name
        allowed = list_gpus()
        if name not in allowed:
            raise ValueError(f"unknown GPU {shown(name)}; allowed: {', '.join(allowed)}")
        return name


class ModelConfig(_Section):
    name: str = Field("llama-3.1-8b", description="model catalog id (llama-3.1-8b, ...)")
    weight_dtype: str = Field(
        "bf16", description="weight precision: bf16, fp16, fp8, int8, int4, ...")
    kv_dtype: str = Field(
        "bf16", description="KV-cache precision: bf16, fp16, fp8, int8, int4, ...")

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from hwmodels import list_models

        allowed = list_models()
        if name not in allowed:
            raise ValueError(f"unknown model {shown(name)}; allowed: {', '.join(allowed)}")
        return name


class SchedulerConfig(_Section):
    policy: Literal["static", "continuous", "chunked_prefill"] = Field(
        "continuous", description="batching policy")
    max_num_seqs: int = Field(256, ge=1, le=MAX_SEQS,
                              description="most sequences in one iteration")
    max_num_batched_tokens: int = Field(8192, ge=1, le=MAX_TOKENS,
                                        description="token budget of one iteration")
    max_waiting: int | None = Field(None, ge=0, description="queue limit; beyond it, reject",
                                    json_schema_extra=_unit("requests"))
    max_model_len: int | None = Field(
        None, ge=1, le=MAX_TOKENS,
        description="longest prompt + output accepted; null = the model's context",
        json_schema_extra=_unit("tokens"))
    order: Literal["fcfs", "priority"] = Field(
        "fcfs", description="waiting order: arrival, or Request.priority (lower first)")
    preemption: Literal["recompute", "swap"] = Field(
        "recompute", description="when KV runs out: drop and recompute, or swap to host memory")
    admission: Literal["greedy", "no_evict"] = Field(
        "greedy", description="greedy: admit while blocks are free; no_evict: only if every "
        "admitted request fits to its final length (TensorRT-LLM), never preempting")
    chunk_size: int | None = Field(
        None, ge=1, le=MAX_TOKENS,
        description="most prompt tokens of one request per step (null: the budget); "
        "with policy continuous, set it to chunk long prompts (SGLang)",
        json_schema_extra=_unit("tokens"))
    split_prompts: bool = Field(
        True, description="chunked_prefill: cut a prompt to the step's remaining budget "
        "(false: it waits for room, TensorRT-LLM without chunked context)")
    budget_counts_decodes: bool = Field(
        True, description="chunked_prefill: decode tokens count against the token budget "
        "(false: the budget is for prompt tokens, decodes ride on top, as trtllm-bench sizes "
        "TensorRT-LLM's max_num_tokens)")


class KVCacheConfig(_Section):
    allocator: Literal["contiguous", "paged", "radix"] = Field("paged", description="KV allocator")
    block_size: int = Field(16, ge=1, le=MAX_TOKENS, description="tokens per KV block",
                            json_schema_extra=_unit("tokens"))
    enable_prefix_caching: bool = Field(
        False, description="paged: share hashed prompt blocks between requests (vLLM APC); "
        "radix always caches")
    swap_space_gb: float = Field(
        4.0, ge=0, description="host memory (GB per replica) for swap preemption")


class EngineConfig(_Section):
    preset: str | None = Field(None, description="engine preset bundling policies (vllm, ...)")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str | None) -> str | None:
        from policies.presets import PRESETS

        if name is not None and name not in PRESETS:
            raise ValueError(f"unknown preset {shown(name)}; allowed: {', '.join(PRESETS)}")
        return name


class ClientConfig(_Section):
    """The benchmark client (docs/workloads.md): per-request latency, ramp-up, warm-up."""

    mode: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: client latency in closed loops only; on: also in open "
        "loops (Poisson, Gamma); off: requests reach the scheduler the instant they are sent")
    latency_ms: float = Field(
        0.1, ge=0, description="median one-way network + HTTP time per request, each way (ms)")
    latency_sigma: float = Field(
        0.5, ge=0, description="spread of the log of the one-way time (lognormal)")
    frontend_ms: float = Field(
        1.0, ge=0, description="server front-end time per request, one request at a time (ms)")
    frontend_us_per_token: float = Field(
        1.0, ge=0, description="front-end tokenization time per prompt token (us)")
    ramp_up_s: float = Field(
        0.0, ge=0, description="closed loop: clients start evenly spread over this time (s)")
    warmup_requests: int = Field(
        0, ge=0, description="the first N requests sent are left out of the summary")
    warmup_s: float = Field(
        0.0, ge=0, description="requests sent before this time are left out of the summary (s)")


class WorkloadConfig(_Section):
    arrival: Literal["poisson", "gamma", "trace", "closed", "sessions"] = Field(
        "poisson", description="arrival process (sessions: synthetic multi-turn sessions)")
    rate: float = Field(10.0, gt=0, description="mean arrival rate, requests/s (open loop)",
                        json_schema_extra=_unit("req/s"))
    cv: float = Field(1.0, gt=0, description="coefficient of variation of gaps (gamma arrivals)")
    concurrency: int | None = Field(
        None, ge=1, le=MAX_CLIENTS, description="closed-loop clients; with poisson/gamma, the "
        "most requests in flight (vllm bench serve --max-concurrency)",
        json_schema_extra=_unit("clients"))
    num_requests: int | None = Field(1000, ge=1, le=MAX_REQUESTS,
                                     description="requests to send")
    duration_s: float | None = Field(None, gt=0, description="stop sending after this time (s)")
    prompt_tokens: LengthSpec = Field(
        {"dist": "lognormal", "mean": 1024, "sigma": 0.8, "min": 16, "max": 8192},
        description="prompt length: a number or a distribution mapping")
    output_tokens: LengthSpec = Field(
        {"dist": "lognormal", "mean": 256, "sigma": 0.8, "min": 1, "max": 2048},
        description="output length: a number or a distribution mapping")
    # trace replay and sessions (sim/traces/, sim/sessions.py, docs/workloads.md)
    trace: str | None = Field(None, description="trace file or folder (arrival: trace)")
    _usable_trace = field_validator("trace")(usable_path)
    trace_format: Literal["auto", "azure", "mooncake", "agentic", "vidur", "burstgpt",
                          "sharegpt"] = Field("auto", description="trace format; auto detects it")
    on_bad_rows: Literal["error", "skip"] = Field(
        "error", description="a bad trace row stops the run (error) or is skipped and reported")
    time_scale: float = Field(1.0, gt=0, description="trace replay at x times its arrival rate",
                              json_schema_extra=_unit("x"))
    trace_rate: float | None = Field(
        None, gt=0, description="rescale trace arrivals to this mean rate (req/s), same burstiness",
        json_schema_extra=_unit("req/s"))
    window: tuple[float, float] | None = Field(
        None, description="[start_s, end_s): part of the trace replayed, from its first request",
        json_schema_extra=_unit("s"))
    sample: float = Field(1.0, gt=0, le=1, description="fraction of trace requests kept (seeded)",
                          json_schema_extra=_unit("fraction"))
    num_sessions: int | None = Field(
        None, ge=1, description="sessions to run (arrival: sessions, or an agentic trace)")
    think_time_scale: float = Field(1.0, ge=0, description="multiplies every session wait",
                                    json_schema_extra=_unit("x"))
    max_think_time_s: float | None = Field(None, ge=0, description="cap on one session wait (s)")
    session: dict[str, Any] = Field(
        default_factory=dict, description="synthetic session parameters (docs/workloads.md)")
    client: ClientConfig = Field(
        default_factory=ClientConfig, description="benchmark client realism (docs/workloads.md)")

    @model_validator(mode="after")
    def _run_ends(self) -> WorkloadConfig:
        """A synthetic run must end, within what the simulator can hold: refused here, before
        any work, not found by a run that never stops."""
        if self.arrival == "closed" and self.concurrency is None:
            raise ValueError("workload.concurrency: closed-loop arrival needs a client count")
        if self.arrival not in ("poisson", "gamma", "closed") or self.num_requests is not None:
            return self
        if self.duration_s is None:
            raise ValueError("workload.num_requests: null needs workload.duration_s (else the "
                             f"{self.arrival} arrivals never end)")
        expected = self.rate * self.duration_s
        if self.arrival != "closed" and expected > MAX_REQUESTS:
            raise ValueError(f"workload.duration_s: rate x duration_s = {expected:.3g} requests; "
                             f"at most {MAX_REQUESTS:,} (set workload.num_requests)")
        return self

    @model_validator(mode="after")
    def _client_fits_arrival(self) -> WorkloadConfig:
        """The client model's options that the arrival process has no place for: refused with
        the config, not when the workload is built after the deployment."""
        cc = self.client
        if self.arrival in ("trace", "sessions") and (cc.mode == "on" or cc.ramp_up_s):
            key = "mode" if cc.mode == "on" else "ramp_up_s"
            raise ValueError(f"workload.client.{key}: not modelled for arrival {self.arrival}; "
                             "allowed with: closed, poisson, gamma")
        if cc.ramp_up_s and self.arrival not in ("closed", "trace", "sessions"):
            raise ValueError("workload.client.ramp_up_s: staggers closed-loop clients; allowed "
                             "with arrival: closed")
        return self

    @field_validator("window")
    @classmethod
    def _valid_window(cls, window: tuple[float, float] | None) -> tuple[float, float] | None:
        if window is not None and not 0 <= window[0] < window[1]:
            raise ValueError(f"needs 0 <= start_s < end_s (got {list(window)})")
        return window

    @field_validator("session")
    @classmethod
    def _valid_session(cls, spec: dict[str, Any]) -> dict[str, Any]:
        from sim.sessions import parse_session_spec

        parse_session_spec(spec)
        return spec

    @field_validator("prompt_tokens", "output_tokens")
    @classmethod
    def _valid_length(cls, spec: LengthSpec, info) -> LengthSpec:
        parse_length(spec, f"workload.{info.field_name}")
        return spec

    def lengths(self) -> tuple[LengthDist, LengthDist]:
        return (parse_length(self.prompt_tokens, "workload.prompt_tokens"),
                parse_length(self.output_tokens, "workload.output_tokens"))


class SLOConfig(_Section):
    ttft_ms: float | None = Field(None, gt=0, description="time-to-first-token target (ms)")
    tpot_ms: float | None = Field(None, gt=0, description="time-per-output-token target (ms)")
    e2el_ms: float | None = Field(None, gt=0, description="end-to-end latency target (ms)")


RouterName = Literal[
    "round_robin", "least_outstanding", "least_kv", "prefix_aware", "session_affinity"]


class PoolConfig(_Section):
    """A group of identical replicas; unset fields take the top-level hardware/scheduler value."""

    role: Literal["both", "prefill", "decode"] = Field(
        "both", description="both: aggregated serving; prefill/decode: disaggregated pools")
    num_gpus: int = Field(1, ge=1, le=MAX_GPUS,
                          description="GPUs of this pool; replicas = num_gpus / tp")
    tp: int | None = Field(None, ge=1, le=MAX_GPUS,
                           description="tensor-parallel degree (default hardware.tp)",
                           json_schema_extra=_unit("GPUs"))
    gpu: str | None = Field(None, description="GPU of this pool (default hardware.gpu)")
    policy: Literal["static", "continuous", "chunked_prefill"] | None = Field(
        None, description="batching policy of this pool (default scheduler.policy)")
    max_num_seqs: int | None = Field(None, ge=1, le=MAX_SEQS,
                                     description="default scheduler.max_num_seqs")
    max_num_batched_tokens: int | None = Field(
        None, ge=1, le=MAX_TOKENS, description="default scheduler.max_num_batched_tokens")

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, name: str | None) -> str | None:
        return None if name is None else HardwareConfig._known_gpu(name)


class InterconnectConfig(_Section):
    kind: Literal["nvlink", "pcie", "infiniband", "roce"] = Field(
        "nvlink", description="link that carries KV from prefill to decode replicas")
    bandwidth_gb_s: float | None = Field(
        None, gt=0,
        description="GB/s per GPU per direction (default: by kind, see docs/cluster.md)")
    latency_us: float | None = Field(
        None, ge=0, description="fixed cost of one KV transfer, us (default: by kind)")
    shared: bool = Field(
        False, description="one link of bandwidth_gb_s for all transfers, instead of per-GPU links")


class ClusterConfig(_Section):
    router: RouterName = Field("round_robin", description="picks the replica (prefill replica "
                               "when disaggregated) that serves an arriving request")
    decode_router: RouterName = Field(
        "least_kv", description="picks the decode replica of a prefilled request")
    prefix_load_weight: float = Field(
        1.0, ge=0, description="prefix_aware: load penalty vs cached-prefix fraction")
    pools: list[PoolConfig] = Field(
        default_factory=list, description="replica pools; empty: hardware.num_gpus / tp replicas")
    interconnect: InterconnectConfig = InterconnectConfig()

    @field_validator("pools")
    @classmethod
    def _bounded_pools(cls, pools: list[PoolConfig]) -> list[PoolConfig]:
        total = sum(p.num_gpus for p in pools)
        if total > MAX_GPUS:
            raise ValueError(f"{total} GPUs in all; at most {MAX_GPUS}")
        return pools


class AcceptanceConfig(_Section):
    model: Literal["iid", "decay", "per_request", "replay"] = Field(
        "iid", description="how accepted drafts are drawn (see docs/speculative.md)")
    rate: float = Field(0.7, ge=0, lt=1, description="per-token acceptance (iid; decay: first "
                        "position; per_request: mean of the Beta)",
                        json_schema_extra=_unit("probability"))
    decay: float = Field(1.0, gt=0, le=1, description="decay: factor per draft position")
    rates: list[float] = Field(default_factory=list, description="decay: one rate per position",
                               json_schema_extra=_unit("probability"))
    dataset: Literal["chat", "code"] | None = Field(
        None, description="per_request: preset Beta of per-request rates for this kind of text")
    concentration: float = Field(8.0, gt=0, description="per_request: Beta concentration")
    file: str | None = Field(None, description="replay: file of accepted lengths, one a line")
    _usable_file = field_validator("file")(usable_path)
    recorded_depth: int | None = Field(
        None, ge=1, description="replay: draft length the file was recorded at "
        "(default num_draft_tokens)", json_schema_extra=_unit("tokens"))


class SpeculativeConfig(_Section):
    method: Literal["none", "draft_model", "eagle", "mtp", "medusa", "ngram"] = Field(
        "none", description="speculative decoding method; none turns it off")
    num_draft_tokens: int = Field(4, ge=1, le=64, description="draft depth k (goodput: the most)")
    tree_width: int = Field(1, ge=1, description="candidates per draft level (1: a chain)",
                            json_schema_extra=_unit("candidates"))
    draft_model: str | None = Field(None, description="draft_model: the draft's catalog id")
    draft_vocab_size: int | None = Field(
        None, ge=1, description="eagle/mtp: the head's own smaller vocabulary (EAGLE-3)",
        json_schema_extra=_unit("tokens"))
    ngram_match_prob: float = Field(
        1.0, ge=0, le=1, description="ngram: chance that the lookup finds a candidate",
        json_schema_extra=_unit("probability"))
    ngram_lookup_s: float = Field(5e-6, ge=0, description="ngram: host seconds per lookup")
    draft_sync: Literal["eager", "lazy"] = Field(
        "eager", description="draft_model: eager runs the draft on every token, as vLLM; lazy "
        "only when drafting, catching up then")
    policy: Literal["fixed", "goodput"] = Field(
        "fixed", description="fixed: always k; goodput: the k (0..k) of most tokens per second")
    disable_above_batch_size: int | None = Field(
        None, ge=0, description="no speculation in steps with more decoding sequences",
        json_schema_extra=_unit("sequences"))
    disable_above_waiting: int | None = Field(
        None, ge=0, description="no speculation while more requests wait",
        json_schema_extra=_unit("requests"))
    acceptance: AcceptanceConfig = AcceptanceConfig()

    @field_validator("draft_model")
    @classmethod
    def _known_draft(cls, name: str | None) -> str | None:
        return None if name is None else ModelConfig._known_model(name)


class Config(_Section):
    """A whole experiment: hardware, model, policies, workload, SLOs and the seed."""

    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of every random stream")
    hardware: HardwareConfig = HardwareConfig()
    model: ModelConfig = ModelConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    kv_cache: KVCacheConfig = KVCacheConfig()
    engine: EngineConfig = EngineConfig()
    workload: WorkloadConfig = WorkloadConfig()
    slo: SLOConfig = SLOConfig()
    cluster: ClusterConfig = ClusterConfig()
    speculative: SpeculativeConfig = SpeculativeConfig()


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model a field holds (``PoolConfig`` of ``list[PoolConfig]``), or None."""
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _field_path(loc: tuple) -> tuple[str, type[BaseModel]]:
    """The dotted config key of a pydantic error location, and the section it is in. Parts
    pydantic adds inside a field (a union member's type, ``function-after[...]``) are dropped."""
    parts: list[str] = []
    model: type[BaseModel] | None = Config
    section: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):  # an item of a list (cluster.pools.0, workload.window.1)
            parts.append(str(part))
        elif model is not None:
            text = str(part)  # an unknown key is echoed as typed, if it is a plain name
            parts.append(text if text.isidentifier() else shown(text))
            section = model
            field = model.model_fields.get(str(part))
            model = _section_model(field.annotation) if field is not None else None
    return ".".join(parts) or "config", section


_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _allowed_range(section: type[BaseModel], name: str) -> str | None:
    """A field's bounds as ``allowed: 1 <= num_gpus <= 1024``, from its schema."""
    field = section.model_fields.get(name)
    if field is None:
        return None
    low = high = ""
    for bound in field.metadata:
        for attr, text in (("ge", "<="), ("gt", "<")):
            if getattr(bound, attr, None) is not None:
                low = f"{getattr(bound, attr)} {text} "
        for attr, text in (("le", "<="), ("lt", "<")):
            if getattr(bound, attr, None) is not None:
                high = f" {text} {getattr(bound, attr)}"
    return f"allowed: {low}{name}{high}" if low or high else None


def _one_line(err: ValidationError) -> str:
    """The first error of a validation as the one line the CLI prints: the field, what is
    wrong, and the value given (once, cut short)."""
    first = err.errors()[0]
    field, section = _field_path(first["loc"])
    msg = first["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if first["type"] == "extra_forbidden":
        return one_line(f"{field}: unknown key; allowed: {', '.join(section.model_fields)}")
    if first["type"] in _BOUND_ERRORS:
        allowed = _allowed_range(section, field.rsplit(".", 1)[-1])
        msg = f"out of range; {allowed}" if allowed else msg
    got = first.get("input")
    if "(got " not in msg and not isinstance(got, (dict, list)) and got is not None:
        msg = f"{msg} (got {shown(got)})"
    return with_field(field, msg)


def check_kv_blocks(total_blocks: int, field: str = "hardware.num_gpus") -> None:
    """Refuse, before any replica is built, a deployment whose KV pools the simulator cannot
    hold in memory (the allocators keep one list entry per block, about 45 bytes)."""
    if total_blocks > MAX_KV_BLOCKS:
        raise ConfigError(f"{field}: its replicas' KV pools hold {total_blocks:,} blocks in all; "
                          f"the simulator holds at most {MAX_KV_BLOCKS:,} (lower {field} or "
                          "raise kv_cache.block_size)")


def check_files(config: Config) -> None:
    """Read the files the config names before any work: a trace's format, header and the rows
    the run will read (``num_requests`` of them, over ``sample``), so that a bad row is
    reported, with its file and line, before the simulation starts. Rows past those (a
    window, a run to the end of the trace) are checked when the run reaches them."""
    wl = config.workload
    if wl.arrival != "trace":
        return
    import itertools
    import warnings

    from sim.traces import TraceReader

    if not wl.trace:
        raise ConfigError("workload.trace: arrival 'trace' needs a trace file or folder path")
    reader = TraceReader(wl.trace, wl.trace_format, wl.on_bad_rows)
    if reader.is_sessions or wl.window is not None or wl.num_requests is None:
        return
    rows = -(-wl.num_requests // wl.sample) if wl.sample < 1 else wl.num_requests
    requests = reader.requests()
    with warnings.catch_warnings():  # skipped rows are reported by the run itself
        warnings.simplefilter("ignore")
        try:
            for _ in itertools.islice(requests, int(rows)):
                pass
        finally:
            requests.close()


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating the sections on the way."""
    *path, last = key.split(".")
    node = data
    for part in path:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: '{part}' is a value, not a section")
    node[last] = value


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (numbers, booleans, mappings, null)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set: expected key=value (got {item!r})")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value is not valid YAML ({exc.problem})") from None


# Keys naming files; a relative path in a config file is taken from that file's folder (so
# a config runs the same from any working directory); ``--set`` values stay relative to it.
PATH_KEYS = (("workload", "trace"), ("speculative", "acceptance", "file"), ("hardware", "profile"))
PATH_WORDS = ("auto", "none")  # hardware.profile's values that are not paths


def resolve_paths(data: dict, folder: Path) -> None:
    """Make the relative file paths of a config mapping relative to ``folder``, in place."""
    for *sections, key in PATH_KEYS:
        node = data
        for name in sections:
            node = node.get(name) if isinstance(node, dict) else None
        value = node.get(key) if isinstance(node, dict) else None
        if isinstance(value, str) and value not in PATH_WORDS and not Path(value).is_absolute():
            node[key] = str(folder / value)


class _UniqueKeyLoader(SAFE_LOADER):  # type: ignore[misc,valid-type]
    """The safe loader, refusing a key given twice in one mapping (YAML forbids it; PyYAML
    would keep the last value without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base loader says so
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, what: str) -> Any:
    """A YAML file's document, or a one-line ``ConfigError`` naming the file (and, for bad
    YAML, ``file:line:column``): missing, a folder, unreadable, not text, not YAML."""
    if str(path) == "":
        raise ConfigError(f"{what}: empty path")
    if path.is_dir():
        raise ConfigError(f"{what}: '{path}' is a folder, not a YAML file")
    if not path.exists():
        raise ConfigError(f"{what}: no such file '{path}'")
    if not path.is_file():  # a device or a pipe (/dev/zero) would be read forever
        raise ConfigError(f"{what}: '{path}' is not a regular file")
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what}: '{path}' is not a text file (byte {exc.start}: "
                          f"{exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read '{path}' ({exc.strerror or exc})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(one_line(f"{what}: {where}: not valid YAML: {problem}")) from None


def load_config(source: Config | Mapping | str | Path | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a validated Config from a Config, a mapping, a YAML path or None (the default)."""
    if isinstance(source, Config):
        data = source.model_dump()
    elif isinstance(source, Mapping):
        data = dict(source)
    elif source is None:
        data = {}
    else:
        path = Path(source)
        data = read_yaml(path, "config")
        if not isinstance(data, dict):
            raise ConfigError(f"config: {path} must hold a mapping of sections")
        resolve_paths(data, path.parent)
    data = yaml.load(yaml.dump(data, Dumper=SAFE_DUMPER), Loader=SAFE_LOADER)  # a deep copy
    for item in overrides:
        set_dotted(data, *parse_override(item))
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None
