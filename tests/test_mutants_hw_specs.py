"""GPU specs read from the catalog and from user mappings, checked against the datasheets and
the catalog's measured GEMM table (issue #27: the mutmut survivors of ``hwmodels/specs.py``;
docs/mutation/hwmodels-specs.md). Expected values are the datasheet's (Hopper whitepaper: 132
SMs, 50 MB L2) and the measured table's (stas00/ml-engineering "Maximum Achievable Matmul
FLOPS": H100 SXM bf16 794.5/989 = 0.803, fp8 1402.6/1979 = 0.709; H200 SXM fp8 1453.4/1979 =
0.734; A100 SXM4 80GB bf16 271.2/312 = 0.869), never the code's output."""

from __future__ import annotations

import pytest

from hwmodels.errors import CatalogError
from hwmodels.specs import get_gpu

TOY = {"memory_gb": 24, "memory_bw_gbps": 1000, "tflops_dense": {"bf16": 100}}


def test_h100_sxm_carries_its_datasheet_and_measured_fractions():
    gpu = get_gpu("h100")
    assert (gpu.id, gpu.name, gpu.vendor) == ("h100-sxm5-80gb", "NVIDIA H100 SXM5 80GB", "nvidia")
    assert gpu.architecture == "Hopper (GH100), sm_90"
    assert gpu.sm_count == 132 and gpu.l2_bytes == 50e6
    assert gpu.base_id == "h100-sxm5-80gb"
    assert (gpu.gemm_eff_bf16, gpu.gemm_eff_fp8) == (0.803, 0.709)


def test_a_gpu_missing_a_measurement_borrows_it_from_its_twin_die_only():
    # H200 SXM: same GH100 die and SXM5 form factor as the H100 SXM; its own fp8 row, the
    # H100's bf16 row.
    h200 = get_gpu("h200")
    assert (h200.gemm_eff_bf16, h200.gemm_eff_fp8) == (0.803, 0.734)
    # A100 SXM4 40GB: no row of its own; the 80GB SXM4 board's bf16 (A100 has no fp8).
    a100_40 = get_gpu("a100-40gb")
    assert (a100_40.gemm_eff_bf16, a100_40.gemm_eff_fp8) == (0.869, None)
    # L40S (Ada, PCIe): no row and no twin.
    l40s = get_gpu("l40s")
    assert (l40s.gemm_eff_bf16, l40s.gemm_eff_fp8) == (None, None)


def test_a_what_if_gpu_keeps_its_base_measurements_and_names_itself():
    what_if = get_gpu({"base": "h100", "memory_bw_gbps": 6700})
    assert what_if.id == "h100-sxm5-80gb-whatif" and what_if.base_id == "h100-sxm5-80gb"
    assert what_if.hbm_bw_bytes_s == 6700e9
    assert (what_if.gemm_eff_bf16, what_if.gemm_eff_fp8) == (0.803, 0.709)
    assert what_if.name == "NVIDIA H100 SXM5 80GB" and what_if.sm_count == 132
    # a base with nothing changed is the catalog GPU itself
    assert get_gpu({"base": "h100"}).id == "h100-sxm5-80gb"


def test_a_user_gpu_gets_its_id_or_a_default_name_and_vendor():
    anonymous = get_gpu(TOY)
    assert (anonymous.id, anonymous.name) == ("custom-gpu", "custom-gpu")
    assert anonymous.vendor == "nvidia"
    assert (anonymous.sm_count, anonymous.l2_bytes, anonymous.architecture) == (None, None, "")
    named = get_gpu({**TOY, "id": "my-gpu", "name": "My GPU", "vendor": "amd", "sm_count": 80,
                     "l2_cache_mb": 40})
    assert (named.id, named.name, named.vendor) == ("my-gpu", "My GPU", "amd")
    assert (named.sm_count, named.l2_bytes) == (80, 40e6)


def test_fp16_falls_back_to_the_bf16_peak_only_when_it_has_none():
    bf16_only = get_gpu(TOY)
    assert bf16_only.peak("fp16") == 100e12 and bf16_only.has("fp16")
    assert bf16_only.peak("fp8") is None and not bf16_only.has("fp8")
    both = get_gpu({**TOY, "tflops_dense": {"bf16": 100, "fp16": 200}})
    assert both.peak("fp16") == 200e12 and both.peak("bf16") == 100e12


def test_errors_name_the_gpu_and_what_is_allowed():
    with pytest.raises(CatalogError) as err:
        get_gpu(42)
    assert str(err.value) == "hardware.gpu: expected a name or a mapping, got int"
    with pytest.raises(CatalogError) as err:
        get_gpu("h300")
    assert str(err.value).startswith(
        "hardware.gpu: unknown GPU 'h300'; allowed: a100, a100-40gb, a100-80gb, a100-pcie, b200"
    )
    with pytest.raises(CatalogError) as err:
        get_gpu(TOY).link_bw_bytes_s(2)
    assert str(err.value) == "gpu custom-gpu: no NVLink or PCIe bandwidth known for multi-GPU work"


def test_with_overrides_makes_a_named_what_if_copy():
    h100 = get_gpu("h100")
    faster = h100.with_overrides(hbm_bw_bytes_s=2 * 3.35e12)  # H100 SXM: 3.35 TB/s
    assert faster.id == "h100-sxm5-80gb-whatif" and faster.hbm_bw_bytes_s == 6.7e12
    assert faster.memory_bytes == 80 * 2**30 and faster.base_id == "h100-sxm5-80gb"
    peaks = {"bf16": 2e15}
    named = h100.with_overrides(id="h100-2x", peak_flops_s=peaks)
    peaks["bf16"] = 0.0  # the copy does not follow the caller's dict, nor can it be changed
    assert named.id == "h100-2x" and named.peak("bf16") == 2e15 and named.peak("fp8") is None
    with pytest.raises(TypeError):
        named.peak_flops_s["bf16"] = 1.0
    assert h100.hbm_bw_bytes_s == 3.35e12 and h100.id == "h100-sxm5-80gb"
