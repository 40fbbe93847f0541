"""``servesim study optimizations``: test the inference-optimization rules of thumb and write
the report (markdown + self-contained HTML) to ``--out``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from sim.cli_output import console, fail

study_app = typer.Typer(no_args_is_help=True, help="Studies that test claims with the simulator.")


def parse_claims(text: str | None) -> list[int] | None:
    """``"1,4,9"`` or ``"1-3,10"`` to claim numbers; None for all."""
    if not text:
        return None
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
        except ValueError:
            raise ValueError(f"--claims: expected numbers like 1,4 or 2-5 (got {text!r})") from None
    return out


@study_app.command("optimizations")
def optimizations(
    full: Annotated[bool, typer.Option(
        "--full/--quick", help="full sizes (the committed report) or CI sizes")] = True,
    out: Annotated[Path, typer.Option(
        help="folder for optimizations.md and .html")] = Path("out/study"),
    claims: Annotated[str | None, typer.Option(
        help="only these claims, e.g. 1,4 or 2-5")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="claims run in this many processes")] = 1,
) -> None:
    """Test claims 1-11 (decode/prefill bounds, batching, chunked prefill, prefix caching,
    paging, GQA/MLA, KV and weight quantization, speculative decoding, a 70B chatbot, serving
    cost) and write the verdict report."""
    from sim.studies.report import ReportMeta, write_report
    from sim.studies.runner import run_all

    scale = "full" if full else "quick"
    try:
        import plotly  # noqa: F401  (the report's figures)
    except ImportError:
        fail("servesim study: needs plotly; install it with pip install -e '.[study]'")
    try:
        numbers = parse_claims(claims)
        start = time.perf_counter()

        if not full:
            console.print("smoke run (--quick): CI sizes; the outcomes are not verdicts "
                          "(run --full for those)", highlight=False)

        def show(r) -> None:
            outcome = r.verdict if full else f"({r.verdict})"
            console.print(f"claim {r.number:>2} [{r.seconds:6.0f} s] {outcome:<18} "
                          f"{r.title}: {r.headline.label} = {r.headline.shown()}",
                          highlight=False)

        results = run_all(scale, numbers, jobs=jobs, progress=show)
    except ValueError as exc:
        fail(str(exc))
    command = f"servesim study optimizations --{scale} --out {out}"
    if claims:
        command += f" --claims {claims}"
    meta = ReportMeta.collect(command, scale, time.perf_counter() - start)
    md_path, html_path = write_report(results, out, meta)
    console.print(f"wrote {md_path} and {html_path}")
