"""A SQLite file the user names is given back as it was: its journal mode and its statistics."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner
from examples.ledger import TARGET, LedgerSystem, LedgerTarget
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from humanoid_training.persistence.engine import make_engine
from tests.integration.test_cleanup import NEW_FILE_SUFFIXES, left_on_a_new_file
from uowstress.cli import main
from uowstress.database import objects_of, prepared_database
from uowstress.errors import ConfigError, DatabaseUnreachable, LeftUndone, UnsafeDatabase
from uowstress.stateful.durability import run_durability
from uowstress.stateful.run import run_acid


def _users_file(path: Path, *, with_statistics: bool) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("create table payroll (id integer primary key, name text)")
        conn.execute("create index payroll_name on payroll (name)")
        conn.executemany("insert into payroll (name) values (?)", [("a",), ("b",), ("b",)])
        if with_statistics:
            conn.execute("analyze")
    return path


def _state(path: Path) -> tuple[str, list[tuple[object, ...]], list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        (mode,) = conn.execute("pragma journal_mode").fetchone()
        names = conn.execute("select type, name from sqlite_master order by name").fetchall()
        stats: list[tuple[object, ...]] = []
        if ("table", "sqlite_stat1") in names:
            stats = conn.execute("select * from sqlite_stat1 order by tbl, idx").fetchall()
        return mode, names, stats
    finally:
        conn.close()


def _use_like_a_run(url: str) -> None:
    """What a run does to the file: the reference engine (WAL), a table of its own with its
    statistics (ANALYZE of that table), the table dropped at the end."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("create table ht_probe (id integer primary key, v integer)"))
            conn.execute(text("create index ht_probe_v on ht_probe (v)"))
            conn.execute(text("insert into ht_probe (v) values (1), (2), (2)"))
            conn.execute(text("analyze ht_probe"))
        with engine.connect() as conn:
            assert conn.execute(text("pragma journal_mode")).scalar() == "wal"
        with engine.begin() as conn:
            conn.execute(text("drop table ht_probe"))
    finally:
        engine.dispose()


@pytest.mark.parametrize("with_statistics", [False, True])
def test_a_users_file_gets_its_journal_mode_and_statistics_back(
    tmp_path: Path, with_statistics: bool
) -> None:
    path = _users_file(tmp_path / "theirs.db", with_statistics=with_statistics)
    before = _state(path)
    assert before[0] == "delete"
    with (
        pytest.warns(LeftUndone) as caught,
        prepared_database(f"sqlite:///{path}", allow_existing_tables=True) as db,
    ):
        _use_like_a_run(db.url)
        assert _state(path)[0] == "wal"  # the run did change it
    assert _state(path) == before
    # The pages of the run's table stay free in the file: said, with what gives them back.
    (warned,) = caught.list
    with sqlite3.connect(path) as conn:
        (free,) = conn.execute("pragma freelist_count").fetchone()
        assert free > 0
        pages = "1 page" if free == 1 else f"{free} pages"
        said = f"{path} keeps the {pages} ({free * 4096:,} bytes) the run's tables used"
        assert said in str(warned.message)
        assert f"sqlite3 {path} VACUUM" in str(warned.message)
        conn.execute("vacuum")
        assert conn.execute("pragma freelist_count").fetchone() == (0,)


def test_a_file_that_cannot_be_put_back_is_named_with_what_to_run(tmp_path: Path) -> None:
    path = _users_file(tmp_path / "theirs.db", with_statistics=False)
    # Another program keeps the file open in WAL mode: its journal mode cannot change back.
    holder = sqlite3.connect(path)
    try:
        url = f"sqlite:///{path}"
        # A warning, not an error: the run's results stand.
        with (
            pytest.warns(LeftUndone) as caught,
            prepared_database(url, allow_existing_tables=True) as db,
        ):
            _use_like_a_run(db.url)
            holder.execute("select count(*) from payroll").fetchone()
            holder.execute("begin")
            holder.execute("select count(*) from payroll").fetchone()
        (warned,) = caught.list
        message = str(warned.message)
        assert f"could not put {path} back" in message
        assert f"sqlite3 {path} 'PRAGMA journal_mode = DELETE; DROP TABLE" in message
    finally:
        holder.close()
    # What could be put back was: the run's statistics table is gone.
    assert _state(path)[1] == [("table", "payroll"), ("index", "payroll_name")]


def test_a_sqlite_uri_is_refused_before_anything_opens_the_file(tmp_path: Path) -> None:
    # Which file a URI filename opens is SQLite's to say: the checks could look at another.
    path = _users_file(tmp_path / "theirs.db", with_statistics=False)
    before = _state(path)
    url = f"sqlite:///file:{path}?mode=rwc&uri=true"
    with (
        pytest.raises(DatabaseUnreachable, match=r"uri=true\) are not supported"),
        prepared_database(url, allow_existing_tables=True),
    ):
        pytest.fail("the body must not run")
    assert _state(path) == before


def test_a_run_that_fails_still_puts_the_file_back_and_keeps_its_error(tmp_path: Path) -> None:
    path = _users_file(tmp_path / "theirs.db", with_statistics=True)
    before = _state(path)
    with (
        pytest.raises(RuntimeError, match="the run's own error"),
        prepared_database(f"sqlite:///{path}", allow_existing_tables=True) as db,
    ):
        _use_like_a_run(db.url)
        raise RuntimeError("the run's own error")
    assert _state(path) == before


def test_a_table_the_target_creates_is_refused_even_with_existing_tables_allowed(
    tmp_path: Path,
) -> None:
    path = _users_file(tmp_path / "theirs.db", with_statistics=False)
    before = _state(path)
    # SQLite's table names ignore case: PAYROLL is the user's payroll.
    with (
        pytest.raises(UnsafeDatabase, match="already holds payroll, which the run creates"),
        prepared_database(f"sqlite:///{path}", allow_existing_tables=True, ours={"PAYROLL"}),
    ):
        pytest.fail("the file was handed to the run")
    assert _state(path) == before
    # Tables of other names share the file, as before.
    with prepared_database(
        f"sqlite:///{path}", allow_existing_tables=True, ours={"ht_robots"}
    ) as db:
        assert db.backend == "sqlite"


def test_the_machine_and_the_durability_check_refuse_a_users_table_of_theirs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table ht_robots (name text)")
        conn.execute("insert into ht_robots values ('theirs')")
    url = f"sqlite:///{path}"
    with pytest.raises(UnsafeDatabase, match="ht_robots"):
        run_acid(url, allow_existing_tables=True, reproducers_dir=tmp_path)
    with pytest.raises(UnsafeDatabase, match="ht_robots"):
        run_durability(url, kills=1, allow_existing_tables=True)
    with sqlite3.connect(path) as conn:
        assert conn.execute("select name from ht_robots").fetchall() == [("theirs",)]


class _WithAudit(LedgerTarget):
    """connect creates a table that `tables` does not name."""

    def connect(
        self, url: str, options: Mapping[str, str], *, isolation_level: str | None = None
    ) -> LedgerSystem:
        system = super().connect(url, options, isolation_level=isolation_level)
        with system.engine.begin() as conn:
            conn.execute(text("CREATE TABLE ledger_audit (note VARCHAR(20))"))
        return system


def test_what_a_target_creates_is_found_on_a_database_of_its_backend(server_url: str) -> None:
    assert objects_of(TARGET, {}, None, server_url) >= {"ledger_accounts", "ledger_entries"}
    with pytest.raises(ConfigError, match="created table ledger_audit that its `tables`"):
        objects_of(_WithAudit(), {}, None, server_url)


class _ServerGoneAtDispose(LedgerTarget):
    """Its system's connection is lost as it drops its tables (a server restart, a killed
    connection)."""

    def connect(
        self, url: str, options: Mapping[str, str], *, isolation_level: str | None = None
    ) -> LedgerSystem:
        system = super().connect(url, options, isolation_level=isolation_level)

        def lost() -> None:
            system.engine.dispose()
            raise sa_exc.OperationalError(
                "DROP TABLE ledger_entries", {}, ConnectionError("Lost connection during query")
            )

        system.dispose = lost  # type: ignore[method-assign]
        return system


def test_a_server_failing_while_the_target_is_set_up_stops_the_run_with_an_error(
    server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DatabaseUnreachable, match="Lost connection during query"):
        objects_of(_ServerGoneAtDispose(), {}, None, server_url)
    # The run says so before anything runs: exit 2, no traceback.
    (tmp_path / "gone_target.py").write_text(
        "from tests.integration.test_database import _ServerGoneAtDispose\n"
        "TARGET = _ServerGoneAtDispose()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(
        main,
        ["run", "--target", "gone_target:TARGET", "--db-url", server_url,
         "--output-dir", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "the database failed while target" in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_new_file_a_killed_run_left_is_taken_back_by_the_next_run_on_its_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "new.db"
    left_on_a_new_file(path)
    url = f"sqlite:///{path}"
    # uowstress's own leftover, not a user's file holding foreign tables: removed, then the
    # run starts on a new file.
    with caplog.at_level(logging.WARNING, "uowstress.database"), prepared_database(url) as db:
        assert db.url == url
        assert not path.exists() or not _state(path)[1]
    assert f"removing {path}, left by a uowstress run that was killed" in caplog.text
    assert list(tmp_path.iterdir()) == []
    # And with --allow-existing-tables, where it was taken for the user's table before.
    left_on_a_new_file(path)
    with prepared_database(url, allow_existing_tables=True, ours={"ht_assessments"}):
        pass
    assert not any(Path(f"{path}{suffix}").exists() for suffix in NEW_FILE_SUFFIXES)


def test_a_new_file_another_run_is_using_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    url = f"sqlite:///{path}"
    with prepared_database(url):
        with sqlite3.connect(path) as conn:
            conn.execute("create table ht_assessments (id integer primary key)")
        with (
            pytest.raises(UnsafeDatabase, match="created by another uowstress run, still going"),
            prepared_database(url),
        ):
            pytest.fail("the file was handed to a second run")
        assert _state(path)[1] == [("table", "ht_assessments")]
    assert list(tmp_path.iterdir()) == []
