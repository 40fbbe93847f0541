"""Where every ``servesim`` command prints: the two consoles and ``fail``.

Bad input is one line on stderr and exit status 2, the same from every sub-command; tracebacks
are kept for bugs. ``sim.cli`` (which registers the sub-commands) and the sub-command modules
(``cli_config``, ``cli_study``, ``cli_sweep``, ``cli_trace``) all print through this module, so
a sub-command never imports the command that registers it (no import circle,
``tests/test_import_layers.py``).
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> None:
    """Print one error line and exit with status 2 (bad input, not a bug)."""
    from sim.config import one_line  # pydantic: loaded only when there is an error to word

    err_console.print(f"[bold red]error:[/] {escape(one_line(message))}", highlight=False,
                      soft_wrap=True)
    raise typer.Exit(2)
