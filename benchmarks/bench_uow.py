"""What committing one typical aggregate change through the reference Unit of Work costs,
against the raw DB-API driver running exactly the same SQL.

The typical change: a robot with 3 skills and 20-40 assessments in its history is loaded (one
SELECT: the root row with its skill rows and the length of its history, whose entries are read
only when used), assessed once on a skill it already has (one SELECT by primary key: does the
history hold the assessment's id already? The score rises in two cases of three), and the Unit
of Work commits (UPDATE of the root's version, UPDATE of the score when it rose, INSERT of the
assessment, INSERT of the outbox event).

How: two scratch databases of one backend are seeded with the same robots. Each transaction is
run first through `SqlAlchemyUnitOfWork` on database A, whose engine records every statement and
its parameters as handed to the driver cursor (SQLAlchemy's `before_cursor_execute` event, so
the recording is paid by the Unit of Work side); then the raw driver connection (sqlite3,
psycopg, PyMySQL; opened with the same connect-time settings: WAL, synchronous, foreign keys)
replays exactly those statements and parameters on database B in a transaction of its own,
fetching every result, and commits. The two sides alternate transaction by transaction, so a
load on the shared machine hits both alike. The Unit of Work side is timed from `with uow:` to
the end of the block (pool check-out and return, loading, the domain's `assess`, diffing,
writing, commit); the raw side from its first statement to its commit. Reported: the mean
microseconds per transaction of each side after a warm-up, and their ratio. At the end both
databases must hold the same robots, skills and history, which shows the raw side did the
same work.

SQLite runs on a file in the system's temporary directory (the benchmark prints the file system
it is on: fsync on tmpfs is free and would flatter both sides alike).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

if __package__ in (None, ""):
    # Run as a script: the repository root holds the benchmarks package.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, event, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import ExecuteStyle

from benchmarks import verdicts
from humanoid_training.domain import HumanoidRobot, SkillAssessment, SkillType
from humanoid_training.persistence import tables as t
from humanoid_training.persistence.engine import EngineOptions, begin_statement, make_engine
from humanoid_training.persistence.unit_of_work import SqlAlchemyUnitOfWork
from uowstress.database import DEFAULT_URLS
from uowstress.scratch import backend_name, reachable, scratch_database

GOAL = 1.5
SKILLS = (SkillType.POSTURAL_CONTROL, SkillType.STATIC_BALANCE, SkillType.DYNAMIC_BALANCE)
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


@dataclass(frozen=True)
class Statement:
    """One call on the driver's cursor, as the Unit of Work made it."""

    sql: str
    parameters: Any
    many: bool


@dataclass(frozen=True)
class UowFigures:
    label: str  # e.g. "SQLite synchronous=FULL"
    transactions: int
    statements_per_transaction: float
    uow_us: float  # mean microseconds per transaction through the Unit of Work
    raw_us: float  # mean microseconds per transaction on the raw driver
    uow_median_us: float
    raw_median_us: float
    filesystem: str | None = None  # where the SQLite file lives

    @property
    def ratio(self) -> float:
        return self.uow_us / self.raw_us


def _assessment(n: int, skill: SkillType, score: float) -> SkillAssessment:
    return SkillAssessment(
        id=f"a{n}",
        skill=skill,
        score=score,
        confidence=0.8,
        evidence=0.7,
        assessed_at=EPOCH + timedelta(seconds=n),
    )


def _seed(engine: Engine, robots: int, history: int) -> None:
    """`robots` robots, each with the 3 skills and `history` assessments."""
    uow = SqlAlchemyUnitOfWork(engine)
    with uow:
        n = 0
        for r in range(robots):
            robot = HumanoidRobot.create(f"robot {r}", id=f"r{r}")
            for i in range(history):
                n += 1
                robot.assess(_assessment(n, SKILLS[i % 3], 0.2 + 0.3 * i / history))
            uow.robots.add(robot)
        uow.commit()


def _change(k: int, robots: int) -> tuple[str, SkillAssessment]:
    """The k-th typical change: which robot, and the assessment it gets."""
    # Scores climb slowly, with every third one lower than the best so far (no score update).
    score = min(1.0, 0.5 + k / 10_000) - (0.3 if k % 3 == 2 else 0.0)
    return f"r{k % robots}", _assessment(1_000_000 + k, SKILLS[k % 3], score)


def _contents(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return [
            sorted(tuple(r) for r in conn.execute(select(t.robots.c.id, t.robots.c.version))),
            sorted(tuple(r) for r in conn.execute(select(t.robot_skills))),
            sorted(tuple(r) for r in conn.execute(select(t.assessments))),
            sorted(
                tuple(r)
                for r in conn.execute(select(t.outbox.c.aggregate_id, t.outbox.c.event_type))
            ),
        ]


def _filesystem(path: str) -> str:
    """The file system type of the mount holding `path` (Linux /proc/mounts), or "unknown"."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                _dev, mount, fstype, *_ = line.split()
                if path.startswith(mount) and len(mount) > len(best):
                    best, kind = mount, fstype
    except OSError:
        pass
    return f"{kind} ({best or '?'})"


@contextmanager
def _databases(url: str, count: int) -> Iterator[tuple[list[URL], str | None]]:
    """`count` fresh databases of the backend of `url`, and the file system of SQLite's."""
    if backend_name(url) == "sqlite":
        # A fresh directory in the system's temporary directory, unless the URL names a file.
        database = make_url(url).database
        parent = os.path.dirname(os.path.abspath(database)) if database else tempfile.gettempdir()
        with tempfile.TemporaryDirectory(prefix="uows_bench_", dir=parent) as directory:
            base = make_url(f"sqlite:///{directory}/x.db")
            yield (
                [base.set(database=f"{directory}/{i}.db") for i in range(count)],
                _filesystem(os.path.realpath(directory)),
            )
        return
    with ExitStack() as stack:
        yield [stack.enter_context(scratch_database(url)) for _ in range(count)], None


def _record(engine: Engine) -> list[Statement]:
    """Record what `engine` hands its driver: every cursor call, and SQLite's BEGIN and
    ROLLBACK (which the reference engine's dialect sends on the driver connection itself, see
    engine.py)."""
    recorded: list[Statement] = []

    def cursor_call(
        conn: Any, cursor: Any, sql: str, parameters: Any, context: Any, many: bool
    ) -> None:
        # insertmanyvalues batches are single executes of a rewritten statement.
        style = getattr(context, "execute_style", None)
        recorded.append(Statement(sql, parameters, style is ExecuteStyle.EXECUTEMANY))

    def begin(conn: Any) -> None:
        # The event comes just before the dialect's BEGIN: the BEGIN of a unit of work's write
        # phase (after the rollback below ended its read transaction) is told apart there.
        sql = begin_statement(conn)
        if sql is not None:
            recorded.append(Statement(sql, (), False))

    def rollback(conn: Any) -> None:
        if conn.dialect.name == "sqlite":
            recorded.append(Statement("ROLLBACK", (), False))

    event.listen(engine, "before_cursor_execute", cursor_call)
    event.listen(engine, "begin", begin)
    event.listen(engine, "rollback", rollback)
    return recorded


def _deduplicated(recorded: list[Statement]) -> list[Statement]:
    """The statements, with BEGIN once: an engine that sends its BEGIN through SQLAlchemy (a
    "begin" event running it as a statement) shows it to both recorders."""
    out: list[Statement] = []
    for statement in recorded:
        if out and statement.sql.startswith("BEGIN") and statement == out[-1]:
            continue
        out.append(statement)
    return out


def _typical_change(engine: Engine, change: tuple[str, SkillAssessment]) -> None:
    robot_id, assessment = change
    uow = SqlAlchemyUnitOfWork(engine)
    with uow:
        uow.robots.get(robot_id).assess(assessment)
        uow.commit()


def measure_uow(
    url: str,
    *,
    synchronous: Synchronous = "FULL",
    transactions: int = 400,
    warmup: int = 50,
    robots: int = 20,
    history: int = 20,
) -> UowFigures:
    """Time `transactions` typical changes through the Unit of Work and through the raw driver
    replaying the same statements (see the module's docstring)."""
    backend = backend_name(url)
    ok, detail = reachable(url)
    if not ok:
        raise RuntimeError(detail)
    options = EngineOptions(sqlite_synchronous=synchronous)
    label = f"SQLite synchronous={synchronous}" if backend == "sqlite" else detail
    total = warmup + transactions
    with _databases(url, 3) as (urls, filesystem):
        capture_engine, uow_engine, raw_engine = engines = [make_engine(u, options) for u in urls]
        try:
            for engine in engines:
                t.metadata.create_all(engine)
                _seed(engine, robots, history)
            # Pass 1 records the statements of every change on a database of its own, so that
            # the timed Unit of Work runs with no listener attached (any listener makes
            # SQLAlchemy dispatch events around every statement).
            recorded = _record(capture_engine)
            # The changes are made before any timing: the timed side starts at `with uow:`.
            changes = [_change(k, robots) for k in range(total)]
            scripts: list[list[Statement]] = []
            for k in range(total):
                recorded.clear()
                _typical_change(capture_engine, changes[k])
                scripts.append(_deduplicated(recorded))
            # Pass 2, timed: the same changes through the Unit of Work on database A, each
            # followed by the raw driver replaying its statements on database B. The raw side
            # uses the driver's own connection, set up by the same connect hook (so SQLite
            # gets the same PRAGMAs), without SQLAlchemy from there on.
            fairy = raw_engine.raw_connection()
            raw = fairy.driver_connection
            uow_ns: list[int] = []
            raw_ns: list[int] = []
            try:
                for k in range(total):
                    started = time.perf_counter_ns()
                    _typical_change(uow_engine, changes[k])
                    uow_time = time.perf_counter_ns() - started
                    started = time.perf_counter_ns()
                    _replay(raw, scripts[k])
                    raw_time = time.perf_counter_ns() - started
                    if k >= warmup:
                        uow_ns.append(uow_time)
                        raw_ns.append(raw_time)
            finally:
                fairy.close()
            if not _contents(capture_engine) == _contents(uow_engine) == _contents(raw_engine):
                raise AssertionError(
                    "the raw replay left different contents from the Unit of Work: the"
                    " benchmark does not compare like with like"
                )
        finally:
            for engine in engines:
                engine.dispose()
    return UowFigures(
        label=label,
        transactions=transactions,
        statements_per_transaction=statistics.fmean(len(s) for s in scripts[warmup:]),
        uow_us=statistics.fmean(uow_ns) / 1000,
        raw_us=statistics.fmean(raw_ns) / 1000,
        uow_median_us=statistics.median(uow_ns) / 1000,
        raw_median_us=statistics.median(raw_ns) / 1000,
        filesystem=filesystem,
    )


def _replay(raw: Any, statements: list[Statement]) -> None:
    cursor = raw.cursor()
    try:
        for s in statements:
            if s.many:
                cursor.executemany(s.sql, s.parameters)
            else:
                cursor.execute(s.sql, s.parameters)
            if cursor.description is not None:
                cursor.fetchall()
        raw.commit()
    finally:
        cursor.close()


@dataclass(frozen=True)
class UowRun:
    """One configuration of the benchmark: its figures, or why it was not measured."""

    name: str  # e.g. "SQLite FULL"
    goal: float | None  # None: informational
    figures: UowFigures | None
    skipped: str | None = None


# (name, backend, SQLite synchronous, goal); the goal applies to SQLite FULL and PostgreSQL.
CONFIGURATIONS: tuple[tuple[str, str, Synchronous, float | None], ...] = (
    ("SQLite FULL", "sqlite", "FULL", GOAL),
    ("SQLite NORMAL", "sqlite", "NORMAL", None),
    ("PostgreSQL", "postgresql", "FULL", GOAL),
    ("MariaDB", "mysql", "FULL", None),
)


def measure_all(
    *,
    transactions: int = 400,
    warmup: int = 50,
    backends: tuple[str, ...] = ("sqlite", "postgresql", "mysql"),
    urls: dict[str, str] | None = None,
) -> list[UowRun]:
    """Every configuration whose backend is in `backends`; an unreachable server is reported
    as not measured."""
    chosen = {**DEFAULT_URLS, **(urls or {})}
    runs = []
    for name, backend, synchronous, goal in CONFIGURATIONS:
        if backend not in backends:
            continue
        url = chosen[backend]
        ok, detail = reachable(url)
        if not ok:
            runs.append(UowRun(name, goal, None, detail))
            continue
        figures = measure_uow(
            url, synchronous=synchronous, transactions=transactions, warmup=warmup
        )
        runs.append(UowRun(name, goal, figures))
    return runs


def describe(f: UowFigures, goal: float | None = GOAL) -> str:
    verdict = verdicts.at_most(f.ratio, goal) if goal is not None else "(informational)"
    where = f" on {f.filesystem}" if f.filesystem else ""
    return (
        f"{f.label}{where}: Unit of Work {f.uow_us:6.0f} us/txn (median {f.uow_median_us:.0f}),"
        f" raw driver {f.raw_us:6.0f} us/txn (median {f.raw_median_us:.0f}),"
        f" {f.statements_per_transaction:.1f} statements/txn, {f.transactions} txns;"
        f" ratio {f.ratio:.2f} {verdict}"
    )


def describe_all(runs: list[UowRun]) -> list[str]:
    lines = [
        "typical change: load a robot with 3 skills and 20-40 assessments, assess one skill,"
        " commit (statements recorded from the Unit of Work, replayed on the raw driver)"
    ]
    for run in runs:
        if run.figures is None:
            lines.append(f"  {run.name}: not measured: {run.skipped}")
        else:
            lines.append("  " + describe(run.figures, run.goal))
    return lines


def goals(runs: list[UowRun]) -> list[verdicts.Goal]:
    return [
        verdicts.Goal(
            f"Unit of Work / raw driver, {run.name}",
            "-" if run.figures is None else f"ratio {run.figures.ratio:.2f} (<= {run.goal:g})",
            None if run.figures is None else run.figures.ratio <= run.goal,
        )
        for run in runs
        if run.goal is not None
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--transactions", type=int, default=400)
    parser.add_argument("--backends", default="sqlite,postgresql,mysql")
    args = parser.parse_args(argv)
    runs = measure_all(transactions=args.transactions, backends=tuple(args.backends.split(",")))
    for text in describe_all(runs):
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
