"""Which isolation anomalies a database really shows, level by level: `uowstress isolation`.

For every isolation level the backend offers (or those asked for), one Hypothesis exploration
of the register workload (stateful/registers.py) runs at that level. After every transaction
end, the example's history so far is analysed (anomalies.py); the first example that shows an
anomaly class is kept, as its concrete steps. The exploration stops when every class has been
seen, when the profile's examples are done, or when the level's share of the time budget for
searching is spent. Each kept example is then shrunk (stateful/minimize.py): a candidate counts
when its replay, on the table reset to its initial state, still shows the class.

Every verdict comes from what the server did: "observed" with a reproducer whose steps showed
the anomaly, or "not observed" with the number of examples tried. Nothing here knows what a
level is supposed to allow. Not observed is no proof of absence, only of the search's budget.

Time: the budget is split evenly over the levels still to run (time a level leaves unused goes
to the next ones); within a level, the search takes at most SEARCH_SHARE of its share and the
shrinking the rest, divided among the classes observed.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import seed as hypothesis_seed
from hypothesis import settings as Settings
from hypothesis.errors import HypothesisException
from hypothesis.stateful import run_state_machine_as_test
from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import NullPool

from uowstress.anomalies import ALWAYS_FORBIDDEN, INCOMPATIBLE, Finding, analyse
from uowstress.database import prepared_database
from uowstress.errors import ConfigError, UowstressError
from uowstress.options import random_seed
from uowstress.profiles import get_profile, machine_settings
from uowstress.stateful.minimize import minimize
from uowstress.stateful.registers import (
    PREDICATES,
    RegisterRun,
    RegisterWorkload,
    Step,
    create_table,
    describe_step,
    drop_table,
    isolation_levels,
    register_engine,
    register_machine,
    registers,
    replay_steps,
    step_sessions,
)

__all__ = [
    "ANOMALY_CLASSES",
    "SEARCH_SHARE",
    "CellResult",
    "IsolationReport",
    "LevelSearch",
    "normalize_level",
    "render_markdown",
    "render_matrix",
    "replay_reproducer",
    "resolve_levels",
    "search_isolation",
    "shows",
]

#: The anomaly classes searched for, in the matrix's column order.
ANOMALY_CLASSES: tuple[str, ...] = (
    "G0",
    "G1a",
    "G1b",
    "G1c",
    "OTV",
    "PMP",
    "P4",
    "G-single",
    "G-nonadjacent",
    "G2-item",
    "G2",
)
#: The part of a level's time share that the search may take; the rest is for shrinking.
SEARCH_SHARE = 0.7
# Findings that mean the tester or the database is broken, not an isolation anomaly.
_BROKEN = ALWAYS_FORBIDDEN | {INCOMPATIBLE}
# Replays per shrink at most: each costs a table reset and a scheduler.
_MAX_SHRINK_TRIALS = 200
# Examples per Hypothesis run; a level's search is a series of them (see _search_level).
_BATCH = 20
# Profiles that generate no examples cannot search.
_SEARCHING_PROFILES = ("dev", "ci", "nightly")

Progress = Callable[[str], None]


@dataclass
class CellResult:
    """One cell of the matrix: was ``anomaly`` observed at ``level``.

    ``examples``: the example in which it was first seen (observed), or every example the
    level's search tried (not observed). ``seconds``: until first seen plus its shrinking
    (observed), or the level's whole search (not observed). ``explanation`` is the checker's
    account of the reproducer's replay (reports only, not in the JSON).
    """

    level: str
    anomaly: str
    observed: bool
    examples: int
    seconds: float
    reproducer: list[Step] | None = None
    explanation: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "anomaly": self.anomaly,
            "observed": self.observed,
            "examples": self.examples,
            "seconds": round(self.seconds, 3),
            "reproducer": self.reproducer,
        }


@dataclass
class LevelSearch:
    """What one level's search did, for the report and the benchmark."""

    level: str
    examples: int = 0
    search_seconds: float = 0.0
    shrink_seconds: float = 0.0
    stalls: int = 0  # examples ended early: a wait the database did not resolve
    broken: dict[str, str] = field(default_factory=dict)  # garbage-read etc., first seen

    @property
    def seconds(self) -> float:
        return self.search_seconds + self.shrink_seconds


@dataclass
class IsolationReport:
    backend: str
    server_version: str
    database: str  # password hidden
    profile: str
    budget_s: float
    levels: list[LevelSearch]
    results: list[CellResult]
    seed: int | None = None  # what the search drew its examples with

    def to_json(self) -> dict[str, Any]:
        """The report as `uowstress isolation --json` writes it."""
        return {
            "backend": self.backend,
            "server_version": self.server_version,
            "seed": self.seed,
            "results": [cell.to_json() for cell in self.results],
        }

    def cell(self, level: str, anomaly: str) -> CellResult:
        for cell in self.results:
            if cell.level == level and cell.anomaly == anomaly:
                return cell
        raise KeyError(f"no result for {anomaly} at {level}")


def normalize_level(name: str) -> str:
    """``READ_COMMITTED``, ``read-committed`` and ``Read Committed`` are ``read committed``."""
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def resolve_levels(backend: str, requested: Iterable[str] | None) -> list[str]:
    """The levels to search, in the backend's order (weakest first); all when none given.

    Raises ConfigError naming the levels the backend offers when one is not among them.
    """
    offered = isolation_levels(backend)
    names = [normalize_level(part) for item in requested or () for part in item.split(",")]
    names = [n for n in names if n]
    if not names:
        return list(offered)
    unknown = [n for n in names if n not in offered]
    if unknown:
        raise ConfigError(
            f"{backend} has no isolation level {', '.join(repr(n) for n in unknown)}; it offers"
            f" {', '.join(repr(level) for level in offered)}"
        )
    return [level for level in offered if level in names]


# ---------------------------------------------------------------------------------------------
# Searching


@dataclass
class _First:
    steps: list[Step]
    focus: list[Step]  # only the steps of the transactions the finding names
    example: int
    seconds: float


class _LevelState:
    def __init__(self, anomalies: Sequence[str], deadline: float, max_examples: int) -> None:
        self.wanted = frozenset(anomalies)
        self.deadline = deadline
        self.max_examples = max_examples
        self.started = time.monotonic()
        self.examples = 0
        self.stalls = 0
        self.first: dict[str, _First] = {}
        self.broken: dict[str, str] = {}

    def stop(self) -> bool:
        return (
            self.wanted <= set(self.first)
            or time.monotonic() >= self.deadline
            or self.examples >= self.max_examples
        )

    def observe(self, run: RegisterRun) -> None:
        for finding in analyse(run.history.transactions(), PREDICATES):
            name = finding.anomaly
            if name in self.wanted and name not in self.first:
                involved = set(finding.txns)
                self.first[name] = _First(
                    steps=[dict(s) for s in run.steps],
                    focus=[
                        dict(s)
                        for s, txn in zip(run.steps, run.step_txns, strict=True)
                        if txn in involved
                    ],
                    example=self.examples + 1,
                    seconds=time.monotonic() - self.started,
                )
            elif name in _BROKEN and name not in self.broken:
                self.broken[name] = finding.explanation

    def finished(self, run: RegisterRun) -> None:
        self.examples += 1
        if run.stall is not None:
            self.stalls += 1


def shows(
    workload: RegisterWorkload, steps: Sequence[Mapping[str, Any]], anomaly: str
) -> Finding | None:
    """Replay ``steps`` on the reset table; the first finding of class ``anomaly``, if any."""
    run = workload.replay(steps)
    for finding in analyse(run.history.transactions(), PREDICATES):
        if finding.anomaly == anomaly:
            return finding
    return None


def _for_minimize(step: Step) -> Step:
    # minimize() deletes single steps only when their action is "apply"; the register
    # operations are carried under that name while shrinking.
    if step["action"] in ("begin", "commit", "rollback"):
        return dict(step)
    return {**step, "action": "apply", "op": step["action"]}


def _from_minimize(step: Step) -> Step:
    if step["action"] != "apply":
        return dict(step)
    out = {k: v for k, v in step.items() if k != "op"}
    out["action"] = step["op"]
    return out


def _renumbered(steps: list[Step]) -> list[Step]:
    """The sessions left after shrinking renumbered 0, 1, ... in order of first step."""
    order: dict[int, int] = {}
    for step in steps:
        order.setdefault(int(step["session"]), len(order))
    return [{**step, "session": order[int(step["session"])]} for step in steps]


def _shrink(
    workload: RegisterWorkload, first: _First, anomaly: str, budget_s: float
) -> tuple[list[Step], str | None]:
    """The smallest step list found that still shows ``anomaly``, and the checker's words on
    it (None when even the kept steps did not show it again on replay)."""
    shown: list[tuple[list[Step], str]] = []  # the last replay that showed it

    def still_fails(candidate: list[Step]) -> bool:
        plain = [_from_minimize(s) for s in candidate]
        try:
            finding = shows(workload, plain, anomaly)
        except (UowstressError, sa_exc.SQLAlchemyError):
            return False
        if finding is None:
            return False
        shown[:] = [(plain, finding.explanation)]
        return True

    started = time.monotonic()
    steps = first.steps
    # Most of an example is noise around the few transactions the finding names: one replay
    # of just those often does most of the shrinking.
    if first.focus and len(first.focus) < len(steps):
        focus = [_for_minimize(s) for s in first.focus]
        if still_fails(focus):
            steps = first.focus
    shrunk, _trials = minimize(
        [_for_minimize(s) for s in steps],
        still_fails,
        budget_s=max(0.0, budget_s - (time.monotonic() - started)),
        max_trials=_MAX_SHRINK_TRIALS,
    )
    plain = [_from_minimize(s) for s in shrunk]
    compact = _renumbered(plain)
    if compact != plain and still_fails([_for_minimize(s) for s in compact]):
        plain = compact
    if not shown or shown[0][0] != plain:
        # Nothing could be deleted (or no time was left): replay the kept steps once.
        shown.clear()
        still_fails([_for_minimize(s) for s in plain])
    return plain, shown[0][1] if shown else None


def _search_level(
    workload: RegisterWorkload,
    level: str,
    *,
    settings: Settings,
    budget_s: float,
    anomalies: Sequence[str],
    progress: Progress,
    seed: int,
) -> tuple[LevelSearch, list[CellResult]]:
    started = time.monotonic()
    level_deadline = started + budget_s
    state = _LevelState(anomalies, started + SEARCH_SHARE * budget_s, settings.max_examples)
    machine = register_machine(
        workload, observe=state.observe, stop=state.stop, finished=state.finished
    )
    try:
        # Hypothesis cannot be stopped early without a failure (which it would replay and
        # find inconsistent): examples after the stop do nothing, yet each still draws its
        # steps. Batches bound that waste to one batch.
        batches = 0
        while not state.stop():
            before = state.examples
            batch = min(_BATCH, state.max_examples - state.examples)
            # Each batch a seed of its own (the same one would draw the same examples again).
            batch_machine = hypothesis_seed(_batch_seed(seed, level, batches))(machine)
            batches += 1
            run_state_machine_as_test(
                batch_machine, settings=Settings(settings, max_examples=batch)
            )
            if state.examples == before:
                break
    except (HypothesisException, sa_exc.SQLAlchemyError, UowstressError) as error:
        raise UowstressError(
            f"the search at {level} stopped: {type(error).__name__}: {error}"
        ) from error
    search = LevelSearch(
        level=level,
        examples=state.examples,
        search_seconds=time.monotonic() - started,
        stalls=state.stalls,
        broken=dict(state.broken),
    )
    progress(
        f"  {level}: {state.examples} examples in {search.search_seconds:.1f}s,"
        f" observed {', '.join(a for a in anomalies if a in state.first) or 'nothing'}"
    )
    results: list[CellResult] = []
    observed = [a for a in anomalies if a in state.first]
    shrink_started = time.monotonic()
    for index, anomaly in enumerate(observed):
        first = state.first[anomaly]
        left = len(observed) - index
        cell_started = time.monotonic()
        steps, explanation = _shrink(
            workload, first, anomaly, (level_deadline - cell_started) / left
        )
        progress(f"    {anomaly}: {len(first.steps)} steps shrunk to {len(steps)}")
        results.append(
            CellResult(
                level=level,
                anomaly=anomaly,
                observed=True,
                examples=first.example,
                seconds=first.seconds + (time.monotonic() - cell_started),
                reproducer=steps,
                explanation=explanation,
            )
        )
    search.shrink_seconds = time.monotonic() - shrink_started
    for anomaly in anomalies:
        if anomaly not in state.first:
            results.append(
                CellResult(
                    level=level,
                    anomaly=anomaly,
                    observed=False,
                    examples=state.examples,
                    seconds=search.search_seconds,
                )
            )
    order = {a: i for i, a in enumerate(anomalies)}
    results.sort(key=lambda cell: order[cell.anomaly])
    return search, results


def _batch_seed(seed: int, level: str, batch: int) -> int:
    """The seed of one batch of one level's search, derived from the search's seed."""
    digest = hashlib.sha256(f"{seed}/{level}/{batch}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


def search_isolation(
    url: str,
    *,
    levels: Iterable[str] | None = None,
    budget_s: float = 120.0,
    profile: str = "ci",
    anomalies: Sequence[str] = ANOMALY_CLASSES,
    progress: Progress | None = None,
    allow_existing_tables: bool = False,
    seed: int | None = None,
) -> IsolationReport:
    """Search every level of the database at ``url`` for every class in ``anomalies``.

    ``seed`` fixes the examples drawn (None: one chosen at random, in the report): a search
    with the same seed draws the same examples, as far as its time budget lets it go, and the
    server's timing decides the rest (which session waits, which transaction a deadlock ends).

    Runs in a scratch database (see database.py); a SQLite file that holds tables is used only
    with ``allow_existing_tables``, and even then not when one of them is the register table,
    whose rows the search would overwrite. The register table is dropped at the end. Raises
    UowstressError (ConfigError, DatabaseUnreachable, UnsafeDatabase, ...) for what stops the
    search; the message never holds a password.
    """
    say = progress or (lambda _message: None)
    if not budget_s > 0:
        raise ConfigError(f"the time budget must be positive seconds, got {budget_s!r}")
    chosen_profile = get_profile(profile)
    if chosen_profile.name not in _SEARCHING_PROFILES:
        raise ConfigError(
            f"profile {profile!r} generates no examples; use one of"
            f" {', '.join(_SEARCHING_PROFILES)}"
        )
    unknown = [a for a in anomalies if a not in ANOMALY_CLASSES]
    if unknown:
        raise ConfigError(
            f"unknown anomaly classes {unknown}; use names from {', '.join(ANOMALY_CLASSES)}"
        )
    # The search never fails an example, so Hypothesis would save nothing in a database.
    settings = Settings(machine_settings(chosen_profile), database=None)
    if seed is None:
        seed = random_seed()
    started = time.monotonic()
    # The search's own table, which it fills, empties and drops: never a user's of that name.
    with prepared_database(
        url, allow_existing_tables=allow_existing_tables, ours={registers.name}
    ) as db:
        chosen = resolve_levels(db.backend, levels)
        say(
            f"{db.backend} ({db.display}, {db.server_version}): levels {', '.join(chosen)};"
            f" seed {seed}"
        )
        searches: list[LevelSearch] = []
        results: list[CellResult] = []
        try:
            for index, level in enumerate(chosen):
                share = (budget_s - (time.monotonic() - started)) / (len(chosen) - index)
                engine = register_engine(db.url, level)
                workload = RegisterWorkload(engine)
                try:
                    if index == 0:
                        create_table(engine)
                    search, cells = _search_level(
                        workload,
                        level,
                        settings=settings,
                        budget_s=max(share, 0.0),
                        anomalies=anomalies,
                        progress=say,
                        seed=seed,
                    )
                finally:
                    workload.close()
                    engine.dispose()
                searches.append(search)
                results.extend(cells)
                for name, explanation in search.broken.items():
                    say(f"  WARNING {name} at {level}: {explanation}")
                if search.stalls:
                    say(
                        f"  WARNING {search.stalls} examples at {level} ended in a wait the"
                        " database did not resolve"
                    )
        except BaseException:
            # The search's own error is the one to report, not a failed cleanup after it.
            with contextlib.suppress(sa_exc.SQLAlchemyError):
                _drop_register_table(db.url)
            raise
        _drop_register_table(db.url)
        return IsolationReport(
            backend=db.backend,
            server_version=db.server_version,
            database=db.display,
            profile=chosen_profile.name,
            budget_s=budget_s,
            levels=searches,
            results=results,
            seed=seed,
        )


def replay_reproducer(
    url: str,
    level: str,
    steps: Sequence[Mapping[str, Any]],
    *,
    allow_existing_tables: bool = False,
) -> RegisterRun:
    """Replay a reproducer of the isolation search (the ``reproducer`` steps of a cell of the
    JSON report) on ``url`` at isolation ``level`` (as the report names it, e.g. ``"read
    committed"``), as the search ran it: the register table is made, in a scratch schema or
    database on a server, the steps run on it, and it is dropped. Returns the run;
    ``analyse(run.history.transactions(), PREDICATES)`` (uowstress.anomalies,
    uowstress.stateful.registers) names the anomalies its history shows."""
    with prepared_database(
        url, allow_existing_tables=allow_existing_tables, ours={registers.name}
    ) as db:
        chosen = resolve_levels(db.backend, [level])
        if len(chosen) != 1:
            raise ConfigError(f"give one isolation level to replay at, not {level!r}")
        engine = register_engine(db.url, chosen[0])
        try:
            create_table(engine)
            return replay_steps(engine, steps)
        finally:
            engine.dispose()
            _drop_register_table(db.url)


def _drop_register_table(url: str) -> None:
    # A SQLite file the user named outlives the search: nothing of the search stays in it.
    engine = create_engine(url, poolclass=NullPool)
    try:
        drop_table(engine)
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------
# Rendering


def render_matrix(report: IsolationReport) -> str:
    """The levels-by-anomalies matrix as a Markdown table ("observed" / "—")."""
    anomalies = list(dict.fromkeys(cell.anomaly for cell in report.results))
    lines = [
        "| level | " + " | ".join(anomalies) + " |",
        "|---|" + "---|" * len(anomalies),
    ]
    for search in report.levels:
        marks = ["observed" if report.cell(search.level, a).observed else "—" for a in anomalies]
        lines.append(f"| {search.level} | " + " | ".join(marks) + " |")
    return "\n".join(lines)


def _script(steps: Sequence[Mapping[str, Any]]) -> str:
    """Steps as a table with one column per session, one row per step."""
    sessions = step_sessions(steps)
    lines = [
        "| # | " + " | ".join(f"session {s}" for s in range(sessions)) + " |",
        "|---|" + "---|" * sessions,
    ]
    for number, step in enumerate(steps, 1):
        cells = [""] * sessions
        cells[int(step["session"])] = describe_step(step)
        lines.append(f"| {number} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(report: IsolationReport, *, date: str | None = None) -> str:
    """The report as Markdown: the matrix, the search per level, then each reproducer."""
    when = f", {date}" if date else ""
    # The same seed draws the same examples again (see search_isolation).
    seeded = f", seed {report.seed}" if report.seed is not None else ""
    out = [
        f"# Isolation anomalies: {report.server_version}",
        "",
        f"Backend `{report.backend}` ({report.server_version}{when}), profile"
        f" {report.profile}, time budget {report.budget_s:g} s{seeded}."
        ' "observed": the server'
        ' produced a history with that anomaly (reproducer below); "—": not observed in'
        " the examples tried, which proves nothing about its absence. G0 cannot be observed"
        " by this search: the checker orders each register's versions by commit, which"
        " presumes no dirty writes (a database that allowed them would show other anomalies"
        ' instead), so its column is always "—".',
        "",
        render_matrix(report),
        "",
        "| level | examples | search s | shrink s |",
        "|---|---|---|---|",
    ]
    for search in report.levels:
        out.append(
            f"| {search.level} | {search.examples} | {search.search_seconds:.1f}"
            f" | {search.shrink_seconds:.1f} |"
        )
    broken = [(s.level, name, words) for s in report.levels for name, words in s.broken.items()]
    if broken:
        out += [
            "",
            "Also reported by the checker (outside the matrix: a transaction that does not see"
            " its own write, or a read of a value nobody wrote, means the database or the"
            " tester broke a rule every level keeps):",
            "",
        ]
        out += [f"- {level}: {name}: {words}" for level, name, words in broken]
    observed = [cell for cell in report.results if cell.observed and cell.reproducer]
    if observed:
        out += [
            "",
            "## Reproducers",
            "",
            "Registers k0..k3 start at 0 (written by T0); every write carries its own value."
            " `rmw` reads the key then writes it in one step; `pread even` / `pread all` read"
            " the rows with an even value / every row. Replay a reproducer (the `reproducer`"
            " steps of its cell in the JSON) with"
            " `uowstress.isolation.replay_reproducer(url, level, steps)`: it makes the register"
            " table, runs the steps at that isolation level and drops the table; then"
            " `uowstress.anomalies.analyse(run.history.transactions(),"
            " uowstress.stateful.registers.PREDICATES)` names the anomalies of the returned"
            " run.",
        ]
    for cell in observed:
        assert cell.reproducer is not None
        out += ["", f"### {cell.anomaly} at {cell.level}", ""]
        if cell.explanation:
            out += [cell.explanation, ""]
        else:
            out += [
                "(observed during the search; a replay of these steps did not show it again)",
                "",
            ]
        out.append(_script(cell.reproducer))
    return "\n".join(out) + "\n"
