"""How fast the isolation checker classifies a history, and how that scales.

Run with ``uv run python benchmarks/run.py checker`` (or this file directly, with
``--rounds N``, ``--seed S`` and ``--shape items`` or ``--shape sessions`` for one shape).

Builds synthetic histories of 10,000 and 100,000 transactions shaped like the scheduler's:
4 sessions, 3-6 operations per transaction over a few thousand item keys and a few hundred
append-only lists (each retired after 16 appends, so that lists do not grow with the history),
about 3% aborted transactions, executed serially (so they are anomaly-free) except for a lost
update, a write skew and an aborted read injected every few thousand transactions. Times
``analyse`` on both in ``--rounds`` rounds (5 by default), each round analysing each history
once, the two taking turns (which one goes first alternates), so that a load that comes and
goes on a shared machine weighs on both alike and each gets the same number of tries. Prints
the best CPU and wall-clock time of each, the throughput and the 100k/10k ratio of the best
times (the 10k history is the baseline measured in the same run; 10.0 would be linear), with
the median of the rounds' own ratios beside it, against the goals: 100k classified in at most
10 s (CPU time, which other processes on a shared machine do not inflate; wall-clock shown
beside it) and at most 12 times the 10k time. A 200k history is timed once too, for
information. It asserts nothing about time: machines differ; read the figures.

Each history's dependency graph is counted too (untimed), with the time per edge: the checker's
work follows its graph, and the graph of these histories grows faster than the history at
first. Over a fixed key space, a short history has many reads of a key nobody has written yet
(no write-read edge) and, at its end, one last version per key that nobody overwrote (no
anti-dependency edge from its readers): about 5.6 edges per transaction at 10k, 6.7 at 100k.
The 100k history thus holds about 11.9 times the 10k history's edges; the time per edge rises
too, as the checker's working set outgrows the CPU caches, and the two multiply.

A second shape is timed the same way, 10,000 against 100,000 transactions: predicate reads
followed by many writes that match them, as the sessions of a robot are. Each transaction
queries the open sessions of one of 8 robots (a predicate per robot), closes those it finds
but the newest, two at most (the closed version no longer matches), and opens a new one (an
insert that matches), one after another with the timing a recorded history has (op spans); a
phantom (two transactions that each miss the other's new session, G2) is injected every few
thousand. Every read is followed by all the later sessions of its robot: a checker that gives
each read an edge to each of them grows with the square of the history.

``--baseline FILE`` also times another version of ``uowstress/anomalies.py`` (e.g. one written
out with ``git show <commit>:src/uowstress/anomalies.py > /tmp/before.py``) on the same
histories of the first shape, the two taking turns ``--rounds`` times, and prints both with the
ratio of their times: on a shared machine the figures of one run drift with the load, their
ratio much less.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import count
from pathlib import Path
from types import ModuleType
from typing import Any

if __package__ in (None, ""):
    # Run as a script: the repository root holds the benchmarks package.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import verdicts
from uowstress.anomalies import Predicate, _Analysis, analyse
from uowstress.history import Op, Scalar, Transaction, append, ins, pr, r, txn, w

SESSIONS = 4
ITEM_KEYS = 3_000
LIST_KEYS = 300
# A list takes this many appends, then a fresh key replaces it (as Elle's list-append generator
# does): every read returns the whole list, so lists that grow without bound make a history ten
# times as long hold about a hundred times the values read.
APPENDS_PER_LIST = 16


class _Builder:
    """A serial executor over a dict that records what each transaction did."""

    def __init__(self, seed: int, appends_per_list: int | None) -> None:
        self.rng = random.Random(seed)
        self.appends_per_list = appends_per_list
        self.live_lists = list(range(LIST_KEYS))
        self.appends: Counter[int] = Counter()
        self.items: dict[str, int] = {}
        self.lists: dict[str, list[int]] = {}
        self.out: list[Transaction] = []
        self.next_value = 0
        self.position = 0

    def value(self) -> int:
        self.next_value += 1
        return self.next_value

    def item_key(self) -> str:
        return f"robot:r{self.rng.randrange(ITEM_KEYS)}:score"

    def list_key(self, *, appending: bool = False) -> str:
        slot = self.rng.randrange(LIST_KEYS)
        n = self.live_lists[slot]
        if appending and self.appends_per_list is not None:
            self.appends[n] += 1
            if self.appends[n] >= self.appends_per_list:
                self.live_lists[slot] = n + LIST_KEYS  # retired after this append
        return f"robot:r{n}:history"

    def emit(self, ops: list[Op], *, aborted: bool = False) -> None:
        tid = len(self.out) + 1
        self.position += len(ops) + 2
        if aborted:
            self.out.append(txn(tid, session=tid % SESSIONS, ops=ops, status="aborted"))
        else:
            self.out.append(txn(tid, session=tid % SESSIONS, ops=ops, commit=self.position))

    def random_txn(self) -> None:
        rng = self.rng
        ops: list[Op] = []
        mine: dict[str, int] = {}
        appended: dict[str, list[int]] = {}
        for _ in range(rng.randint(3, 6)):
            roll = rng.random()
            if roll < 0.45:
                k = self.item_key()
                ops.append(r(k, mine.get(k, self.items.get(k))))
            elif roll < 0.75:
                k = self.item_key()
                v = self.value()
                mine[k] = v
                ops.append(w(k, v))
            elif roll < 0.88:
                k = self.list_key()
                ops.append(r(k, tuple(self.lists.get(k, []) + appended.get(k, []))))
            else:
                k = self.list_key(appending=True)
                v = self.value()
                appended.setdefault(k, []).append(v)
                ops.append(append(k, v))
        aborted = rng.random() < 0.03
        if not aborted:
            self.items.update(mine)
            for k, vs in appended.items():
                self.lists.setdefault(k, []).extend(vs)
        self.emit(ops, aborted=aborted)

    def lost_update(self) -> None:
        k = self.item_key()
        seen = self.items.get(k)
        for _ in range(2):
            v = self.value()
            self.emit([r(k, seen), w(k, v)])
            self.items[k] = v

    def write_skew(self) -> None:
        x, y = self.item_key(), self.item_key()
        while y == x:
            y = self.item_key()
        before = (self.items.get(x), self.items.get(y))
        for k in (x, y):
            v = self.value()
            self.emit([r(x, before[0]), r(y, before[1]), w(k, v)])
            self.items[k] = v

    def aborted_read(self) -> None:
        k = self.item_key()
        v = self.value()
        self.emit([w(k, v)], aborted=True)
        self.emit([r(k, v)])


def build(
    n: int, seed: int = 0, every: int = 2_500, appends_per_list: int | None = APPENDS_PER_LIST
) -> list[Transaction]:
    """About ``n`` transactions, with one of each injected anomaly every ``every``; lists are
    retired after ``appends_per_list`` appends (``None``: they grow without bound)."""
    b = _Builder(seed, appends_per_list)
    injections: list[Callable[[], None]] = [b.lost_update, b.write_skew, b.aborted_read]
    while len(b.out) < n:
        if len(b.out) % every == every - 1:
            for inject in injections:
                inject()
        else:
            b.random_txn()
    return b.out


ROBOTS = 8


def build_sessions(
    n: int, seed: int = 0, every: int = 2_500
) -> tuple[list[Transaction], dict[str, Predicate]]:
    """About ``n`` transactions of the sessions shape (see the module's docstring), with a
    phantom every ``every``, and the predicates: a robot's query matches the versions that
    opened one of its sessions."""
    rng = random.Random(seed)
    opened: dict[tuple[str, Scalar], str] = {}  # (key, open version) -> the robot's query
    robot_of: dict[str, int] = {}
    live: list[list[tuple[str, Scalar]]] = [[] for _ in range(ROBOTS)]  # committed, open
    out: list[Transaction] = []
    event = 0
    values = count(1)

    def query(robot: int) -> str:
        return f"open sessions of robot r{robot}"

    def open_session(robot: int) -> Op:
        key, value = f"session:s{len(out) + 1}", next(values)
        opened[(key, value)] = query(robot)
        robot_of[key] = robot
        return ins(key, value)

    def emit(ops: list[Op]) -> None:
        nonlocal event
        spans = [(event + 2 * p, event + 2 * p + 1) for p in range(len(ops))]
        event += 2 * len(ops) + 1
        tid = len(out) + 1
        out.append(txn(tid, session=tid % SESSIONS, ops=ops, commit=event, spans=spans))
        event += 1
        for op in ops:
            if op.kind == "ins" and isinstance(op.value, int):
                live[robot_of[op.key]].append((op.key, op.value))

    while len(out) < n:
        robot = rng.randrange(ROBOTS)
        rows = list(live[robot])
        if len(out) % every == every - 1:
            # Two transactions that find the same sessions: each misses the one the other opens.
            emit([pr(query(robot), rows), open_session(robot)])
            emit([pr(query(robot), rows), open_session(robot)])
            continue
        ops = [pr(query(robot), rows)]
        # Closes all but the newest session, two at most (what a phantom left open goes too).
        closing = rows[: len(rows) - 1][:2]
        for key, _ in closing:
            ops.append(w(key, next(values)))  # closed: that version no longer matches
        live[robot] = rows[len(closing) :]
        ops.append(open_session(robot))
        emit(ops)

    def definition(name: str) -> Predicate:
        return lambda key, value: opened.get((key, value)) == name

    return out, {query(robot): definition(query(robot)) for robot in range(ROBOTS)}


Checker = Callable[[list[Transaction]], Iterable[Any]]


def _analysed(
    history: list[Transaction], check: Checker = analyse
) -> tuple[float, float, Counter[str]]:
    """CPU and wall-clock seconds of one call to ``check`` (``analyse`` unless another
    version's), and what it found.

    CPU time is the figure to compare: it is not inflated by other processes on a shared
    machine, and ``analyse`` is single-threaded, so on an idle machine the two agree."""
    c0, w0 = time.process_time(), time.perf_counter()
    findings = check(history)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return cpu, wall, Counter(f.anomaly for f in findings)


def _load(path: str) -> ModuleType:
    """Another version of the checker module, under a name of its own."""
    spec = importlib.util.spec_from_file_location("baseline_anomalies", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--baseline {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _compare(
    baseline: ModuleType, small: list[Transaction], large: list[Transaction], rounds: int
) -> None:
    """The baseline and this checker taking turns on both histories; best and median CPU."""
    versions: dict[str, Checker] = {"baseline": baseline.analyse, "this": analyse}
    for name, fn in versions.items():
        found = _analysed(large, fn)[2]
        print(f"{name}: found on 100k {dict(sorted(found.items()))}")
    times: dict[tuple[str, int], list[float]] = {}
    for turn in range(rounds):
        order = list(versions.items())
        for name, fn in order if turn % 2 == 0 else order[::-1]:
            times.setdefault((name, 10), []).append(_analysed(small, fn)[0])
            times.setdefault((name, 100), []).append(_analysed(large, fn)[0])

    def figures(xs: Sequence[float]) -> str:
        return f"best {min(xs):6.3f} s, median {statistics.median(xs):6.3f} s"

    for name in versions:
        s, big = times[(name, 10)], times[(name, 100)]
        print(
            f"{name:8s}: 10k {figures(s)};  100k {figures(big)};  ratio 100k/10k "
            f"{min(big) / min(s):.2f} (best), {statistics.median(big) / statistics.median(s):.2f}"
            " (median)"
        )
    for size in (10, 100):
        b, t = times[("baseline", size)], times[("this", size)]
        print(
            f"{size}k: this / baseline {min(t) / min(b):.2f} (best), "
            f"{statistics.median(t) / statistics.median(b):.2f} (median)"
        )


GOAL_S = 10.0
GOAL_RATIO = 12.0


def size(history: Sequence[Transaction]) -> int:
    """Operations plus the elements of every list read: what the checker has to look at."""
    return sum(
        len(t.ops) + sum(len(op.value) for op in t.ops if isinstance(op.value, tuple))
        for t in history
    )


def edges(history: Sequence[Transaction], predicates: Mapping[str, Predicate] | None = None) -> int:
    """The number of edges of the dependency graph the checker builds for ``history``."""
    analysis = _Analysis(history, predicates or {})
    analysis.run()
    return len(analysis.e_src)


@dataclass(frozen=True)
class Timing:
    transactions: int
    size: int
    edges: int
    cpu_s: float
    wall_s: float
    found: Counter[str]


@dataclass(frozen=True)
class CheckerFigures:
    small: Timing
    large: Timing
    # Twice the large history (informative): past the size where the checker's working set
    # outgrows the CPU caches, time per transaction rises much more slowly.
    beyond: Timing | None = None
    # Each round's large time over its small time (CPU), in the order of the rounds.
    round_ratios: tuple[float, ...] = ()
    shape: str = "items"

    @property
    def ratio(self) -> float:
        return self.large.cpu_s / self.small.cpu_s

    @property
    def wall_ratio(self) -> float:
        return self.large.wall_s / self.small.wall_s

    @property
    def median_ratio(self) -> float:
        return statistics.median(self.round_ratios) if self.round_ratios else self.ratio


def _timing(
    history: list[Transaction],
    runs: Sequence[tuple[float, float, Counter[str]]],
    predicates: Mapping[str, Predicate] | None = None,
) -> Timing:
    """The best CPU and the best wall-clock time of ``runs`` of ``history``."""
    return Timing(
        len(history),
        size(history),
        edges(history, predicates),
        min(cpu for cpu, _, _ in runs),
        min(wall for _, wall, _ in runs),
        runs[-1][2],
    )


#: The shapes of history timed: a name, and how to build one of about n transactions with its
#: predicates.
SHAPES: dict[str, Callable[[int, int], tuple[list[Transaction], Mapping[str, Predicate]]]] = {
    "items": lambda n, seed: (build(n, seed), {}),
    "sessions": lambda n, seed: build_sessions(n, seed),
}


def measure_checker(
    *,
    small: int = 10_000,
    large: int = 100_000,
    rounds: int = 5,
    seed: int = 0,
    beyond: bool = True,
    shape: str = "items",
) -> CheckerFigures:
    """Both histories of ``shape`` analysed once per round, taking turns (see the module's
    docstring); ``beyond``: one of twice the large size too, once."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: analyse each history at least once")
    made = {n: SHAPES[shape](n, seed) for n in (small, large)}
    runs: dict[int, list[tuple[float, float, Counter[str]]]] = {small: [], large: []}
    for turn in range(rounds):
        for n in (small, large) if turn % 2 == 0 else (large, small):
            history, predicates = made[n]
            runs[n].append(_analysed(history, partial(analyse, predicates=predicates)))
    extra = None
    if beyond:
        history, predicates = SHAPES[shape](2 * large, seed)
        check = partial(analyse, predicates=predicates)
        extra = _timing(history, [_analysed(history, check)], predicates)
    return CheckerFigures(
        _timing(made[small][0], runs[small], made[small][1]),
        _timing(made[large][0], runs[large], made[large][1]),
        extra,
        tuple(b[0] / a[0] for a, b in zip(runs[small], runs[large], strict=True)),
        shape,
    )


#: What each shape's goals are called, and what the shape is.
_LABELS = {"items": "checker", "sessions": "checker predicate reads"}
_TITLES = {"sessions": "predicate reads followed by many writes that match them"}


def describe(f: CheckerFigures) -> list[str]:
    def line(t: Timing) -> str:
        found = ", ".join(f"{k}={v}" for k, v in sorted(t.found.items())) or "none"
        return (
            f"  {t.transactions:>7,} txns  {t.size:>9,} ops+values  {t.edges:>9,} edges  "
            f"cpu {t.cpu_s:6.3f} s  wall {t.wall_s:6.3f} s  "
            f"{t.transactions / t.cpu_s:>8,.0f} txns/s (cpu)  found: {found}"
        )

    def per_edge(t: Timing) -> str:
        return f"{t.cpu_s / t.edges * 1e6:.2f}"

    timings = [f.small, f.large] if f.beyond is None else [f.small, f.large, f.beyond]
    lines = [line(t) for t in timings]
    if f.beyond is not None:
        lines.append(f"  ratio {f.beyond.cpu_s / f.large.cpu_s:.2f} for twice the large history")
    lines.append(
        f"  the large history has {f.large.edges / f.small.edges:.2f} times the small one's"
        f" edges; CPU per edge {', '.join(per_edge(t) for t in timings)} us (info)"
    )
    title = [f"  shape {f.shape}: {_TITLES[f.shape]}"] if f.shape in _TITLES else []
    return [
        *title,
        *lines,
        f"  {f.large.transactions:,} transactions: {f.large.cpu_s:.2f} s CPU"
        f" {verdicts.at_most(f.large.cpu_s, GOAL_S, ' s')}",
        f"  ratio {f.ratio:.2f} for {f.large.transactions / f.small.transactions:.0f} times the"
        f" history, best times of {len(f.round_ratios)} rounds (wall {f.wall_ratio:.2f};"
        f" median of the rounds' ratios {f.median_ratio:.2f})"
        f" {verdicts.at_most(f.ratio, GOAL_RATIO)}",
    ]


def goals(f: CheckerFigures) -> list[verdicts.Goal]:
    label = _LABELS[f.shape]
    return [
        verdicts.Goal(
            f"{label}, {f.large.transactions:,} transactions",
            f"{f.large.cpu_s:.2f} s CPU (<= {GOAL_S:g} s)",
            f.large.cpu_s <= GOAL_S,
        ),
        verdicts.Goal(
            f"{label}, 10x the history / time ratio",
            f"{f.ratio:.2f} (<= {GOAL_RATIO:g})",
            f.ratio <= GOAL_RATIO,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="rounds analysing each history once (and turns of each checker with --baseline)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shape", choices=sorted(SHAPES), action="append", help="the shapes timed (default: all)"
    )
    parser.add_argument("--baseline", help="another anomalies.py to time on the same histories")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give at least 1")
    for shape in args.shape or SHAPES:
        f = measure_checker(
            rounds=args.rounds, seed=args.seed, shape=shape, beyond=shape == "items"
        )
        for text in describe(f):
            print(text)
    if args.baseline:
        _compare(
            _load(args.baseline), build(10_000, args.seed), build(100_000, args.seed), args.rounds
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
