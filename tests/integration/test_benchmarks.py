"""Each benchmark runs at a tiny size and returns sane figures (nothing here is about time)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from benchmarks import (
    bench_checker,
    bench_isolation,
    bench_memory,
    bench_tester,
    bench_uow,
    run,
)

from humanoid_training.domain import HumanoidRobot
from humanoid_training.target import TARGET
from tests.integration.support import postgres_only


def test_uow_benchmark_replays_the_same_statements_on_the_raw_driver(server_url: str) -> None:
    # measure_uow itself refuses figures from two databases left with different contents.
    f = bench_uow.measure_uow(server_url, transactions=5, warmup=1, robots=2, history=2)
    assert f.transactions == 5
    assert f.uow_us > 0 and f.raw_us > 0 and f.uow_median_us > 0 and f.raw_median_us > 0
    # Loading the robot (two queries), the version bump, the assessment and its event.
    assert f.statements_per_transaction >= 5
    assert math.isfinite(f.ratio) and f.ratio > 0
    assert "ratio" in bench_uow.describe(f) and "goal <= 1.5" in bench_uow.describe(f)


def test_uow_benchmark_names_a_server_it_cannot_reach() -> None:
    runs = bench_uow.measure_all(
        transactions=2,
        warmup=0,
        backends=("postgresql",),
        urls={"postgresql": "postgresql://nobody@127.0.0.1:1/none"},
    )
    assert [(r.name, r.figures) for r in runs] == [("PostgreSQL", None)]
    assert runs[0].skipped and "127.0.0.1:1" in runs[0].skipped
    assert [g.met for g in bench_uow.goals(runs)] == [None]


def test_tester_benchmark_counts_steps_of_every_machine() -> None:
    f = bench_tester.measure_tester(examples=3, steps=3)
    for machine in (f.bare, f.acid, f.drawing, f.in_memory):
        assert machine.steps > 0 and machine.examples > 0
        assert machine.wall_s > 0 and machine.cpu_s > 0
        assert machine.steps <= machine.examples * 3 + machine.examples  # rules + initialize
    assert math.isfinite(f.ratio) and f.ratio > 0
    assert any("goal >= 0.4" in line for line in bench_tester.describe(f))
    printed = bench_tester.describe(f)
    in_memory = f.in_memory.steps / f.in_memory.wall_s / (f.bare.steps / f.bare.wall_s)
    assert any(
        "in-memory Unit of Work" in line and f"ratio {in_memory:.3f}," in line for line in printed
    )


def test_in_memory_system_keeps_its_commits_apart_from_the_database(tmp_path: Path) -> None:
    # The scale machine's system: what it commits is what it reads back, the database stays
    # empty, and a reset forgets the commits.
    system = bench_tester.IN_MEMORY_TARGET.connect(f"sqlite:///{tmp_path}/lab.db", {})
    try:
        empty = system.committed_state()
        with system.unit_of_work() as uow:
            uow.robots.add(HumanoidRobot.create("Ada", id="r1"))
            uow.commit()
        state = system.committed_state()
        assert list(state["robots"]) == ["r1"] and system.invariants(state) == []
        on_disk = TARGET.connect(f"sqlite:///{tmp_path}/lab.db", {})
        try:
            assert on_disk.committed_state() == empty
        finally:
            on_disk.dispose()
        system.reset()
        assert system.committed_state() == empty
    finally:
        system.dispose()


def test_memory_benchmark_reads_growth_after_the_warm_up() -> None:
    f = bench_memory.measure_memory(examples=25, warmup=5, steps=3)
    assert f.acid.examples >= 25 and f.bare.examples >= 25
    for growth in (f.acid, f.bare):
        assert growth.start_mb > 10 and growth.end_mb > 10  # a Python process with SQLAlchemy
        assert math.isfinite(growth.per_1000_mb)
    assert any("goal <= 20 MB" in line for line in bench_memory.describe(f))


def test_checker_benchmark_finds_the_injected_anomalies() -> None:
    f = bench_checker.measure_checker(small=300, large=3_000, rounds=2)
    assert f.small.transactions >= 300 and f.large.transactions >= 3_000
    assert f.small.cpu_s > 0 and f.large.cpu_s > 0 and f.ratio > 0
    # Each history analysed once per round; the goal's ratio is of the best times.
    assert len(f.round_ratios) == 2 and all(r > 0 for r in f.round_ratios)
    assert any("best times of 2 rounds" in t for t in bench_checker.describe(f))
    # One lost update, write skew and aborted read are injected in the larger history.
    assert f.large.found, f.large.found
    assert [g.met is not None for g in bench_checker.goals(f)] == [True, True]
    assert f.beyond is not None and f.beyond.transactions >= 6_000
    # The graph grows with the history, and the description shows how much.
    assert 0 < f.small.edges < f.large.edges < f.beyond.edges
    assert any(f"{f.large.edges / f.small.edges:.2f} times" in t for t in bench_checker.describe(f))


def test_checker_benchmark_times_predicate_reads_followed_by_matching_writes() -> None:
    f = bench_checker.measure_checker(
        small=300, large=3_000, rounds=2, beyond=False, shape="sessions"
    )
    assert f.beyond is None and len(f.round_ratios) == 2
    # One phantom is injected in the larger history.
    assert f.large.found == {"G2": 1}, f.large.found
    goals = bench_checker.goals(f)
    assert [g.met is not None for g in goals] == [True, True]
    assert all("predicate reads" in g.name for g in goals)
    assert any("shape sessions" in t for t in bench_checker.describe(f))
    # Each read is followed by every later session of its robot: the graph must not grow with
    # the square of the history.
    assert f.small.edges < f.large.edges < 12 * f.small.edges


def test_checker_benchmark_refuses_zero_rounds() -> None:
    with pytest.raises(ValueError, match="at least once"):
        bench_checker.measure_checker(small=10, large=20, rounds=0)


def test_checker_benchmark_counts_the_edges_of_the_dependency_graph() -> None:
    from uowstress.history import r, txn, w

    history = [
        txn(1, session=0, ops=[w("x", 1)], commit=1),
        txn(2, session=1, ops=[r("x", 1)], commit=2),  # wr T1 -> T2
        txn(3, session=0, ops=[w("x", 2)], commit=3),  # ww T1 -> T3, rw T2 -> T3
    ]
    assert bench_checker.edges(history) == 3
    assert bench_checker.edges(history[:2]) == 1


def test_checker_benchmark_lists_stay_short_as_the_history_grows() -> None:
    from collections import Counter

    appends = Counter(
        op.key for t in bench_checker.build(20_000) for op in t.ops if op.kind == "append"
    )
    assert max(appends.values()) <= bench_checker.APPENDS_PER_LIST
    assert len(appends) > bench_checker.LIST_KEYS  # lists were retired and replaced


@postgres_only
def test_isolation_benchmark_times_a_narrow_search(server_url: str) -> None:
    f = bench_isolation.measure_isolation(
        server_url, budget_s=6, levels=["READ COMMITTED"], anomalies=["P4"]
    )
    assert f.total_s > 0
    assert [(c.level, c.anomaly) for c in f.report.results] == [("read committed", "P4")]
    assert f.without_reproducer == []  # an observed cell always has its steps
    assert any("goal <= 120 s" in line for line in bench_isolation.describe(f))


def test_the_one_command_runs_a_subset_and_sums_up_the_goals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run.main(["checker", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "== checker" in out and "== goals" in out and "== uow" not in out


def test_the_one_command_refuses_an_unknown_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run.main(["speed"])
    assert exited.value.code == 2
    assert "unknown benchmark(s) speed; choose from uow, tester" in capsys.readouterr().err
