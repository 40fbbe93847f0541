"""Recheck many mutants of one target in one Python process, through mutmut's mutated copy.

Why: ``mutation_test.py recheck`` starts pytest once per mutant; with pandas and pyarrow to
import that is 5-30 s a mutant on this 2-core machine, hours for a few hundred survivors. mutmut's
copy of the target (``<scratch>/mutants/``) holds every mutant behind a trampoline that picks
the one named by ``MUTANT_UNDER_TEST`` at each call, so one process can import the libraries
once and run the test file's functions against each mutant in turn (the test module is
re-executed for each, so no mutant sees state another left behind). A mutant is killed when any
test function raises; the unmutated code must pass them all first.

Only plain test functions are supported (arguments: none, ``tmp_path``, or the names of one
``pytest.mark.parametrize``); a test file using other fixtures or marks is refused. Also checks
mutants mutmut marked "no tests" (``--verdicts``), which ``recheck`` skips, and with
``--all-mutants`` every mutant in mutmut's copy, before its run has given any verdict.

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
import re
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


def _calls(test) -> list[dict]:
    """The keyword arguments of each call of a test: one call, or one per row of a single
    ``pytest.mark.parametrize``; anything else (fixtures, other marks) is refused."""
    marks = getattr(test, "pytestmark", [])
    params = set(inspect.signature(test).parameters) - {"tmp_path"}
    if not marks and not params:
        return [{}]
    if len(marks) == 1 and marks[0].name == "parametrize" and not marks[0].kwargs:
        argnames, rows = marks[0].args
        names = [n.strip() for n in argnames.split(",")] if isinstance(argnames, str) else argnames
        if set(names) == params:
            return [dict(zip(names, row if len(names) > 1 else (row,), strict=True))
                    for row in rows]
    raise SystemExit(f"{test.__name__} needs fixtures or marks this runner lacks")


def _tests(path: Path) -> list:
    spec = importlib.util.spec_from_file_location(f"_inprocess_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [(f, _calls(f)) for n, f in vars(module).items() if n.startswith("test_")
            and callable(f)]


def _mutant_names(copy: Path) -> list[str]:
    """Every mutant mutmut wrote into its copy (``module.function__mutmut_N``), before any
    verdict exists: read off the mutated functions' definitions."""
    names = []
    for path in copy.rglob("*.py.meta"):
        source = path.with_suffix("")
        module = ".".join(source.relative_to(copy).with_suffix("").parts)
        for match in re.finditer(r"^\s*def (x\S*__mutmut_\d+)\(", source.read_text(), re.M):
            names.append(f"{module}.{match.group(1)}")
    return names


def _first_failure(paths: list[Path], seconds: int) -> str | None:
    """The first test that fails (``file::name: error``), or None when all pass."""
    for path in paths:
        for test, calls in _tests(path):
            for kwargs in calls:
                with tempfile.TemporaryDirectory() as tmp:
                    if "tmp_path" in inspect.signature(test).parameters:
                        kwargs = {**kwargs, "tmp_path": Path(tmp)}
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
    parser.add_argument("--all-mutants", action="store_true",
                        help="every mutant in mutmut's copy, whatever its verdict (or none yet)")
    parser.add_argument("--timeout", type=int, default=60, help="seconds per test function")
    args = parser.parse_args(argv)
    work = _workdir(args.target, _resolve(args.commit))
    if args.all_mutants:
        names = sorted(n for n in _mutant_names(work / "mutants") if args.match in n)
    else:
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
