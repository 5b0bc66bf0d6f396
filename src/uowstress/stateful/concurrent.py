"""Concurrent sessions: the target's operations through several Units of Work at once.

Each logical session has its own worker thread and its own connections (the scheduler in
uowstress.sessions); Hypothesis draws which session takes the next step. There is no model:
which serial order the database chose is not known in advance. After every step, with the
system quiescent, the committed state must satisfy every invariant of the target, and no
stall may be left that the database did not break. The cross-aggregate rules of the reference
system (one open session per robot, no lost assessment, scores equal to the best assessed)
are invariants, so a lost update or a write skew shows as a violated rule.

When the system offers `footprints(uow)` (see uowstress.target), every unit of work is also
recorded, aggregate by aggregate, as a history (uowstress.footprints), and after every commit
the anomaly checker runs on it: an anomaly the target's declared guarantee forbids is a
finding that names it (G2 for two units of work that each missed the other's matching insert,
P4 for a lost update, ...); one the guarantee permits is kept as observed.

A step is {"session": i, "action": ..., ...}: "begin", "apply", "commit", "rollback" with a
Unit of Work open on session i; "transaction" (a whole-transaction service) with none.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar, cast

from hypothesis import event, note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import Engine
from sqlalchemy import event as sa_event

from uowstress.anomalies import Finding as Anomaly
from uowstress.footprints import AggregateHistory, UnitRecord, describe
from uowstress.interrupts import raise_if_lost
from uowstress.sessions import Completion, Outcome, Scheduler
from uowstress.stateful.acid import RunRecorder
from uowstress.stateful.drawing import choose, draw_arguments, swarms
from uowstress.stateful.executor import (
    MISFIT_ERRORS,
    Finding,
    StepError,
    call,
    checked_state,
    refuse_failing_code,
    refuse_misfit,
)
from uowstress.target import (
    Footprint,
    FootprintSource,
    Ids,
    Model,
    Operation,
    State,
    System,
    Target,
    UnitOfWork,
)

OPEN_ACTIONS = ("apply", "commit", "rollback")
CLOSED_ACTIONS = ("begin", "transaction")


def prepare_engine_for_scheduler(engine: Engine) -> None:
    """SQLite must fail a conflicting write at once (busy timeout 0): nothing shows a SQLite
    lock wait, so a waiting step could not be told from a running one."""
    if engine.dialect.name != "sqlite":
        return

    def no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA busy_timeout = 0")
        finally:
            cursor.close()

    if not sa_event.contains(engine, "connect", no_busy_wait):
        sa_event.listen(engine, "connect", no_busy_wait)
    engine.dispose()  # pooled connections were made with the system's own timeout


class ArgumentsCheck:
    """Steps read from a file, run on a model of their own in the file's order, each session
    with its own unit of work on it: a step whose arguments fit no operation (the model fails
    on them as code fails, see `refuse_misfit`) is a StepError naming it, before the system
    sees it. The concurrent machine has no model to compare the system with step by step:
    without this, an edited or damaged reproducer would replay as passing (or as the system's
    finding). `drawn`: steps the machine drew, checked once the system failed as code fails
    (see `ConcurrentExecutor._refuse_failing_code`).

    Which serial order the database chose is not known, so this model's state may differ from
    what is committed: an operation that it refuses for another reason (an aggregate it does
    not have) before reading all its arguments is not checked further."""

    def __init__(
        self, model: Model, operations: dict[str, Operation], *, drawn: bool = False
    ) -> None:
        self.model = model
        self.operations = operations
        self.uows: dict[int, UnitOfWork] = {}
        # Steps drawn by the machine, not read from a file: their arguments fit, so the model
        # failing as code fails says the code is broken (see refuse_failing_code).
        self._refuse = refuse_failing_code if drawn else refuse_misfit

    def follow(self, number: int, step: dict[str, Any]) -> None:
        session, action = step["session"], step.get("action")
        op = self.operations.get(step.get("op") or "")
        if action == "begin":
            uow = self.model.unit_of_work()
            if call(uow.__enter__).ok:
                self.uows[session] = uow
        elif action in ("apply", "transaction") and op is not None:
            # A whole-transaction operation opens the unit of work it is given itself.
            on = self.uows.get(session) if action == "apply" else self.model.unit_of_work()
            if on is None:
                return  # no unit of work open: the executor says so
            args = step.get("args", {})
            self._refuse(number, op.name, args, call(op.apply, on, args))
        elif action in ("commit", "rollback"):
            ending = self.uows.pop(session, None)
            if ending is not None:
                call(ending.commit if action == "commit" else ending.rollback)
                call(ending.__exit__, None, None, None)


class ConcurrentExecutor:
    """Runs multi-session steps through the scheduler and checks committed state after each.

    `replaying`: the steps are read from a file, and their arguments are checked first (see
    `ArgumentsCheck`)."""

    def __init__(
        self, target: Target, system: System, sessions: int, *, replaying: bool = False
    ) -> None:
        self.target = target
        self.system = system
        self.sessions = sessions
        self.operations: dict[str, Operation] = {op.name: op for op in target.operations}
        self._arguments = ArgumentsCheck(system.new_model(), self.operations) if replaying else None
        prepare_engine_for_scheduler(system.engine)
        self.scheduler = Scheduler(system.engine, sessions)
        self.uows: dict[int, UnitOfWork | None] = dict.fromkeys(range(sessions))
        self.steps: list[dict[str, Any]] = []
        self.ids = Ids()
        self.completions: list[tuple[dict[str, Any], Completion]] = []
        self._submitted: dict[int, dict[str, Any]] = {}
        self.deferred: dict[int, list[dict[str, Any]]] = {}
        # (aggregate key, version) -> [(commit number, session, version read)]: filled when the
        # system reports versions (an optional `System.versions(uow)`).
        self.installed: dict[tuple[str, int], list[tuple[int, int, int | None]]] = {}
        self._commits = 0
        try:
            self.state: State = system.committed_state()
        except Exception as error:
            # The scheduler's workers and monitor connection would outlive the executor.
            self.scheduler.close()
            # Worded as the checks after each step word it: a finding of the steps so far.
            raise Finding(
                "error", f"reading the committed state failed: {type(error).__name__}: {error}"
            ) from error
        self.conflicts = 0
        # The history of units of work, when the system reports their footprints.
        self.aggregates: AggregateHistory | None = (
            AggregateHistory(target.guarantee) if hasattr(system, "footprints") else None
        )
        # session -> the apply steps of its open unit of work, each with its step number
        self._applied: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        self._units: dict[int, UnitRecord] = {}  # session -> its unit of work being followed
        self._service_uows: dict[int, UnitOfWork] = {}
        self._flights: dict[int, Callable[[Outcome], None]] = {}
        self._checked_commits = 0
        self.anomaly_checks = 0  # histories given to the checker
        #: Anomalies the guarantee permits, each (class, transactions) once, in the order seen.
        self.permitted: list[Anomaly] = []
        self._permitted_seen: set[tuple[str, tuple[int, ...]]] = set()

    # -- what the machine needs to draw steps ------------------------------------------------

    def is_open(self, session: int) -> bool:
        return self.uows[session] is not None

    def _held_by_others(self, session: int) -> list[dict[str, Any]]:
        """The apply steps of the other sessions' open units of work, latest first."""
        held = [
            (number, step)
            for other, applied in self._applied.items()
            if other != session
            for number, step in applied
        ]
        return [step for _number, step in sorted(held, key=lambda pair: -pair[0])]

    def contended(self, session: int) -> list[str]:
        """The strings named in the arguments of what the other sessions' open units of work
        have applied, latest first (see `Ids.contended`)."""
        out: dict[str, None] = {}
        for step in self._held_by_others(session):
            _strings(step.get("args"), out)
        return list(out)

    def contended_operations(self, session: int) -> list[str]:
        """The operations the other sessions' open units of work have applied, latest first."""
        return [step["op"] for step in self._held_by_others(session)]

    def _note_applied(self, session: int, step: dict[str, Any]) -> None:
        action = step.get("action")
        if action == "begin":
            self._applied[session] = []
        elif action == "apply" and session in self._applied:
            self._applied[session].append((len(self.steps), step))
        elif action in ("commit", "rollback"):
            self._applied.pop(session, None)

    def is_blocked(self, session: int) -> bool:
        return session in self.scheduler.blocked

    def free_sessions(self) -> list[int]:
        return [s for s in range(self.sessions) if not self.is_blocked(s)]

    # -- steps -----------------------------------------------------------------------------------

    def _operation(self, step: dict[str, Any]) -> Operation:
        name = step.get("op")
        if name not in self.operations:
            raise StepError(f"target {self.target.name} has no operation {name!r}")
        return self.operations[name]

    def _work(self, step: dict[str, Any]) -> Callable[[], Any]:
        """What the session's worker thread does for this step."""
        session, action = step["session"], step.get("action")
        if action in OPEN_ACTIONS and not self.is_open(session):
            raise StepError(f"session {session}: {action!r} needs an open unit of work")
        if action in CLOSED_ACTIONS and self.is_open(session):
            raise StepError(f"session {session}: {action!r} needs no unit of work open")
        if action == "begin":

            def begin() -> None:
                uow = self.system.unit_of_work()
                uow.__enter__()
                self.uows[session] = uow

            return begin
        if action == "apply":
            op, uow = self._operation(step), self.uows[session]
            return lambda: op.apply(uow, step.get("args", {}))
        if action in ("commit", "rollback"):
            uow = self.uows[session]
            assert uow is not None

            def end() -> None:
                try:
                    if action == "commit" and self.aggregates is not None:
                        uow.commit()
                    elif action == "commit":
                        before = self._versions(uow)
                        uow.commit()
                        after = self._versions(uow)
                        self._record_writes(session, before, after)
                finally:
                    # Whatever happened, the session's unit of work is over.
                    self.uows[session] = None
                    uow.__exit__(None, None, None)

            return end
        if action == "transaction":
            op = self._operation(step)

            def transaction() -> Any:
                uow = self.system.unit_of_work()
                self._service_uows[session] = uow
                return op.apply(uow, step.get("args", {}))

            return transaction
        raise StepError(f"unknown step action {action!r} for concurrent sessions")

    def _follow(self, session: int, step: dict[str, Any]) -> Callable[[Outcome], None]:
        """What to record in the history of units of work once `step` is seen complete."""
        aggregates = self.aggregates
        action = step.get("action")
        if aggregates is None:
            return lambda _outcome: None
        # 1-based, as in reproducers; a held-back step keeps its own number.
        number = next((i for i, s in enumerate(self.steps, 1) if s is step), len(self.steps))
        if action == "begin":
            self._units[session] = aggregates.follow(
                session, f"session {session}, the unit of work begun at step {number}"
            )
            return lambda _outcome: None
        if action == "transaction":
            unit = aggregates.follow(
                session, f"session {session}, {step.get('op')} at step {number}"
            )

            def service(_outcome: Outcome) -> None:
                uow = self._service_uows.pop(session, None)
                if uow is not None:
                    aggregates.sync(unit, self._footprints(uow), closed=True)

            return service
        unit_or_none, uow = self._units.get(session), self.uows[session]
        if unit_or_none is None or uow is None:
            return lambda _outcome: None
        unit, closed = unit_or_none, action in ("commit", "rollback")
        return lambda _outcome: aggregates.sync(unit, self._footprints(uow), closed=closed)

    def _footprints(self, uow: UnitOfWork) -> list[Footprint]:
        return list(cast(FootprintSource, self.system).footprints(uow))

    def _versions(self, uow: UnitOfWork) -> dict[str, int]:
        versions = getattr(self.system, "versions", None)
        return dict(versions(uow)) if versions is not None else {}

    def _record_writes(self, session: int, before: dict[str, int], after: dict[str, int]) -> None:
        """Remember which version of which aggregate each committed unit of work read and
        installed (runs on the session's worker thread, right after its commit)."""
        self._commits += 1
        for key, version in after.items():
            if version != before.get(key):
                self.installed.setdefault((key, version), []).append(
                    (self._commits, session, before.get(key))
                )

    def _check_versions(self) -> None:
        """Two committed units of work that installed the same version of one aggregate both
        read the version before it: the second overwrote the first without seeing it, a lost
        update (P4). A version check on save makes the second one fail instead."""
        for (key, version), writers in sorted(self.installed.items()):
            if len(writers) > 1:
                (n1, s1, read1), (n2, s2, read2) = writers[:2]
                raise Finding(
                    "anomaly",
                    f"P4 (lost update): commit {n1} (session {s1}) and commit {n2} (session {s2})"
                    f" both read {key} at version {read1 if read1 == read2 else (read1, read2)}"
                    f" and both installed version {version}: the second overwrote the first"
                    " without having seen it",
                )

    def run(self, step: dict[str, Any]) -> list[Completion]:
        """Run one step, then check. A step for a session that is blocked waits, in its
        session's order, until the session is released: when a reproducer is replayed on a
        system that now takes a lock it did not take before, each session keeps its own order
        of steps and the interleaving adapts."""
        session = step.get("session")
        if not isinstance(session, int) or not 0 <= session < self.sessions:
            raise StepError(f"step names session {session!r}; this run has {self.sessions}")
        self.steps.append(step)
        if self._arguments is not None:
            self._arguments.follow(len(self.steps), step)
        self._note_applied(session, step)
        if self.is_blocked(session) or self.deferred.get(session):
            self.deferred.setdefault(session, []).append(step)
            return []
        completions = self._submit(session, step)
        # Steps held back for sessions that are free again go now, in order.
        progress = True
        while progress:
            progress = False
            for waiting, queued in sorted(self.deferred.items()):
                if queued and not self.is_blocked(waiting):
                    completions += self._submit(waiting, queued.pop(0), held_back=True)
                    progress = True
        self.check()
        return completions

    def _submit(
        self, session: int, step: dict[str, Any], *, held_back: bool = False
    ) -> list[Completion]:
        try:
            work = self._work(step)
        except StepError:
            if held_back:
                # It no longer fits: its unit of work ended while it waited (a deadlock
                # victim, a failed commit). The session goes on with its next step.
                return []
            raise
        self._submitted[session] = step
        self._flights[session] = self._follow(session, step)
        completions = self.scheduler.submit(session, work)
        failing_code: tuple[dict[str, Any], Completion] | None = None
        for completion in self._in_order(completions, session, step):
            done = self._submitted.get(completion.session, step)
            self.completions.append((done, completion))
            error = completion.outcome.error
            if error is not None and "Conflict" in type(error).__name__:
                self.conflicts += 1
            if (
                error is not None
                and type(error).__name__ in MISFIT_ERRORS
                and done.get("action") in ("apply", "transaction")
                and failing_code is None
            ):
                failing_code = done, completion
            follow = self._flights.pop(completion.session, None)
            if follow is not None:
                follow(completion.outcome)
        if failing_code is not None:
            self._refuse_failing_code(*failing_code)
        return completions

    def _refuse_failing_code(self, step: dict[str, Any], completion: Completion) -> None:
        """An operation of the system failed as code fails (KeyError, TypeError, ...), which
        no conflict and no refusal of the domain's rules does. When the model, following the
        steps so far in their order, fails alike on the step, the target's code is broken
        (a StepError, see refuse_failing_code); otherwise the system is: a finding. (Replaying,
        the model has followed every step already.)"""
        number = next((i for i, s in enumerate(self.steps, 1) if s is step), len(self.steps))
        if self._arguments is None:
            check = ArgumentsCheck(self.system.new_model(), self.operations, drawn=True)
            for i, earlier in enumerate(self.steps[:number], 1):
                check.follow(i, earlier)
        error = completion.outcome.error
        raise Finding(
            "error",
            f"step {number}, session {completion.session},"
            f" {step.get('op')}({json.dumps(step.get('args', {}), default=str)}): the system"
            f" raised {type(error).__name__}: {error}, which its model, running the same steps"
            " one after another, does not. That is code failing, not a rule refusing the"
            " request nor a conflict between units of work",
        ) from error

    @staticmethod
    def _in_order(
        completions: list[Completion], first: int, step: dict[str, Any]
    ) -> list[Completion]:
        """The completions in the order they happened, as far as can be told: the submitted
        step first when it ended a transaction or failed (it released the others), failures
        of released steps next (a deadlock victim's abort releases the rest), then the rest."""
        submitted = next((c for c in completions if c.session == first), None)
        releaser = submitted is not None and (
            not submitted.outcome.ok or step.get("action") in ("commit", "rollback", "transaction")
        )

        def order(c: Completion) -> tuple[int, int]:
            if c.session == first:
                return (0 if releaser else 1, c.session)
            return (0 if not c.outcome.ok else 2, c.session)

        return sorted(completions, key=order)

    def check(self) -> None:
        deadlocked = self.scheduler.deadlocked
        if len(deadlocked) == 1:
            # A cycle of one session: it waits on a lock that another of its own connections
            # holds, which cannot move while the session waits.
            raise Finding(
                "stall",
                f"session {min(deadlocked)} waits on a lock held by another connection of its"
                " own unit of work, and the database reported no deadlock: the holder cannot"
                " release it while the session waits, so the run cannot go on. A unit of work"
                " must not wait on itself: do its writes on one connection, or commit the first"
                " connection's writes before another touches the same rows",
            )
        if deadlocked or self.scheduler.all_blocked():
            raise Finding(
                "stall",
                f"sessions {sorted(self.scheduler.blocked)} all wait on each other and the"
                " database reported no deadlock: the run cannot go on",
            )
        anomaly = self._check_anomalies()
        if self.aggregates is None:
            self._check_versions()
        try:
            self.state = checked_state(self.system)
        except Finding as broken:
            if anomaly is None:
                raise
            raise Finding(
                "anomaly",
                f"{anomaly.message}. The committed state breaks a rule too: {broken.message}",
            ) from broken
        if anomaly is not None:
            raise anomaly

    def _check_anomalies(self) -> Finding | None:
        """Run the checker on the history of units of work after each new commit; the first
        anomaly the guarantee forbids is returned as a finding, the permitted ones are kept."""
        aggregates = self.aggregates
        if aggregates is None or aggregates.commits == self._checked_commits:
            return None
        self._checked_commits = aggregates.commits
        self.anomaly_checks += 1
        result = aggregates.check()
        for found in result.permitted:
            if (found.anomaly, found.txns) not in self._permitted_seen:
                self._permitted_seen.add((found.anomaly, found.txns))
                self.permitted.append(found)
        if not result.forbidden:
            return None
        first, *others = result.forbidden
        message = describe(first, aggregates)
        also = sorted({f.anomaly for f in others} - {first.anomaly})
        if also:
            message += f"; the same history also shows {', '.join(also)}"
        return Finding(
            "anomaly",
            f"{message}. The target declares {aggregates.guarantee!r}, which forbids"
            f" {first.anomaly}",
        )

    def close(self) -> None:
        """Roll back every open unit of work; release and stop the workers."""

        def abandon() -> None:
            from uowstress.sessions import current_session

            session = current_session()
            uow = self.uows.get(session) if session is not None else None
            if uow is not None:
                self.uows[session] = None  # type: ignore[index]
                with contextlib.suppress(Exception):
                    uow.__exit__(None, None, None)

        try:
            self.scheduler.close(abandon=abandon)
        finally:
            for session, uow in list(self.uows.items()):
                if uow is not None:
                    self.uows[session] = None
                    with contextlib.suppress(Exception):
                        uow.__exit__(None, None, None)


class AnomalyTally:
    """Anomalies the target's guarantee permits, over every example of a run: how many
    examples showed each class, and the first one seen in words."""

    def __init__(self) -> None:
        self.examples: Counter[str] = Counter()
        self.first: dict[str, str] = {}
        self.checks = 0  # histories given to the checker, over all examples

    def add(self, executor: ConcurrentExecutor) -> None:
        self.checks += executor.anomaly_checks
        aggregates = executor.aggregates
        if aggregates is None:
            return
        for anomaly in {found.anomaly for found in executor.permitted}:
            self.examples[anomaly] += 1
        for found in executor.permitted:
            self.first.setdefault(found.anomaly, describe(found, aggregates))

    def as_json(self) -> list[dict[str, Any]]:
        return [
            {"anomaly": name, "examples": count, "first": self.first[name]}
            for name, count in sorted(self.examples.items())
        ]


def _strings(value: Any, out: dict[str, None]) -> None:
    """Every string in a JSON value, into `out` (kept in order, once each)."""
    if isinstance(value, str):
        out.setdefault(value)
    elif isinstance(value, dict):
        for item in value.values():
            _strings(item, out)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)


def describe_completion(step: dict[str, Any], completion: Completion) -> str:
    outcome = completion.outcome
    what = f"session {completion.session} {step.get('action')} {step.get('op') or ''}".strip()
    if outcome.ok:
        return f"{what}: ok {json.dumps(outcome.value, default=str)[:80]}"
    return f"{what}: {type(outcome.error).__name__}: {str(outcome.error)[:120]}"


def concurrent_machine(
    target: Target,
    system: System,
    recorder: RunRecorder,
    *,
    sessions: int = 2,
    permitted: AnomalyTally | None = None,
) -> type[RuleBasedStateMachine]:
    step_ops = [op for op in target.operations if op.scope == "step"]
    transaction_ops = [op for op in target.operations if op.scope == "transaction"]
    mirrorable = {op.name for op in step_ops}

    class ConcurrentMachine(RuleBasedStateMachine):
        recorded: ClassVar[RunRecorder] = recorder

        def __init__(self) -> None:
            super().__init__()
            recorder.reset(system)
            self.executor = ConcurrentExecutor(target, system, sessions)
            self.swarm: frozenset[str] | None = None
            self.rng = random.Random(0)
            self.last_session = 0

        @initialize(
            swarm=swarms(target.operations),
            rng=st.randoms(use_true_random=True),
            data=st.data(),
            count=st.integers(1, 4),
        )
        def seed_state(
            self, swarm: frozenset[str], rng: random.Random, data: st.DataObject, count: int
        ) -> None:
            self.swarm = swarm
            self.rng = rng
            if not step_ops:
                return
            # Some committed state first (through session 0), for the sessions to contend on.
            self._run({"session": 0, "action": "begin"})
            for _ in range(count):
                op = choose(step_ops, self.executor.state, None, rng)
                args = draw_arguments(data.draw, op, self.executor.state, self.executor.ids)
                self._run({"session": 0, "action": "apply", "op": op.name, "args": args})
            self._run({"session": 0, "action": "commit"})

        def _run(self, step: dict[str, Any]) -> None:
            note(f"step {len(self.executor.steps) + 1}: {step}")
            for done, completion in [
                (self.executor._submitted.get(c.session, step), c)
                for c in recorder.run_step(self.executor, step)
            ]:
                note("  " + describe_completion(done, completion))

        @precondition(lambda self: bool(self.executor.free_sessions()))
        @rule(data=st.data(), roll=st.integers(0, 9))
        def step(self, data: st.DataObject, roll: int) -> None:
            raise_if_lost()
            ex = self.executor
            session = self._next_session(data)
            state = ex.state
            # What the other open units of work hold, for the arguments to meet them there.
            ex.ids.contended[:] = ex.contended(session)
            if not ex.is_open(session):
                if roll >= 8 and transaction_ops:
                    op = choose(transaction_ops, state, self.swarm, self.rng)
                    args = draw_arguments(data.draw, op, state, ex.ids)
                    self._run(
                        {"session": session, "action": "transaction", "op": op.name, "args": args}
                    )
                else:
                    self._run({"session": session, "action": "begin"})
                return
            if roll < 5 and step_ops:
                # Now and then the operation another open unit of work applied last: the same
                # change twice at once is how lost updates and write skews begin.
                mirrored = [
                    self.executor.operations[name]
                    for name in ex.contended_operations(session)
                    if name in mirrorable
                ]
                if mirrored and self.rng.random() < 0.5:
                    op = mirrored[0]
                else:
                    op = choose(step_ops, state, self.swarm, self.rng)
                args = draw_arguments(data.draw, op, state, ex.ids)
                self._run({"session": session, "action": "apply", "op": op.name, "args": args})
            elif roll < 9:
                self._run({"session": session, "action": "commit"})
            else:
                self._run({"session": session, "action": "rollback"})
            if ex.conflicts:
                event("a conflict was reported by the database or the unit of work")

        def _next_session(self, data: st.DataObject) -> int:
            """Another session than the last one two times in three, when one is free: an
            anomaly needs units of work that overlap, and the last session acting again
            mostly ends its own. Drawn so that shrinking leans towards the same session."""
            free = self.executor.free_sessions()
            others = [s for s in free if s != self.last_session]
            if self.last_session not in free or not others:
                session = data.draw(st.sampled_from(free), label="session")
            else:
                # The lowest third of the values (0 first) keeps the last session.
                pick = data.draw(st.integers(0, 3 * len(others) - 1), label="session")
                stays = pick < len(others)
                session = self.last_session if stays else others[pick % len(others)]
            self.last_session = session
            return session

        @invariant()
        def checked_after_every_step(self) -> None:
            return None

        def teardown(self) -> None:
            self.executor.close()
            if permitted is not None:
                permitted.add(self.executor)
            recorder.examples += 1
            recorder.last_steps = list(self.executor.steps)

    ConcurrentMachine.__name__ = f"ConcurrentMachine[{target.name}]"
    return ConcurrentMachine
