"""The ``servesim`` command.

Every user error (bad config value, unknown name, a model that does not fit) is printed as one
line on stderr with exit status 2; tracebacks are kept for bugs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from sim.cli_output import console, err_console, fail  # shared with the sub-command modules
from sim.cli_summary import summary_report  # grouped rows, notes and units

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="servesim: simulate LLM inference serving, validated against real GPUs.")


OUT_FILES = ("requests.parquet", "steps.parquet", "summary.json", "sessions.parquet",
             "turns.parquet")


def writable_folder(path: str | Path, option: str = "--out") -> Path:
    """``out`` as a folder the results can be written to, made if missing, checked before any
    work (a run's results are never lost to a bad path); a file there is never overwritten
    by a folder's worth of results. A ``ValueError`` names the option otherwise."""
    from sim.config import check_writable

    if str(path) == "":
        raise ValueError(f"{option}: empty path; give a folder for the results")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option}: '{out}' is a file, not a folder (it is left as it is)")
    check_writable(out, option)
    for name in OUT_FILES:
        if (out / name).is_dir():
            raise ValueError(f"{option}: '{out / name}' is a folder; the results need that "
                             "name for a file")
    return out


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Argument(help="experiment YAML; default scenario if omitted")] = None,
    set_: Annotated[
        list[str], typer.Option("--set", help="override a config key: key=value")] = [],  # noqa: B006
    out: Annotated[  # a str: typer would read --out "" as Path("") == Path(".")
        str, typer.Option(help="folder for requests.parquet, steps.parquet, summary.json")
    ] = "out",
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Simulate one experiment and print the serving-benchmark summary."""
    from sim.api import simulate
    from sim.config import check_files, load_config

    try:
        cfg = load_config(config, set_)
        check_files(cfg)
        out_dir = writable_folder(out)
        total = cfg.workload.num_requests
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), console=err_console,
                      transient=True, disable=quiet or not err_console.is_terminal) as bar:
            task = bar.add_task("simulating", total=total)
            result = simulate(cfg, progress=lambda n: bar.update(task, completed=n))
    except ValueError as exc:
        fail(str(exc))
    console.print(summary_report(result.summary, result.config))
    try:
        path = result.save(out_dir)
    except OSError as exc:  # the folder went away or filled up during the run
        fail(f"--out: cannot write the results in '{out_dir}' ({exc.strerror or exc})")
    console.print(f"wrote {path}/requests.parquet, steps.parquet (times in s), summary.json "
                  "(times in ms)")


from sim.cli_step import step  # noqa: E402  (hwmodels' one-step breakdown)

app.command("step")(step)

from sim.cli_trace import trace_app  # noqa: E402  (servesim trace stats FILE)

app.add_typer(trace_app, name="trace")

# realexec's device commands; realexec.cli imports torch only inside the commands
from realexec.cli import calibrate, validate  # noqa: E402

app.command("calibrate")(calibrate)
app.command("validate")(validate)

from sim.cli_dashboard import dashboard  # noqa: E402  (Streamlit what-if dashboard)

app.command("dashboard")(dashboard)

from sim.cli_study import study_app  # noqa: E402  (servesim study optimizations)

app.add_typer(study_app, name="study")

from sim.cli_config import config  # noqa: E402  (servesim config [--schema])

app.command("config")(config)

from sim.cli_sweep import compare, sweep  # noqa: E402  (servesim sweep / compare)

app.command("sweep")(sweep)
app.command("compare")(compare)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
