"""How big the reports of a nightly-sized run are, and how long they take to write.

Run with ``uv run python benchmarks/bench_report.py [--scenarios N] [--samples N]``.

Builds a synthetic report shaped like a nightly run (by default 60 scenarios: 20 per backend,
each with 5,000 transaction times, a 600-point memory timeline and a thread sweep), then times
``analyse`` and each renderer (best of 3) and prints the size of each format. For the HTML page
it separates plotly.js, included once, from the rest of the page, so the figures show what the
data costs against what the library costs. The one-scenario page is the baseline the ratio is
taken against. It asserts nothing: read the figures.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import plotly.offline  # type: ignore[import-untyped]

from uowstress.report.html import render_html
from uowstress.report.json_report import report_json
from uowstress.report.markdown import render_markdown
from uowstress.report.model import (
    Distribution,
    MemoryProfile,
    Outcomes,
    Report,
    RunOptions,
    ScalabilityPoint,
    ScenarioResult,
    Summary,
    SystemInfo,
)
from uowstress.report.output import analyse


def _scenario(index: int, backend: str, samples: int, rng: random.Random) -> ScenarioResult:
    times = [rng.lognormvariate(-4.5, 0.6) for _ in range(samples)]
    single = rng.uniform(50, 200)
    return ScenarioResult(
        id=f"tests/performance/test_suite.py::test_scenario_{index}[{backend}]",
        suite=f"suite_{index % 4}",
        scenario=f"scenario_{index}",
        backend=backend,
        database=f"{backend}://",
        threads=8,
        transactions=Outcomes(total=samples, committed=samples, success_rate=1.0),
        attempts=Outcomes(total=samples, committed=samples, success_rate=1.0),
        latency=Distribution.of(times),
        latency_samples=times,
        ops_per_second=single,
        memory=MemoryProfile(
            peak_mb=150.0,
            growth_mb=5.0,
            timeline=[(i * 0.05, 140 + 10 * i / 600) for i in range(600)],
        ),
        scalability=[
            ScalabilityPoint(threads=t, ops_per_second=single * t**0.5, efficiency=t**-0.5)
            for t in (1, 2, 4, 8)
        ],
    )


def _report(scenarios: int, samples: int) -> Report:
    rng = random.Random(1)
    backends = ("sqlite", "postgresql", "mysql")
    return Report(
        created_at="2026-11-30T02:17:00+00:00",
        command="uowstress run --profile nightly",
        system=SystemInfo(
            hostname="bench",
            os="Linux",
            cpu="x86_64",
            cpu_count=2,
            memory_gb=8.0,
            python="3.11",
            sqlalchemy="2.0",
            hypothesis="6",
            uowstress="0.1.0",
        ),
        options=RunOptions(profile="nightly", target="humanoid_training.target:TARGET"),
        summary=Summary(status="passed", exit_status=0, seconds=3600.0),
        scenarios=[_scenario(i, backends[i % 3], samples, rng) for i in range(scenarios)],
    )


def _best(fn: Callable[[], object], runs: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", type=int, default=60)
    parser.add_argument("--samples", type=int, default=5000)
    args = parser.parse_args()

    library = len(plotly.offline.get_plotlyjs().encode())
    one = analyse(_report(1, args.samples))
    one_page = len(render_html(one).encode())
    report = analyse(_report(args.scenarios, args.samples))
    print(f"{args.scenarios} scenarios x {args.samples} transaction times")
    seconds, _ = _best(lambda: analyse(report))
    print(f"analyse (insights, recommendations): {seconds:.2f} s")
    for name, render in (
        ("markdown", render_markdown),
        ("json", report_json),
        ("html", render_html),
    ):
        seconds, text = _best(lambda render=render: render(report))  # type: ignore[misc]
        size = len(str(text).encode())
        print(f"{name:8s} {seconds:6.2f} s  {size / 2**20:7.2f} MB")
    page = len(render_html(report).encode())
    print(
        f"html: plotly.js {library / 2**20:.2f} MB, the rest {(page - library) / 2**20:.2f} MB"
        f" ({args.scenarios} scenarios) against {(one_page - library) / 2**10:.0f} KB for one"
        f" scenario: ratio {(page - library) / max(one_page - library, 1):.1f}"
        f" for {args.scenarios}x the scenarios"
    )


if __name__ == "__main__":
    main()
