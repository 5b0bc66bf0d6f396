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

from tests.integration.test_sessions import SERVERS
from uowstress.database import prepared_database
from uowstress.profiles import machine_settings
from uowstress.stateful.executor import SingleSessionExecutor
from uowstress.stateful.run import replay, run_acid

SPEC = f"{__name__}:SELF_LOCKING_TARGET"


class _SelfLockingWork(ledger.SqlWork):
    """The ledger's Unit of Work, its commit also touching each account it read on a second
    connection of the same engine, after the first has written the row: the second waits on
    the first, which waits for the commit to return."""

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
                other.execute(touch)
                other.commit()
        super().commit()


class _SelfLockingSystem(ledger.LedgerSystem):
    def unit_of_work(self, fault_hook: ledger.FaultHook | None = None) -> ledger.SqlWork:
        return _SelfLockingWork(self.engine, self.unsafe, fault_hook)


class _SelfLockingTarget(ledger.LedgerTarget):
    name = "self-locking ledger"

    def connect(
        self, url: str, options: Mapping[str, str], *, isolation_level: str | None = None
    ) -> ledger.LedgerSystem:
        system = super().connect(url, options, isolation_level=isolation_level)
        return _SelfLockingSystem(system.engine, system.unsafe)


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
