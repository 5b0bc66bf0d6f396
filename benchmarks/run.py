"""Every speed and memory figure of uowstress, each against a baseline measured in the same run.

    uv run python benchmarks/run.py                    # all five (about three minutes)
    uv run python benchmarks/run.py uow checker        # a subset
    uv run python benchmarks/run.py --quick            # small sizes: a look, not the figures

  uow        committing a typical change through the reference Unit of Work, against the raw
             driver running the same statements (SQLite FULL and NORMAL, PostgreSQL, MariaDB)
  tester     steps per second of the ACID machine, against a bare Hypothesis state machine
  isolation  the whole `uowstress isolation` matrix on PostgreSQL under the ci profile
  memory     resident memory growth over 2,000 examples of the ACID machine
  checker    classifying a 100,000-transaction history, against a 10,000 one (two shapes:
             item reads and writes, and predicate reads followed by matching writes)

PostgreSQL and MariaDB are reached through UOWSTRESS_PG_URL and UOWSTRESS_MYSQL_URL (defaults:
the local servers); an unreachable server is reported as not measured. Each benchmark's own
docstring says exactly what it measures and how. Nothing here asserts anything about time.
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: the repository root holds the benchmarks package.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hypothesis
import sqlalchemy

from benchmarks import (
    bench_checker,
    bench_isolation,
    bench_memory,
    bench_tester,
    bench_uow,
    verdicts,
)
from uowstress.database import DEFAULT_URLS
from uowstress.scratch import reachable

Report = tuple[list[str], list[verdicts.Goal]]


def _uow(quick: bool) -> Report:
    runs = bench_uow.measure_all(transactions=60 if quick else 400, warmup=10 if quick else 50)
    return bench_uow.describe_all(runs), bench_uow.goals(runs)


def _tester(quick: bool) -> Report:
    f = bench_tester.measure_tester(examples=10 if quick else 100, steps=10 if quick else 40)
    return bench_tester.describe(f), bench_tester.goals(f)


def _isolation(quick: bool) -> Report:
    url = DEFAULT_URLS["postgresql"]
    ok, detail = reachable(url)
    if not ok:
        goal = verdicts.Goal("isolation matrix, PostgreSQL", "-", None)
        return [f"not measured: {detail}"], [goal]
    if quick:
        f = bench_isolation.measure_isolation(url, budget_s=15, levels=["READ COMMITTED"])
    else:
        f = bench_isolation.measure_isolation(url)
    return bench_isolation.describe(f), bench_isolation.goals(f)


def _memory(quick: bool) -> Report:
    if quick:
        f = bench_memory.measure_memory(examples=60, warmup=30, steps=10)
    else:
        f = bench_memory.measure_memory()
    return bench_memory.describe(f), bench_memory.goals(f)


def _checker(quick: bool) -> Report:
    lines: list[str] = []
    goals: list[verdicts.Goal] = []
    for shape in bench_checker.SHAPES:
        if quick:
            f = bench_checker.measure_checker(
                small=2_000, large=20_000, rounds=1, beyond=False, shape=shape
            )
        else:
            f = bench_checker.measure_checker(shape=shape, beyond=shape == "items")
        lines += bench_checker.describe(f)
        goals += bench_checker.goals(f)
    return lines, goals


BENCHMARKS: dict[str, tuple[str, Callable[[bool], Report]]] = {
    "uow": ("Unit of Work overhead against the raw driver", _uow),
    "tester": ("ACID machine throughput against a bare Hypothesis machine", _tester),
    "isolation": ("Isolation matrix on PostgreSQL, ci profile", _isolation),
    "memory": ("Resident memory over 2,000 ACID examples", _memory),
    "checker": ("Anomaly checker on a 100,000-transaction history", _checker),
}


def header() -> list[str]:
    return [
        f"uowstress benchmarks, {date.today().isoformat()}: Python {platform.python_version()},"
        f" SQLite {sqlite3.sqlite_version}, SQLAlchemy {sqlalchemy.__version__},"
        f" Hypothesis {hypothesis.__version__}; {verdicts.machine_load()}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog="benchmarks: " + ", ".join(BENCHMARKS),
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: checks that each runs, in a minute"
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    chosen = args.names or list(BENCHMARKS)
    for text in header():
        print(text, flush=True)
    goals: list[verdicts.Goal] = []
    for name in chosen:
        title, measure = BENCHMARKS[name]
        print(f"\n== {name}: {title}" + (" (quick: small sizes)" if args.quick else ""), flush=True)
        started = time.perf_counter()
        lines, found = measure(args.quick)
        for text in lines:
            print(text)
        print(f"  ({time.perf_counter() - started:.0f} s; {verdicts.machine_load()})", flush=True)
        goals += found
    print("\n== goals")
    for goal in goals:
        print(goal.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
