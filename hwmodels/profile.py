"""Calibration profiles: fitted parameters for one GPU, with how well and where they fit.

A profile is a small JSON file (committed under ``hwmodels/profiles/<gpu-id>/profile.json``).
Besides the parameters it records the residuals of the fit (so predictions can carry an
uncertainty band) and the ranges of batch shapes it saw (so a prediction outside them can be
flagged as an extrapolation).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from hwmodels.errors import CatalogError
from hwmodels.params import HwParams
from hwmodels.specs import GpuSpec, get_gpu

PROFILE_FILE = "profile.json"


@dataclass(frozen=True, slots=True)
class Coverage:
    """Ranges of the measured steps: beyond them a prediction extrapolates."""

    max_tokens: int = 0  # new tokens per step
    max_context: int = 0  # cached tokens of one sequence
    max_batch: int = 0  # sequences per step

    def covers(self, seqs: list[tuple[int, int]]) -> bool:
        tokens = sum(n for n, _ in seqs)
        context = max((c for _, c in seqs), default=0)
        return (
            tokens <= self.max_tokens
            and context <= self.max_context
            and len(seqs) <= (self.max_batch)
        )


@dataclass(frozen=True, slots=True)
class Profile:
    """Fitted ``params`` for ``gpu`` (catalog id) plus fit quality and provenance."""

    gpu: str
    params: dict[str, Any]
    mape: float | None = None  # mean absolute percentage error of the fit, in %
    p90_abs_error_pct: float | None = None
    num_steps: int = 0
    coverage: Coverage = field(default_factory=Coverage)
    source: dict[str, Any] = field(default_factory=dict)  # card, date, command, models

    def hw_params(self, base: HwParams | None = None) -> HwParams:
        return (base or HwParams()).updated(**self.params)

    def band(self) -> float:
        """Relative half-width of a ~90% band around a prediction (p90 of the residuals)."""
        return (self.p90_abs_error_pct or 0.0) / 100.0

    @property
    def borrowed(self) -> bool:
        """True when lent by another GPU's profile (its residuals say nothing about this one)."""
        return "borrowed_from" in self.source

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / PROFILE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Profile:
        raw = dict(raw)
        raw["coverage"] = Coverage(**raw.get("coverage", {}))
        try:
            profile = cls(**raw)
        except TypeError as exc:
            raise CatalogError(f"hardware.profile: malformed profile ({exc})") from None
        HwParams().updated(**profile.params)  # reject unknown parameter names early
        return profile


def load_profile(path: str | Path) -> Profile:
    """Read a profile JSON file (or a folder holding ``profile.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / PROFILE_FILE
    if not path.is_file():
        raise CatalogError(f"hardware.profile: no profile file at {path}")
    return Profile.from_dict(json.loads(path.read_text()))


# Parameters that describe the executor's software (host work, launches, graphs), not the
# GPU: a profile measured on one GPU lends them to a GPU that has no profile of its own.
HOST_PARAMS = (
    "step_overhead_s",
    "seq_overhead_s",
    "launch_cpu_s",
    "kernel_gap_s",
    "cuda_graph_max_tokens",
    "cuda_graph_mode",
    "host_overlap",
)


def committed_profile(gpu_id: str) -> Profile | None:
    """The profile shipped in ``hwmodels/profiles/<gpu_id>/``, if there is one."""
    folder = resources.files("hwmodels").joinpath("profiles", gpu_id, PROFILE_FILE)
    if not folder.is_file():
        return None
    return Profile.from_dict(json.loads(folder.read_text()))


def committed_gpu_ids() -> list[str]:
    root = resources.files("hwmodels").joinpath("profiles")
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.joinpath(PROFILE_FILE).is_file())


def auto_profile(gpu: GpuSpec) -> Profile | None:
    """The committed profile for ``gpu``; else one of a GPU with the same chip (H100 SXM lends
    all its parameters to H200: same GH100 die and software, only the memory differs, and the
    memory's datasheet bandwidth is in the spec, not in the profile); else the host-software
    parameters of any committed profile of the same vendor; else None (defaults)."""
    own = committed_profile(gpu.base_id)
    if own is not None:
        return own
    lenders = [(gid, get_gpu(gid)) for gid in committed_gpu_ids()]
    for gid, other in lenders:
        if gpu.architecture and other.architecture == gpu.architecture:
            return replace(
                committed_profile(gid),
                gpu=gpu.base_id,
                source={"borrowed_from": gid, "scope": "all parameters"},
            )
    for gid, other in lenders:
        if other.vendor == gpu.vendor:
            lent = committed_profile(gid)
            params = {k: v for k, v in lent.params.items() if k in HOST_PARAMS}
            return Profile(
                gpu=gpu.base_id,
                params=params,
                source={"borrowed_from": gid, "scope": "host parameters"},
            )
    return None


def resolve_profile(profile: Any, gpu: GpuSpec) -> Profile | None:
    """None, ``"auto"`` (see ``auto_profile``), a path, or a ``Profile``."""
    if profile is None or isinstance(profile, Profile):
        return profile
    if isinstance(profile, str) and profile == "auto":
        return auto_profile(gpu)
    if isinstance(profile, (str, Path)):
        return load_profile(profile)
    if isinstance(profile, dict):
        return Profile.from_dict(profile)
    raise CatalogError(
        "hardware.profile: expected None, 'auto', a path or a Profile, "
        f"got {type(profile).__name__}"
    )
