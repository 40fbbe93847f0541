"""Hardware models of servesim: catalogs, the roofline step-time model, memory planning and
calibration. Imports nothing else of the project (no SimPy, no torch; ``core`` at most).

The contract: ``step_time_ms(gpu, model, seqs, *, tp=1, weight_dtype="bf16", kv_dtype="bf16",
profile=None)``, composed of the op-level functions ``gemm_time_ms``, ``attention_time_ms`` and
``allreduce_time_ms`` (fitted kernel curves, ``hwmodels.kernels``); see
``docs/hardware-model.md`` for the model and its parameters.
"""

from hwmodels.errors import CatalogError, DoesNotFitError
from hwmodels.kernels.api import allreduce_time_ms, attention_time_ms, gemm_time_ms
from hwmodels.memory import MemoryPlan, plan_memory, weight_bytes
from hwmodels.modelspec import ModelSpec, get_model, list_models
from hwmodels.op import Op
from hwmodels.params import HwParams, default_params
from hwmodels.precision import KV_FORMATS, WEIGHT_FORMATS
from hwmodels.profile import Profile, load_profile
from hwmodels.roofline import Prediction, RooflineModel, step_time_ms
from hwmodels.specs import GpuSpec, get_gpu, list_gpus
from hwmodels.transfer import swap_time_s, transfer_time_s

__all__ = [
    "CatalogError",
    "DoesNotFitError",
    "GpuSpec",
    "HwParams",
    "KV_FORMATS",
    "MemoryPlan",
    "ModelSpec",
    "Op",
    "Prediction",
    "Profile",
    "RooflineModel",
    "WEIGHT_FORMATS",
    "allreduce_time_ms",
    "attention_time_ms",
    "default_params",
    "gemm_time_ms",
    "get_gpu",
    "get_model",
    "list_gpus",
    "list_models",
    "load_profile",
    "plan_memory",
    "step_time_ms",
    "swap_time_s",
    "transfer_time_s",
    "weight_bytes",
]
