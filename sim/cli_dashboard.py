"""``servesim dashboard``: start the Streamlit what-if dashboard (``dashboard/app.py``).

Registered in ``sim/cli.py`` as ``app.command("dashboard")(dashboard)``. Streamlit is an
optional dependency (the ``dashboard`` extra); without it the command says how to install it
instead of failing with a traceback.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def app_path() -> Path:
    """The Streamlit script of the dashboard (inside the installed ``dashboard`` package)."""
    spec = importlib.util.find_spec("dashboard")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the dashboard package is not installed")
    return Path(spec.origin).parent / "app.py"


def streamlit_command(port: int, address: str, headless: bool) -> list[str]:
    """The ``streamlit run`` command line the dashboard starts with."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(app_path()),
           "--server.port", str(port), "--server.address", address,
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
    if headless:
        cmd += ["--server.headless", "true"]
    return cmd


def dashboard(
    port: Annotated[int, typer.Option(help="port to serve on")] = 8501,
    address: Annotated[str, typer.Option(help="address to bind (0.0.0.0: every interface)")]
    = "127.0.0.1",
    headless: Annotated[bool, typer.Option(help="do not open a browser")] = False,
) -> None:
    """Start the what-if dashboard: compare two configurations on the same requests."""
    if importlib.util.find_spec("streamlit") is None:
        Console(stderr=True).print(
            "[bold red]error:[/] servesim dashboard needs Streamlit: "
            "pip install 'servesim[dashboard]'", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    cmd = streamlit_command(port, address, headless)
    # Become the Streamlit server (no child process): a signal to this process reaches the
    # server, and nothing is left running when the caller stops us.
    os.execv(cmd[0], cmd)
