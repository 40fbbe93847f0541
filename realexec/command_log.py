"""What the device commands print and record: log lines, the command line, the device's name,
where profiles go.

Shared by the single-GPU commands (``realexec.cli``), rank 0 of the tensor-parallel ones
(``realexec.tp_commands``) and the validation suite (``realexec.validation_suite``); it imports
none of them, so none imports another's caller (``tests/test_import_layers.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

PROFILES_DIR = Path(__file__).resolve().parent.parent / "hwmodels" / "profiles"


def log(line: str) -> None:
    """One line on stdout, flushed at once (device runs are watched live)."""
    typer.echo(line)
    sys.stdout.flush()


def command_line() -> str:
    """The command as a user types it (``python -m sim.cli`` is ``servesim``)."""
    return "servesim " + " ".join(sys.argv[1:])


def device_name(device) -> str:
    """The device as its results record it: the CUDA name, or the host CPU."""
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"
