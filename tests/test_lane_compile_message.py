"""The first run that builds the compiled loop says so on stderr; a run that loads it from
numba's cache says nothing (``sim.lane.announce_compiling``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sim.lane import COMPILING_MESSAGE

RUN = [sys.executable, "-m", "sim.cli", "run", "--set", "workload.num_requests=20", "--quiet"]


@pytest.mark.slow
def test_compiling_is_announced_once_and_not_when_cached(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}  # a cold cache

    def stderr_of_a_run(n: int) -> str:
        proc = subprocess.run([*RUN, "--out", str(tmp_path / f"out{n}")], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stderr

    first, second = stderr_of_a_run(1), stderr_of_a_run(2)
    assert first.count(COMPILING_MESSAGE) == 1
    assert COMPILING_MESSAGE not in second
    assert any((tmp_path / "numba-cache").rglob("*.nbi"))  # the loop was cached, not skipped
