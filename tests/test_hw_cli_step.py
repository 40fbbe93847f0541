"""``servesim step``: every catalog model on every catalog GPU, and clear refusals."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from hwmodels import DoesNotFitError, RooflineModel, plan_memory
from hwmodels.catalog import load_catalog
from hwmodels.modelspec import get_model
from hwmodels.specs import get_gpu
from sim.cli_step import parse_seqs, step

APP = typer.Typer()
APP.command("step")(step)


@APP.callback()
def _root() -> None:
    """Keeps ``step`` a sub-command, as in ``servesim``."""


RUNNER = CliRunner()
MODELS = [m["id"] for m in load_catalog("models")["models"]]
GPUS = [g["id"] for g in load_catalog("gpus")["gpus"]]
SEQS = ["--seq", "512:0", "--seq", "1:1024x8"]


def invoke(*args: str):
    return RUNNER.invoke(APP, ["step", *args])


def smallest_tp(gpu: str, model: str) -> int | None:
    for tp in (1, 2, 4, 8):
        try:
            plan_memory(gpu, model, tp=tp, max_num_batched_tokens=520, max_num_seqs=9)
            return tp
        except DoesNotFitError:
            continue
        except ValueError:  # tp does not divide the heads
            continue
    return None


@pytest.mark.parametrize("model", MODELS)
def test_every_model_on_every_gpu(model):
    for gpu in GPUS:
        tp = smallest_tp(gpu, model)
        if tp != 1:  # does not fit one GPU: a one-line refusal with exit status 2
            res = invoke("--gpu", gpu, "--model", model, *SEQS)
            assert res.exit_code == 2, (gpu, model, res.output)
            assert res.output.count("\n") == 1 and "GB" in res.output, res.output
        if tp is not None:
            res = invoke("--gpu", gpu, "--model", model, "--tp", str(tp), "--json", *SEQS)
            assert res.exit_code == 0, (gpu, model, tp, res.output)
            out = json.loads(res.output)
            assert out["total_ms"] > 0 and out["num_seqs"] == 9 and out["new_tokens"] == 520
            # the CLI's batch is the one its --seq arguments spell, priced as the library does
            hand_batch = [(512, 0)] + [(1, 1024)] * 8
            library = RooflineModel(gpu, model, tp=tp, profile="auto").step_time_s(hand_batch)
            assert out["total_ms"] == pytest.approx(library * 1e3)
            spec = get_model(model)
            if spec.moe is None:  # a dense model streams its weights (all but the input
                # embedding, under 10% of them) every step: a floor at the datasheet bandwidth
                plan = plan_memory(gpu, model, tp=tp, max_num_batched_tokens=520, max_num_seqs=9)
                floor_ms = 0.9 * plan.weights_bytes / get_gpu(gpu).hbm_bw_bytes_s * 1e3
                assert out["total_ms"] > floor_ms, (gpu, model, out["total_ms"], floor_ms)


def test_table_output_for_the_issue_example():
    res = invoke(
        "--gpu",
        "h100",
        "--model",
        "llama-3.1-70b",
        "--tp",
        "2",
        "--seq",
        "2048:0",
        "--seq",
        "1:1024x64",
    )
    assert res.exit_code == 0, res.output
    for word in (
        "qkv_proj",
        "attention",
        "tp_all_reduce",
        "lm_head",
        "total",
        "65 sequences",
        "2112 new tokens",
    ):
        assert word in res.output


def test_refusals_and_bad_input():
    res = invoke("--gpu", "h100", "--model", "llama-3.1-70b", "--seq", "2048:0")
    assert res.exit_code == 2
    assert "needs 141.1 GB of weights per GPU at tp=1" in res.output
    res = invoke("--gpu", "h1000", "--seq", "1:1")
    assert res.exit_code == 2 and "allowed:" in res.output
    assert invoke("--seq", "abc").exit_code == 2
    assert invoke().exit_code == 2  # no sequence given
    assert invoke("--tp", "3", "--seq", "1:0").exit_code == 2


def test_parse_seqs():
    assert parse_seqs(["2048:0", "1:1024x3"]) == [(2048, 0), (1, 1024), (1, 1024), (1, 1024)]
    assert parse_seqs(["5", "2:7,1:1"]) == [(5, 0), (2, 7), (1, 1)]
    with pytest.raises(ValueError, match="--seq"):
        parse_seqs(["0:5"])
