"""How long the whole isolation matrix takes on PostgreSQL under the ci profile.

Run with ``uv run python benchmarks/bench_isolation.py [--db-url URL] [--budget-seconds N]
[--profile ci]``. The URL defaults to UOWSTRESS_PG_URL (or the local server). Runs
``search_isolation`` over every level the server offers and prints, per level, the examples
tried, the seconds spent searching and shrinking and the anomalies observed; then the total
time against the goal (120 s) and how many cells of the matrix were observed. It asserts
nothing: machines differ; read the figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the src layout importable without installing.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from uowstress.database import DEFAULT_URLS
from uowstress.errors import UowstressError
from uowstress.isolation import render_matrix, search_isolation

GOAL_S = 120.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", default=DEFAULT_URLS["postgresql"])
    parser.add_argument("--budget-seconds", type=float, default=GOAL_S)
    parser.add_argument("--profile", default="ci")
    args = parser.parse_args()
    started = time.perf_counter()
    try:
        report = search_isolation(
            args.db_url,
            budget_s=args.budget_seconds,
            profile=args.profile,
            progress=lambda message: print(message, file=sys.stderr),
        )
    except UowstressError as error:
        print(f"bench_isolation: {error}", file=sys.stderr)
        return 2
    total = time.perf_counter() - started
    print(f"{report.server_version}, profile {report.profile}, budget {args.budget_seconds:g} s")
    print(f"{'level':18s} {'examples':>8s} {'search s':>9s} {'shrink s':>9s}  observed")
    for search in report.levels:
        seen = [c.anomaly for c in report.results if c.level == search.level and c.observed]
        print(
            f"{search.level:18s} {search.examples:8d} {search.search_seconds:9.1f}"
            f" {search.shrink_seconds:9.1f}  {', '.join(seen) or '-'}"
        )
    cells = len(report.results)
    seen_cells = sum(1 for c in report.results if c.observed)
    verdict = "within" if total <= GOAL_S else "OVER"
    print(f"total {total:.1f} s ({verdict} the {GOAL_S:g} s goal, scratch database included)")
    print(f"observed {seen_cells} of {cells} cells")
    print()
    print(render_matrix(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
