"""``servesim step``: one iteration through the roofline model, operator by operator.

Registered in ``sim/cli.py`` as ``app.command("step")(step)``. A model that does not fit, an
unknown name or a malformed ``--seq`` is one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

SEQ_PATTERN = re.compile(r"^\s*(\d+)\s*(?::\s*(\d+))?\s*(?:[x*]\s*(\d+))?\s*$")


def parse_seqs(specs: list[str]) -> list[tuple[int, int]]:
    """``NEW:CACHED[xCOUNT]`` items to (new, cached) pairs: ``1:1024x64`` is 64 decodes."""
    seqs: list[tuple[int, int]] = []
    for spec in specs:
        for part in spec.split(","):
            found = SEQ_PATTERN.match(part)
            if not found or int(found.group(1)) < 1:
                raise ValueError(
                    f"--seq: {part!r} is not NEW:CACHED[xCOUNT] with NEW >= 1 "
                    "(e.g. 2048:0, 1:1024x64)"
                )
            new, cached, count = found.group(1), found.group(2) or 0, found.group(3) or 1
            seqs += [(int(new), int(cached))] * int(count)
    if not seqs:
        raise ValueError("--seq: give at least one sequence, e.g. --seq 2048:0 --seq 1:1024x64")
    return seqs


def _fail(message: str) -> None:
    text = f"[bold red]error:[/] {escape(message)}"  # messages may hold [brackets]
    Console(stderr=True).print(text, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def step(
    gpu: Annotated[
        str, typer.Option(help="GPU catalog id or alias (h100, a100, h200, b200, ...)")
    ] = "h100",
    model: Annotated[
        str, typer.Option(help="model catalog id (llama-3.1-8b, ...)")
    ] = "llama-3.1-8b",
    seq: Annotated[
        list[str], typer.Option(help="NEW:CACHED or NEW:CACHEDxCOUNT, e.g. 2048:0 1:1024x64")
    ] = [],  # noqa: B006
    tp: Annotated[int, typer.Option(help="tensor-parallel GPUs")] = 1,
    pp: Annotated[int, typer.Option(help="pipeline stages")] = 1,
    ep: Annotated[int, typer.Option(help="expert-parallel GPUs (divides tp)")] = 1,
    dp_attention: Annotated[
        bool, typer.Option(help="data-parallel attention, experts over ep = tp GPUs (all-to-all)")
    ] = False,
    weight_dtype: Annotated[
        str, typer.Option(help="bf16, fp16, fp8, int8, int4, nvfp4, mxfp4, ternary")
    ] = "bf16",
    kv_dtype: Annotated[str, typer.Option(help="bf16, fp16, fp8, int8, int4, int3, int2")] = "bf16",
    profile: Annotated[
        str, typer.Option(help="'auto' (committed profile), 'none', or a profile JSON path")
    ] = "auto",
    attention: Annotated[
        str, typer.Option(help="flash or naive (scores written to HBM)")
    ] = "flash",
    gpu_memory_utilization: Annotated[
        float, typer.Option(help="fraction of GPU memory to plan with")
    ] = 0.9,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Predict one iteration's time, operator by operator (FLOPs, bytes, time, fixed per-call
    floor, achieved fraction of the binding datasheet peak, bound)."""
    import hwmodels

    try:
        seqs = parse_seqs(seq)
        tokens = sum(n for n, _ in seqs)
        plan = hwmodels.plan_memory(
            gpu,
            model,
            tp=tp,
            pp=pp,
            ep=ep,
            weight_dtype=weight_dtype,
            kv_dtype=kv_dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_num_batched_tokens=max(tokens, 1),
            max_num_seqs=len(seqs),
            attention_impl=attention,
            dp_attention=dp_attention,
        )
        hw = hwmodels.RooflineModel(
            gpu,
            model,
            tp=tp,
            pp=pp,
            ep=ep,
            weight_dtype=weight_dtype,
            kv_dtype=kv_dtype,
            profile=None if profile == "none" else profile,
            attention_impl=attention,
            dp_attention=dp_attention,
        )
        rows = hw.breakdown(seqs)
    except ValueError as exc:
        _fail(str(exc))
    total_s = sum(r.time_s for r in rows)
    needed = sum(plan.kv_bytes_for_context(n + c) for n, c in seqs)
    kv_note = "" if needed <= plan.kv_pool_bytes else " (exceeds the KV pool)"
    if json_out:
        typer.echo(json.dumps(_as_json(hw, seqs, rows, total_s, plan, needed), indent=2))
        return
    console = Console()
    if not console.is_terminal:  # piped or captured: wide enough for the whole table
        console = Console(width=120)
    console.print(_table(rows, total_s, hw, seqs))
    console.print(
        f"total {total_s * 1e3:.3f} ms for {len(seqs)} sequences, {tokens} new tokens; "
        f"KV held {needed / 1e9:.2f} of {plan.kv_pool_bytes / 1e9:.2f} GB pool{kv_note}; "
        f"profile: {'calibrated ' + hw.profile.gpu if hw.profile else 'uncalibrated defaults'}"
    )


def _table(rows: list, total_s: float, hw, seqs: list[tuple[int, int]]) -> Table:
    title = (
        f"{hw.model.id} on {hw.gpu.short_name} (tp={hw.tp}, pp={hw.pp}, ep={hw.ep}, "
        f"{hw.weight_dtype} weights, {hw.kv_dtype} KV)"
    )
    table = Table(title=title)
    for name, justify in (
        ("operator", "left"),
        ("GFLOP", "right"),
        ("MB moved", "right"),
        ("kernels", "right"),
        ("time (us)", "right"),
        ("floor (us)", "right"),
        ("eff", "right"),
        ("share", "right"),
        ("bound", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=name == "operator")
    for r in rows:
        table.add_row(
            r.name,
            f"{r.flops / 1e9:,.2f}",
            f"{r.bytes / 1e6:,.2f}",
            str(r.kernels),
            f"{r.time_s * 1e6:,.1f}",
            f"{r.floor_s * 1e6:,.1f}",
            f"{r.eff:.0%}" if r.eff else "",
            f"{r.time_s / total_s:.1%}",
            r.bound,
        )
    table.add_row(
        "total",
        f"{sum(r.flops for r in rows) / 1e9:,.2f}",
        f"{sum(r.bytes for r in rows) / 1e6:,.2f}",
        str(sum(r.kernels for r in rows)),
        f"{total_s * 1e6:,.1f}",
        f"{sum(r.floor_s for r in rows) * 1e6:,.1f}",
        "",
        "100%",
        "",
        style="bold",
    )
    return table


def _as_json(hw, seqs, rows, total_s: float, plan, kv_needed: float) -> dict:
    return {
        "gpu": hw.gpu.id,
        "model": hw.model.id,
        "tp": hw.tp,
        "pp": hw.pp,
        "ep": hw.ep,
        "weight_dtype": hw.weight_dtype,
        "kv_dtype": hw.kv_dtype,
        "num_seqs": len(seqs),
        "new_tokens": sum(n for n, _ in seqs),
        "total_ms": total_s * 1e3,
        "profile": hw.profile.gpu if hw.profile else None,
        "operators": [
            {
                "name": r.name,
                "flops": r.flops,
                "bytes": r.bytes,
                "kernels": r.kernels,
                "time_ms": r.time_s * 1e3,
                "floor_ms": r.floor_s * 1e3,
                "efficiency": r.eff,
                "bound": r.bound,
            }
            for r in rows
        ],
        "memory": {
            "weights_gb": plan.weights_bytes / 1e9,
            "kv_pool_gb": plan.kv_pool_bytes / 1e9,
            "kv_pool_blocks": plan.kv_pool_blocks,
            "kv_needed_gb": kv_needed / 1e9,
        },
    }
