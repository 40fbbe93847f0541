"""Set up a fresh machine for servesim's tests and run them: the README's test command.

    python3 scripts/test.py [PYTEST ARGS ...]

A fresh clone needs three things before ``pytest`` can pass, and this script does each one
only when it is missing, so a second run starts the tests at once:
1. a virtual environment ``.venv`` with servesim and its test extra (``pip install -e
   ".[test]"``: pytest, hypothesis, a pinned CPU torch, streamlit, ray, ...);
2. a headless Chromium for the dashboard's browser test (``tests/test_dashboard_browser.py``,
   which fails rather than skips without one). No browser travels on the Python package
   index, so it comes from the system's package manager (Debian/Ubuntu ``apt-get``), run
   directly as root or through password-less ``sudo``; the packages are listed in
   ``.ci/system-packages``. Where neither works, the script stops with one line saying what to
   install, before any test runs;
3. then ``python -m pytest`` inside the environment, with any arguments given here.

It uses only the standard library, so it runs on a machine that has nothing but Python.
``.ci/run`` runs exactly this command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
SYSTEM_PACKAGES = ROOT / ".ci" / "system-packages"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def say(message: str) -> None:
    print(f"[servesim test] {message}", flush=True)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv() -> Path:
    """Create ``.venv`` and install the package with its test extra (pip skips what is there)."""
    python = venv_python()
    if not python.exists():
        say(f"creating {VENV.relative_to(ROOT)}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    say('installing servesim with its test extra (pip install -e ".[test]")')
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", ".[test]"],
                   cwd=ROOT, check=True)
    return python


def browser_found() -> bool:
    return any(shutil.which(name) for name in BROWSERS)


def package_manager_prefix() -> list[str] | None:
    """How to run apt-get here: directly as root, through password-less sudo, or not at all."""
    if shutil.which("apt-get") is None:
        return None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"],
                                               capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def ensure_browser() -> None:
    """Install the system packages of ``.ci/system-packages`` when no Chromium is on PATH."""
    if browser_found():
        return
    packages = SYSTEM_PACKAGES.read_text().split()
    prefix = package_manager_prefix()
    if prefix is None:
        sys.exit("[servesim test] the dashboard's browser test needs Chromium and this script "
                 f"cannot install it here (no apt-get as root or sudo): install {' '.join(packages)} "
                 "with your system's package manager, then run this command again")
    say(f"installing {' '.join(packages)} with apt-get (the dashboard's browser test)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "env": env, "check": True}
    subprocess.run([*prefix, "apt-get", "update", "-qq"], **quiet)
    subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                    *packages], **quiet)
    if not browser_found():
        sys.exit(f"[servesim test] apt-get installed {' '.join(packages)} but no Chromium is "
                 f"on PATH (looked for {', '.join(BROWSERS)})")


def main(pytest_args: list[str]) -> int:
    python = ensure_venv()
    ensure_browser()
    say("running the tests (python -m pytest)")
    return subprocess.run([str(python), "-m", "pytest", *pytest_args], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
