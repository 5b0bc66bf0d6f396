"""Insights and recommendations: each rule speaks on a figure beyond its trigger, with that
figure, and stays silent below it."""

from __future__ import annotations

from typing import Any

import pytest

from tests import report_factory as rf
from uowstress.report import insights as rules
from uowstress.report.model import IndexCheck, MemoryProfile, ScalabilityPoint, ScenarioResult
from uowstress.report.views import metric_rows


def _steady(n: int = 100) -> list[float]:
    """Transaction times evenly spread over 10-11 ms."""
    return [0.010 + 0.001 * i / n for i in range(n)]


def _with_tail(slow: int, seconds: float, n: int = 100) -> list[float]:
    return _steady(n - slow) + [seconds] * slow


def _healthy(**fields: Any) -> ScenarioResult:
    return rf.scenario("healthy", samples=_steady(), **fields)


def _recs(result: ScenarioResult) -> dict[str, float]:
    return {r.metric: r.value for r in rules.recommendations(rf.report([result]))}


def _insights(result: ScenarioResult) -> dict[str, str]:
    return {i.title: i.text for i in rules.insights(rf.report([result]))}


def test_a_healthy_scenario_gets_no_recommendation_and_no_insight() -> None:
    assert _recs(_healthy()) == {}
    assert _insights(_healthy()) == {}


def test_every_recommendation_names_its_scenario_and_figure() -> None:
    result = rf.scenario(
        "busy",
        samples=_with_tail(3, 0.5),
        transactions=rf.outcomes(100, 50, conflicts=40, deadlocks=10),
        attempts=rf.outcomes(200, 50, conflicts=130, deadlocks=20),
        threads=10,
    )
    recs = rules.recommendations(rf.report([result]))
    assert {r.metric for r in recs} == {"success_rate", "deadlock_rate", "p99/p50"}
    for rec in recs:
        assert rec.scenario == result.id
    values = {r.metric: r.value for r in recs}
    assert values["success_rate"] == 0.5
    assert values["deadlock_rate"] == 0.1
    assert result.latency is not None
    assert values["p99/p50"] == pytest.approx(result.latency.p99 / result.latency.p50)


def test_long_tail() -> None:
    # p99/p50: 100 ms against ~10.5 ms is about 9.5: an insight, not yet a recommendation.
    tail = rf.scenario("tail", samples=_with_tail(2, 0.100))
    assert "Long tail" in _insights(tail) and "p99/p50" not in _recs(tail)
    assert "p99 is 9.5x p50" in _insights(tail)["Long tail"]
    worse = rf.scenario("worse", samples=_with_tail(2, 0.200))
    assert _recs(worse)["p99/p50"] > rules.SKEW_RECOMMEND
    short = rf.scenario("short", samples=_with_tail(2, 0.040))
    assert "Long tail" not in _insights(short)


def test_outliers_beyond_p75_plus_3_iqr() -> None:
    three = _insights(rf.scenario("three", samples=_with_tail(3, 0.030)))
    assert "3 of 100 transactions (3.0 %)" in three["Outliers"]
    assert "Outliers" not in _insights(rf.scenario("two", samples=_with_tail(2, 0.030)))
    # Slow but not beyond the fence: 11.8 ms is within p75 + 3 IQR (about 12.3 ms) here.
    assert "Outliers" not in _insights(rf.scenario("near", samples=_with_tail(5, 0.0118)))
    assert rules.outliers([1.0, 1.0, 1.0, 1.0, 10.0]) == (1, 1.0)


def _swept(ops: list[tuple[int, float]]) -> ScenarioResult:
    single = ops[0][1]
    return _healthy(
        scalability=[
            ScalabilityPoint(threads=t, ops_per_second=o, efficiency=o / (t * single))
            for t, o in ops
        ]
    )


def test_scalability_efficiency() -> None:
    poor = _swept([(1, 100.0), (2, 150.0), (4, 190.0), (8, 210.0)])
    text = _insights(poor)["Scalability"]
    assert "8 threads give 2.1x the throughput of 1: 26 % efficiency" in text
    assert _recs(poor)["scalability_efficiency"] == pytest.approx(0.2625)
    good = _swept([(1, 100.0), (2, 190.0), (4, 360.0), (8, 640.0)])
    assert "scalability_efficiency" not in _recs(good)
    peaked = _swept([(1, 100.0), (2, 120.0), (4, 90.0), (8, 60.0)])
    assert "Throughput peaks at 2 threads" in _insights(peaked)["Scalability"]
    assert "best at 2 threads" in rules.recommendations(rf.report([peaked]))[0].text
    alone = _swept([(1, 100.0), (2, 80.0), (4, 60.0)])
    assert "Throughput peaks at 1 thread (" in _insights(alone)["Scalability"]


def test_memory_growth() -> None:
    grown = _healthy(memory=MemoryProfile(peak_mb=300.0, growth_mb=60.0))
    assert _recs(grown)["memory_growth_mb"] == 60.0
    assert "grew by 60.0 MB" in _insights(grown)["Memory growth"]
    steady = _healthy(memory=MemoryProfile(peak_mb=300, growth_mb=40))
    assert "memory_growth_mb" not in _recs(steady)


@pytest.mark.parametrize(
    ("backend", "advice"), [("sqlite", "IMMEDIATE"), ("postgresql", "retry conflicts")]
)
def test_low_success_rate_under_contention(backend: str, advice: str) -> None:
    result = rf.scenario(
        "contended",
        backend=backend,
        samples=_steady(),
        threads=10,
        transactions=rf.outcomes(100, 52, conflicts=48),
        attempts=rf.outcomes(300, 52, conflicts=248),
    )
    recs = rules.recommendations(rf.report([result]))
    success = next(r for r in recs if r.metric == "success_rate")
    assert success.value == 0.52
    assert "success rate 52.0 % under 10 concurrent threads" in success.text
    assert advice in success.text
    fine = rf.scenario(
        "fine",
        backend=backend,
        samples=_steady(),
        transactions=rf.outcomes(100, 85, conflicts=15),
        attempts=rf.outcomes(100, 85, conflicts=15),
    )
    assert "success_rate" not in _recs(fine)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_conflicts_the_system_raised_itself_get_their_own_remedy(backend: str) -> None:
    """Version conflicts are writers that did not queue for the aggregate: beginning
    IMMEDIATE, which a system may already do, is not the remedy for them."""
    own = rf.scenario(
        "versions",
        backend=backend,
        samples=_steady(),
        threads=10,
        transactions=rf.outcomes(100, 100),
        attempts=rf.outcomes(130, 100, conflicts=30, system_conflicts=25),
    )
    text = next(r.text for r in rules.recommendations(rf.report([own])))
    assert "raised by the system itself" in text and "FOR UPDATE" in text
    assert "refused" not in text
    assert "the system raised 25 itself" in _insights(own)["Conflicts"]
    refused = rf.scenario(
        "locks",
        backend=backend,
        samples=_steady(),
        transactions=rf.outcomes(100, 100),
        attempts=rf.outcomes(130, 100, conflicts=30, system_conflicts=5),
    )
    text = next(r.text for r in rules.recommendations(rf.report([refused])))
    assert "the database refused them" in text and "raised by the system" not in text
    assert ("IMMEDIATE" in text) == (backend == "sqlite")
    low = rf.scenario(
        "low",
        backend=backend,
        samples=_steady(),
        threads=10,
        transactions=rf.outcomes(100, 52, conflicts=48, system_conflicts=48),
        attempts=rf.outcomes(300, 52, conflicts=248, system_conflicts=240),
    )
    success = next(r for r in rules.recommendations(rf.report([low])) if r.metric == "success_rate")
    assert "240 of 248 conflicts" in success.text and "IMMEDIATE before reading" in success.text


def test_conflicts_saved_by_retries() -> None:
    retried = _healthy(
        transactions=rf.outcomes(100, 100), attempts=rf.outcomes(120, 100, conflicts=20)
    )
    assert _recs(retried) == {"conflict_rate": pytest.approx(20 / 120)}
    calm = _healthy(transactions=rf.outcomes(100, 100), attempts=rf.outcomes(104, 100, 4))
    assert _recs(calm) == {}


def test_deadlocks() -> None:
    locked = _healthy(attempts=rf.outcomes(100, 98, deadlocks=2))
    assert _recs(locked)["deadlock_rate"] == 0.02
    assert "take row locks in one order" in rules.recommendations(rf.report([locked]))[0].text
    assert "deadlock_rate" not in _recs(_healthy(attempts=rf.outcomes(1000, 995, deadlocks=5)))


def test_errors_that_are_not_contention() -> None:
    failing = _healthy(transactions=rf.outcomes(100, 97), errors={"IntegrityError": 3})
    assert _recs(failing)["error_rate"] == 0.03
    assert "IntegrityError" in _insights(failing)["Errors"]
    assert "error_rate" not in _recs(_healthy(transactions=rf.outcomes(1000, 999)))


def test_full_table_scans() -> None:
    def checked(full: bool) -> ScenarioResult:
        return _healthy(
            index_use=[
                IndexCheck(
                    query="find_robots_by_skill",
                    statement="SELECT * FROM robot_skills WHERE skill = ?",
                    full_scan=full,
                    full_scan_tables=["robot_skills"] if full else [],
                )
            ]
        )

    recs = rules.recommendations(rf.report([checked(True)]))
    assert [(r.metric, r.value) for r in recs] == [("full_scan:find_robots_by_skill", 1.0)]
    assert "reads robot_skills without an index" in recs[0].text
    assert _recs(checked(False)) == {}


def test_pool_waits_and_timeouts() -> None:
    waiting = _healthy(pool={"checkouts": 100.0, "waits": 10.0, "timeouts": 0.0})
    assert _recs(waiting) == {"pool.wait_share": 0.1}
    assert "10 of 100 checkouts waited" in _insights(waiting)["Pool waits"]
    assert _recs(_healthy(pool={"checkouts": 100.0, "waits": 1.0, "timeouts": 0.0})) == {}
    timing_out = _healthy(pool={"checkouts": 100.0, "waits": 1.0, "timeouts": 2.0})
    assert _recs(timing_out) == {"pool.timeouts": 2.0}


def test_descriptors_beyond_the_pools_connections() -> None:
    pool = {"connects": 2.0, "closes": 0.0}
    leaking = _healthy(open_fds_before=10, open_fds_after=30, pool=pool)
    assert _recs(leaking) == {"open_fds_growth": 30 - 10 - 2 * rules.FDS_PER_CONNECTION}
    pooled = _healthy(open_fds_before=10, open_fds_after=16, pool=pool)
    assert _recs(pooled) == {}


def test_skipped_scenarios_say_nothing() -> None:
    skipped = rf.scenario(
        "skipped",
        status="skipped",
        samples=_with_tail(3, 1.0),
        memory=MemoryProfile(peak_mb=1, growth_mb=500),
    )
    assert rules.insights(rf.report([skipped])) == []
    assert rules.recommendations(rf.report([skipped])) == []


def test_the_scenario_figures_say_how_many_conflicts_the_system_raised_itself() -> None:
    def note(result: ScenarioResult) -> str:
        return next(r.note for r in metric_rows(result) if r.label == "conflict rate")

    own = _healthy(
        transactions=rf.outcomes(100, 100),
        attempts=rf.outcomes(130, 100, conflicts=30, system_conflicts=25),
    )
    assert (
        note(own)
        == "of attempts; 25 of 30 raised by the system itself (no database error behind them)"
    )
    refused = _healthy(transactions=rf.outcomes(100, 100), attempts=rf.outcomes(130, 100, 30))
    assert note(refused) == "of attempts"
