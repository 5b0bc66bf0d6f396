"""How long the whole isolation matrix takes on PostgreSQL under the ci profile.

Run with ``uv run python benchmarks/run.py isolation`` (or this file directly, with
``--db-url URL``, ``--budget-seconds N`` and ``--profile ci``). The URL defaults to
UOWSTRESS_PG_URL (or the local server). Runs ``search_isolation`` over every level the server
offers, as ``uowstress isolation`` does, and prints, per level, the examples tried, the
seconds spent searching and shrinking and the anomalies observed; then the total time (scratch
database included) against the goal of 120 s, how many cells were observed, and whether every
observed cell came with its reproducer (the shrunk steps that show it). The goal is absolute,
so the ratio printed is the total over the goal. It asserts nothing: machines differ; read
the figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: the repository root holds the benchmarks package.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import verdicts
from uowstress.database import DEFAULT_URLS
from uowstress.isolation import (
    ANOMALY_CLASSES,
    IsolationReport,
    render_matrix,
    search_isolation,
)

GOAL_S = 120.0


@dataclass(frozen=True)
class IsolationFigures:
    report: IsolationReport
    total_s: float

    @property
    def observed(self) -> int:
        return sum(1 for c in self.report.results if c.observed)

    @property
    def without_reproducer(self) -> list[str]:
        return [
            f"{c.anomaly} at {c.level}"
            for c in self.report.results
            if c.observed and not c.reproducer
        ]


def measure_isolation(
    url: str = DEFAULT_URLS["postgresql"],
    *,
    budget_s: float = GOAL_S,
    profile: str = "ci",
    levels: list[str] | None = None,
    anomalies: list[str] | None = None,
    progress: bool = False,
) -> IsolationFigures:
    """Search the matrix; `levels` and `anomalies` narrow it (for a quick look)."""
    started = time.perf_counter()
    report = search_isolation(
        url,
        levels=levels,
        budget_s=budget_s,
        profile=profile,
        anomalies=anomalies or ANOMALY_CLASSES,
        progress=(lambda message: print(message, file=sys.stderr)) if progress else None,
    )
    return IsolationFigures(report, time.perf_counter() - started)


def describe(f: IsolationFigures, *, matrix: bool = False) -> list[str]:
    report = f.report
    out = [
        f"{report.server_version}, profile {report.profile}, budget {report.budget_s:g} s",
        f"  {'level':18s} {'examples':>8s} {'search s':>9s} {'shrink s':>9s}  observed",
    ]
    for search in report.levels:
        seen = [c.anomaly for c in report.results if c.level == search.level and c.observed]
        out.append(
            f"  {search.level:18s} {search.examples:8d} {search.search_seconds:9.1f}"
            f" {search.shrink_seconds:9.1f}  {', '.join(seen) or '-'}"
        )
    missing = f.without_reproducer
    out += [
        f"  total {f.total_s:.1f} s, scratch database included (ratio {f.total_s / GOAL_S:.2f}"
        f" of the goal) {verdicts.at_most(f.total_s, GOAL_S, ' s')}",
        f"  observed {f.observed} of {len(report.results)} cells; "
        + (
            "every observed cell has its reproducer"
            if not missing
            else f"WITHOUT a reproducer: {', '.join(missing)}"
        ),
    ]
    if matrix:
        out += ["", render_matrix(report)]
    return out


def goals(f: IsolationFigures) -> list[verdicts.Goal]:
    return [
        verdicts.Goal(
            f"isolation matrix, {f.report.server_version}",
            f"{f.total_s:.1f} s (<= {GOAL_S:g} s)",
            f.total_s <= GOAL_S and not f.without_reproducer,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db-url", default=DEFAULT_URLS["postgresql"])
    parser.add_argument("--budget-seconds", type=float, default=GOAL_S)
    parser.add_argument("--profile", default="ci")
    args = parser.parse_args(argv)
    figures = measure_isolation(
        args.db_url, budget_s=args.budget_seconds, profile=args.profile, progress=True
    )
    for text in describe(figures, matrix=True):
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
