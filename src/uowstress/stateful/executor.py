"""The single-session executor: runs steps against the system and its model and checks both.

The Hypothesis machine and `uowstress replay` run the same steps through this one class, so a
written reproducer fails (or passes) exactly as the run that found it.

A step is a JSON object: {"action": ..., "op": ..., "args": {...}, "fault": {...}}.
Actions with no Unit of Work open: "begin", "transaction" (an operation that is its own unit of
work), "query". With one open: "apply", "commit", "rollback", "leave" (exit without commit),
"raise" (an exception inside the block), "fault" (commit with an armed fault).
"""

from __future__ import annotations

import contextlib
import enum
import gc
import json
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import psutil
from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import ConnectionPoolEntry

from uowstress.errors import UowstressError
from uowstress.faults import Fault, HookUse, InjectedFault
from uowstress.stalls import StallWatch
from uowstress.stateful.commits import AlwaysChanged, CommitWatcher, watch
from uowstress.target import (
    Ids,
    Model,
    Operation,
    Query,
    State,
    System,
    Target,
    UnitOfWork,
    briefly,
    described,
)


class _ResidentMemory:
    """The process's resident set size, read after every step.

    psutil opens, reads and closes a /proc file on each call; on Linux this keeps
    /proc/self/statm open and re-reads it, which costs a few microseconds instead of tens.
    Elsewhere (and if /proc is missing) it asks psutil."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._pid = -1
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._process = psutil.Process()

    def bytes(self) -> int:
        if self._pid != os.getpid():  # first use, or a forked child: its own /proc entry
            self._pid = os.getpid()
            self._process = psutil.Process()
            try:
                self._fd = os.open("/proc/self/statm", os.O_RDONLY)
            except OSError:
                self._fd = None
        if self._fd is not None:
            # statm: size resident shared ... (in pages)
            return int(os.pread(self._fd, 128, 0).split()[1]) * self._page
        return int(self._process.memory_info().rss)


_RESIDENT = _ResidentMemory()
OPEN_ACTIONS = ("apply", "commit", "rollback", "leave", "raise", "fault")
CLOSED_ACTIONS = ("begin", "transaction", "query")


class Finding(AssertionError):
    """A property of the system under test was violated. `kind` names which."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"[{kind}] {message}")
        self.kind = kind
        self.message = message


class StepError(UowstressError):
    """A step cannot be run: it does not fit the target or the executor's state."""


# Errors of code given input of the wrong shape, not of a rule refusing a request.
MISFIT_ERRORS = frozenset({"KeyError", "TypeError", "AttributeError", "IndexError"})


class BlockError(Exception):
    """The exception the "raise" action throws inside a Unit of Work's block."""


@dataclass(frozen=True)
class Outcome:
    """What a call did: returned a value, or raised an error of some type."""

    ok: bool
    value: Any = None
    error_type: str | None = None
    error: str | None = None

    def describe(self) -> str:
        if self.ok:
            return f"returned {json.dumps(self.value, default=str)}"
        return f"raised {self.error_type}: {self.error}"


def _by_identity(value: Any) -> bool:
    """Whether `value`, or anything in it, is an object its class compares by identity."""
    if value is None or isinstance(value, str | int | float | enum.Enum):
        return False  # an enum member is one object per value: identity is equality
    if isinstance(value, list | tuple | set | frozenset):
        return any(_by_identity(item) for item in value)
    if isinstance(value, dict):
        return any(_by_identity(k) or _by_identity(v) for k, v in value.items())
    return getattr(type(value), "__eq__", None) is object.__eq__


def call(fn: Any, *args: Any) -> Outcome:
    try:
        return Outcome(True, fn(*args))
    except Exception as error:
        return Outcome(False, error_type=type(error).__name__, error=str(error))


def refuse_misfit(number: int, name: str, args: Any, expected: Outcome) -> None:
    """StepError when the model's outcome `expected` of step `number` (1-based), read from a
    file, says that its arguments fit no operation: the model failed as code fails on input it
    was never meant to take (a missing or misspelt argument, a value of another type)."""
    if expected.error_type in MISFIT_ERRORS:
        raise StepError(
            f"the arguments of step {number} do not fit {name}: the model raised"
            f" {expected.error_type}: {expected.error} on {json.dumps(args, default=str)};"
            " was the reproducer edited? Give the arguments the target's strategies draw"
            " for it (a reproducer written by a run has them)"
        )


def refuse_failing_code(number: int, name: str, args: Any, expected: Outcome) -> None:
    """StepError when the model's outcome `expected` of drawn step `number` (1-based) is code
    failing as code fails (KeyError, TypeError, ...) on arguments the target's own strategy
    drew for the state it was in. The system, running the same code, would most often fail
    alike, and a step whose model and system raise one error type passes: a broken operation
    would pass every example."""
    if expected.error_type in MISFIT_ERRORS:
        raise StepError(
            f"step {number}, {name}({json.dumps(args, default=str)}): the model raised"
            f" {expected.error_type}: {expected.error}, on arguments the target's own strategy"
            " drew for the state it was in. That is code failing (in the operation, in code"
            " its model and system share, or in the strategy), not a rule refusing the"
            " request: fix it, or raise an error of the domain's own where the request is to"
            " be refused"
        )


def _field_difference(name: str, expected: dict[str, Any], actual: dict[str, Any]) -> str:
    if name not in expected:
        # Often a value the model cannot predict (a clock, a generated key) read into the
        # committed state, or a field the model's state() leaves out.
        return (
            f"{name}: committed {json.dumps(actual[name], default=str)[:120]}, a field the"
            " model's state does not have (committed_state and the model's state() must give"
            " the same fields, with nothing the model cannot predict: no clock, no generated"
            " keys)"
        )
    if name not in actual:
        return (
            f"{name}: expected {json.dumps(expected[name], default=str)[:120]}, a field the"
            " committed state does not have (committed_state and the model's state() must"
            " give the same fields)"
        )
    return (
        f"{name}: expected {json.dumps(expected[name], default=str)[:120]},"
        f" committed {json.dumps(actual[name], default=str)[:120]}"
    )


def diff_states(expected: State, actual: State, limit: int = 6) -> list[str]:
    """Plain-words differences between the model's state and the committed one."""
    out: list[str] = []
    for section in sorted(set(expected) | set(actual)):
        e, a = expected.get(section), actual.get(section)
        if e == a:
            continue
        if isinstance(e, dict) and isinstance(a, dict):
            for key in sorted(set(e) | set(a)):
                if key not in a:
                    out.append(f"{section}[{key}] should be committed but is missing")
                elif key not in e:
                    out.append(f"{section}[{key}] is committed but should not exist")
                elif e[key] != a[key]:
                    fields = (
                        sorted(
                            f for f in set(e[key]) | set(a[key]) if e[key].get(f) != a[key].get(f)
                        )
                        if isinstance(e[key], dict) and isinstance(a[key], dict)
                        else []
                    )
                    detail = "; ".join(_field_difference(f, e[key], a[key]) for f in fields)
                    out.append(f"{section}[{key}] differs: {detail or 'value'}")
        elif isinstance(e, list) and isinstance(a, list):
            missing = Counter(map(json.dumps, e)) - Counter(map(json.dumps, a))
            extra = Counter(map(json.dumps, a)) - Counter(map(json.dumps, e))
            out += [f"{section}: missing {m}" for m in list(missing)[:limit]]
            out += [f"{section}: unexpected {x}" for x in list(extra)[:limit]]
        else:
            out.append(f"{section} differs")
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])


def reset_for_example(system: System, first: bool) -> None:
    """`system.reset()` before an example. Failing before the run's first example, it is
    broken itself: an error naming it, not a finding of steps that never ran."""
    try:
        system.reset()
    except Exception as error:
        if first:
            raise StepError(
                f"{type(system).__name__}.reset() failed before the first example:"
                f" {described(error)}; reset() must empty the database for each example"
            ) from error
        raise


def checked_state(system: System) -> State:
    """The committed state, after checking every invariant of it."""
    try:
        state = system.committed_state()
    except Exception as error:
        raise Finding(
            "error", f"reading the committed state failed: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(state, dict):
        raise StepError(
            f"{type(system).__name__}.committed_state() returned {type(state).__name__}; it must"
            " return the committed state as a dict of JSON values (as Model.state() does)"
        )
    violations = invariants_of(system, state)
    if violations:
        raise Finding("invariant", "; ".join(violations))
    return state


def invariants_of(system: System, state: State) -> list[str]:
    """`system.invariants(state)`, or StepError when it raises or answers with anything but a
    list of strings: the target's own check is broken, which is no finding of the system."""
    try:
        violations = system.invariants(state)
    except Exception as error:
        raise StepError(
            f"{type(system).__name__}.invariants() raised {described(error)} on the committed"
            f" state {briefly(state, 200)}; it must return the violated invariants in words, as"
            " a list of strings (an empty list when all hold), for every state committed_state()"
            " can return, never raise"
        ) from error
    # A forgotten `return` (None) would pass every state; a string, name each letter.
    if not isinstance(violations, list | tuple) or not all(isinstance(v, str) for v in violations):
        raise StepError(
            f"{type(system).__name__}.invariants() returned {briefly(violations)}; it must"
            " return a list of"
            " strings, each a violated invariant in words (an empty list when all hold)"
        )
    return list(violations)


@dataclass
class StepTimings:
    """Nanoseconds per step label, for the budgets."""

    samples: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def add(self, label: str, ns: int) -> None:
        self.samples[label].append(ns)


class SingleSessionExecutor:
    def __init__(
        self,
        target: Target,
        system: System,
        *,
        check_every_step: bool = True,
        replaying: bool = False,
        hook_use: HookUse | None = None,
    ) -> None:
        self.target = target
        self.system = system
        self.model: Model = system.new_model()
        self.check_every_step = check_every_step
        # Steps read from a file, not drawn: their arguments may have been edited to fit no
        # operation, and the model and the system failing alike on them must not pass.
        self.replaying = replaying
        self.operations: dict[str, Operation] = {op.name: op for op in target.operations}
        self.queries: dict[str, Query] = {q.name: q for q in target.queries}
        self.sut: UnitOfWork | None = None
        self.mirror: UnitOfWork | None = None
        # The units of work a step is ending, until it has: an interrupt (Ctrl-C, SIGTERM)
        # inside a commit leaves them to close(), which must still end them.
        self._ending: tuple[UnitOfWork, UnitOfWork] | None = None
        self.steps: list[dict[str, Any]] = []
        self.ids = Ids()
        self.timings = StepTimings()
        self.fault_counts: Counter[str] = Counter()
        # Faults at a hook point that did not fire, by what they were ("after_flush", "kill at
        # before_commit"): the run warns of those at points the hook was never called at.
        self.unreached: Counter[str] = Counter()
        # Where the system's Unit of Work calls the hook: the run's when it shares one across
        # its examples, learnt afresh otherwise.
        self.hook_use = HookUse() if hook_use is None else hook_use
        self._hook_points = self.hook_use.points
        self.rss_start = _RESIDENT.bytes()
        self.rss_peak = self.rss_start
        self._fault: Fault | None = None
        # The model's state, computed at most once per step: the checks and the drawing of
        # the next step's arguments share it. None when the last step may have changed it.
        self._model_state: State | None = None
        # The committed state last read (and checked), and how to tell whether it still is.
        self._committed: State | None = None
        self._watcher: CommitWatcher = (
            AlwaysChanged()
            if getattr(system, "commits_outside_engine", False)
            else watch(system.engine)
        )
        self._stalls = StallWatch(getattr(system, "engine", None))
        # The leak check counts the connections checked out while this executor ran, not the
        # pool's total: a connection leaked in an earlier example or shrinking attempt (freed
        # only when the garbage collector gets to it, at no fixed time) must not make this run
        # fail sooner, or its count differ from what a replay of the same steps sees.
        self._checked_out: set[ConnectionPoolEntry] = set()
        self._pool_engine: Engine | None = None
        engine = getattr(system, "engine", None)
        # Where statement and commit faults are armed for a Unit of Work that does not call
        # the hook (None: not a SQLAlchemy Engine, they are armed only through the hook).
        self._fault_engine = engine if isinstance(engine, Engine) else None
        if isinstance(engine, Engine):
            event.listen(engine, "checkout", self._on_checkout)
            event.listen(engine, "checkin", self._on_checkin)
            self._pool_engine = engine
        # The system's units of work the current step ended, kept until its checks are done: a
        # unit of work in a reference cycle that leaked its connection would otherwise give it
        # back whenever the garbage collector runs, before or after the check, by chance.
        self._ended: list[UnitOfWork] = []

    def _on_checkout(self, _dbapi: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        self._checked_out.add(record)

    def _on_checkin(self, _dbapi: Any, record: ConnectionPoolEntry) -> None:
        self._checked_out.discard(record)

    # -- state the machine needs to draw the next step -----------------------------------------

    @property
    def is_open(self) -> bool:
        return self.sut is not None

    def model_state(self) -> State:
        """The model's state now (the caller must not change it)."""
        if self._model_state is None:
            self._model_state = self.model.state()
        return self._model_state

    # -- running ---------------------------------------------------------------------------------

    def run(self, step: dict[str, Any]) -> None:
        """Run one step; raise Finding when the system breaks a property."""
        self.steps.append(step)
        action = step.get("action")
        if action in OPEN_ACTIONS and not self.is_open:
            raise StepError(f"step {action!r} needs an open unit of work; add a 'begin' first")
        if action in CLOSED_ACTIONS and self.is_open:
            raise StepError(f"step {action!r} needs no unit of work open")
        handler = getattr(self, f"_do_{action}", None)
        if handler is None:
            raise StepError(
                f"unknown step action {action!r}; expected one of"
                f" {', '.join(OPEN_ACTIONS + CLOSED_ACTIONS)}"
            )
        try:
            self._run(step, handler)
        finally:
            self._ended.clear()

    def _run(self, step: dict[str, Any], handler: Any) -> None:
        label = step.get("op") or step.get("query") or str(step.get("action"))
        self._model_state = None
        started = time.perf_counter_ns()
        self._stalls.begin()
        try:
            handler(step)
        except Exception as error:
            self._ending = None  # ended by the handler: a finding, not an interrupt
            # A stall explains whatever the cancelled statement made the step raise.
            stall = self._stalls.end()
            if stall is not None:
                raise Finding("stall", stall) from error
            raise
        self._ending = None
        stall = self._stalls.end()
        if stall is not None:
            raise Finding("stall", stall)
        self.timings.add(label, time.perf_counter_ns() - started)
        # Resident memory after each step: its maximum is the example's peak for the budgets.
        self.rss_peak = max(self.rss_peak, _RESIDENT.bytes())
        if self.check_every_step or not self.is_open:
            self.check()

    def _hook(self, point: str, connection: Any) -> None:
        self._hook_points.add(point)
        if self._fault is not None:
            self._fault.hook(point, connection)

    def _do_begin(self, step: dict[str, Any]) -> None:
        sut = self.system.unit_of_work(fault_hook=self._hook)
        mirror = self.model.unit_of_work()
        outcome = call(sut.__enter__)
        if not outcome.ok:
            raise Finding("error", f"opening a unit of work {outcome.describe()}")
        mirror.__enter__()
        self.sut, self.mirror = sut, mirror

    def _operation(self, step: dict[str, Any]) -> Operation:
        name = step.get("op")
        if name not in self.operations:
            raise StepError(
                f"target {self.target.name} has no operation {name!r};"
                f" it has {', '.join(sorted(self.operations))}"
            )
        return self.operations[name]

    def _expected(self, name: str, fn: Any, uow: Any, args: Any) -> Outcome:
        """The model's outcome of a call. Replaying, a model that fails as code fails on input
        it was never meant to take (a missing or misspelt argument, a value of another type)
        says the step's arguments do not fit; exploring, the arguments were drawn to fit, so
        it says the target's code is broken (see refuse_failing_code)."""
        expected = call(fn, uow, args)
        if self.replaying:
            refuse_misfit(len(self.steps), name, args, expected)
        else:
            refuse_failing_code(len(self.steps), name, args, expected)
        return expected

    def _compare(self, name: str, args: Any, expected: Outcome, actual: Outcome) -> None:
        same = expected.ok == actual.ok and (
            expected.value == actual.value
            if expected.ok
            else expected.error_type == actual.error_type
        )
        if not same:
            # The call is written out only for the finding: every step comes here.
            for who, outcome in (("model", expected), ("system", actual)):
                if expected.ok and actual.ok and _by_identity(outcome.value):
                    # Two equal objects of a class without __eq__ differ by identity alone:
                    # a finding would blame the system for what the target returns. (Values
                    # compared by value, a Decimal or a datetime, differ for real.)
                    raise StepError(
                        f"{name} returned a {type(outcome.value).__name__} on the {who}, an"
                        " object compared by identity (its class has no __eq__), so the"
                        " model's and the system's answers cannot be compared; return plain"
                        " data (ids, numbers, strings, lists, dicts)"
                    )
            raise Finding(
                "outcome",
                f"{name}({json.dumps(args)}): the model {expected.describe()}, the system"
                f" {actual.describe()}",
            )

    def _do_apply(self, step: dict[str, Any]) -> None:
        op = self._operation(step)
        if op.scope != "step":
            raise StepError(f"operation {op.name} is a whole transaction; use action 'transaction'")
        args = step.get("args", {})
        expected = self._expected(op.name, op.apply, self.mirror, args)
        actual = call(op.apply, self.sut, args)
        self._compare(op.name, args, expected, actual)

    def _close(self) -> tuple[UnitOfWork, UnitOfWork]:
        sut, mirror = self.sut, self.mirror
        assert sut is not None and mirror is not None
        self.sut = self.mirror = None
        self._ending = sut, mirror
        self._ended.append(sut)
        return sut, mirror

    def _do_commit(self, step: dict[str, Any]) -> None:
        sut, mirror = self._close()
        committed = call(sut.commit)
        exited = call(sut.__exit__, None, None, None)
        if committed.ok:
            mirror.commit()
        mirror.__exit__(None, None, None)
        if not committed.ok:
            raise Finding("error", f"commit {committed.describe()}")
        if not exited.ok:
            raise Finding("error", f"leaving the unit of work after commit {exited.describe()}")

    def _do_rollback(self, step: dict[str, Any]) -> None:
        sut, mirror = self._close()
        rolled = call(sut.rollback)
        exited = call(sut.__exit__, None, None, None)
        mirror.__exit__(None, None, None)
        for what, outcome in (("rollback", rolled), ("leaving after rollback", exited)):
            if not outcome.ok:
                raise Finding("error", f"{what} {outcome.describe()}")

    def _do_leave(self, step: dict[str, Any]) -> None:
        sut, mirror = self._close()
        exited = call(sut.__exit__, None, None, None)
        mirror.__exit__(None, None, None)
        if not exited.ok:
            raise Finding("error", f"leaving without commit {exited.describe()}")

    def _do_raise(self, step: dict[str, Any]) -> None:
        sut, mirror = self._close()
        error = BlockError("an exception raised inside the unit of work's block")
        exited = call(sut.__exit__, BlockError, error, None)
        mirror.__exit__(BlockError, error, None)
        if not exited.ok:
            raise Finding("error", f"leaving after an exception {exited.describe()}")
        if exited.value:
            raise Finding(
                "swallowed",
                "an exception raised inside the unit of work's block was suppressed by"
                " __exit__; it must roll back and let the exception propagate",
            )

    def _do_fault(self, step: dict[str, Any]) -> None:
        fault = Fault.from_json(step.get("fault", {}))
        sut, mirror = self._close()
        self._fault = fault
        try:
            if (
                fault.point in ("statement", "commit")
                and self._fault_engine is not None
                and not self.hook_use.flushes
            ):
                # Not known to call the hook at "before_flush", where the fault would be armed
                # on its connection: armed on the engine from the start of the commit, and
                # moved to the connection if the hook is called there after all.
                fault.arm_on_engine(self._fault_engine)
            committed = call(sut.commit)
            exc = None if committed.ok else InjectedFault(committed.error or "")
            exited = call(sut.__exit__, None if exc is None else type(exc), exc, None)
        finally:
            fault.disarm()
            self._fault = None
        self.fault_counts[fault.point if fault.fired else f"{fault.point} (not reached)"] += 1
        if not fault.fired and fault.hook_point is not None:
            point = fault.hook_point
            self.unreached[fault.point if fault.point != "kill" else f"kill at {point}"] += 1
        if committed.ok:
            if fault.fired and fault.point != "kill":
                raise Finding(
                    "swallowed",
                    f"the fault injected at {fault.point} was swallowed: commit reported success",
                )
            mirror.commit()
        mirror.__exit__(None, None, None)
        if not exited.ok:
            raise Finding("error", f"leaving after a failed commit {exited.describe()}")
        if not committed.ok and exited.value:
            raise Finding("swallowed", "__exit__ suppressed the commit's failure")

    def _do_transaction(self, step: dict[str, Any]) -> None:
        op = self._operation(step)
        if op.scope != "transaction":
            raise StepError(f"operation {op.name} runs inside a unit of work; use 'apply'")
        args = step.get("args", {})
        expected = self._expected(op.name, op.apply, self.model.unit_of_work(), args)
        uow = self.system.unit_of_work()
        self._ended.append(uow)
        actual = call(op.apply, uow, args)
        self._compare(op.name, args, expected, actual)

    def _do_query(self, step: dict[str, Any]) -> None:
        name = step.get("query")
        if name not in self.queries:
            raise StepError(f"target {self.target.name} has no query {name!r}")
        query = self.queries[name]
        args = step.get("args", {})
        expected = self._expected(f"query {name}", query.run, self.model.unit_of_work(), args)
        uow = self.system.unit_of_work()
        self._ended.append(uow)
        actual = call(query.run, uow, args)
        self._compare(f"query {name}", args, expected, actual)

    # -- checks ----------------------------------------------------------------------------------

    def check(self) -> None:
        """Committed state equals the model; every invariant holds; no connection leaked.

        The committed state is read again only when the database may have had a commit since
        the last read (see commits.py); otherwise that read, already checked against the
        invariants, is still the committed state."""
        if self._watcher.committed_since_last_look() or self._committed is None:
            self._committed = None
            self._committed = checked_state(self.system)
        actual = self._committed
        expected = self.model_state()
        if actual != expected:
            raise Finding(
                "state",
                "committed state differs from the model: "
                + "; ".join(diff_states(expected, actual)),
            )
        if not self.is_open:
            checked_out = self.leaked_connections()
            if checked_out:
                raise Finding(
                    "leak",
                    f"{checked_out} connection(s) still checked out of the pool with no unit of"
                    " work open",
                )

    def leaked_connections(self) -> int:
        """Connections checked out while this executor ran and not given back."""
        if self._pool_engine is None:  # not a SQLAlchemy engine: its pool's own count
            return int(getattr(self.system.engine.pool, "checkedout", lambda: 0)())
        return len(self._checked_out)

    def close(self) -> None:
        """Leave an open unit of work (rolled back), whatever state the run ended in."""
        if self.sut is not None:
            self._close()
        if self._ending is not None:
            sut, mirror = self._ending
            self._ending = None
            call(sut.__exit__, None, None, None)
            call(mirror.__exit__, None, None, None)
        self._ended.clear()
        self._watcher.close()
        self._stalls.close()
        engine, self._pool_engine = self._pool_engine, None
        if engine is None:
            return
        if self._checked_out:
            # Units of work that leaked a connection and that only reference cycles still hold
            # give it back now, not at some later collection: leaks must not pile up until the
            # pool is exhausted over the examples or shrinking attempts that follow.
            gc.collect()
        for name, listener in (("checkout", self._on_checkout), ("checkin", self._on_checkin)):
            with contextlib.suppress(sa_exc.InvalidRequestError):
                event.remove(engine, name, listener)
        self._checked_out.clear()
