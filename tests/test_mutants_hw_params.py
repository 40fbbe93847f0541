"""Hand-derived parameters of ``hwmodels.params`` (issue #27: the mutmut survivors of
``hwmodels/params.py``; docs/mutation/hwmodels-params.md): how an AMD GPU's GEMM and attention
plateaus follow from the NVIDIA curves, and the one-line error for an unknown parameter.

The fitted curves are the input here (``curves_for``, whose values another change may refit);
the expectations are the curve's own fields times ratios read from the catalog's measured GEMM
table (stas00/ml-engineering's "Maximum Achievable Matmul FLOPS": H100 SXM 794.5 of 989 TFLOP/s
= 0.803, MI300X 668.4 of 1300 = 0.514) and the documented vendor ratios, never the output."""

from __future__ import annotations

import pytest

from hwmodels.errors import CatalogError
from hwmodels.kernels.fits import curves_for
from hwmodels.params import HwParams, default_params, params_from_curves
from hwmodels.specs import get_gpu

H100_BEST_GEMM = 0.803
MI300X_BEST_GEMM = 0.514


def test_an_nvidia_gpu_takes_its_curves_plateaus_unchanged():
    gpu = get_gpu("h100")
    curves = curves_for(gpu)
    params = params_from_curves(gpu, curves)
    assert params.gemm_eff == curves.gemm["bf16"].compute_eff
    assert params.attn_compute_eff == curves.prefill["bf16"].compute_eff
    # the optional extra GEMM ramp is off: the curves' tile quantization describes the shapes
    assert params.gemm_m_half_tokens == 0.0


def test_mi300x_scales_the_h100_curves_by_the_measured_gemm_fractions():
    gpu = get_gpu("mi300x")
    curves = curves_for(gpu)
    assert curves.chip == "h100_sxm"  # AMD chips borrow the H100 curves
    params = params_from_curves(gpu, curves)
    assert params.gemm_eff == pytest.approx(
        curves.gemm["bf16"].compute_eff * MI300X_BEST_GEMM / H100_BEST_GEMM, rel=1e-12
    )
    # CK/Triton flash attention: the vendor-typical 0.4 against the H100's 0.55
    assert params.attn_compute_eff == pytest.approx(
        curves.prefill["bf16"].compute_eff * 0.4 / 0.55, rel=1e-12
    )


def test_an_amd_gpu_without_a_measured_gemm_fraction_takes_the_vendor_typical_ratio():
    # A user-defined AMD GPU (no catalog base, so no measured GEMM fraction): 0.55 / 0.71.
    gpu = get_gpu({"id": "amd-whatif", "vendor": "amd", "memory_gb": 192,
                   "memory_bw_gbps": 5300, "tflops_dense": {"bf16": 1300}})
    assert gpu.gemm_eff_bf16 is None
    curves = curves_for(gpu)
    params = params_from_curves(gpu, curves)
    assert params.gemm_eff == pytest.approx(curves.gemm["bf16"].compute_eff * 0.55 / 0.71,
                                            rel=1e-12)


def test_default_params_are_the_curves_on_their_own_gpu():
    gpu = get_gpu("h100")
    assert default_params(gpu) == params_from_curves(gpu, curves_for(gpu))


def test_an_unknown_parameter_is_one_line_naming_it_and_every_allowed_name():
    with pytest.raises(CatalogError) as err:
        HwParams().updated(gemm_eff=0.5, hbm_efficiency=0.9)
    allowed = (
        "gemm_eff, gemm_m_half_tokens, lowp_gemm_eff_ratio, dequant_eff_ratio, overlap_p, "
        "hbm_eff, attn_compute_eff, attn_bw_eff, comm_eff, comm_latency_s, pcie_copy_eff, "
        "nvlink_copy_eff, copy_latency_s, kernel_gap_s, gemm_latency_s, launch_cpu_s, "
        "step_overhead_s, seq_overhead_s, cuda_graph_max_tokens, cuda_graph_mode, host_overlap"
    )
    assert str(err.value) == f"hardware parameters: unknown ['hbm_efficiency']; allowed: {allowed}"


def test_to_dict_round_trips_every_field():
    params = HwParams(gemm_eff=0.5, copy_latency_s=2e-5, cuda_graph_mode="decode")
    as_dict = params.to_dict()
    assert as_dict["gemm_eff"] == 0.5 and as_dict["cuda_graph_mode"] == "decode"
    assert HwParams(**as_dict) == params
