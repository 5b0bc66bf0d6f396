"""The ledger example with one part of the protocol broken each: what a team writing its first
target gets wrong, for the tests that uowstress names the mistake instead of blaming the
system (or passing)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from examples import ledger
from hypothesis import strategies as st
from sqlalchemy.engine import url as sa_url

from uowstress.target import Operation


class _Target(ledger.LedgerTarget):
    system_class: type = ledger.LedgerSystem

    def connect(
        self, url: str, options: Mapping[str, str], *, isolation_level: str | None = None
    ) -> Any:
        made = super().connect(url, options, isolation_level=isolation_level)
        return self.system_class(made.engine, made.unsafe)


def _with_system(**methods: Any) -> _Target:
    target = _Target()
    target.system_class = type("System", (ledger.LedgerSystem,), methods)
    return target


def _raise(*_: Any, **__: Any) -> Any:
    raise RuntimeError("cannot truncate")


def _reset_then_raise(self: Any) -> None:
    # Works for the first examples, then fails as a wedged pool would.
    self.resets = getattr(self, "resets", 0) + 1
    if self.resets > 3:
        raise RuntimeError("the pool is wedged")
    ledger.LedgerSystem.reset(self)


def _reset_then_raise_saying_nothing(self: Any) -> None:
    # As _reset_then_raise, with an exception that has no message.
    self.resets = getattr(self, "resets", 0) + 1
    if self.resets > 3:
        raise RuntimeError()
    ledger.LedgerSystem.reset(self)


def _dispose_then_raise(self: Any) -> None:
    # As when the server stopped answering before the run put the system away.
    ledger.LedgerSystem.dispose(self)
    raise RuntimeError("connection refused")


def _shutdown_error(self: Any) -> Exception:
    # What PostgreSQL's `pg_ctl stop` and MariaDB's `shutdown` make the server tell its clients.
    if self.engine.dialect.name == "postgresql":
        import psycopg

        # As a reconnecting pool is told while `pg_ctl stop` runs.
        orig: Exception = psycopg.errors.CannotConnectNow("the database system is shutting down")
    else:
        import pymysql

        orig = pymysql.err.OperationalError(1053, "Server shutdown in progress")
    return sa.exc.OperationalError("SELECT 1", {}, orig)


def _state_then_shutdown(self: Any) -> Any:
    # Works for the first reads, then the server goes away for good.
    self.reads = getattr(self, "reads", 0) + 1
    if self.reads > 5:
        raise _shutdown_error(self)
    return ledger.LedgerSystem.committed_state(self)


def _reset_unless_shut_down(self: Any) -> None:
    if getattr(self, "reads", 0) > 5:
        raise _shutdown_error(self)
    ledger.LedgerSystem.reset(self)


class _ConnectRaises(ledger.LedgerTarget):
    def connect(self, *_: Any, **__: Any) -> Any:
        raise RuntimeError("misconfigured engine")


CONNECT_FAILS_ENV = "UOWSTRESS_TEST_CONNECT_FAILS"


class _ConnectFailsWhenTold(ledger.LedgerTarget):
    """Connects, until a test sets CONNECT_FAILS_ENV: then its server is gone, as the driver
    says it (a run's checks before it starts connect while it still answers)."""

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        if os.environ.get(CONNECT_FAILS_ENV):
            raise sa.exc.OperationalError(
                "SELECT 1", {}, Exception("server closed the connection unexpectedly")
            )
        return super().connect(*args, **kwargs)


class _OldConnect(ledger.LedgerTarget):
    def connect(self, url: str, options: Mapping[str, str]) -> Any:  # type: ignore[override]
        return super().connect(url, options)


class _NoDispose:
    def __init__(self, engine: Any, unsafe: bool) -> None:
        self.engine = engine
        self._inner = ledger.LedgerSystem(engine, unsafe)

    def __getattr__(self, name: str) -> Any:
        if name == "dispose":
            raise AttributeError(name)
        return getattr(self._inner, name)


class _ModelWithoutState:
    def unit_of_work(self) -> Any:
        return ledger.MemoryLedger().unit_of_work()


def _operations(**arguments: Any) -> tuple[Operation, ...]:
    return tuple(
        Operation(op.name, arguments.get(op.name, op.arguments), op.apply, op.scope, op.enabled)
        for op in ledger.OPERATIONS
    )


def _with_operation(name: str, **fields: Any) -> _Target:
    """The ledger with one operation's fields replaced."""
    target = _Target()
    target.operations = tuple(
        dataclasses.replace(op, **fields) if op.name == name else op for op in ledger.OPERATIONS
    )
    return target


def _invariants_raise(self: Any, state: Any) -> list[str]:
    return [str(state["no such field"])]


CONNECT_RAISES = _ConnectRaises()
CONNECT_FAILS_WHEN_TOLD = _ConnectFailsWhenTold()
OLD_CONNECT = _OldConnect()
NO_DISPOSE = _Target()
NO_DISPOSE.system_class = _NoDispose
UOW_WITHOUT_HOOK = _with_system(unit_of_work=lambda self: ledger.SqlWork(self.engine, False))
UOW_NOT_A_UOW = _with_system(unit_of_work=lambda self, fault_hook=None: object())
MODEL_WITHOUT_STATE = _with_system(new_model=lambda self: _ModelWithoutState())
INVARIANTS_NONE = _with_system(invariants=lambda self, state: None)
INVARIANTS_TEXT = _with_system(invariants=lambda self, state: "all good")
STATE_A_LIST = _with_system(committed_state=lambda self: [])
RESET_RAISES = _with_system(reset=_raise)
RESET_RAISES_LATER = _with_system(reset=_reset_then_raise)
RESET_RAISES_LATER_SAYING_NOTHING = _with_system(reset=_reset_then_raise_saying_nothing)
DISPOSE_RAISES = _with_system(dispose=_dispose_then_raise)
SERVER_SHUTS_DOWN = _with_system(
    committed_state=_state_then_shutdown, reset=_reset_unless_shut_down
)
ARGUMENTS_INT = _Target()
ARGUMENTS_INT.operations = _operations(open_account=lambda s, ids: st.integers())
ARGUMENTS_NOTHING = _Target()
ARGUMENTS_NOTHING.operations = _operations(open_account=lambda s, ids: st.nothing())
OPERATION_A_DICT = _Target()
OPERATION_A_DICT.operations = ({"name": "open_account"},)  # type: ignore[assignment]
INVARIANTS_RAISE = _with_system(invariants=_invariants_raise)
ENABLED_RAISES = _with_operation("deposit", enabled=lambda state: state["no such field"])
SCOPE_MISSPELT = _with_operation("transfer_now", scope="txn")
# A misspelt argument in code the model and the system share: both raise KeyError alike.
APPLY_FAILS_AS_CODE = _with_operation(
    "deposit", apply=lambda uow, a: ledger.deposit(uow, {**a, "amount": a["amout"]})
)


def _deposit_failing_on_the_system(uow: Any, a: Any) -> Any:
    # The system's unit of work lacks what the code asks of it; the model's has it.
    if isinstance(uow, ledger.SqlWork):
        return uow.balance_of(a["account"])
    return ledger.deposit(uow, a)


SYSTEM_FAILS_AS_CODE = _with_operation("deposit", apply=_deposit_failing_on_the_system)


class _SaysItsUrl(ledger.LedgerTarget):
    """A target whose own messages quote the URL it was given, and its password, decoded."""

    refuse = False
    crash = False

    def connect(
        self, url: str, options: Mapping[str, str], *, isolation_level: str | None = None
    ) -> Any:
        password = sa_url.make_url(url).password
        if self.refuse:
            raise ValueError(f"no options for {url} (password {password})")
        if self.crash:
            raise RuntimeError(f"no engine for {url} (password {password})")
        system = super().connect(url, options, isolation_level=isolation_level)

        def committed_state() -> Any:
            raise RuntimeError(f"cannot read {url}, password {password}")

        system.committed_state = committed_state  # type: ignore[method-assign]
        return system


STATE_SAYS_PASSWORD = _SaysItsUrl()
OPTIONS_REFUSED_SAYING_PASSWORD = _SaysItsUrl()
OPTIONS_REFUSED_SAYING_PASSWORD.refuse = True
STATE_RAISES = _with_system(committed_state=_raise)
CONNECT_RAISES_SAYING_PASSWORD = _SaysItsUrl()
CONNECT_RAISES_SAYING_PASSWORD.crash = True
