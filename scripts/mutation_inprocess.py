"""Recheck many mutants of one target in one Python process, through mutmut's mutated copy.

Why: ``mutation_test.py recheck`` starts pytest once per mutant; with pandas and pyarrow to
import that is 5-30 s a mutant on this 2-core machine, hours for a few hundred survivors. mutmut's
copy of the target (``<scratch>/mutants/``) holds every mutant behind a trampoline that picks
the one named by ``MUTANT_UNDER_TEST`` at each call, so one process can import the libraries
once and run the test file's functions against each mutant in turn (the test module is
re-executed for each, so no mutant sees state another left behind). A mutant is killed when any
test function raises; the unmutated code must pass them all first.

Only plain test functions are supported (arguments: none, or ``tmp_path``); a test file using
other fixtures or parametrisation is refused. Also checks mutants mutmut marked "no tests"
(``--verdicts``), which ``recheck`` skips.

    python scripts/mutation_inprocess.py sim.metrics --tests tests/test_mutants_metrics.py \
        [--verdicts survived "no tests"] [--match LogHistogram] [--commit HEAD]

Verdicts are printed and merged into ``<scratch>/recheck-inprocess.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_test import REPO, _resolve, _workdir, results  # noqa: E402


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout


def _tests(path: Path) -> list:
    spec = importlib.util.spec_from_file_location(f"_inprocess_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = [f for n, f in vars(module).items() if n.startswith("test_") and callable(f)]
    for f in found:
        params = set(inspect.signature(f).parameters)
        if params - {"tmp_path"} or hasattr(f, "pytestmark"):
            raise SystemExit(f"{path}: {f.__name__} needs fixtures or marks this runner lacks")
    return found


def _first_failure(paths: list[Path], seconds: int) -> str | None:
    """The first test that fails (``file::name: error``), or None when all pass."""
    for path in paths:
        for test in _tests(path):
            kwargs = {}
            with tempfile.TemporaryDirectory() as tmp:
                if "tmp_path" in inspect.signature(test).parameters:
                    kwargs["tmp_path"] = Path(tmp)
                signal.alarm(seconds)
                try:
                    test(**kwargs)
                except _Timeout:
                    return f"{path.name}::{test.__name__}: timeout"
                except BaseException as exc:  # noqa: BLE001 - any failure kills the mutant
                    return f"{path.name}::{test.__name__}: {type(exc).__name__}"
                finally:
                    signal.alarm(0)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("--tests", nargs="+", required=True)
    parser.add_argument("--commit", default="HEAD")
    parser.add_argument("--verdicts", nargs="+", default=["survived"])
    parser.add_argument("--match", default="")
    parser.add_argument("--timeout", type=int, default=60, help="seconds per test function")
    args = parser.parse_args(argv)
    work = _workdir(args.target, _resolve(args.commit))
    names = [n for n, v in sorted(results(args.target, args.commit).items())
             if v in args.verdicts and args.match in n]
    sys.path.insert(0, str(work / "mutants"))  # the mutated copy shadows the repo's modules
    os.chdir(work / "mutants")
    signal.signal(signal.SIGALRM, _on_alarm)
    paths = [REPO / t for t in args.tests]
    os.environ["MUTANT_UNDER_TEST"] = ""
    baseline = _first_failure(paths, args.timeout)
    if baseline is not None:
        print(f"the unmutated code fails {baseline}", file=sys.stderr)
        return 1
    verdicts: dict[str, str] = {}
    for name in names:
        os.environ["MUTANT_UNDER_TEST"] = name
        failure = _first_failure(paths, args.timeout)
        verdicts[name] = "survived" if failure is None else "killed"
        print(f"{verdicts[name]:>9}  {name}  {failure or ''}", flush=True)
    os.environ["MUTANT_UNDER_TEST"] = ""
    out = work / "recheck-inprocess.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**old, **verdicts}, indent=1, ensure_ascii=False) + "\n")
    killed = sum(v == "killed" for v in verdicts.values())
    print(f"{killed} killed, {len(verdicts) - killed} survived of {len(verdicts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
