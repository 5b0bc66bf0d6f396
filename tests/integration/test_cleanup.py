"""`uowstress cleanup`: the scratch databases a killed run left behind are dropped; those of a
run still going are left alone, on every backend."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from humanoid_training.persistence.engine import normalize_url
from tests.integration.support import on_servers, postgres_only
from tests.integration.test_scratch import PASSWORD, _user_who_cannot_create, scratch_exists
from uowstress.cli import main
from uowstress.database import prepared_database
from uowstress.scratch import KEEPER_FILE, scratch_database

KILLED_RUN = """
import os, signal, sys
from uowstress.scratch import scratch_database

with scratch_database(sys.argv[1]) as url:
    print(url.render_as_string(hide_password=False), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


# A run given a SQLite file that is not there yet, killed while it uses it (in WAL mode, the
# connection open: its -wal and -shm files stay too).
KILLED_ON_A_NEW_FILE = """
import os, signal, sqlite3, sys
from uowstress.database import prepared_database

with prepared_database("sqlite:///" + sys.argv[1]):
    conn = sqlite3.connect(sys.argv[1])
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE ht_assessments (id INTEGER PRIMARY KEY)")
    conn.commit()
    os.kill(os.getpid(), signal.SIGKILL)
"""
NEW_FILE_SUFFIXES = ("", "-wal", "-shm", "-uowstress")


def left_on_a_new_file(path: Path) -> None:
    """What a run killed by SIGKILL leaves of a SQLite file it created at `path`."""
    assert not path.exists()
    done = subprocess.run(
        [sys.executable, "-c", KILLED_ON_A_NEW_FILE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    for suffix in NEW_FILE_SUFFIXES:
        assert Path(f"{path}{suffix}").exists(), suffix


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["cleanup", *args])
    return result.exit_code, result.output


def _left_by_a_killed_run(url: str) -> URL:
    done = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    return make_url(done.stdout.strip())


def _name(scratch: URL, backend: str) -> str:
    if backend == "postgresql":
        return str(scratch.query["options"]).rsplit("search_path=", 1)[1]
    if backend == "mysql":
        return str(scratch.database)
    return os.path.basename(os.path.dirname(str(scratch.database)))


def test_what_a_killed_run_left_is_dropped_and_a_running_runs_is_left(
    server_url: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite scratch files go to this folder, for the killed run too (it inherits it).
    monkeypatch.setenv("UOWSTRESS_SQLITE_DIR", str(tmp_path))
    left = _left_by_a_killed_run(server_url)
    assert scratch_exists(server_url, backend, left)
    with scratch_database(server_url) as running:
        leftover, live = _name(left, backend), _name(running, backend)
        # The server ends the killed client's session (and its lock) once it sees it gone.
        # Only these two: other runs' scratch databases on a shared server are not this
        # test's to drop.
        mine = (leftover, live)
        deadline = time.monotonic() + 30
        while True:
            code, out = _invoke(*mine, "--dry-run", "--db-url", server_url)
            assert code == 0, out
            if f"would drop: {leftover}" in out or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert f"would drop: {leftover}" in out
        assert f"in use by a running uowstress, left: {live}" in out
        assert scratch_exists(server_url, backend, left)  # a dry run drops nothing

        code, out = _invoke(*mine, "--db-url", server_url)
        assert code == 0, out
        assert f"dropped: {leftover}" in out
        assert f"in use by a running uowstress, left: {live}" in out
        assert not scratch_exists(server_url, backend, left)
        assert scratch_exists(server_url, backend, running)
    assert not scratch_exists(server_url, backend, running)


def _sqlite_leftover(folder: Path, name: str, *, marked: bool = True) -> Path:
    """A SQLite scratch folder as a killed run leaves it (`marked`: with its keeper file, as
    uowstress makes them now; else as versions before the mark left them)."""
    left = folder / name
    left.mkdir()
    (left / f"{name[:17]}.db").write_bytes(b"")
    if marked:
        (left / KEEPER_FILE).write_bytes(b"")
    return left


def test_a_server_that_does_not_answer_is_an_error_naming_it_and_the_rest_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UOWSTRESS_SQLITE_DIR", str(tmp_path))
    left = _sqlite_leftover(tmp_path, "uows_0123456789ab_x")
    code, out = _invoke(
        "--db-url", "postgresql://someone:s3cret-pw@127.0.0.1:1/test", "--db-url", "sqlite://"
    )
    assert code == 2
    assert "127.0.0.1:1" in out and "s3cret-pw" not in out
    assert f"dropped: {left.name}" in out and not left.exists()


def test_a_url_naming_no_server_host_is_refused_before_anything_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a host the driver would pick a server itself (a local socket): not the one meant.
    monkeypatch.setenv("UOWSTRESS_SQLITE_DIR", str(tmp_path))
    left = _sqlite_leftover(tmp_path, "uows_0123456789ab_x")
    code, out = _invoke("--db-url", "sqlite://", "--db-url", "postgresql://someone:s3cret-pw@/test")
    assert code == 2, out
    assert "names no server host" in out and "s3cret-pw" not in out
    assert "dropped" not in out and left.exists()


def test_nothing_is_said_to_be_left_behind_where_nothing_could_be_looked_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UOWSTRESS_SQLITE_DIR", str(tmp_path))
    down = "postgresql://root@127.0.0.1:1/test"
    code, out = _invoke("--dry-run", "--db-url", down)
    assert code == 2
    assert "127.0.0.1:1" in out and "left behind" not in out
    code, out = _invoke("--dry-run", "--db-url", down, "--db-url", "sqlite://")
    assert code == 2
    assert "no scratch database left behind on the others" in out
    # Two spellings of one server that does not answer: one place, not looked at, said once.
    code, out = _invoke(
        "--dry-run", "--db-url", down, "--db-url", down.replace("://", "+psycopg://")
    )
    assert code == 2
    assert "left behind" not in out and out.count("uowstress: ") == 1, out


def test_only_scratch_folders_of_uowstress_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UOWSTRESS_SQLITE_DIR", str(tmp_path))
    # mkdtemp's random suffix may hold an underscore.
    left = _sqlite_leftover(tmp_path, "uows_0123456789ab_x_y")
    # Named alike, even holding a file named like a scratch database, but without the keeper
    # file that marks the folders uowstress makes: somebody else's, said and left.
    theirs = _sqlite_leftover(tmp_path, "uows_0123456789ac_mine", marked=False)
    (theirs / "notes.txt").write_text("keep")
    other = tmp_path / "uows_short_x"
    other.mkdir()
    code, out = _invoke()
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"dropped: {left.name} ({tmp_path})", out
    assert lines[1] == f"not made by uowstress, left: {theirs.name} ({tmp_path})", out
    assert f"remove it by hand: rm -r {theirs}" in lines[2], out
    assert not left.exists()
    assert (theirs / "notes.txt").read_text() == "keep" and other.exists()
    assert (theirs / "uows_0123456789ac.db").exists()


def test_a_name_given_that_matches_nothing_is_said_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UOWSTRESS_SQLITE_DIR", str(tmp_path))
    left = _sqlite_leftover(tmp_path, "uows_0123456789ab_x")
    code, out = _invoke("--dry-run", "uows_nonexist")
    assert code == 0, out
    assert out == "not found: uows_nonexist (no scratch database, schema or file by that name)\n"
    # A folder answers to its scratch name: only the name that matched nothing is said.
    code, out = _invoke("--dry-run", "uows_0123456789ab", "uows_nonexist")
    assert code == 0, out
    assert out.splitlines() == [
        "not found: uows_nonexist (no scratch database, schema or file by that name)",
        f"would drop: {left.name} ({tmp_path})",
    ]


def _execute(server_url: str, *statements: str) -> list[tuple[object, ...]]:
    """The rows of the last statement, all run in one transaction on the server's database."""
    engine = create_engine(normalize_url(server_url), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            rows: list[tuple[object, ...]] = []
            for statement in statements:
                result = connection.execute(text(statement))
                rows = [tuple(row) for row in result] if result.returns_rows else []
            return rows
    finally:
        engine.dispose()


@on_servers
def test_a_users_schema_merely_named_like_a_scratch_one_is_left_with_its_data(
    server_url: str, backend: str
) -> None:
    name = f"uows_{secrets.token_hex(6)}"  # of uowstress's form, but not made by it
    if backend == "postgresql":
        create, by_hand = f"CREATE SCHEMA {name}", f'DROP SCHEMA "{name}" CASCADE'
    else:
        create, by_hand = f"CREATE DATABASE {name}", f"DROP DATABASE `{name}`"
    _execute(server_url, create)
    try:
        _execute(
            server_url,
            f"CREATE TABLE {name}.precious (x INTEGER)",
            f"INSERT INTO {name}.precious VALUES (42)",
        )
        for dry_run in (["--dry-run"], []):
            code, out = _invoke(name, *dry_run, "--db-url", server_url)
            assert code == 0, out
            assert f"not made by uowstress, left: {name}" in out, out
            assert f"remove it by hand: {by_hand}" in out, out
            assert "dropped" not in out and "would drop" not in out, out
            assert _execute(server_url, f"SELECT x FROM {name}.precious") == [(42,)]
    finally:
        _execute(server_url, by_hand)


@postgres_only
def test_a_scratch_database_stays_kept_past_the_servers_idle_session_timeout(
    server_url: str, backend: str
) -> None:
    # A role or database may end idle sessions; the keeper is idle all along.
    url = make_url(server_url).update_query_dict({"options": "-c idle_session_timeout=500"})
    with scratch_database(url) as running:
        time.sleep(1.5)
        name = _name(running, backend)
        code, out = _invoke(name, "--dry-run", "--db-url", server_url)
        assert code == 0, out
        assert f"in use by a running uowstress, left: {name}" in out


@postgres_only
def test_a_leftover_the_urls_user_may_not_drop_is_said_to_want_its_owner(
    server_url: str, backend: str
) -> None:
    # Left by a run of the administrator's; the cleanup runs as a user owning none of it.
    name = _name(_left_by_a_killed_run(server_url), backend)
    try:
        with _user_who_cannot_create(server_url, backend) as other:
            code, out = _invoke("--db-url", other, name)
        assert code == 2, out
        assert f"not dropped: {name}" in out, out
        assert "may not drop it" in out and "still holds a lock" not in out, out
        assert PASSWORD not in out
    finally:
        _invoke("--db-url", server_url, name)


def test_a_new_sqlite_file_a_killed_run_created_is_removed_and_one_in_use_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UOWSTRESS_SQLITE_DIR", str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere").mkdir()
    path = tmp_path / "new.db"
    left_on_a_new_file(path)
    url = f"sqlite:///{path}"
    code, out = _invoke("--dry-run", "--db-url", url)
    assert code == 0, out
    assert out == f"would drop: new.db ({tmp_path})\n"
    assert all(Path(f"{path}{suffix}").exists() for suffix in NEW_FILE_SUFFIXES)
    code, out = _invoke("--db-url", url)
    assert code == 0, out
    assert out == f"dropped: new.db ({tmp_path})\n"
    assert list(tmp_path.iterdir()) == [tmp_path / "elsewhere"]
    # A run using a file it created: left alone; afterwards nothing of it stays.
    with prepared_database(url):
        code, out = _invoke("--db-url", url)
        assert code == 0, out
        assert out == f"in use by a running uowstress, left: new.db ({tmp_path})\n"
    assert list(tmp_path.iterdir()) == [tmp_path / "elsewhere"]
    # A file of the user's, without the mark, is not looked at.
    path.write_bytes(b"")
    code, out = _invoke("--db-url", url)
    assert code == 0, out
    assert out == "no scratch database left behind\n" and path.exists()
