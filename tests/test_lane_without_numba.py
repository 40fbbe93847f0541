"""Without numba a run takes the general engine and gives the same results.

``tests/test_lane.py`` needs numba (the compiled loop it checks), so its module is skipped where
numba is absent; this one runs everywhere. It makes numba absent for real: a child Python whose
import of ``numba`` fails, as on a machine without it, not a monkeypatched module table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import sim

REPO = Path(__file__).resolve().parent.parent
CONFIG = {"seed": 3, "workload": {"num_requests": 30, "rate": 6.0}}
CHILD = """
import json, sys

class NoNumba:
    def find_spec(self, name, path=None, target=None):
        if name == "numba" or name.startswith("numba."):
            raise ImportError("No module named 'numba' (blocked by the test)")
        return None

sys.meta_path.insert(0, NoNumba())
import sim
from sim import lane

assert "numba" not in sys.modules
result = sim.simulate(json.loads(sys.argv[1]))
print(json.dumps({
    "reason": lane._kernel_unavailable(),
    "numba_loaded": "numba" in sys.modules,
    "summary": {k: v for k, v in result.summary.items() if isinstance(v, (int, float))},
}))
"""


def test_a_run_without_numba_takes_the_general_engine_with_the_same_results():
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(CONFIG)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    child = json.loads(done.stdout.strip().splitlines()[-1])
    assert child["reason"] == "numba is not installed" and not child["numba_loaded"]
    here = sim.simulate(CONFIG).summary  # the compiled lane where numba is installed
    numbers = {k: v for k, v in here.items() if isinstance(v, (int, float))}
    assert child["summary"] == numbers
