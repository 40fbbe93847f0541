"""``servesim calibrate`` and ``servesim validate``: the commands that need a real device.

This module imports no torch at import time (``sim/cli.py`` registers these functions and the
core CLI must start without torch); each command imports what it needs when it runs. A device
that is not there (``--device cuda`` without CUDA) is one error line and exit status 2.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from realexec.command_log import PROFILES_DIR, command_line, device_name, log
from realexec.validation_suite import run_validation, write_outputs


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _device(device: str):
    from realexec.factory import DeviceError, resolve_device

    try:
        return resolve_device(device)
    except DeviceError as exc:
        _fail(str(exc))


def calibrate(
    model: Annotated[str, typer.Option(help="model catalog id")] = "llama-3.1-8b",
    device: Annotated[str, typer.Option(help="cuda or cpu")] = "cuda",
    tp: Annotated[int, typer.Option(help="tensor-parallel degree")] = 1,
    out: Annotated[Path | None, typer.Option(
        help="profile JSON (default hwmodels/profiles/<gpu>/<model>.json)")] = None,
    gpu: Annotated[str | None, typer.Option(help="catalog GPU id (default: detected)")] = None,
    layers: Annotated[int | None, typer.Option(help="run this many layers")] = None,
    table: Annotated[Path | None, typer.Option(help="also write the measured table (CSV)")]
    = None,
    backend: Annotated[str, typer.Option(help="attention: auto, triton, torch, flash")] = "auto",
    quick: Annotated[bool, typer.Option(help="a tiny grid (tests, smoke runs)")] = False,
    reps: Annotated[int, typer.Option(help="timed repetitions per shape")] = 5,
    graphs: Annotated[bool, typer.Option(help="CUDA graphs for every step kind")] = True,
    compile: Annotated[bool, typer.Option(
        help="compile the decoder's non-attention pieces (inductor; on by default on CUDA)")]
    = True,
    small: Annotated[bool, typer.Option(help="a smaller grid (~50 shapes; TP runs)")] = False,
    model_config: Annotated[str | None, typer.Option(
        help="JSON of HF fields to run instead of the catalog model (tests)")] = None,
    refit: Annotated[Path | None, typer.Option(
        help="no device: fit again from this measured table (with --refit-profile)")] = None,
    refit_profile: Annotated[Path | None, typer.Option(
        help="the profile whose provenance and pinned parameters the refit keeps")] = None,
) -> None:
    """Time designed step shapes on the device, fit the roofline, write a profile."""
    if refit is not None:
        if refit_profile is None or out is None:
            _fail("--refit: needs --refit-profile OLD.json and --out NEW.json")
        for option, path in (("--refit", refit), ("--refit-profile", refit_profile)):
            if not path.is_file():
                _fail(f"{option}: no such file '{path}'")
        from realexec.calibrate import refit as refit_table  # torch: after the checks

        profile = refit_table(str(refit), str(refit_profile))
        profile.save(out)
        log(f"profile: {out} (refit on {profile.num_steps} steps, MAPE {profile.mape:.1f}%, "
            f"p90 {profile.p90_abs_error_pct:.1f}%)")
        return
    dev = _device(device)
    if tp != 1 and not compile:
        _fail("--no-compile: not wired through --tp > 1 (its ranks compile on CUDA); "
              "allowed with --tp: --compile")
    if tp != 1:
        from realexec.tp_commands import calibrate_tp

        calibrate_tp(model=model, device=dev.type, tp=tp, out=out, gpu=gpu, layers=layers,
                     table=table, quick=quick, reps=reps, backend=backend, cuda_graphs=graphs,
                     small=small)
        return
    result = run_calibration(model=model, device=dev, gpu=gpu, layers=layers, backend=backend,
                             quick=quick, reps=reps, cuda_graphs=graphs,
                             compile=compile and dev.type == "cuda",
                             model_config=json.loads(model_config) if model_config else None)
    df, profile, meta = result
    out = out or PROFILES_DIR / meta["gpu"] / f"{model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    profile.save(out)
    if table:
        table.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(table, index=False)
    log(f"profile: {out} (fit on {profile.num_steps} steps, MAPE {profile.mape:.1f}%, "
        f"p90 {profile.p90_abs_error_pct:.1f}%)")
    for row in meta["engine_speed"]:
        log(f"decode batch {row['batch']:3d} ctx {row['context']}: {row['measured_ms']:.2f} ms "
            f"= {row['ratio']:.2f} x floor {row['floor_ms']:.2f} ms (weights / copy bw)")


def run_calibration(*, model: str, device, gpu: str | None, layers: int | None,
                    backend: str = "auto", quick: bool = False, reps: int = 5,
                    max_num_seqs: int = 256, max_model_len: int = 8192,
                    cuda_graphs: bool = True, model_config: dict | None = None,
                    compile: bool | None = None):
    """Build the model on one device, measure the grid and fit; returns (table, profile, meta)."""
    import torch

    from policies.kv_paged import PagedAllocator
    from realexec.arch import load_arch
    from realexec.calibrate import calibrate_executor, detect_gpu, pool_blocks_that_fit
    from realexec.executor import GpuExecutor
    from realexec.model import Decoder

    gpu = gpu or detect_gpu(device)
    if gpu is None:
        _fail("--gpu: cannot detect the GPU's catalog id here; pass --gpu (e.g. h100)")
    arch = load_arch(model_config or model)
    arch = arch.with_layers(layers) if layers else arch
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    decoder = Decoder(arch, dtype=dtype, device=device, max_position=max_model_len + 64)
    allocator = PagedAllocator(pool_blocks_that_fit(decoder, 16), 16)
    executor = GpuExecutor(decoder, allocator, backend=backend, accept=lambda req, k: 0,
                           max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                           cuda_graphs=cuda_graphs, compile=compile)
    log(f"model {model} ({arch.num_layers} layers) on {device} as {gpu}: backend "
        f"{executor.backend}, pool {allocator.num_blocks_total} blocks, "
        f"graphs {executor.graphs is not None}, ready in {time.perf_counter() - t0:.1f} s")
    return calibrate_executor(executor, model=model, gpu=gpu, tp=1, quick=quick, reps=reps,
                              max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                              device_name=device_name(device), command=command_line(),
                              log=log)


def validate(
    config: Annotated[Path | None, typer.Argument(
        help="one workload YAML; omit to run the held-out scenario suite")] = None,
    device: Annotated[str, typer.Option(help="cuda or cpu")] = "cuda",
    profile: Annotated[Path | None, typer.Option(help="calibration profile JSON")] = None,
    out: Annotated[Path, typer.Option(help="folder for results.json, report.md, report.html")]
    = Path("validation-out"),
    model: Annotated[str, typer.Option(help="model of the suite")] = "llama-3.1-8b",
    gpu: Annotated[str | None, typer.Option(help="catalog GPU id (default: detected)")] = None,
    scenarios: Annotated[str | None, typer.Option(help="comma-separated suite names")] = None,
    target_s: Annotated[float, typer.Option(help="seconds of arrivals per scenario")] = 12.0,
    backend: Annotated[str, typer.Option(help="attention backend")] = "auto",
    graphs: Annotated[bool, typer.Option(help="CUDA graphs for every step kind")] = True,
    compile: Annotated[bool, typer.Option(
        help="compile the decoder's non-attention pieces (inductor; on by default on CUDA)")]
    = True,
    model_config: Annotated[str | None, typer.Option(
        help="JSON of HF fields to run instead of the catalog model (tests)")] = None,
    deadline_s: Annotated[float | None, typer.Option(
        help="start no scenario after this many seconds (it is reported as not run)")] = None,
    tp: Annotated[int, typer.Option(help="tensor-parallel degree (one process per GPU)")] = 1,
    layers: Annotated[int | None, typer.Option(help="run this many layers")] = None,
    resim: Annotated[Path | None, typer.Option(
        help="no device: simulate the runs of this results.json again under --profile")] = None,
) -> None:
    """Run workloads both simulated and on the device; write the error report."""
    if resim is not None:
        from realexec.validate import resimulate

        if profile is None:
            _fail("--resim: needs --profile NEW.json")
        payload = resimulate(json.loads(resim.read_text()), str(profile), command_line())
        write_outputs(payload, out)
        return
    dev = _device(device)
    from realexec.calibrate import detect_gpu
    from realexec.factory import GpuExecutorFactory

    gpu = gpu or detect_gpu(dev)
    if gpu is None:
        _fail("--gpu: cannot detect the GPU's catalog id here; pass --gpu (e.g. h100)")
    fields = json.loads(model_config) if model_config else None
    common = {"config": config, "profile": profile, "model": model, "gpu": gpu,
              "names": scenarios, "target_s": target_s, "deadline_s": deadline_s}
    if tp != 1 and not compile:
        _fail("--no-compile: not wired through --tp > 1 (its ranks compile on CUDA); "
              "allowed with --tp: --compile")
    if tp != 1:
        from realexec.tp_commands import validate_tp

        validate_tp(tp=tp, device=dev.type, out=out, layers=layers, backend=backend,
                    cuda_graphs=graphs, model_config=fields, **common)
        return
    factory = GpuExecutorFactory(device=str(dev), backend=backend, cuda_graphs=graphs,
                                 model=fields, num_layers=layers,
                                 executor_options={"compile": compile and dev.type == "cuda"})
    payload = run_validation(factory=factory, layers=layers, **common,
                             on_result=lambda partial: write_outputs(partial, out, quiet=True))
    write_outputs(payload, out)
