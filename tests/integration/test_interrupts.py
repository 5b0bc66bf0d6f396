"""A run stopped by SIGTERM (a CI timeout, `kill`) drops what it set up on the server."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from humanoid_training.persistence.engine import normalize_url
from tests.integration.support import postgres_only


def _scratch_schemas(url: URL) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            names = connection.execute(
                text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'uows%'")
            ).scalars()
            return set(names)
    finally:
        engine.dispose()


@pytest.fixture
def own_database(server_url: str) -> Iterator[URL]:
    """A database of this test's own on the server: another run's scratch schemas on the same
    server are not in it."""
    server = normalize_url(server_url)
    name = f"sigterm_{secrets.token_hex(6)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield server.set(database=name)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@postgres_only
@pytest.mark.parametrize(
    "workers",
    [
        pytest.param(None, id="one-process"),
        # A CI timeout or `timeout` signals the whole process group: the workers too.
        pytest.param("2", id="workers-and-their-group"),
    ],
)
def test_a_run_stopped_by_sigterm_drops_its_scratch_schema(
    own_database: URL, tmp_path: Path, workers: str | None
) -> None:
    run = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from uowstress.cli import main; main()",
            "run",
            "--db-url",
            own_database.render_as_string(hide_password=False),
            "--kills",
            "0",
            "--output-dir",
            str(tmp_path / "reports"),
            *(["--workers", workers] if workers else []),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        # With workers, wait for a schema of theirs: the controller's own check before the
        # run makes one first.
        wanted = 2 if workers else 1
        seen: set[str] = set()
        deadline = time.monotonic() + 120
        while True:
            now = _scratch_schemas(own_database)
            seen |= now
            if now and len(seen) >= wanted:
                break
            assert run.poll() is None, "the run ended before it set up its scratch schemas"
            assert time.monotonic() < deadline, "no scratch schema appeared within 120 s"
            time.sleep(0.1)
        time.sleep(1)  # most likely into the run's scenarios; anywhere must clean up
        if workers:
            os.killpg(run.pid, signal.SIGTERM)
        else:
            run.send_signal(signal.SIGTERM)
        _out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    # Ended by the interrupt unwinding (exit 1 or 2, wherever it landed), not by the signal.
    assert run.returncode > 0, err[-2000:]
    assert _scratch_schemas(own_database) == set()


SIGNALLED_WHERE_PYTHON_DROPS_IT = """
import os
import signal
import weakref


def test_a_signal_arrives_inside_a_weakref_callback():
    class Thing:
        pass

    thing = Thing()
    keep = weakref.ref(thing, lambda _ref: os.kill(os.getpid(), signal.SIGTERM))
    del thing  # the handler runs inside the callback: its KeyboardInterrupt is dropped there
    assert keep() is None


def test_after_the_signal():
    open("ran-after-the-signal", "w").close()
"""


def _uowstress_run(
    suite: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`uowstress run --path suite` in a process of its own, as a user starts it."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "uowstress"), "run", "--path", str(suite)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_an_interrupt_python_drops_still_stops_the_run(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_lost_signal.py").write_text(SIGNALLED_WHERE_PYTHON_DROPS_IT)
    done = _uowstress_run(suite, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the run was interrupted" in done.stderr, done.stdout + done.stderr
    assert "KeyboardInterrupt: stopped by SIGTERM" in done.stdout
    assert not (tmp_path / "ran-after-the-signal").exists()


FOUND_THEN_STOPPED = """
import os
import signal
from pathlib import Path

from tests_support import write_reproducer


def test_finds_something():
    write_reproducer(Path(".hypothesis/reproducers"))


def test_then_the_ci_timeout():
    os.kill(os.getpid(), signal.SIGTERM)
"""


def test_an_interrupted_run_names_the_reproducers_it_wrote_before(tmp_path: Path) -> None:
    # A nightly run stopped by its CI timeout writes no report: what it found is said, so that
    # the reproducers kept in the folder are not left unnoticed.
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_found_then_stopped.py").write_text(FOUND_THEN_STOPPED)
    (suite / "tests_support.py").write_text(
        "from tests.integration.test_interrupts import _sqlite_reproducer as write_reproducer\n"
    )
    older = _sqlite_reproducer(tmp_path / ".hypothesis" / "reproducers")
    os.utime(older, (0, 0))  # an earlier run's: not this one's to name
    (tmp_path / ".hypothesis" / "reproducers" / "old.json").write_text(older.read_text())
    older.unlink()
    os.utime(tmp_path / ".hypothesis" / "reproducers" / "old.json", (0, 0))
    done = _uowstress_run(
        suite, tmp_path, {**os.environ, "PYTHONPATH": os.pathsep.join([str(suite), os.getcwd()])}
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the run was interrupted; no report written" in done.stderr, done.stderr
    assert "what the run found before the interrupt (kept):" in done.stderr, done.stderr
    (written,) = (tmp_path / ".hypothesis" / "reproducers").glob("[0-9a-f]*.json")
    assert f"reproducer written before the interrupt: .hypothesis/reproducers/{written.name}" in (
        done.stderr
    ), done.stderr
    assert f"uowstress replay .hypothesis/reproducers/{written.name}" in done.stderr
    assert "old.json" not in done.stderr


def _sqlite_reproducer(folder: Path) -> Path:
    """A reproducer of the reference system on SQLite whose two steps fail when replayed."""
    from uowstress import reproducers

    made = reproducers.make_reproducer(
        machine="acid",
        sessions=1,
        target="humanoid_training.target:TARGET",
        target_options={"weaken": "commit_swallows_errors"},
        backend="sqlite",
        isolation_level=None,
        guarantee="serializable",
        profile="dev",
        seed=None,
        steps=[
            reproducers.Step(session=0, action="begin"),
            reproducers.Step(session=0, action="raise"),
        ],
        shrunk_from=2,
        failure=reproducers.Failure(kind="swallowed", message="suppressed", step=2),
        versions=reproducers.versions(None),
    )
    return reproducers.write(made, folder)


def test_a_ctrl_c_python_dropped_during_a_replay_stops_it_at_the_next_step(
    tmp_path: Path,
) -> None:
    """A Ctrl-C that landed where Python drops exceptions (a weak reference callback, during
    `uowstress replay --repeat N`) stops the replay, rather than letting every run go on."""
    from uowstress import interrupts
    from uowstress.stateful.run import replay

    path = _sqlite_reproducer(tmp_path / "reproducers")
    assert replay(path).verdict == "FAILED"  # the reproducer replays when not interrupted
    interrupts._pending = KeyboardInterrupt()  # as _interrupted leaves it when dropped
    with pytest.raises(KeyboardInterrupt):
        replay(path, repeat=3)
