"""Units of work recorded from their aggregate footprints, on hand-built footprints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from uowstress.footprints import AggregateHistory, UnitRecord, describe
from uowstress.history import pr, r, w
from uowstress.target import AggregateRead, AggregateWrite, Footprint, PredicateRead

OPEN_R1 = "open sessions of robot r1"


def committed(
    reads: Sequence[AggregateRead | PredicateRead], writes: Sequence[AggregateWrite]
) -> Footprint:
    return Footprint(tuple(reads), tuple(writes), "committed")


def run(history: AggregateHistory, session: int, label: str, *footprints: Footprint) -> UnitRecord:
    """One whole unit of work, synced once at its end (a whole-transaction operation)."""
    unit = history.follow(session, label)
    history.sync(unit, list(footprints), closed=True)
    return unit


def with_robot(guarantee: str = "serializable") -> AggregateHistory:
    history = AggregateHistory(guarantee)
    run(history, 0, "setup", committed([], [AggregateWrite("robot:r1", 1)]))
    return history


def start_session(session_id: str) -> Footprint:
    """What the one-open-session check does without its lock: read the robot and the open
    sessions of the robot, insert a session that matches that predicate."""
    return committed(
        [AggregateRead("robot:r1", 1), PredicateRead(OPEN_R1, {})],
        [AggregateWrite(f"session:{session_id}", 1, frozenset({OPEN_R1}))],
    )


def test_footprints_become_reads_predicate_reads_writes_and_commits() -> None:
    history = with_robot()
    unit = run(history, 1, "session 1, start_session at step 3", start_session("s1"))
    txns = history.history.transactions()
    assert [t.status for t in txns] == ["committed", "committed"]
    second = txns[1]
    assert second.id == unit.txns[0] and second.session == 1
    assert second.ops == (r("robot:r1", 1), pr(OPEN_R1), w("session:s1", 1))
    assert history.commits == 2
    assert history.legend([second.id]) == f"T{second.id} = session 1, start_session at step 3"
    # The write named the predicate it satisfies, so the predicate is true of that version.
    definition = history.predicates()[OPEN_R1]
    assert definition("session:s1", 1)
    assert not definition("session:s1", 2)
    assert not definition("robot:r1", 1)


def test_two_starts_that_each_miss_the_others_insert_are_a_phantom_write_skew() -> None:
    history = with_robot()
    run(history, 0, "session 0's start", start_session("s1"))
    run(history, 1, "session 1's start", start_session("s2"))
    result = history.check()
    assert not result.ok
    finding = result.forbidden[0]
    assert finding.anomaly == "G2"
    assert set(finding.keys) == {"session:s1", "session:s2"}
    words = describe(finding, history)
    assert words.startswith("G2 (phantom write skew): ")
    for name in ("T2", "T3", OPEN_R1, "session 0's start", "session 1's start"):
        assert name in words


def test_without_predicate_matches_the_same_history_is_no_anomaly() -> None:
    # A write that does not name the predicate it satisfies hides the phantom: no claim.
    history = with_robot()
    for session, sid in ((0, "s1"), (1, "s2")):
        footprint = start_session(sid)
        plain = Footprint(
            footprint.reads, (AggregateWrite(f"session:{sid}", 1),), footprint.outcome
        )
        run(history, session, f"start {sid}", plain)
    assert history.check().findings == ()


def test_serial_starts_where_the_second_sees_the_first_are_clean() -> None:
    history = with_robot()
    run(history, 0, "first", start_session("s1"))
    run(
        history,
        1,
        "second",
        committed(
            [AggregateRead("robot:r1", 1), PredicateRead(OPEN_R1, {"session:s1": 1})],
            [],
        ),
    )
    assert history.check().findings == ()


def test_two_commits_installing_one_version_are_a_lost_update() -> None:
    history = with_robot()
    for session in (0, 1):
        run(
            history,
            session,
            f"session {session}'s assess",
            committed([AggregateRead("robot:r1", 1)], [AggregateWrite("robot:r1", 2)]),
        )
    txns = history.history.transactions()
    # The second install of version 2 gets a value of its own, so each read names its writer.
    assert [t.ops[-1] for t in txns[1:]] == [w("robot:r1", 2), w("robot:r1", "2#2")]
    result = history.check()
    assert result.forbidden[0].anomaly == "P4"
    assert "T2 and T3 both read robot:r1 = 1" in result.forbidden[0].explanation
    # A later read of version 2 cannot tell which install it saw: it is left out.
    reader = run(
        history,
        0,
        "reader",
        committed([AggregateRead("robot:r1", 2), AggregateRead("robot:r9", 1)], []),
    )
    read = next(t for t in history.history.transactions() if t.id == reader.txns[0])
    assert read.ops == (r("robot:r9", 1),)


def test_a_predicate_read_naming_an_ambiguous_version_is_left_out_whole() -> None:
    history = with_robot()
    for session in (0, 1):
        run(
            history,
            session,
            "assess",
            committed([AggregateRead("robot:r1", 1)], [AggregateWrite("robot:r1", 2)]),
        )
    unit = run(history, 0, "query", committed([PredicateRead("robots", {"robot:r1": 2})], []))
    txn = next(t for t in history.history.transactions() if t.id == unit.txns[0])
    assert txn.ops == ()


def test_reads_are_recorded_once_as_a_unit_of_work_goes_on() -> None:
    history = with_robot()
    unit = history.follow(2, "session 2")
    first = Footprint((AggregateRead("robot:r1", 1),))
    history.sync(unit, [first], closed=False)
    second = Footprint((AggregateRead("robot:r1", 1), PredicateRead(OPEN_R1, {})))
    history.sync(unit, [second], closed=False)
    assert history.commits == 1
    history.sync(unit, [Footprint(second.reads, (), "aborted")], closed=True)
    txn = history.history.transactions()[-1]
    assert txn.status == "aborted"
    assert txn.ops == (r("robot:r1", 1), pr(OPEN_R1))
    # Nothing more is recorded for a unit of work that has ended.
    history.sync(unit, [Footprint(second.reads, (), "aborted")], closed=True)
    assert len(history.history.transactions()) == 2


def test_a_unit_of_work_closed_while_open_is_rolled_back() -> None:
    history = with_robot()
    unit = history.follow(1, "left open")
    history.sync(unit, [Footprint((AggregateRead("robot:r1", 1),))], closed=True)
    assert history.history.transactions()[-1].status == "aborted"


def test_a_commit_whose_connection_died_has_an_unknown_outcome() -> None:
    history = with_robot()
    run(history, 1, "lost", Footprint((AggregateRead("robot:r1", 1),), (), "unknown"))
    txn = history.history.transactions()[-1]
    assert txn.status == "unknown"
    assert history.commits == 1


def test_each_transaction_of_a_unit_of_work_is_its_own() -> None:
    history = with_robot()
    unit = run(
        history,
        1,
        "two commits",
        committed([AggregateRead("robot:r1", 1)], [AggregateWrite("robot:r1", 2)]),
        committed([AggregateRead("robot:r1", 2)], [AggregateWrite("robot:r1", 3)]),
    )
    assert len(unit.txns) == 2
    assert [t.status for t in history.history.transactions()] == ["committed"] * 3
    assert history.check().findings == ()


def test_what_the_guarantee_permits_is_kept_apart_from_what_it_forbids() -> None:
    history = with_robot("read committed")
    run(history, 0, "a", start_session("s1"))
    run(history, 1, "b", start_session("s2"))
    result = history.check()
    assert result.ok
    assert [f.anomaly for f in result.permitted] == ["G2"]


# -- simulated units of work: serial and snapshot-isolated runs must come out clean -------------

ROBOTS = ["robot:r1", "robot:r2"]


class _Store:
    """Aggregates at versions, each version open or closed; the query is "open ones"."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, bool]] = {}
        self.changed_at: dict[str, int] = {}
        self.commits = 0
        self.sessions = 0


@dataclass
class _Unit:
    session: int
    snapshot: dict[str, tuple[int, bool]]
    start: int
    reads: list[AggregateRead | PredicateRead] = field(default_factory=list)
    writes: dict[str, tuple[int, bool]] = field(default_factory=dict)


def _step(store: _Store, unit: _Unit, intent: tuple[str, int]) -> None:
    """One thing a unit of work does, against its snapshot and its own writes."""
    action, n = intent
    view = {**unit.snapshot, **unit.writes}
    loaded = {read.key for read in unit.reads if isinstance(read, AggregateRead)}
    if action == "load":
        # An aggregate is loaded once; later loads come from the unit of work's identity map.
        key = sorted(view)[n % len(view)] if view else None
        if key is not None and key not in loaded and key not in unit.writes:
            unit.reads.append(AggregateRead(key, view[key][0]))
    elif action == "query":
        found = {k: v for k, (v, is_open) in unit.snapshot.items() if is_open}
        unit.reads.append(PredicateRead(OPEN_R1, found))
    elif action == "start":
        store.sessions += 1
        unit.writes[f"session:s{store.sessions}"] = (1, True)
    elif action in ("close", "touch") and view:
        key = sorted(view)[n % len(view)]
        version, is_open = view[key]
        if key not in unit.writes:
            if key not in loaded:
                unit.reads.append(AggregateRead(key, version))  # it loads what it saves
            unit.writes[key] = (version + 1, is_open and action == "touch")


def _run_units(
    guarantee: str, intents: list[list[tuple[str, int]]], schedule: list[int], serial: bool
) -> AggregateHistory:
    """Units of work of three sessions, one at a time (``serial``) or interleaved under
    snapshot isolation (first committer wins); each syncs its footprint after every step."""
    store = _Store()
    history = AggregateHistory(guarantee)
    for robot in ROBOTS:
        store.rows[robot] = (1, False)
        run(history, 0, "setup", committed([], [AggregateWrite(robot, 1)]))
    queues = [list(range(j, len(intents), 3)) for j in range(3)]
    active: dict[int, tuple[_Unit, UnitRecord, list[tuple[str, int]]]] = {}

    def footprint(unit: _Unit, outcome: Literal["open", "committed", "aborted"]) -> Footprint:
        writes = tuple(
            AggregateWrite(k, v, frozenset({OPEN_R1}) if is_open else frozenset())
            for k, (v, is_open) in unit.writes.items()
        )
        return Footprint(tuple(unit.reads), writes if outcome == "committed" else (), outcome)

    def step(s: int) -> None:
        if s not in active:
            if not queues[s]:
                return
            j = queues[s].pop(0)
            unit = _Unit(s + 1, dict(store.rows), store.commits)
            active[s] = (unit, history.follow(s + 1, f"unit {j}"), list(intents[j]))
        unit, record, todo = active[s]
        if todo:
            _step(store, unit, todo.pop(0))
            history.sync(record, [footprint(unit, "open")], closed=False)
            return
        del active[s]
        if any(store.changed_at.get(k, -1) >= unit.start for k in unit.writes):
            history.sync(record, [footprint(unit, "aborted")], closed=True)
            return
        store.commits += 1
        for k, row in unit.writes.items():
            store.rows[k] = row
            store.changed_at[k] = store.commits
        history.sync(record, [footprint(unit, "committed")], closed=True)

    if serial:
        for s in [j % 3 for j in range(len(intents))]:
            while True:
                step(s)
                if s not in active:
                    break
    else:
        for s in schedule:
            step(s)
    while active or any(queues):
        for s in range(3):
            step(s)
    return history


_unit_intents = st.lists(
    st.tuples(st.sampled_from(["load", "query", "start", "close", "touch"]), st.integers(0, 9)),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_unit_intents, min_size=1, max_size=8))
def test_serial_units_of_work_show_no_anomaly(intents: list[list[tuple[str, int]]]) -> None:
    history = _run_units("serializable", intents, [], serial=True)
    result = history.check()
    assert result.findings == (), [describe(f, history) for f in result.findings]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_unit_intents, min_size=1, max_size=8),
    st.lists(st.integers(0, 2), max_size=40),
)
def test_snapshot_isolated_units_of_work_pass_snapshot(
    intents: list[list[tuple[str, int]]], schedule: list[int]
) -> None:
    history = _run_units("snapshot", intents, schedule, serial=False)
    result = history.check()
    assert result.ok, [describe(f, history) for f in result.forbidden]
