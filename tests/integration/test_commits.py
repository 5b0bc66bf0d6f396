"""The committed-state read is skipped only when the database says nothing was committed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert

from humanoid_training.persistence import tables as t
from humanoid_training.target import TARGET
from tests.integration.support import REGISTER
from uowstress.database import prepared_database
from uowstress.stateful.commits import AlwaysChanged, SqliteDataVersion, watch
from uowstress.stateful.executor import Finding, SingleSessionExecutor

CONFIGURATION = (
    '{"extra":{},"height_m":1.2,"joint_count":3,"max_joint_velocity":8.0,"weight_kg":30.0}'
)


def test_data_version_changes_with_commits_of_other_connections_only(tmp_path: Path) -> None:
    path = tmp_path / "lab.db"
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        watcher = SqliteDataVersion(str(path))
        assert watcher.committed_since_last_look()  # the first look always says so
        assert not watcher.committed_since_last_look()
        with engine.connect() as connection:
            connection.exec_driver_sql("INSERT INTO t VALUES (1)")
            assert not watcher.committed_since_last_look()  # not committed yet
            connection.rollback()
        assert not watcher.committed_since_last_look()  # rolled back: nothing changed
        with engine.begin() as connection:
            connection.exec_driver_sql("INSERT INTO t VALUES (2)")
        assert watcher.committed_since_last_look()
        assert not watcher.committed_since_last_look()
        watcher.close()
    finally:
        engine.dispose()


def test_servers_are_read_after_every_step(server_url: str, backend: str) -> None:
    with prepared_database(server_url) as db:
        system = TARGET.connect(db.url, {})
        try:
            watcher = watch(system.engine)
            expected = SqliteDataVersion if backend == "sqlite" else AlwaysChanged
            assert isinstance(watcher, expected)
            if backend != "sqlite":
                assert all(watcher.committed_since_last_look() for _ in range(3))
            watcher.close()
        finally:
            system.dispose()


class _CountingReads:
    """The reference system, counting its committed-state reads."""

    def __init__(self, system: Any) -> None:
        self._system = system
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._system, name)

    def committed_state(self) -> Any:
        self.reads += 1
        return self._system.committed_state()


def test_executor_reads_committed_state_only_after_commits_on_sqlite() -> None:
    with prepared_database("sqlite://") as db:
        system = _CountingReads(TARGET.connect(db.url, {}))
        executor = SingleSessionExecutor(TARGET, system)  # type: ignore[arg-type]
        try:
            executor.run({"action": "begin"})
            assert system.reads == 1  # the first check reads
            executor.run(REGISTER)
            executor.run({"action": "rollback"})
            assert system.reads == 1  # nothing was committed: no read
            executor.run({"action": "begin"})
            executor.run(REGISTER)
            executor.run({"action": "commit"})
            assert system.reads == 2
            executor.run({"action": "query", "query": "find_active_plans", "args": {}})
            assert system.reads == 2
        finally:
            executor.close()
            system.dispose()


@pytest.mark.parametrize("opt_out", [False, True])
def test_a_commit_made_behind_the_executors_back_is_seen_at_the_next_check(
    opt_out: bool,
) -> None:
    # What a Unit of Work that commits before its commit() would do: the very next check,
    # after a step that commits nothing, must see it.
    with prepared_database("sqlite://") as db:
        system = TARGET.connect(db.url, {})
        if opt_out:
            # A system whose committed state lives partly outside its engine's database opts
            # out of the watcher: every check reads.
            system.commits_outside_engine = True  # type: ignore[attr-defined]
        executor = SingleSessionExecutor(TARGET, system)
        try:
            executor.run({"action": "begin"})
            with system.engine.begin() as connection:
                connection.execute(
                    insert(t.robots).values(
                        id="sneaky",
                        version=1,
                        name="x",
                        robot_type="custom",
                        configuration=CONFIGURATION,
                    )
                )
            with pytest.raises(Finding) as found:
                executor.run(REGISTER)
            assert found.value.kind == "state", found.value
            assert "sneaky" in found.value.message
        finally:
            executor.close()
            system.dispose()


def test_a_commit_interrupted_by_ctrl_c_still_ends_its_unit_of_work_on_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ctrl-C or SIGTERM inside the system's commit: the cleanup that follows must still end the
    # unit of work, or its connection stays in a transaction that the teardown waits on.
    from humanoid_training.persistence.unit_of_work import SqlAlchemyUnitOfWork

    def interrupted(self: SqlAlchemyUnitOfWork) -> None:
        raise KeyboardInterrupt

    with prepared_database("sqlite://") as db:
        system = TARGET.connect(db.url, {})
        executor = SingleSessionExecutor(TARGET, system)
        try:
            executor.run({"action": "begin"})
            executor.run(REGISTER)
            monkeypatch.setattr(SqlAlchemyUnitOfWork, "commit", interrupted)
            with pytest.raises(KeyboardInterrupt):
                executor.run({"action": "commit"})
            assert system.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
            executor.close()
            assert system.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        finally:
            executor.close()
            system.dispose()
