"""A unit of work that waits on a lock held by its own other connection: reported as a stall,
named with the statement that waited, instead of a run that never ends; a lock held by someone
else is waited for, as before."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from examples import ledger
from hypothesis import settings

from tests.integration.support import SERVERS
from uowstress.database import prepared_database
from uowstress.profiles import machine_settings
from uowstress.stateful.executor import Finding, SingleSessionExecutor
from uowstress.stateful.run import replay, run_acid

SPEC = f"{__name__}:SELF_LOCKING_TARGET"


# What ends a wait when the watch does not: a test of a broken watch fails instead of hanging.
def _lock_timeout(dialect: str, seconds: int, url: str) -> dict[str, str]:
    if dialect == "postgresql":
        # After the options the scratch URL holds (its schema).
        return {
            "options": f"{sa.make_url(url).query.get('options', '')} -c lock_timeout={seconds}s"
        }
    return {"init_command": f"SET SESSION innodb_lock_wait_timeout = {seconds}"}


class _SelfLockingWork(ledger.SqlWork):
    """The ledger's Unit of Work, its commit also touching each account it read on a second
    connection of the same engine, after the first has written the row: the second waits on
    the first, which waits for the commit to return. With `attempts` > 1 it takes the error
    of the second connection's statement for a passing one and tries again."""

    attempts = 1

    def __init__(self, *args: Any, errors: list[str]) -> None:
        super().__init__(*args)
        self.errors = errors

    def commit(self) -> None:
        conn = self._connection()
        for account in {account for _, account, _ in self.posted if account in self.versions}:
            touch = (
                sa.update(ledger.accounts)
                .where(ledger.accounts.c.id == account)
                .values(version=ledger.accounts.c.version)
            )
            conn.execute(touch)
            with self.engine.connect() as other:
                for attempt in range(1, self.attempts + 1):
                    try:
                        other.execute(touch)
                        break
                    except sa.exc.DBAPIError as error:
                        self.errors.append(str(error.orig))
                        other.rollback()
                        if attempt == self.attempts:
                            raise
                other.commit()
        super().commit()


class _RetryingWork(_SelfLockingWork):
    attempts = 3


class _SelfLockingSystem(ledger.LedgerSystem):
    work = _SelfLockingWork

    def __init__(self, engine: sa.Engine, unsafe: bool) -> None:
        super().__init__(engine, unsafe)
        self.errors: list[str] = []  # what the second connection's statements raised

    def unit_of_work(self, fault_hook: ledger.FaultHook | None = None) -> ledger.SqlWork:
        return self.work(self.engine, self.unsafe, fault_hook, errors=self.errors)


class _RetryingSystem(_SelfLockingSystem):
    work = _RetryingWork


class _SelfLockingTarget(ledger.LedgerTarget):
    name = "self-locking ledger"

    def __init__(
        self, system: type[_SelfLockingSystem] = _SelfLockingSystem, lock_timeout_s: int = 10
    ) -> None:
        self.system = system
        self.lock_timeout_s = lock_timeout_s

    def connect(
        self, url: str, options: Mapping[str, str], *, isolation_level: str | None = None
    ) -> _SelfLockingSystem:
        system = super().connect(url, options, isolation_level=isolation_level)
        system.engine.dispose()
        # The same database, each connection with a lock timeout.
        timeout = _lock_timeout(system.engine.dialect.name, self.lock_timeout_s, url)
        engine = sa.create_engine(url, connect_args=timeout)
        return self.system(engine, system.unsafe)


SELF_LOCKING_TARGET = _SelfLockingTarget()


def _settings() -> settings:
    return settings(machine_settings("dev"), derandomize=True, database=None)


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_a_unit_of_work_waiting_on_its_own_connection_is_a_stall_and_replays_as_one(
    server_url: str, tmp_path: Path
) -> None:
    result = run_acid(
        server_url,
        target_spec=SPEC,
        settings=_settings(),
        reproducers_dir=tmp_path,
        shrink_budget_s=20,
    )
    assert result.finding is not None, result.error
    assert result.finding.kind == "stall", result.finding
    message = result.finding.message
    assert "waited on a lock held by another connection of the system itself" in message
    assert "UPDATE ledger_accounts" in message  # the statement that waited
    assert "cancelled the waiting statement" in message
    assert result.reproducer is not None and result.reproducer_path is not None
    assert result.reproducer.steps[-1].action in ("commit", "fault", "transaction")

    again = replay(result.reproducer_path, db_urls={result.backend: server_url})
    assert again.verdict == "FAILED", again.detail
    assert "[stall]" in again.detail


@pytest.mark.parametrize("backend", SERVERS[:1], indirect=True)
def test_the_concurrent_machine_names_a_session_waiting_on_its_own_connection(
    server_url: str, tmp_path: Path
) -> None:
    result = run_acid(
        server_url,
        target_spec=SPEC,
        settings=_settings(),
        machine="sessions",
        reproducers_dir=tmp_path,
        shrink_budget_s=5,
    )
    assert result.finding is not None, result.error
    assert result.finding.kind == "stall", result.finding
    assert "waits on a lock held by another connection of its own unit of work" in (
        result.finding.message
    )


class _SpareConnectionWork(ledger.SqlWork):
    """The ledger's Unit of Work, holding a second connection of its engine, idle, while it is
    open: the watch looks only where the system holds two connections or more."""

    def __enter__(self) -> _SpareConnectionWork:
        self.spare = self.engine.connect()
        self.spare.execute(sa.select(1)).all()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self.spare.close()


class _SpareConnectionSystem(ledger.LedgerSystem):
    def unit_of_work(self, fault_hook: ledger.FaultHook | None = None) -> ledger.SqlWork:
        return _SpareConnectionWork(self.engine, self.unsafe, fault_hook)


@pytest.fixture
def ledger_system(server_url: str) -> Iterator[ledger.LedgerSystem]:
    with prepared_database(server_url) as db:
        plain = ledger.TARGET.connect(db.url, {})
        system = _SpareConnectionSystem(plain.engine, plain.unsafe)
        try:
            yield system
        finally:
            system.dispose()


def _run(executor: SingleSessionExecutor, *steps: dict[str, Any]) -> None:
    for step in steps:
        executor.run(step)


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_a_lock_held_by_another_client_is_waited_for_not_cancelled(
    ledger_system: ledger.LedgerSystem,
) -> None:
    executor = SingleSessionExecutor(ledger.TARGET, ledger_system)
    opening = {"account": "a1", "initial": 10, "entry": "d1"}
    deposit = {"account": "a1", "amount": 5, "entry": "d2"}
    try:
        _run(
            executor,
            {"action": "begin"},
            {"action": "apply", "op": "open_account", "args": opening},
            {"action": "commit"},
            {"action": "begin"},
            {"action": "apply", "op": "deposit", "args": deposit},
        )
        # Another client (not the system's engine) locks the account's row, and lets go
        # only well after the watch has looked at the waiting commit several times.
        outsider = sa.create_engine(ledger_system.engine.url, poolclass=sa.NullPool)
        with outsider.connect() as other:
            other.execute(
                sa.select(ledger.accounts).where(ledger.accounts.c.id == "a1").with_for_update()
            ).all()
            release = threading.Timer(2.0, other.rollback)
            release.start()
            try:
                executor.run({"action": "commit"})  # waits for the outsider, then commits
            finally:
                release.join()
        outsider.dispose()
    finally:
        executor.close()
    assert ledger_system.committed_state()["accounts"] == {"a1": {"balance": 15}}


_DEPOSIT_TWICE = (
    {"action": "begin"},
    {
        "action": "apply",
        "op": "open_account",
        "args": {"account": "a1", "initial": 10, "entry": "d1"},
    },
    {"action": "commit"},
    {"action": "begin"},
    {"action": "apply", "op": "deposit", "args": {"account": "a1", "amount": 5, "entry": "d2"}},
)


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_a_system_that_retries_the_cancelled_statement_is_cancelled_again(
    server_url: str,
) -> None:
    with prepared_database(server_url) as db:
        target = _SelfLockingTarget(_RetryingSystem)
        connected = target.connect(db.url, {})
        executor = SingleSessionExecutor(target, connected)
        try:
            _run(executor, *_DEPOSIT_TWICE)
            with pytest.raises(Finding) as found:
                executor.run({"action": "commit"})
        finally:
            executor.close()
            connected.dispose()
    assert found.value.kind == "stall", found.value
    # Every attempt was cancelled by the watch, none ended by the lock timeout.
    assert len(connected.errors) == _RetryingWork.attempts, connected.errors
    for error in connected.errors:
        assert "user request" in error or "interrupted" in error, connected.errors


@pytest.mark.parametrize("backend", SERVERS[1:], indirect=True)
def test_a_user_who_cannot_see_lock_waits_is_told_what_to_grant(server_url: str) -> None:
    with prepared_database(server_url) as db:
        url = sa.make_url(db.url)
        admin = sa.create_engine(url, poolclass=sa.NullPool)
        user = "uows_no_process"
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
            conn.execute(sa.text(f"CREATE USER '{user}'@'%'"))
            conn.execute(sa.text(f"GRANT ALL ON `{url.database}`.* TO '{user}'@'%'"))
        try:
            limited = url.set(username=user, password=None).render_as_string(hide_password=False)
            target = _SelfLockingTarget(lock_timeout_s=2)
            connected = target.connect(limited, {})
            executor = SingleSessionExecutor(target, connected)
            try:
                _run(executor, *_DEPOSIT_TWICE)
                with (
                    pytest.warns(RuntimeWarning, match="GRANT PROCESS ON"),
                    pytest.raises(Finding) as found,
                ):
                    executor.run({"action": "commit"})
            finally:
                executor.close()
                connected.dispose()
        finally:
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
            admin.dispose()
    # Not seen, the wait was ended by the server's lock wait timeout.
    assert found.value.kind != "stall", found.value
    assert any("Lock wait timeout" in error for error in connected.errors), connected.errors
