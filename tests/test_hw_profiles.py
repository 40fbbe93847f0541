"""Profile resolution ("auto" and lending between GPUs) and KV copy times."""

from __future__ import annotations

import pytest

import hwmodels.profile as profile_mod
from hwmodels import CatalogError, Profile, RooflineModel, swap_time_s, transfer_time_s
from hwmodels.profile import auto_profile
from hwmodels.specs import get_gpu

LENT = Profile(
    gpu="h100-sxm5-80gb",
    params={"hbm_eff": 0.6, "step_overhead_s": 2e-3},
    mape=4.0,
    p90_abs_error_pct=7.0,
)


@pytest.fixture
def committed_h100(monkeypatch):
    """Pretend a profile for the H100 SXM is committed (and no other)."""
    monkeypatch.setattr(profile_mod, "committed_gpu_ids", lambda: ["h100-sxm5-80gb"])
    monkeypatch.setattr(
        profile_mod, "committed_profile", lambda gid: LENT if gid == "h100-sxm5-80gb" else None
    )


def test_auto_uses_own_then_same_chip_then_host_params(committed_h100):
    assert auto_profile(get_gpu("h100")) is LENT
    h200 = auto_profile(get_gpu("h200"))  # same GH100 die: every parameter
    assert h200.params == LENT.params and h200.borrowed and h200.gpu == "h200-sxm-141gb"
    b200 = auto_profile(get_gpu("b200"))  # another chip: only the host software's numbers
    assert b200.params == {"step_overhead_s": 2e-3} and b200.borrowed
    assert auto_profile(get_gpu("mi300x")) is None  # another vendor's software stack
    hw = RooflineModel("b200", "llama-3.1-8b", profile="auto")
    assert hw.params.step_overhead_s == 2e-3 and hw.params.hbm_eff != 0.6
    assert hw.predict([(1, 10)]).extrapolating  # lent residuals say nothing about a B200


def test_auto_without_committed_profiles_is_defaults(monkeypatch):
    monkeypatch.setattr(profile_mod, "committed_gpu_ids", lambda: [])
    monkeypatch.setattr(profile_mod, "committed_profile", lambda gid: None)
    auto = RooflineModel("h100", "llama-3.1-8b", profile="auto")
    plain = RooflineModel("h100", "llama-3.1-8b")
    assert auto.profile is None and auto.params == plain.params


def test_kv_copy_times():
    gb = 1e9
    nvlink = transfer_time_s("h100", gb)
    assert nvlink == pytest.approx(gb / (450e9 * 0.85), rel=0.01)
    assert swap_time_s("h100", gb) == pytest.approx(gb / (64e9 * 0.88), rel=0.01)
    assert transfer_time_s("h100", gb, "network") == pytest.approx(gb / 40e9, rel=0.01)
    assert transfer_time_s("l40s", gb) == swap_time_s("l40s", gb)  # no NVLink: PCIe
    assert transfer_time_s("b200", gb) < nvlink
    with pytest.raises(CatalogError, match="allowed: nvlink, pcie, network"):
        transfer_time_s("h100", gb, "carrier-pigeon")
