"""A tiny double-entry ledger with its own Unit of Work, and a uowstress Target for it.

The first half is the system a team would already have: two tables and a Unit of Work that
collects new accounts and entries and writes them in one version-checked transaction. The
second half is what uowstress needs to test it: operations on JSON arguments, queries, an
in-memory model, the canonical committed state and its invariants.

    uv run uowstress run --target examples.ledger:TARGET \
        [--target-option unsafe_commit=1]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, select

from uowstress import Ids, Operation, Query, State, Target

# --- the system: schema, errors, Unit of Work ------------------------------------------------

metadata = sa.MetaData()
accounts = sa.Table(
    "ledger_accounts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("balance", sa.Integer, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)
# An entry's id says what moved the money (the invariants rely on it): d<n> a deposit, w<n> a
# withdrawal, t<n>- and t<n>+ the two legs of a transfer.
entries = sa.Table(
    "ledger_entries",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(64), sa.ForeignKey("ledger_accounts.id"), nullable=False),
    sa.Column("amount", sa.Integer, nullable=False),
)
FaultHook = Callable[[str, Connection], None]


class LedgerError(Exception):
    """A request the ledger refuses."""


class UnknownAccount(LedgerError): ...


class InsufficientFunds(LedgerError): ...


class Work:
    """The Unit of Work the operations see; subclasses say where committed data lives."""

    def __init__(self) -> None:
        self._forget()

    def _forget(self) -> None:
        self.opened: list[str] = []
        self.posted: list[tuple[str, str, int]] = []  # (entry id, account, amount)
        self.balances: dict[str, int] = {}  # accounts read, with this unit's own changes

    def _load(self, account: str) -> int | None:
        raise NotImplementedError

    def _all(self) -> list[str]:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def balance(self, account: str) -> int:
        if account not in self.balances:
            found = self._load(account)
            if found is None:
                raise UnknownAccount(f"no account {account!r}")
            self.balances[account] = found
        return self.balances[account]

    def accounts(self) -> list[str]:
        return sorted({*self._all(), *self.opened})

    def open(self, account: str) -> None:
        if account in self.balances or self._load(account) is not None:
            raise LedgerError(f"account {account!r} already exists")
        self.opened.append(account)
        self.balances[account] = 0

    def post(self, entry: str, account: str, amount: int) -> None:
        self.balances[account] = self.balance(account) + amount
        self.posted.append((entry, account, amount))

    def __enter__(self) -> Self:
        self._forget()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.rollback()  # nothing is kept without commit, and an exception propagates

    def rollback(self) -> None:
        self._forget()


class SqlWork(Work):
    def __init__(self, engine: Engine, unsafe: bool, hook: FaultHook | None = None) -> None:
        super().__init__()
        self.engine, self.unsafe, self.hook = engine, unsafe, hook
        self.conn: Connection | None = None
        self.versions: dict[str, int] = {}

    def __enter__(self) -> Self:
        if self.conn is not None:
            raise RuntimeError("this unit of work is already open; use a new one per block")
        self.conn, self.versions = self.engine.connect(), {}
        return super().__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.rollback()
        finally:
            if self.conn is not None:
                self.conn.close()
            self.conn = None

    def _connection(self) -> Connection:
        if self.conn is None:
            raise RuntimeError("the unit of work is not open; use it as `with uow:`")
        return self.conn

    def _load(self, account: str) -> int | None:
        query = select(accounts.c.balance, accounts.c.version).where(accounts.c.id == account)
        row = self._connection().execute(query).first()
        if row is not None:
            self.versions[account] = row.version
        return None if row is None else int(row.balance)

    def _all(self) -> list[str]:
        return list(self._connection().execute(select(accounts.c.id)).scalars())

    def _point(self, name: str) -> None:
        if self.hook is not None:  # uowstress injects its faults at these points
            self.hook(name, self._connection())

    def _piece_done(self) -> None:
        if self.unsafe:  # Deliberately wrong: each piece of work is committed on its own.
            self._connection().commit()

    def commit(self) -> None:
        conn = self._connection()
        self._point("before_flush")
        for account in self.opened:
            conn.execute(sa.insert(accounts).values(id=account, balance=0, version=0))
            self.versions[account] = 0
            self._piece_done()
        for entry, account, amount in self.posted:
            conn.execute(sa.insert(entries).values(id=entry, account_id=account, amount=amount))
            seen = self.versions[account]
            # Optimistic lock: the row must still be at the version this unit of work read.
            changed = conn.execute(
                sa.update(accounts)
                .where(accounts.c.id == account, accounts.c.version == seen)
                .values(balance=accounts.c.balance + amount, version=seen + 1)
            )
            if changed.rowcount != 1:
                raise LedgerError(f"account {account!r} changed since it was read; retry")
            self.versions[account] = seen + 1
            self._piece_done()
        self._point("after_flush")
        self._point("before_commit")
        conn.commit()
        self._forget()

    def rollback(self) -> None:
        super().rollback()
        conn = self.conn
        if conn is None:
            return
        transaction = conn.get_transaction()
        if transaction is None:
            return
        try:
            if transaction.is_active or conn.invalidated:
                conn.rollback()
                return
            # The COMMIT was refused: SQLAlchemy forgets the transaction without a ROLLBACK,
            # but SQLite keeps it open, locks and writes included, until one is sent.
            pooled = conn.connection
            conn.rollback()
            conn.dialect.do_rollback(pooled)
        except sa.exc.DBAPIError:  # the connection died under us: never hand it out again
            conn.invalidate()


# --- the model: the same Unit of Work over dictionaries --------------------------------------


@dataclass
class MemoryLedger:
    balances: dict[str, int] = field(default_factory=dict)
    entries: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (account, amount)

    def unit_of_work(self) -> MemoryWork:
        return MemoryWork(self)

    def state(self) -> State:
        return canonical(self.balances, [(e, a, n) for e, (a, n) in self.entries.items()])


class MemoryWork(Work):
    def __init__(self, store: MemoryLedger) -> None:
        super().__init__()
        self.store = store

    def _load(self, account: str) -> int | None:
        return self.store.balances.get(account)

    def _all(self) -> list[str]:
        return list(self.store.balances)

    def commit(self) -> None:
        for account in self.opened:
            self.store.balances[account] = 0
        for entry, account, amount in self.posted:
            self.store.entries[entry] = (account, amount)
            self.store.balances[account] += amount
        self._forget()


# --- what is committed, and what must hold of it ---------------------------------------------


def canonical(balances: Mapping[str, int], rows: list[tuple[str, str, int]]) -> State:
    return {
        "accounts": {a: {"balance": b} for a, b in sorted(balances.items())},
        "entries": sorted([e, a, n] for e, a, n in rows),
    }


def invariants(state: State) -> list[str]:
    problems = []
    balances = {a: v["balance"] for a, v in state["accounts"].items()}
    for account, balance in balances.items():
        recorded = sum(n for _, a, n in state["entries"] if a == account)
        if balance < 0:
            problems.append(f"account {account} has a negative balance ({balance})")
        if balance != recorded:
            problems.append(f"account {account}: balance {balance}, its entries sum to {recorded}")
    # Transfers move money without making any: only deposits and withdrawals change the total.
    external = sum(n for e, _, n in state["entries"] if e[0] in "dw")
    if sum(balances.values()) != external:
        problems.append(
            f"balances total {sum(balances.values())}, but deposits minus withdrawals are"
            f" {external}: half a transfer is committed, or an entry names no account"
        )
    return problems


class LedgerSystem:
    def __init__(self, engine: Engine, unsafe: bool) -> None:
        self.engine, self.unsafe = engine, unsafe

    def unit_of_work(self, fault_hook: FaultHook | None = None) -> SqlWork:
        return SqlWork(self.engine, self.unsafe, fault_hook)

    def new_model(self) -> MemoryLedger:
        return MemoryLedger()

    def committed_state(self) -> State:
        with self.engine.connect() as conn:
            balances = {r.id: r.balance for r in conn.execute(select(accounts))}
            rows = [(r.id, r.account_id, r.amount) for r in conn.execute(select(entries))]
        return canonical(balances, rows)

    def invariants(self, state: State) -> list[str]:
        return invariants(state)

    def reset(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(entries))
            conn.execute(sa.delete(accounts))

    def dispose(self) -> None:
        try:
            metadata.drop_all(self.engine)
        finally:
            self.engine.dispose()


# --- the operations and queries, on JSON arguments -------------------------------------------

Args = dict[str, Any]


def _account(state: State, ids: Ids, other_than: str = "") -> st.SearchStrategy[str]:
    """An account that exists nine times in ten; otherwise one that never does. Half the time
    one another session's open unit of work holds, when there is one (see `Ids.contended`)."""
    known = sorted(a for a in state["accounts"] if a != other_than)
    pick = st.sampled_from(known) if known else st.just("nobody")
    any_account = st.tuples(st.integers(0, 9), pick).map(lambda t: "nobody" if t[0] == 9 else t[1])
    held = [a for a in ids.contended if a in known]
    return st.one_of(st.sampled_from(held), any_account) if held else any_account


def _fresh(ids: Ids, prefix: str) -> st.SearchStrategy[str]:
    # A map, so that ids.fresh runs each time an argument is drawn, not once here.
    return st.just(prefix).map(ids.fresh)


def open_args(state: State, ids: Ids) -> st.SearchStrategy[Args]:
    return st.fixed_dictionaries(
        {"account": _fresh(ids, "acct"), "initial": st.integers(0, 300), "entry": _fresh(ids, "d")}
    )


def _money(prefix: str) -> Callable[[State, Ids], st.SearchStrategy[Args]]:
    def arguments(state: State, ids: Ids) -> st.SearchStrategy[Args]:
        money = {"account": _account(state, ids), "amount": st.integers(1, 300)}
        return st.fixed_dictionaries({**money, "entry": _fresh(ids, prefix)})

    return arguments


def transfer_args(state: State, ids: Ids) -> st.SearchStrategy[Args]:
    return _account(state, ids).flatmap(
        lambda source: st.fixed_dictionaries(
            {
                "source": st.just(source),
                "target": _account(state, ids, other_than=source),
                "amount": st.integers(1, 300),
                "entry": _fresh(ids, "t"),
            }
        )
    )


def _positive(amount: int) -> None:
    if amount <= 0:
        raise LedgerError(f"an amount must be positive, got {amount}")


def _take(uow: Work, entry: str, account: str, amount: int) -> None:
    _positive(amount)
    if uow.balance(account) < amount:
        raise InsufficientFunds(f"account {account} holds {uow.balance(account)} < {amount}")
    uow.post(entry, account, -amount)


def open_account(uow: Work, a: Args) -> Any:
    if a["initial"] < 0:
        raise LedgerError(f"an opening deposit cannot be negative, got {a['initial']}")
    uow.open(a["account"])
    if a["initial"]:
        uow.post(a["entry"], a["account"], a["initial"])
    return a["account"]


def deposit(uow: Work, a: Args) -> Any:
    _positive(a["amount"])
    uow.post(a["entry"], a["account"], a["amount"])
    return uow.balance(a["account"])


def withdraw(uow: Work, a: Args) -> Any:
    _take(uow, a["entry"], a["account"], a["amount"])
    return uow.balance(a["account"])


def transfer(uow: Work, a: Args) -> Any:
    if a["source"] == a["target"]:
        raise LedgerError(f"a transfer needs two accounts, got {a['source']} twice")
    uow.balance(a["target"])  # an unknown target is refused before anything is posted
    _take(uow, a["entry"] + "-", a["source"], a["amount"])
    uow.post(a["entry"] + "+", a["target"], a["amount"])
    return [uow.balance(a["source"]), uow.balance(a["target"])]


def transfer_now(uow: Work, a: Args) -> Any:
    """The application service: a transfer in a unit of work of its own."""
    with uow:
        result = transfer(uow, a)
        uow.commit()
    return result


def _funded(state: State) -> bool:
    return any(v["balance"] > 0 for v in state["accounts"].values())


def _two_accounts_funded(state: State) -> bool:
    return _funded(state) and len(state["accounts"]) >= 2


def _reading(read: Callable[[Work, Args], Any]) -> Callable[[Work, Args], Any]:
    def run(uow: Work, a: Args) -> Any:
        with uow:
            return read(uow, a)

    return run


OPERATIONS = (
    Operation("open_account", open_args, open_account),
    Operation("deposit", _money("d"), deposit, enabled=lambda s: bool(s["accounts"])),
    Operation("withdraw", _money("w"), withdraw, enabled=_funded),
    Operation("transfer", transfer_args, transfer, "step", _two_accounts_funded),
    Operation("transfer_now", transfer_args, transfer_now, "transaction", _two_accounts_funded),
)
QUERIES = (
    Query(
        "balance",
        lambda s, ids: st.fixed_dictionaries({"account": _account(s, ids)}),
        _reading(lambda u, a: u.balance(a["account"])),
    ),
    Query("accounts", lambda s, ids: st.just({}), _reading(lambda u, a: u.accounts())),
)


# --- the performance workload: what the load suites do with it ------------------------------


class LedgerWorkload:
    """uowstress's Workload protocol: a key is an account, a change a deposit of 1."""

    def create(self, uow: Work, key: str) -> None:
        uow.open(key)

    def change(self, uow: Work, key: str, n: int) -> None:
        uow.post(f"d{n}", key, 1)

    def read(self, uow: Work, key: str) -> Any:
        return uow.balance(key)

    def tally(self, system: LedgerSystem) -> dict[str, int]:
        # Each change is one deposit entry of 1: its account's entry count.
        count = sa.func.count(entries.c.id)
        joined = accounts.outerjoin(entries, entries.c.account_id == accounts.c.id)
        query = select(accounts.c.id, count).select_from(joined).group_by(accounts.c.id)
        with system.engine.connect() as conn:
            return {account: int(n) for account, n in conn.execute(query)}

    def classify(self, error: BaseException) -> str | None:
        # The optimistic check's refusal is a conflict; a retry can succeed.
        return "conflict" if "changed since it was read" in str(error) else None


class LedgerTarget:
    name = "ledger"
    # Each account a unit of work changes is version-checked at commit, and what it only reads
    # decides nothing it writes elsewhere: commits are equivalent to some serial order.
    guarantee = "serializable"
    operations: Sequence[Operation] = OPERATIONS
    queries: Sequence[Query] = QUERIES
    workload = LedgerWorkload()
    tables = frozenset(t.name for t in metadata.sorted_tables)
    options: Mapping[str, str] = {
        "unsafe_commit": "1: commit each account and entry in a transaction of its own"
        " (a deliberate atomicity bug, to see uowstress find one); default 0"
    }

    def connect(
        self, url: str, options: Mapping[str, str], *, isolation_level: str | None = None
    ) -> LedgerSystem:
        unknown = sorted(set(options) - set(self.options))
        unsafe = options.get("unsafe_commit", "0")
        if unknown or unsafe not in ("0", "1"):
            raise ValueError(
                f"the ledger takes one option, unsafe_commit=0 or 1; got {dict(options)}"
            )
        extra = {"isolation_level": isolation_level} if isolation_level else {}
        engine = sa.create_engine(url, **extra)
        try:
            metadata.create_all(engine)
        except Exception:
            engine.dispose()  # no pooled connection may outlive a failed connect
            raise
        return LedgerSystem(engine, unsafe == "1")


TARGET: Target = LedgerTarget()  # annotated: mypy checks that the protocol is kept
