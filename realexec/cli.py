"""``servesim calibrate`` and ``servesim validate``: the commands that need a real device.

This module imports no torch at import time (``sim/cli.py`` registers these functions and the
core CLI must start without torch); each command imports what it needs when it runs. A device
that is not there (``--device cuda`` without CUDA) is one error line and exit status 2.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer

PROFILES_DIR = Path(__file__).resolve().parent.parent / "hwmodels" / "profiles"


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _device(device: str):
    from realexec.factory import DeviceError, resolve_device

    try:
        return resolve_device(device)
    except DeviceError as exc:
        _fail(str(exc))


def _log(line: str) -> None:
    typer.echo(line)
    sys.stdout.flush()


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
        _log(f"profile: {out} (refit on {profile.num_steps} steps, MAPE {profile.mape:.1f}%, "
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
    _log(f"profile: {out} (fit on {profile.num_steps} steps, MAPE {profile.mape:.1f}%, "
         f"p90 {profile.p90_abs_error_pct:.1f}%)")
    for row in meta["engine_speed"]:
        _log(f"decode batch {row['batch']:3d} ctx {row['context']}: {row['measured_ms']:.2f} ms "
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
    _log(f"model {model} ({arch.num_layers} layers) on {device} as {gpu}: backend "
         f"{executor.backend}, pool {allocator.num_blocks_total} blocks, "
         f"graphs {executor.graphs is not None}, ready in {time.perf_counter() - t0:.1f} s")
    return calibrate_executor(executor, model=model, gpu=gpu, tp=1, quick=quick, reps=reps,
                              max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                              device_name=_device_name(device), command=command_line(),
                              log=_log)


def command_line() -> str:
    """The command as a user types it (``python -m sim.cli`` is ``servesim``)."""
    return "servesim " + " ".join(sys.argv[1:])


def _device_name(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


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


def run_validation(*, config: Path | None, factory, profile: Path | None, model: str, gpu: str,
                   names: str | None = None, target_s: float = 12.0,
                   max_num_seqs: int = 128, deadline_s: float | None = None,
                   on_result=None, tp: int = 1, layers: int | None = None) -> dict:
    """Run the suite (or one config); return the raw results payload.

    ``on_result(payload)`` is called after each scenario, so a run that is killed still leaves
    the scenarios it finished. A scenario that fails is reported as not run, with the reason,
    and the others still run (a one-shot device session cannot be repeated cheaply).
    """
    import traceback

    from realexec.validate import RooflineFactory, ScenarioResult, run_scenario
    from sim.config import load_config as parse_config

    started = time.perf_counter()
    prof = str(profile) if profile else None
    results: list[ScenarioResult] = []
    sim_factory = RooflineFactory(layers) if layers else None
    suite = _suite(config, prof, model, gpu, names, target_s, max_num_seqs, results, tp,
                   sim_factory, probe=factory)
    for scn, cfg, cap in suite:
        if deadline_s is not None and time.perf_counter() - started > deadline_s:
            results.append(ScenarioResult(scn.name, cfg, cap[0], error="time budget of the "
                                          f"run ({deadline_s:.0f} s) spent before it started"))
            continue
        _log(f"scenario {scn.name}: rate {cfg['workload'].get('rate')} req/s, "
             f"{cfg['workload'].get('num_requests')} requests (capacity sim {cap[0]:.2f}, "
             f"measured {cap[1]:.2f} req/s)")
        # a scenario may run ~3x its arrival window (queues drain), never past the deadline
        cap_s = max(3 * target_s + 20, 45)
        if deadline_s is not None:
            cap_s = min(cap_s, max(10.0, started + deadline_s + 60 - time.perf_counter()))
        factory.deadline = time.perf_counter() + cap_s
        try:
            hw = (sim_factory or RooflineFactory(None)).roofline(parse_config(cfg))
            res = run_scenario(scn, cfg, cap[0], factory, predict_s=hw.step_time_s,
                               sim_factory=sim_factory)
            res.capacity_measured_rps = cap[1]
            _log(f"  real {res.real['mean_e2el_ms']:.1f} ms vs sim "
                 f"{res.sim['mean_e2el_ms']:.1f} ms mean E2E; wall {res.wall_s:.1f} s")
        except Exception as exc:  # noqa: BLE001 - reported in the results, see docstring
            traceback.print_exc()
            res = ScenarioResult(scn.name, cfg, cap[0], error=f"{type(exc).__name__}: "
                                 + (str(exc).splitlines() or [""])[0])
            _log(f"  not run: {res.error}")
            if hasattr(factory, "release"):
                factory.release()
        results.append(res)
        if on_result is not None:
            on_result(_payload(results, factory, model, gpu, prof))
    return _payload(results, factory, model, gpu, prof)


def _suite(config: Path | None, prof: str | None, model: str, gpu: str, names: str | None,
           target_s: float, max_num_seqs: int, results: list, tp: int = 1,
           sim_factory=None, probe=None) -> list[tuple]:
    """(scenario, config, (simulated, measured) capacity) to run; scenarios that cannot be
    built are appended to ``results`` as not run.

    Each policy's capacity is measured first by a saturation probe on the device (``probe``,
    the executor factory; the same closed loop is simulated for the predicted capacity), and the
    scenario's load is a fraction of the measured one. Without a probe (tests), the simulated
    capacity stands in for both.
    """
    import yaml

    from realexec.validate import (
        Scenario,
        ScenarioResult,
        apply,
        base_config,
        default_scenarios,
        fitting_utilization,
        load_config,
    )

    if config is not None:
        cfg = yaml.safe_load(config.read_text()) or {}
        cfg.setdefault("hardware", {})
        if prof:
            cfg["hardware"]["profile"] = prof
        return [(Scenario(config.stem, {}, "given"), cfg, (float("nan"), float("nan")))]
    base = base_config(model, gpu, profile=prof, max_num_seqs=max_num_seqs, tp=tp)
    base["hardware"]["gpu_memory_utilization"] = fitting_utilization(base)
    chosen = default_scenarios()
    if names:
        chosen = [s for s in chosen if s.name in set(names.split(","))]
    suite, capacity = [], {}
    for scn in chosen:
        try:
            if scn.policy_key not in capacity:
                capacity[scn.policy_key] = _capacities(apply(base, scn.overrides), sim_factory,
                                                       probe, scn.name)
            predicted, measured = capacity[scn.policy_key]
            suite.append((scn, load_config(base, scn, measured, target_s),
                          (predicted[0], measured[0])))
        except ValueError as exc:  # a policy or workload key this build lacks
            results.append(ScenarioResult(scn.name, apply_safe(base, scn), float("nan"),
                                          error=str(exc).splitlines()[0]))
    return suite


PROBE_BUDGET_S = 150.0  # a saturation probe that runs longer than this is cut (and fails)


def _capacities(cfg: dict, sim_factory, probe, name: str) -> tuple[tuple, tuple]:
    """(simulated, measured) saturation throughput of one policy; measured = simulated when
    there is no device probe."""
    from realexec.validate import sim_capacity

    predicted = sim_capacity(cfg, sim_factory=sim_factory)
    if probe is None:
        return predicted, predicted
    probe.deadline = time.perf_counter() + PROBE_BUDGET_S
    start = time.perf_counter()
    measured = sim_capacity(cfg, sim_factory=probe)
    if hasattr(probe, "release"):
        probe.release()
    _log(f"capacity of {name.rsplit('-', 1)[0]}: measured {measured[0]:.2f} req/s "
         f"({time.perf_counter() - start:.0f} s probe), simulated {predicted[0]:.2f} req/s "
         f"({100 * (predicted[0] - measured[0]) / measured[0]:+.1f}%)")
    return predicted, measured


def _payload(results, factory, model: str, gpu: str, prof: str | None) -> dict:
    import torch

    dev = factory.device
    meta = {"model": model, "gpu": gpu, "gpu_name": _device_name(dev), "torch": torch.__version__,
            "cuda": torch.version.cuda, "backend": _backend_of(factory),
            "tp": getattr(factory, "tp", 1), "num_layers": getattr(factory, "num_layers", None),
            "profile": prof, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command_line()}
    return {"meta": meta, "scenarios": [_asdict(r) for r in results]}


def apply_safe(base: dict, scn) -> dict:
    try:
        from realexec.validate import apply

        return apply(base, scn.overrides)
    except ValueError:
        return base


def _asdict(result) -> dict:
    from dataclasses import asdict

    return asdict(result)


def _backend_of(factory) -> str:
    return factory.backend_used or factory.backend


def write_outputs(payload: dict, out: Path, quiet: bool = False) -> None:
    from realexec.report import write
    from realexec.validate import _jsonable

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(payload, default=_jsonable))
    try:
        write(payload, out / "report.md", out / "report.html")
    except ImportError:  # plotly missing: the markdown still comes out
        write(payload, out / "report.md", None)
    if not quiet:
        _log(f"report: {out / 'report.md'}")
