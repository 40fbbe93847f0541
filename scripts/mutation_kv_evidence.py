"""Evidence for the KV allocators' mutation ledger (docs/mutation/policies-kv.md) that
``scripts/mutation_test.py recheck`` cannot give.

- ``trampoline``: run test files against surviving mutants through mutmut's own mutated copy of
  the target (``mutants/``, the mutant chosen by ``MUTANT_UNDER_TEST``). ``recheck`` applies a
  mutant's diff by finding its lines in the file, and answers "not applied" where they occur
  twice (``PagedAllocator`` and ``PrefixCachingAllocator`` share ``__init__`` and
  ``block_table`` line for line); mutmut's copy needs no such search.
- ``fuzz``: a differential check of a mutant argued equivalent. Random sequences of first
  allocations, growth, commits, frees and lookups (small pools, so eviction is frequent; shared
  hash prefixes, so hits and splits are) run on the allocator as committed and on the mutant,
  and every answer is compared: allocate's verdict, block tables, lookups, blocks used, eviction
  and hit counts, and the invariant check at the end. Agreement on every seed is evidence, not
  proof; the ledger gives the argument.

    python scripts/mutation_kv_evidence.py trampoline NAME... --commit 2111d8c47197 \
        --tests tests/test_mutants_kv.py
    python scripts/mutation_kv_evidence.py fuzz --commit 2111d8c47197 --seeds 1500 NAME...

Mutant names are mutmut's (``python scripts/mutation_test.py survivors policies``); the scratch
copy is the ``policies`` target's under $SERVESIM_MUTATION_DIR, as for ``mutation_test.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_test import REPO, _apply_mutant, _resolve, _workdir  # noqa: E402

sys.path.insert(0, str(REPO))
from sim.core import Request  # noqa: E402

KV_FILES = ("kv_radix.py", "kv_paged.py", "prefix.py")


def trampoline(commit: str, tests: list[str], names: list[str]) -> dict[str, str]:
    work = _workdir("policies", _resolve(commit))
    verdicts: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "mutants"
        shutil.copytree(work / "mutants", copy, symlinks=True)
        if (work / "shared").exists():  # the tests find the traces beside the repo
            os.symlink((work / "shared").resolve(), Path(tmp) / "shared")
        for test in tests:
            (copy / test).write_bytes((REPO / test).read_bytes())
        for name in names:
            env = dict(os.environ, MUTANT_UNDER_TEST=name, PYTHONPATH=str(copy))
            run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p",
                                  "no:cacheprovider", *tests], cwd=copy, env=env,
                                 capture_output=True)
            verdicts[name] = "killed" if run.returncode else "survived"
            print(f"{verdicts[name]:>10}  {name}", flush=True)
    out = work / "recheck-trampoline.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**old, **verdicts}, indent=1, ensure_ascii=False) + "\n")
    return verdicts


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _classes(commit: str, name: str) -> tuple[type, type]:
    """The allocator class the mutant lives in: as committed, and with the mutant applied."""
    module = name.split(".")[1]
    if module not in ("kv_radix", "kv_paged"):
        raise SystemExit(f"{name}: fuzz covers the allocators of kv_radix and kv_paged only")
    cls = "PrefixCachingAllocator" if "PrefixCaching" in name else (
        "PagedAllocator" if "PagedAllocator" in name else "RadixAllocator")
    root = Path(tempfile.mkdtemp())
    (root / "policies").mkdir()
    for f in KV_FILES:
        (root / "policies" / f).write_text(subprocess.check_output(
            ["git", "show", f"{commit}:policies/{f}"], cwd=REPO, text=True))
    original = _load(root / "policies" / f"{module}.py", f"orig_{module}")
    shown = subprocess.run([sys.executable, "-m", "mutmut", "show", name],
                           cwd=_workdir("policies", commit), capture_output=True,
                           text=True).stdout
    if _apply_mutant(root, shown) is None:
        raise SystemExit(f"{name}: the diff does not apply")
    mutated = _load(root / "policies" / f"{module}.py", f"mut_{module}_{abs(hash(name))}")
    return getattr(original, cls), getattr(mutated, cls)


def _story(cls: type, seed: int, steps: int = 300) -> list:
    """Every answer the allocator gives to one random sequence of calls."""
    rng = random.Random(seed)
    pool = cls(rng.randint(2, 14), rng.choice([1, 2, 4]))
    span = rng.choice([2, 3, 4, 8])
    templates = [[rng.randint(1, 4) for _ in range(12)] for _ in range(4)]
    live: dict[int, list] = {}
    out: list = []
    for rid in range(steps):
        op = rng.random()
        try:
            if op < 0.3 or not live:
                hashes = rng.choice(templates)[:rng.randint(0, 12)]
                hashes = tuple(hashes + [rng.randint(1, 4) for _ in range(rng.randint(0, 2))])
                r = Request(rid, 0.0, rng.randint(1, 30), rng.randint(1, 5),
                            prefix_hashes=hashes, hash_block_tokens=span)
                n = rng.randint(1, r.num_tokens)
                out.append(("lookup", pool.lookup_prefix(r)))
                ok = pool.allocate(r, n)
                out.append(("first", ok))
                if ok:
                    live[rid] = [r, n]
                else:
                    pool.free(r)
            elif op < 0.5:
                r, n = live[rng.choice(list(live))]
                grown = rng.randint(n, n + 10)
                ok = pool.allocate(r, grown)
                out.append(("grow", ok))
                if ok:
                    live[r.request_id][1] = grown
            elif op < 0.75:
                r, n = live[rng.choice(list(live))]
                r.num_computed_tokens = rng.randint(r.num_computed_tokens, n)
                pool.commit(r)
            else:
                pool.free(live.pop(rng.choice(list(live)))[0])
            out.extend(("table", tuple(pool.block_table(r))) for r, _ in list(live.values())[:3])
            stats = getattr(pool, "stats", None)  # the plain paged pool keeps none
            out.append(("used", pool.num_blocks_used(), stats and stats.evicted_blocks,
                        stats and stats.prefix_hit_blocks))
        except Exception as error:  # noqa: BLE001 - a crash is an answer too
            out.append(("raised", type(error).__name__))
            break
    try:
        pool.check()
        out.append("check ok")
    except AssertionError as error:
        out.append(("check", str(error)))
    return out


def fuzz(commit: str, seeds: int, names: list[str]) -> dict[str, int | None]:
    """Per mutant: the first seed whose answers differ, or None if all agree."""
    commit = _resolve(commit)
    first: dict[str, int | None] = {}
    for name in names:
        original, mutated = _classes(commit, name)
        first[name] = next((s for s in range(seeds) if _story(original, s) != _story(mutated, s)),
                           None)
        verdict = f"differs at seed {first[name]}" if first[name] is not None else \
            f"same answers on {seeds} seeds"
        print(f"{name}: {verdict}", flush=True)
    return first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["trampoline", "fuzz"])
    parser.add_argument("names", nargs="+", help="mutmut mutant names")
    parser.add_argument("--commit", default="HEAD")
    parser.add_argument("--tests", nargs="+", default=["tests/test_mutants_kv.py"],
                        help="trampoline: the test files (after the names)")
    parser.add_argument("--seeds", type=int, default=1500)
    args = parser.parse_args(argv)
    if args.action == "trampoline":
        trampoline(args.commit, args.tests, args.names)
    else:
        fuzz(args.commit, args.seeds, args.names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
