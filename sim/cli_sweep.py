"""``servesim sweep SWEEP.yaml`` and ``servesim compare A.yaml [B.yaml]``.

Registered in ``sim/cli.py``; the work is in ``sim.sweep`` and ``sim.compare``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sim.cli_output import fail  # one line, markup escaped: how the CLI reports bad input

console = Console()
err_console = Console(stderr=True)


def sweep(
    spec: Annotated[Path, typer.Argument(help="sweep YAML: base, set, grid, random, seeds")],
    out: Annotated[str, typer.Option(  # a str: typer reads --out "" as Path("") == Path(".")
        help="results table (Parquet file path)")] = "sweep.parquet",
    resume: Annotated[bool, typer.Option(help="skip the points --out already holds")] = False,
    jobs: Annotated[int | None, typer.Option(help="parallel runs (default: CPUs)")] = None,
    backend: Annotated[str, typer.Option(help="local (process pool) or ray")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Run a grid or random search over config keys and seeds into one Parquet table."""
    from sim.sweep import check_run, load_spec, run_sweep

    try:
        parsed = load_spec(spec)
        check_run(parsed, out, backend, jobs, address, resume)
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), "eta", TimeRemainingColumn(),
                      console=err_console, disable=quiet) as bar:
            task = bar.add_task("sweep", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            table = run_sweep(parsed, out, backend=backend, jobs=jobs, address=address,
                              resume=resume, progress=progress)
    except ValueError as exc:
        fail(str(exc))
    failed = int((table["error"] != "").sum())
    console.print(f"wrote {out}: {len(table)} points"
                  + (f", {failed} refused by the simulator (see the error column)"
                     if failed else ""))


def compare(
    config_a: Annotated[Path, typer.Argument(help="experiment YAML of configuration A")],
    config_b: Annotated[Path | None, typer.Argument(help="B (default: A again)")] = None,
    set_a: Annotated[list[str], typer.Option("--set-a", help="override in A: key=value")] = [],  # noqa: B006
    set_b: Annotated[list[str], typer.Option("--set-b", help="override in B: key=value")] = [],  # noqa: B006
    seeds: Annotated[int, typer.Option(help="seeds 0..n-1, each a paired run of A and B")] = 1,
    boot: Annotated[int, typer.Option(help="bootstrap resamples")] = 2000,
    confidence: Annotated[float, typer.Option(help="confidence of the intervals")] = 0.95,
    out: Annotated[Path | None, typer.Option(help="write the table here (CSV)")] = None,
) -> None:
    """Compare two configurations on the same requests; say which differences are real."""
    from sim.compare import compare as run_compare
    from sim.config import load_config

    try:
        a = load_config(config_a, set_a)
        b = load_config(config_b or config_a, set_b)
        if seeds < 1:
            raise ValueError(f"--seeds: at least 1 (got {seeds})")
        if out is not None and (out.is_dir() or str(out) in ("", ".")):
            raise ValueError(f"--out: '{out}' is a folder; give the table's file path (.csv)")
        result = run_compare(a, b, seeds=range(seeds), n_boot=boot, confidence=confidence)
    except ValueError as exc:
        fail(str(exc))
    console.print(result.report(), highlight=False)
    if out is not None:
        try:
            result.table.to_csv(out, index=False)
        except OSError as exc:
            fail(f"--out: cannot write '{out}' ({exc.strerror or exc})")
        console.print(f"wrote {out}")
