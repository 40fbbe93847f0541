"""Six plausible bugs (issue #27), each planted alone in a copy of the package, must make the
tests aimed at them fail.

For each bug: copy the packages and the tests into a temporary folder, apply one precise
source edit there (asserted to apply: if the code it targets has moved or changed, this test
fails loudly instead of passing with nothing planted), and run the test files that should
catch it in a subprocess importing the copy. The run must end in an assertion failure (pytest
exit status 1 and a FAILED line whose reason is an assertion), not an import or collection
error. The same files pass on the unmodified code (they are part of the suite), so a
subprocess that somehow imported the unmodified package instead of the copy would pass them and
fail this test: no way to pass here with the bug not planted.

Cost: one Python process per bug, each importing numpy/scipy (and torch or hwmodels): about
55 CPU-seconds in all on this machine, run on as many cores as there are.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "hwmodels", "policies", "realexec", "tests")


@dataclass(frozen=True)
class Bug:
    path: str  # file the bug goes into, relative to the repo
    pattern: str  # regex of the correct code (must match at least once)
    replacement: str
    tests: tuple[str, ...]  # test files (optionally ::test or -k selections) that must catch it
    k: str | None = None  # pytest -k expression, to run only the tests aimed at it


BUGS = {
    # (a) the decoder's MLP activation: GELU instead of SiLU
    "silu_to_gelu": Bug("realexec/model.py", r"F\.silu\(", "F.gelu(",
                        ("tests/test_reference_llama.py",), k="float32 and llama3"),
    # (b) gamma arrivals ignoring cv (shape 1: exponential gaps whatever the cv)
    "gamma_ignores_cv": Bug("sim/workload.py", r"shape = 1\.0 / \(cv \* cv\)", "shape = 1.0",
                            ("tests/test_distributions_stats.py",), k="gamma"),
    # (c) lognormal lengths without the mean correction: e^(sigma^2/2) too long
    "lognormal_mean_uncorrected": Bug(
        "sim/workload.py", r"np\.log\(self\.mean\)\s*-\s*self\.sigma\s*\*\*\s*2\s*/\s*2",
        "np.log(self.mean)", ("tests/test_distributions_stats.py",), k="lognormal"),
    # (d) a disaggregated transfer ignoring what the decode replica already caches
    "transfer_ignores_decode_cache": Bug(
        "sim/disagg.py",
        r"max\(\s*0\s*,\s*req\.prompt_tokens\s*-\s*cached\s*\)",
        "req.prompt_tokens", ("tests/test_disagg_reference.py",)),
    # (e) a link between pools of different TP priced at the faster end
    "link_at_faster_end": Bug(
        "sim/interconnect.py", r"max\(a\.seconds_per_token\(\), b\.seconds_per_token\(\)\)",
        "min(a.seconds_per_token(), b.seconds_per_token())",
        ("tests/test_interconnect_reference.py",)),
    # (e') the same on a shared link: the side with fewer bytes in total
    "shared_link_at_smaller_side": Bug(
        "sim/interconnect.py",
        r"max\(a\.kv_bytes_per_token \* a\.num_gpus, b\.kv_bytes_per_token \* b\.num_gpus\)",
        "min(a.kv_bytes_per_token * a.num_gpus, b.kv_bytes_per_token * b.num_gpus)",
        ("tests/test_interconnect_reference.py",)),
    # (f) the expert-parallel straggler term removed: the busiest rank priced at the mean
    "no_ep_straggler": Bug("hwmodels/operators.py", r"load = mean_load \+ [^\n]+",
                           "load = mean_load", ("tests/test_ep_imbalance.py",), k="busiest"),
}


def _copy(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in PACKAGES:
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")  # pytest's settings
    return dest


def _plant(root: Path, bug: Bug) -> None:
    path = root / bug.path
    source = path.read_text()
    mutated, count = re.subn(bug.pattern, bug.replacement, source)
    assert count >= 1, (f"the planted bug no longer applies: /{bug.pattern}/ not found in "
                        f"{bug.path}; update tests/test_planted_bugs.py to the new code")
    assert mutated != source
    path.write_text(mutated)


def _pytest(root: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           "-o", "addopts=", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


@dataclass
class Outcome:
    root: Path
    report: Path
    run: subprocess.CompletedProcess


def _plant_and_test(name: str, base: Path) -> Outcome:
    """Copy, plant ``name``'s bug (AssertionError if it no longer applies), run its tests."""
    bug = BUGS[name]
    root = _copy(base / name)
    _plant(root, bug)
    report = base / f"{name}.xml"  # our own pytest's report: trusted, parsed as XML
    args = [*bug.tests, *(["-k", bug.k] if bug.k else []), f"--junitxml={report}"]
    return Outcome(root, report, _pytest(root, args))


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory):
    """The selected bugs' runs, started together on as many workers as there are cores (each
    run is one Python process: the runs are independent)."""
    selected = [item.callspec.params["name"] for item in request.session.items
                if item.originalname == "test_each_planted_bug_fails_the_tests_aimed_at_it"]
    base = tmp_path_factory.mktemp("planted")
    workers = max(1, min(len(selected), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        yield {name: pool.submit(_plant_and_test, name, base) for name in selected}


@pytest.mark.parametrize("name", list(BUGS))
def test_each_planted_bug_fails_the_tests_aimed_at_it(name, outcomes):
    outcome = outcomes[name].result()  # re-raises a bug that no longer applies
    run = outcome.run
    output = run.stdout + run.stderr
    assert run.returncode == 1, f"{name}: pytest exit {run.returncode}, expected 1\n{output}"
    failures = [(case.get("name"), failure.get("message", ""))
                for case in ElementTree.parse(outcome.report).iter("testcase")
                for failure in case.findall("failure")]
    assert failures, output
    for test, message in failures:  # a wrong answer, not a crash
        assert message.startswith(("AssertionError", "assert ")), (test, message, output)
    print(f"{name}: killed by {failures[0][0]}: {failures[0][1][:150]!r}")
