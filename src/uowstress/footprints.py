"""Units of work as a history: aggregate footprints turned into what the anomaly checker reads.

A system that offers `footprints(uow)` (see `uowstress.target.Footprint`) says, for each
transaction of a Unit of Work, which aggregate versions it loaded, what its queries found and
which versions its commit installed. `AggregateHistory` records that, in the order the
scheduler saw it happen, as a `uowstress.history.History` over aggregate keys:

- a loaded aggregate is a read of its key (``r("robot:r1", 3)``);
- a query is a predicate read (``pr("open sessions of robot r1", ...)``) whose rows are the
  aggregates the database returned;
- an installed version is a write of its key.

Versions are the values. The checker needs every write of a key to carry its own value, and
two commits can install the same version of one aggregate when nothing checks versions (a
lost update): the second install of version 3 is written ``"3#2"``, the third ``"3#3"``. A
later read of such a version cannot tell which install it saw, so it is left out (which can
hide an anomaly, never invent one). A predicate is true of a written version when the write
named it in `AggregateWrite.matches`; that gives the checker its predicate definitions, so a
query that missed a matching insert shows as a predicate anti-dependency (a phantom, G2).

Reads and writes are recorded when the step that did them is seen complete, so a read looks
later than it was: the checker then allows it to have seen more versions, erring on the side
of finding less.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from uowstress.anomalies import DESCRIPTIONS, CheckResult, Finding, Predicate, check
from uowstress.history import History, Op, Scalar, pr, r, w
from uowstress.target import AggregateRead, AggregateWrite, Footprint, PredicateRead

__all__ = ["AggregateHistory", "UnitRecord", "describe"]


@dataclass
class UnitRecord:
    """One Unit of Work being followed: the history transaction of each of its footprints."""

    session: int
    label: str
    txns: list[int] = field(default_factory=list)
    recorded: list[int] = field(default_factory=list)  # reads recorded, per footprint
    ended: list[bool] = field(default_factory=list)


class AggregateHistory:
    """The history of every unit of work of a run, built from their footprints."""

    def __init__(self, guarantee: str) -> None:
        self.guarantee = guarantee
        self.history = History()
        self.commits = 0
        self.labels: dict[int, str] = {}
        self._next_txn = 1
        # (key, version) -> the value of each commit that installed it, in commit order
        self._installs: dict[tuple[str, int], list[Scalar]] = {}
        self._matches: dict[tuple[str, Scalar], frozenset[str]] = {}
        self._predicates: set[str] = set()

    # -- following units of work -----------------------------------------------------------

    def follow(self, session: int, label: str) -> UnitRecord:
        """Start following a Unit of Work of `session`; `label` says which, for messages."""
        return UnitRecord(session, label)

    def sync(self, unit: UnitRecord, footprints: Sequence[Footprint], *, closed: bool) -> None:
        """Record what the Unit of Work did since the last sync. `closed`: it is over, so a
        transaction it left open was rolled back."""
        h = self.history
        for index, footprint in enumerate(footprints):
            if index == len(unit.txns):
                txn = self._next_txn
                self._next_txn += 1
                unit.txns.append(txn)
                unit.recorded.append(0)
                unit.ended.append(False)
                self.labels[txn] = unit.label
                h.begin(unit.session, txn)
            if unit.ended[index]:
                continue
            txn = unit.txns[index]
            for read in footprint.reads[unit.recorded[index] :]:
                op = self._read_op(read)
                if op is not None:
                    h.invoke_op(unit.session, txn, Op(op.kind, op.key))
                    h.ok_op(unit.session, txn, op)
            unit.recorded[index] = len(footprint.reads)
            if footprint.outcome != "open":
                self._end(unit.session, txn, footprint)
                unit.ended[index] = True
        if closed:
            for index, txn in enumerate(unit.txns):
                if not unit.ended[index]:
                    h.abort(unit.session, txn, "the unit of work ended without a commit")
                    unit.ended[index] = True

    def _end(self, session: int, txn: int, footprint: Footprint) -> None:
        h = self.history
        if footprint.outcome == "aborted":
            h.abort(session, txn)
            return
        if footprint.outcome == "committed":
            for write in footprint.writes:
                op = w(write.key, self._install(write))
                h.invoke_op(session, txn, op)
                h.ok_op(session, txn, op)
        h.commit_invoke(session, txn)
        if footprint.outcome == "committed":
            h.commit_ok(session, txn)
            self.commits += 1
        else:
            h.commit_info(session, txn, "the connection was lost during the commit")

    # -- values ------------------------------------------------------------------------------

    def _install(self, write: AggregateWrite) -> Scalar:
        installs = self._installs.setdefault((write.key, write.version), [])
        value: Scalar = write.version if not installs else f"{write.version}#{len(installs) + 1}"
        installs.append(value)
        self._matches[(write.key, value)] = write.matches
        return value

    def _value(self, key: str, version: int) -> Scalar | None:
        """The value of the install a read of `version` saw; None when several commits
        installed that version and the read cannot tell which."""
        installs = self._installs.get((key, version))
        if not installs:
            return version  # its commit is recorded later, as the first install
        return installs[0] if len(installs) == 1 else None

    def _read_op(self, read: AggregateRead | PredicateRead) -> Op | None:
        if isinstance(read, AggregateRead):
            value = self._value(read.key, read.version)
            return None if value is None else r(read.key, value)
        rows: list[tuple[str, Scalar]] = []
        for key, version in sorted(read.matched.items()):
            value = self._value(key, version)
            if value is None:
                # Rows left out would look like rows the query missed: no claim at all.
                return None
            rows.append((key, value))
        self._predicates.add(read.name)
        return pr(read.name, rows)

    # -- checking ----------------------------------------------------------------------------

    def predicates(self) -> dict[str, Predicate]:
        """The checker's definition of every recorded predicate: true of the versions whose
        write named it."""
        matches = self._matches

        def definition(name: str) -> Predicate:
            return lambda key, value: name in matches.get((key, value), ())

        return {name: definition(name) for name in self._predicates}

    def check(self) -> CheckResult:
        """Every anomaly of the history so far, judged against the guarantee."""
        return check(self.history.transactions(), self.guarantee, self.predicates())

    def legend(self, txns: Sequence[int]) -> str:
        """Which unit of work each transaction id stands for."""
        return "; ".join(f"T{t} = {self.labels.get(t, 'unknown')}" for t in dict.fromkeys(txns))


def describe(finding: Finding, history: AggregateHistory) -> str:
    """A finding of the checker in words: its class, the explanation, and which unit of work
    each transaction is."""
    words = DESCRIPTIONS.get(finding.anomaly, finding.anomaly)
    return (
        f"{finding.anomaly} ({words}): {finding.explanation} (values are aggregate versions;"
        f" {history.legend(finding.txns)})"
    )
