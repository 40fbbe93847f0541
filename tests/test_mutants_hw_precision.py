"""Number formats of ``hwmodels.precision`` by hand (issue #27: the mutmut survivors of
``hwmodels/precision.py``; docs/mutation/hwmodels-precision.md): which 16-bit type activations
keep, the KV aliases, and the one-line errors that list the allowed names."""

from __future__ import annotations

import pytest

from hwmodels.errors import CatalogError
from hwmodels.precision import activation_dtype, kv_format, weight_format


@pytest.mark.parametrize(
    ("weights", "activations"),
    # An fp16 checkpoint runs fp16 activations; every other recipe (bf16, and the quantized
    # formats, whose embeddings and LM head stay bf16) keeps bf16.
    [("fp16", "fp16"), ("bf16", "bf16"), ("int4", "bf16"), ("fp8", "bf16")],
)
def test_activations_keep_the_checkpoints_16_bit_type(weights, activations):
    assert activation_dtype(weight_format(weights)) == activations


@pytest.mark.parametrize(("alias", "bytes_per_elem"), [
    # KIVI: 4 (or 2) bits plus an fp16 scale and an fp16 zero (4 bytes) per group of 32.
    ("4bit", 4 / 8 + 4 / 32), ("kivi2", 2 / 8 + 4 / 32), (" 3BIT ", 3 / 8 + 4 / 32),
])
def test_kv_aliases_name_the_kivi_formats(alias, bytes_per_elem):
    assert kv_format(alias).bytes_per_elem == pytest.approx(bytes_per_elem, rel=1e-12)


def test_unknown_formats_name_the_field_and_every_allowed_value():
    with pytest.raises(CatalogError) as weight:
        weight_format("int5")
    assert str(weight.value) == (
        "model.weight_dtype: unknown 'int5'; "
        "allowed: bf16, fp16, fp8, int8, int4, nvfp4, mxfp4, ternary"
    )
    with pytest.raises(CatalogError) as kv:
        kv_format("int5")
    assert str(kv.value) == (
        "model.kv_dtype: unknown 'int5'; "
        "allowed: bf16, fp16, fp8, int8, int4, int3, int2, 4bit, 3bit, 2bit, kivi4, kivi2"
    )
