"""Running the validation suite (or one config) on a device: ``run_validation``, ``write_outputs``.

Each policy's capacity is probed first (measured on the device, simulated for the prediction),
then every scenario runs both simulated and measured at a fraction of the measured capacity;
results are written as each scenario finishes. The single-GPU ``servesim validate``
(``realexec.cli``) and rank 0 of ``--tp N`` (``realexec.tp_commands``) both run it.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from realexec.command_log import command_line, device_name, log


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
        log(f"scenario {scn.name}: rate {cfg['workload'].get('rate')} req/s, "
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
            log(f"  real {res.real['mean_e2el_ms']:.1f} ms vs sim "
                f"{res.sim['mean_e2el_ms']:.1f} ms mean E2E; wall {res.wall_s:.1f} s")
        except Exception as exc:  # noqa: BLE001 - reported in the results, see docstring
            traceback.print_exc()
            res = ScenarioResult(scn.name, cfg, cap[0], error=f"{type(exc).__name__}: "
                                 + (str(exc).splitlines() or [""])[0])
            log(f"  not run: {res.error}")
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
    log(f"capacity of {name.rsplit('-', 1)[0]}: measured {measured[0]:.2f} req/s "
        f"({time.perf_counter() - start:.0f} s probe), simulated {predicted[0]:.2f} req/s "
        f"({100 * (predicted[0] - measured[0]) / measured[0]:+.1f}%)")
    return predicted, measured


def _payload(results, factory, model: str, gpu: str, prof: str | None) -> dict:
    import torch

    dev = factory.device
    meta = {"model": model, "gpu": gpu, "gpu_name": device_name(dev), "torch": torch.__version__,
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
        log(f"report: {out / 'report.md'}")
