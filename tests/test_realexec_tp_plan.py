"""The validation suite's memory plan for a model run on fewer layers than its catalog entry."""

import pytest

from realexec.validate import base_config, fitting_utilization


def test_70b_at_tp2_on_h100_is_planned_at_vllm_utilization():
    # 70.6 GB of weights per GPU do not fit the 64.4 GB usable at 0.75; at 0.9 they do
    base = base_config("llama-3.1-70b", "h100-sxm5-80gb", profile=None, tp=2)
    assert fitting_utilization(base) == 0.9


def test_a_model_that_fits_keeps_the_default_utilization():
    base = base_config("llama-3.1-8b", "h100-sxm5-80gb", profile=None, tp=2)
    assert fitting_utilization(base) == base["hardware"]["gpu_memory_utilization"] == 0.75


def test_a_model_that_never_fits_keeps_the_default_for_the_error():
    base = base_config("llama-3.1-70b", "h100-sxm5-80gb", profile=None, tp=1)
    assert fitting_utilization(base) == 0.75


def test_served_steps_split_decode_from_prompt_steps():
    from realexec.report import steps_by_kind

    scenario = {"steps": [[[[1, 10], [1, 20]], 0.010, 0.009],  # decode: -10%
                          [[[1, 10]], 0.020, 0.020],  # decode: 0%
                          [[[64, 0], [1, 5]], 0.040, 0.050],  # mixed: +25%
                          [[[1, 10]], 0.010, float("nan")]]}  # no prediction: left out
    rows = {kind: rest for kind, *rest in steps_by_kind(scenario)}
    assert rows["decode"][0] == 2 and rows["prefill/mixed"][0] == 1
    assert rows["decode"][1] == pytest.approx(15.0)
    assert rows["prefill/mixed"][3] == pytest.approx(0.25)
    assert rows["decode"][3] == pytest.approx(-0.05)  # median of -10% and 0%
