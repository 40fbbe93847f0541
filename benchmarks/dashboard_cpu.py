"""Where the CPU of a dashboard edit goes: per process, while a new seed is typed into the page.

The same machinery as ``dashboard_speed.py`` (``servesim dashboard`` and headless Chromium,
driven over DevTools): after a first page of N requests per side, each repeat types a new seed
(both sides are simulated afresh) and reports the seconds until the comparison is drawn and the
CPU seconds each process used meanwhile, from ``/proc``: the Streamlit server (which simulates
A), its simulation worker (B), and Chromium's renderer, GPU (compositing) and other processes.

On a machine whose few cores the browser shares with the simulations, this tells whether the
browser's own work (repainting, React, Plotly) is what makes the page slow.

Replaces its own section of ``benchmarks/RESULTS.md`` (``--no-write``: print only).

Run: python benchmarks/dashboard_cpu.py [--requests 2000] [--repeat 4]   (Linux: reads /proc)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dashboard_speed import (  # noqa: E402 (after the path)
    _change_and_wait,
    dashboard_in_chromium,
    machine,
)
from results_md import median_row, publish  # noqa: E402 (after the path)

TICKS = os.sysconf("SC_CLK_TCK")
START, END = "<!-- dashboard_cpu:start -->", "<!-- dashboard_cpu:end -->"


def _process_kind(pid: str, server_pid: int) -> str:
    """``server``, ``worker`` (a child of the server's group), or Chromium's process type."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    if "chromium" in cmdline or "chrome" in cmdline:
        found = re.search(r"--type=([a-z-]+)", cmdline)
        return f"chromium {found.group(1) if found else 'browser'}"
    return "server (simulates A)" if int(pid) == server_pid else "worker (simulates B)"


def cpu_by_kind(groups: dict[int, int]) -> Counter:
    """CPU seconds (user + system) so far of every process in the given process groups,
    summed by kind; ``groups`` maps a process group id to the server's pid (or 0)."""
    out: Counter = Counter()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) not in groups:
                continue
            kind = _process_kind(pid, groups[int(fields[2])])
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
        out[kind] += (int(fields[11]) + int(fields[12])) / TICKS
    return out


def measure(requests: int, repeat: int) -> list[dict[str, float]]:
    from websockets.sync.client import connect

    from tests.test_dashboard_browser import DevTools, load_and_capture

    rows = []
    with dashboard_in_chromium() as (server, browser, ws_url, url):
        groups = {server.pid: server.pid, browser.pid: 0}  # each runs in its own group
        load_and_capture(ws_url, f"{url}?W.workload.num_requests={requests}", 3, 300)
        with connect(ws_url, max_size=256 << 20) as conn:
            tools = DevTools(conn)
            for i in range(repeat):
                time.sleep(1.0)  # let the last drawing settle
                before = cpu_by_kind(groups)
                seconds = _change_and_wait(tools, "seed", 3000 + i)
                after = cpu_by_kind(groups)
                rows.append({"wall": seconds, **{k: after[k] - before.get(k, 0.0)
                                                 for k in after}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per side")
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = measure(args.requests, args.repeat)
    kinds = sorted({k for r in rows for k in r if k != "wall"})
    lines = [
        "## Dashboard: where an edit's CPU goes (`benchmarks/dashboard_cpu.py`)", "",
        f"Measured {dt.datetime.now():%Y-%m-%d %H:%M} on {machine()}; 1-minute load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after. {args.requests} requests "
        f"per side; a new seed typed {args.repeat} times; CPU seconds of each process from the "
        "typing to the comparison drawn.", "",
        "| process | median | each run |", "| --- | ---: | --- |",
    ]
    for kind in ["wall", *kinds]:
        values = [r.get(kind, 0.0) for r in rows]
        name = "wall seconds to the comparison drawn" if kind == "wall" else f"{kind}, CPU s"
        lines.append(median_row(name, values))
    publish("\n".join(lines), START, END, write=not args.no_write)


if __name__ == "__main__":
    main()
