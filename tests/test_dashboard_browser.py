"""The dashboard in a real browser: ``servesim dashboard`` on a free local port, loaded in
headless Debian Chromium, driven over the DevTools protocol (a small client on the
``websockets`` package, which Streamlit already depends on).

The test waits for the default comparison to finish, saves a screenshot, and asserts that the
charts drew (plotly traces present) and that no Streamlit exception or error box is on the page.
Set ``SERVESIM_SCREENSHOT=docs/dashboard.png`` to also keep the screenshot (the README's).
Chromium must be installed (``.ci/system-packages``); without it the test fails, it never skips.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[1]
VIEWPORT = (1600, 1900)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  # a headless page counts as hidden: without these its timers are throttled
                  "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                  "--disable-backgrounding-occluded-windows",
                  "--remote-debugging-port=0", "--remote-allow-origins=*")
# What the page shows, read in the page: charts that drew traces, metrics, failures.
PAGE_STATE_JS = """JSON.stringify({
  charts: [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
          .filter(e => e.querySelector('.main-svg .trace')).length,
  metrics: document.querySelectorAll('[data-testid="stMetricValue"]').length,
  exceptions: document.querySelectorAll('[data-testid="stException"]').length,
  errors: [...document.querySelectorAll('[data-testid="stAlertContentError"]')]
          .map(e => e.innerText),
  running: !!document.querySelector('[data-testid="stStatusWidgetRunningIcon"],'
                                    + '[data-testid="stSpinner"]'),
})"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("no Chromium on PATH: apt-get install chromium (.ci/system-packages)")


def wait_http(url: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class DevTools:
    """Just enough of the Chrome DevTools protocol: call a method, wait for its answer."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        call_id = self.next_id
        self.conn.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # events arrive in between; only our answer matters
            msg = json.loads(self.conn.recv(timeout=60))
            if msg.get("id") == call_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def page_state(self) -> dict:
        result = self.call("Runtime.evaluate", expression=PAGE_STATE_JS, returnByValue=True)
        return json.loads(result["result"]["value"])


def load_and_capture(ws_url: str, url: str, min_charts: int, timeout_s: float
                     ) -> tuple[dict, bytes, float]:
    """Open ``url``; wait until ``min_charts`` charts drew and nothing runs; screenshot it.

    Returns the page state, the PNG and the seconds from navigation to the first poll that
    saw the page rendered (it must still be so a second later, else the wait goes on).
    """
    with connect(ws_url, max_size=256 << 20, open_timeout=10) as conn:
        tools = DevTools(conn)
        width, height = VIEWPORT
        tools.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                   deviceScaleFactor=1, mobile=False)
        start = time.monotonic()
        tools.call("Page.navigate", url=url)
        state: dict = {}
        settled_since = None
        while time.monotonic() - start < timeout_s:
            time.sleep(0.1)
            state = tools.page_state()
            done = state["exceptions"] or state["errors"] or (
                state["charts"] >= min_charts and state["metrics"] and not state["running"])
            if not done:
                settled_since = None
                continue
            settled_since = settled_since or time.monotonic()
            if time.monotonic() - settled_since >= 1.0:  # still settled a second later
                break
        elapsed = (settled_since or time.monotonic()) - start
        shot = tools.call("Page.captureScreenshot", format="png")
    return state, base64.b64decode(shot["data"]), elapsed


def start_dashboard(port: int, log: Path) -> subprocess.Popen:
    """``servesim dashboard`` (the real command) on 127.0.0.1:port."""
    return subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "dashboard", "--port", str(port), "--headless"],
        cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none"})


def start_chromium(profile: Path) -> tuple[subprocess.Popen, str]:
    """Headless Chromium with a fresh profile; returns it and its page's DevTools URL."""
    width, height = VIEWPORT
    proc = subprocess.Popen([chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                             f"--window-size={width},{height}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not (port_file.is_file() and port_file.read_text().strip()):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise AssertionError("Chromium did not open its DevTools port")
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    targets = json.loads(wait_http(f"http://127.0.0.1:{port}/json/list", 10))
    page = next(t for t in targets if t["type"] == "page")
    return proc, page["webSocketDebuggerUrl"]


def stop(proc: subprocess.Popen) -> None:
    """End a process this test started and everything it started (its own session/group:
    the server's simulation workers, Chromium's renderers)."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group
        except ProcessLookupError:
            pass
        return


def capture_dashboard(shot_path: Path, min_charts: int = 3, timeout_s: float = 180.0,
                      queries: tuple[str, ...] = ("",)) -> tuple[dict, list[float]]:
    """Run the dashboard and a browser; load each URL query in turn (``?W.workload.
    num_requests=2000``: widget values); save the last screenshot; return the last page state
    and the seconds from each navigation until that comparison had rendered."""
    port = free_port()
    times = []
    with tempfile.TemporaryDirectory(prefix="servesim-browser-") as tmp:
        tmp_path = Path(tmp)
        server = start_dashboard(port, tmp_path / "streamlit.log")
        try:
            wait_http(f"http://127.0.0.1:{port}/_stcore/health", 60)
            browser, ws_url = start_chromium(tmp_path / "profile")
            try:
                for query in queries:
                    state, png, elapsed = load_and_capture(
                        ws_url, f"http://127.0.0.1:{port}/{query}", min_charts, timeout_s)
                    times.append(elapsed)
            finally:
                stop(browser)
        finally:
            stop(server)
        log = (tmp_path / "streamlit.log").read_text()
    shot_path.write_bytes(png)
    state["log"] = log
    return state, times


def test_default_comparison_renders_in_chromium(tmp_path):
    shot = tmp_path / "dashboard.png"
    state, _ = capture_dashboard(shot)
    assert state["exceptions"] == 0, state["log"][-3000:]
    assert state["errors"] == [], state["errors"]
    assert state["charts"] >= 3, state  # latency CDFs, cost, goodput: traces drawn
    assert state["metrics"] >= 18, state  # 9 headline metrics for A and for B
    assert not state["running"], state
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == VIEWPORT
    keep = os.environ.get("SERVESIM_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(png)
