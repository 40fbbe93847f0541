"""The validation suite's memory plan for a model run on fewer layers than its catalog entry."""

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
