"""How long the dashboard takes to render a comparison of N requests per side (target: 2,000
requests per side in under 3 s, issue #9).

Two measurements, each of a comparison not simulated before (a new seed):

- ``server``: runs of the app script through ``streamlit.testing.v1.AppTest`` in one process
  that has served a small page before: N requests per side with a new seed, so both
  simulations run (in parallel, as the app runs them), every Overview chart, the sidebar. Then
  the same page again from the cache (the page's own work), and each ``sim.simulate`` alone.
- ``browser``: ``servesim dashboard`` and headless Chromium (the browser test's machinery),
  until the page has drawn the comparison's Overview and stopped running: after opening a
  link with N requests per side (a fresh page), and after typing a new seed into the open
  page (what a user's edit costs). The server has served one small page before (imports
  done, worker process started); every repeat uses a new seed, so both sides are simulated.
  An edit is timed in the page itself, from the typing to the first check that sees the
  comparison drawn; the page is checked when it changes (a MutationObserver), not polled, so
  measuring takes no CPU from the simulations.

Appends (or replaces) its own section of ``benchmarks/RESULTS.md``, with machine and date.

Run: python benchmarks/dashboard_speed.py [--requests 2000] [--repeat 3] [--no-browser]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_md import median_row, publish  # noqa: E402 (after the path)

START, END = "<!-- dashboard_speed:start -->", "<!-- dashboard_speed:end -->"
TARGET_S = 3.0


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def server_runs(requests: int, repeat: int) -> list[dict[str, float]]:
    """AppTest runs of the app in one process, as a running server would see them.

    A first page with 20 requests warms the process (imports, the worker process). Then each
    repeat sets N requests and a new seed, so both sides are simulated afresh: the page's time
    (A and B in parallel, Overview charts, sidebar), the same page again from the cache (the
    page's own work), and each ``sim.simulate`` alone.
    """
    from streamlit.testing.v1 import AppTest

    import sim
    from dashboard import form

    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=600)
    key_n, key_seed = (form.state_key(form.SHARED, k) for k in ("workload.num_requests", "seed"))
    at.session_state[key_n] = 20
    at.run()
    rows = []
    for i in range(repeat):
        at.number_input(key=key_n).set_value(requests)
        at.number_input(key=key_seed).set_value(1000 + i)
        start = time.perf_counter()
        at.run()
        total = time.perf_counter() - start
        if at.exception or at.error:
            raise RuntimeError(f"the app failed: {at.exception or [e.value for e in at.error]}")
        start = time.perf_counter()
        at.run()  # the same page again: both runs come from the cache
        warm = time.perf_counter() - start
        state = {**form.default_state(), key_n: requests, key_seed: 1000 + i}
        sims = []
        for side in form.SIDES:  # the configs the page ran, simulated alone
            t0 = time.perf_counter()
            sim.simulate(form.mapping_from_state(state, side))
            sims.append(time.perf_counter() - t0)
        rows.append({"total_s": total, "warm_s": warm, "simulate_a_s": sims[0],
                     "simulate_b_s": sims[1]})
    return rows


# Type a value into a Streamlit number box and press Enter, as a user does (React reads the
# native value setter's change).
TYPE_JS = """(() => {const el = document.querySelector('input[aria-label="%s"]');
if (!el) return false;
const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
el.focus(); setter.call(el, '%s'); el.dispatchEvent(new Event('input', {bubbles: true}));
el.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', code: 'Enter', keyCode: 13,
                                               bubbles: true}));
return true;})()"""
SHOWN_JS = ("[...document.querySelectorAll('[data-testid=stMetricValue],"
            "[data-testid=stCaptionContainer]')].map(e => e.innerText).join('|')")


def _evaluate(tools, expression: str):
    return tools.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"][
        "value"]


# In the page: type, then wait for the new comparison, checking the page after it changes (a
# MutationObserver, at most every 20 ms) instead of polling it from here, so that measuring
# adds no work while the simulations run; resolves to the milliseconds since the typing.
WAIT_JS = """new Promise((resolve, reject) => {
const before = %s, t0 = performance.now();
let pending = null;
const check = () => {
  pending = null;
  const state = JSON.parse(%s);
  if (state.exceptions || state.errors.length) {
    observer.disconnect(); reject(new Error('the page failed: ' + JSON.stringify(state)));
  } else if (state.charts >= 3 && !state.running && (%s) !== before) {
    observer.disconnect(); resolve(performance.now() - t0);
  }
};
const observer = new MutationObserver(() => {
  if (pending === null) pending = setTimeout(check, 20);
});
observer.observe(document.body, {subtree: true, childList: true, attributes: true,
                                 characterData: true});
setTimeout(() => { observer.disconnect(); reject(new Error('not drawn in time')); }, %d);
if (!%s) { observer.disconnect(); reject(new Error('no such number box')); }
})"""


def _change_and_wait(tools, label: str, value: int, timeout_s: float = 50) -> float:
    """Seconds from typing ``value`` into the ``label`` box until the new comparison is drawn
    (metrics changed, Overview charts drawn, nothing running), timed in the page."""
    from tests.test_dashboard_browser import PAGE_STATE_JS

    before = _evaluate(tools, SHOWN_JS)
    script = WAIT_JS % (json.dumps(before), PAGE_STATE_JS, SHOWN_JS, int(timeout_s * 1000),
                        TYPE_JS % (label, value))
    reply = tools.call("Runtime.evaluate", expression=script, awaitPromise=True,
                       returnByValue=True)
    if "exceptionDetails" in reply:
        raise RuntimeError(f"typing {value} into {label!r}: "
                           f"{reply['exceptionDetails'].get('exception', {}).get('description')}")
    return reply["result"]["value"] / 1000.0


@contextmanager
def dashboard_in_chromium() -> Iterator[tuple[subprocess.Popen, subprocess.Popen, str, str]]:
    """``servesim dashboard`` on a free local port and a headless Chromium (the browser test's
    machinery): the server, the browser, its page's DevTools URL and the app's URL; both are
    stopped on exit (each runs in its own process group, with what it started)."""
    from tests.test_dashboard_browser import (
        free_port,
        start_chromium,
        start_dashboard,
        stop,
        wait_http,
    )

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as tmp:
        server = start_dashboard(port, Path(tmp) / "streamlit.log")
        try:
            wait_http(f"{url}_stcore/health", 60)
            browser, ws_url = start_chromium(Path(tmp) / "profile")
            try:
                yield server, browser, ws_url, url
            finally:
                stop(browser)
        finally:
            stop(server)


def browser_runs(requests: int, repeat: int) -> dict[str, list[float]]:
    """Seconds until a comparison of N requests per side is drawn in headless Chromium.

    ``link``: opening the dashboard at a link with N requests (a fresh page: the browser loads
    the app and plotly.js again) on a server that has served a small page before. ``change``:
    on that page, typing a new seed, so both sides are simulated afresh, as a user's edit does.
    """
    from websockets.sync.client import connect

    from tests.test_dashboard_browser import DevTools, load_and_capture

    out: dict[str, list[float]] = {"link": [], "change": []}
    with dashboard_in_chromium() as (_server, _browser, ws_url, url):
        load_and_capture(ws_url, f"{url}?W.workload.num_requests=20", 3, 300)
        for i in range(repeat):
            query = f"?W.workload.num_requests={requests}&W.seed={1000 + i}"
            state, _, seconds = load_and_capture(ws_url, url + query, 3, 300)
            if state["exceptions"] or state["errors"] or state["charts"] < 3:
                raise RuntimeError(f"the page did not render: {state}")
            out["link"].append(seconds)
        with connect(ws_url, max_size=256 << 20) as conn:
            tools = DevTools(conn)
            for i in range(repeat):
                out["change"].append(_change_and_wait(tools, "seed", 2000 + i))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per side")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-browser", action="store_true", help="server-side measure only")
    parser.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    server = server_runs(args.requests, args.repeat)
    browser = {} if args.no_browser else browser_runs(args.requests, args.repeat)
    load_after = os.getloadavg()[0]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in server)

    def each(key: str) -> list[float]:
        return [r[key] for r in server]

    rows = [
        ("page with a new config, server side (AppTest): A and B simulated in parallel",
         each("total_s")),
        ("sim.simulate A alone", each("simulate_a_s")),
        ("sim.simulate B alone", each("simulate_b_s")),
        ("the same page from the cache: its own work (widgets, summaries, figures)",
         each("warm_s")),
    ]
    if browser:
        rows += [("in Chromium, a link opened (fresh page) to the comparison drawn",
                  browser["link"]),
                 ("in Chromium, a new seed typed in the page to the comparison drawn",
                  browser["change"])]
    verdict = max(med("total_s"), statistics.median(browser["change"]) if browser else 0.0)
    lines = [
        "## Dashboard: a comparison of N requests per side (`benchmarks/dashboard_speed.py`)",
        "",
        f"Measured {dt.datetime.now():%Y-%m-%d %H:%M} on {machine()}; 1-minute load average "
        f"{load_before:.1f} before, {load_after:.1f} after (the machine is shared). "
        f"{args.requests} requests per side (the default workload otherwise: Llama-3.1-8B, "
        f"H100, A bf16 vs B fp8), median of {args.repeat}.",
        "",
        "| measurement | median s | each run, s |",
        "| --- | ---: | --- |",
        *[median_row(name, values) for name, values in rows],
        "",
        f"Target: under {TARGET_S:.0f} s. Result: "
        f"{'met' if verdict < TARGET_S else 'NOT met'} ({verdict:.2f} s). The page's own work "
        f"is {med('warm_s'):.2f} s; the rest is the two simulations ({med('simulate_a_s'):.1f} s "
        f"and {med('simulate_b_s'):.1f} s each alone), which the app runs side by side on the "
        "two cores (a worker process for B), cores that the machine's other work also used.",
    ]
    publish("\n".join(lines), START, END, write=not args.no_write)


if __name__ == "__main__":
    main()
