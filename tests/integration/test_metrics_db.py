"""QueryTimer, PoolMonitor and index_use on real databases (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import QueuePool

from uowstress.metrics import PoolMonitor, QueryTimer, index_use, pg_disable_seqscan

SELECT_PROBE = "SELECT label FROM metric_probe WHERE id = :id"
# Keys hold the statement as the driver got it: ":id" became "?", "%s" or "%(id)s".
SELECT_PROBE_KEY_PREFIX = "SELECT label FROM metric_probe WHERE id = "
ROWS = 300


@pytest.fixture
def probe_engine(db_url: URL) -> Iterator[Engine]:
    """An engine on the scratch database with a table `metric_probe` of ROWS rows: `indexed`
    has an index, `plain` has none."""
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE metric_probe ("
                " id INTEGER PRIMARY KEY,"
                " indexed INTEGER NOT NULL,"
                " plain INTEGER NOT NULL,"
                " label VARCHAR(40) NOT NULL)"
            )
        )
        conn.execute(text("CREATE INDEX ix_metric_probe_indexed ON metric_probe (indexed)"))
        conn.execute(
            text(
                "INSERT INTO metric_probe (id, indexed, plain, label)"
                " VALUES (:id, :indexed, :plain, :label)"
            ),
            [{"id": n, "indexed": n, "plain": n, "label": f"row {n}"} for n in range(ROWS)],
        )
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE metric_probe"))
    try:
        yield engine
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- QueryTimer


def probe_key(timer: QueryTimer) -> str:
    (key,) = [k for k in timer.counts() if k.startswith(SELECT_PROBE_KEY_PREFIX)]
    return key


def test_query_timer_counts_and_times_statements(probe_engine: Engine) -> None:
    timer = QueryTimer().attach(probe_engine)
    with probe_engine.connect() as conn:
        for n in range(10):
            assert conn.execute(text(SELECT_PROBE), {"id": n}).scalar_one() == f"row {n}"
        conn.execute(text("SELECT COUNT(*)\n  FROM metric_probe")).scalar_one()
    timer.detach()
    with probe_engine.connect() as conn:  # after detach: not counted
        conn.execute(text(SELECT_PROBE), {"id": 1}).scalar_one()

    counts = timer.counts()
    assert counts[probe_key(timer)] == 10
    assert counts["SELECT COUNT(*)"] == 1  # keyed by the first line
    stats = timer.stats()
    select = stats[probe_key(timer)]
    assert select.count == 10
    assert 0 < select.min <= select.p50 <= select.p95 <= select.max < 5.0
    assert timer.total_count == sum(counts.values())
    overall = timer.all_stats()
    assert overall is not None
    assert overall.count == timer.total_count
    assert timer.total_seconds == pytest.approx(overall.mean * overall.count)


def test_query_timer_is_exact_across_threads(probe_engine: Engine) -> None:
    threads, per_thread = 4, 25
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(offset: int) -> None:
        try:
            start.wait()
            with probe_engine.connect() as conn:
                for n in range(per_thread):
                    conn.execute(text(SELECT_PROBE), {"id": (offset + n) % ROWS}).scalar_one()
        except BaseException as error:  # reported below: a thread's failure must fail the test
            errors.append(error)

    with QueryTimer().attach(probe_engine) as timer:
        workers = [threading.Thread(target=work, args=(i * 50,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert errors == []
    assert not timer.attached
    assert timer.counts()[probe_key(timer)] == threads * per_thread
    assert timer.stats()[probe_key(timer)].count == threads * per_thread


def test_query_timer_refuses_a_second_engine(probe_engine: Engine) -> None:
    timer = QueryTimer().attach(probe_engine)
    try:
        with pytest.raises(RuntimeError, match="already attached"):
            timer.attach(probe_engine)
    finally:
        timer.detach()


# --------------------------------------------------------------------------- PoolMonitor


def test_pool_monitor_counts_pool_events(db_url: URL) -> None:
    engine = create_engine(
        db_url, poolclass=QueuePool, pool_size=2, max_overflow=2, pool_timeout=0.2
    )
    monitor = PoolMonitor().attach(engine)
    try:
        held = [engine.connect() for _ in range(3)]  # one beyond pool_size
        assert monitor.checked_out == 3
        for conn in held:
            conn.close()
        for _ in range(9):
            with monitor.checkout() as conn:
                conn.execute(text("SELECT 1")).scalar_one()

        assert monitor.connects == 3
        assert monitor.checkouts == 12
        assert monitor.checkins == 12
        assert monitor.checked_out == 0
        assert monitor.peak_checked_out == 3
        assert monitor.peak_overflow == 1
        assert monitor.efficiency == pytest.approx(12 / 3)
        acquire = monitor.acquire_stats()
        assert acquire is not None
        assert acquire.count == 9

        with engine.connect() as conn:
            conn.invalidate()
        assert monitor.invalidations == 1

        engine.dispose()  # a new pool: the listeners must follow it
        with engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()
        assert monitor.connects >= 4
        assert monitor.checkouts == 14
    finally:
        monitor.detach()
        engine.dispose()
    with engine.connect():
        pass
    assert monitor.checkouts == 14  # detached: no longer counted


def test_pool_monitor_records_waits_and_timeouts(db_url: URL) -> None:
    engine = create_engine(
        db_url, poolclass=QueuePool, pool_size=1, max_overflow=0, pool_timeout=0.3
    )
    monitor = PoolMonitor(wait_threshold_s=0.05).attach(engine)
    try:
        holder = engine.connect()
        with pytest.raises(sqlalchemy.exc.TimeoutError), monitor.checkout():
            pass
        assert monitor.timeouts == 1

        got_it = threading.Event()

        def waiter() -> None:
            with monitor.checkout():
                got_it.set()

        thread = threading.Thread(target=waiter)
        thread.start()
        # The waiter blocks in the pool until the only connection comes back.
        assert not got_it.wait(0.1)
        holder.close()
        thread.join(timeout=5)
        assert got_it.is_set()
        assert monitor.waits == 1
        acquire = monitor.acquire_stats()
        assert acquire is not None
        assert acquire.max >= 0.05
        summary = monitor.as_dict()
        assert (summary["waits"], summary["timeouts"]) == (1, 1)
    finally:
        monitor.detach()
        engine.dispose()


def test_pool_monitor_counts_connections_opened_before_attach(db_url: URL) -> None:
    engine = create_engine(db_url, poolclass=QueuePool, pool_size=2, max_overflow=0)
    try:
        with engine.connect():
            pass  # the pool now holds one open connection
        with PoolMonitor().attach(engine) as monitor:
            for _ in range(4):
                with engine.connect():
                    pass
        assert monitor.connects == 1  # the reused earlier connection, counted once
        assert monitor.checkouts == 4
        assert monitor.efficiency == 4.0
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- index use


def test_index_use_tells_full_scans_from_index_lookups(probe_engine: Engine) -> None:
    backend = probe_engine.dialect.name
    with probe_engine.connect() as conn:
        if backend == "postgresql":
            # On small tables PostgreSQL prefers a seq scan even where an index fits.
            pg_disable_seqscan(conn)
        unindexed = index_use(conn, "SELECT label FROM metric_probe WHERE plain = :v", {"v": 7})
        indexed = index_use(conn, "SELECT label FROM metric_probe WHERE indexed = :v", {"v": 7})
        by_key = index_use(conn, "SELECT label FROM metric_probe WHERE id = :v", {"v": 7})
        conn.rollback()

    assert unindexed.backend == indexed.backend == ("mysql" if backend == "mariadb" else backend)
    assert unindexed.full_scan
    assert unindexed.full_scan_tables == ("metric_probe",)
    assert "metric_probe" in unindexed.plan
    assert not indexed.full_scan, indexed.plan
    assert indexed.full_scan_tables == ()
    assert not indexed.reads_every_row, indexed.plan
    assert "metric_probe" in indexed.plan
    assert not by_key.full_scan, by_key.plan


def test_index_use_tells_an_index_walk_from_a_lookup(probe_engine: Engine) -> None:
    with probe_engine.connect() as conn:
        if probe_engine.dialect.name == "postgresql":
            pg_disable_seqscan(conn)
        walk = index_use(conn, "SELECT indexed FROM metric_probe ORDER BY indexed")
        lookup = index_use(conn, "SELECT indexed FROM metric_probe WHERE indexed = :v", {"v": 3})
        conn.rollback()
    assert not walk.full_scan, walk.plan
    assert walk.index_walk_tables == ("metric_probe",), walk.plan
    assert walk.reads_every_row
    assert lookup.index_walk_tables == (), lookup.plan
    assert not lookup.reads_every_row


def test_index_use_sees_a_full_scan_of_one_side_of_a_join(probe_engine: Engine) -> None:
    sql = (
        "SELECT a.label FROM metric_probe a JOIN metric_probe b ON b.indexed = a.plain"
        " WHERE a.plain > :v"
    )
    with probe_engine.connect() as conn:
        if probe_engine.dialect.name == "postgresql":
            pg_disable_seqscan(conn)
        result = index_use(conn, sql, {"v": 10})
        conn.rollback()
    assert result.full_scan
    assert len(result.full_scan_tables) == 1


def test_pg_disable_seqscan_refuses_other_backends() -> None:
    engine = create_engine("sqlite://")
    with (
        engine.connect() as conn,
        pytest.raises(ValueError, match="for PostgreSQL connections, not 'sqlite'"),
    ):
        pg_disable_seqscan(conn)


@pytest.mark.mysql
@pytest.mark.parametrize("backend", ["mysql"])  # overrides the fixture: this is MySQL's path
def test_index_use_falls_back_to_tabular_explain_on_mysql(
    probe_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with probe_engine.connect() as conn:
        real_execute = conn.execute

        def no_json_format(statement: Any, *args: Any, **kwargs: Any) -> Any:
            # Plays a server that predates EXPLAIN FORMAT=JSON.
            if str(statement).startswith("EXPLAIN FORMAT=JSON"):
                raise sqlalchemy.exc.ProgrammingError(str(statement), {}, Exception("syntax"))
            return real_execute(statement, *args, **kwargs)

        monkeypatch.setattr(conn, "execute", no_json_format)
        scan = index_use(conn, "SELECT label FROM metric_probe WHERE plain = :v", {"v": 7})
        lookup = index_use(conn, "SELECT label FROM metric_probe WHERE indexed = :v", {"v": 7})
    assert scan.full_scan_tables == ("metric_probe",), scan.plan
    assert "type=ALL" in scan.plan
    assert not lookup.full_scan, lookup.plan
