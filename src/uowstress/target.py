"""The Target protocol: everything uowstress knows of a system under test.

A team points uowstress at its own Unit of Work by writing one `Target`: how to set the system
up on a database, the operations it offers (with Hypothesis strategies for their arguments),
the queries its repositories answer, a model of what must be committed, and the invariants of
committed state. uowstress never imports the system itself; it reaches it only through this.

Values that cross the protocol (operation arguments, results, states) are JSON values, so that
every step of a failing run can be written down and replayed later.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from uowstress.errors import UowstressError
from uowstress.report.passwords import hide_passwords

if TYPE_CHECKING:
    # For annotations only: the command line reads DEFAULT_TARGET from here, and its --help
    # must not wait for SQLAlchemy and Hypothesis to load.
    from hypothesis.strategies import SearchStrategy
    from sqlalchemy import Connection, Engine

JSON = Any
State = dict[str, JSON]
# Called by the system's Unit of Work at each named point of its commit path.
FaultHook = Callable[[str, "Connection"], None]
FAULT_HOOK_POINTS = ("before_flush", "after_flush", "before_commit")

GUARANTEES = (
    "read uncommitted",
    "read committed",
    "repeatable read",
    "snapshot",
    "serializable",
)


class TargetError(UowstressError):
    """A target cannot be loaded or does not keep the protocol."""


@runtime_checkable
class UnitOfWork(Protocol):
    """What uowstress needs of a Unit of Work: a context manager with commit and rollback."""

    def __enter__(self) -> Any: ...

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


@dataclass(frozen=True)
class Ids:
    """Fresh identifiers for the arguments of operations: deterministic within one run, so that a
    written reproducer names the same things when it is replayed.

    `contended` is set by the concurrent machine before it draws a session's arguments: the
    strings (ids among them) named in the arguments of what the other sessions' open units of
    work have applied, latest first; empty otherwise. An arguments strategy may prefer the ids
    among them, so that sessions meet on one aggregate: a lost update or a write skew needs two
    units of work on the same aggregate, which a uniform choice among many rarely draws."""

    counters: dict[str, int] = field(default_factory=dict)
    contended: list[str] = field(default_factory=list)

    def fresh(self, prefix: str) -> str:
        n = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = n
        return f"{prefix}{n}"


# Given the model's current state and an id source, the strategy for one call's arguments.
ArgumentsFor = Callable[[State, Ids], "SearchStrategy[dict[str, JSON]]"]


@dataclass(frozen=True)
class Operation:
    """One thing the system does.

    scope "step": `apply(uow, args)` runs inside a Unit of Work the tester has opened (the tester
    decides when to commit, roll back or leave). scope "transaction": `apply(uow, args)` gets a
    fresh, unopened Unit of Work and opens and commits it itself (an application service).
    `apply` returns a JSON value or raises; the same call on the model must do the same. On
    arguments that do not fit it (read from a hand-edited reproducer: one missing or misspelt, a
    value of another type) it should fail as code fails, with a KeyError, TypeError,
    AttributeError or IndexError: a replay then names the step rather than passing it.
    """

    name: str
    arguments: ArgumentsFor
    apply: Callable[[Any, dict[str, JSON]], JSON]
    scope: Literal["step", "transaction"] = "step"
    # Whether the operation can succeed in this state; operations that cannot are still drawn,
    # one time in ten, so that refusals are tested too. None: always.
    enabled: Callable[[State], bool] | None = None


@dataclass(frozen=True)
class Query:
    """A read through the system's repositories; `run(uow, args)` returns a JSON value."""

    name: str
    arguments: ArgumentsFor
    run: Callable[[Any, dict[str, JSON]], JSON]


class Model(Protocol):
    """What must be committed if persistence were perfect: an in-memory twin of the system."""

    def unit_of_work(self) -> UnitOfWork: ...

    def state(self) -> State:
        """The committed state, in the same canonical form as `System.committed_state`."""
        ...


class System(Protocol):
    """A target set up on one database."""

    engine: Engine

    def unit_of_work(self, fault_hook: FaultHook | None = None) -> UnitOfWork: ...

    def new_model(self) -> Model:
        """A model of the empty database (the state after `reset`)."""
        ...

    def committed_state(self) -> State:
        """What is committed, read through a connection of its own."""
        ...

    def invariants(self, state: State) -> list[str]:
        """Every violated invariant of a committed state, in plain words; empty when all hold."""
        ...

    def reset(self) -> None:
        """Empty the database: the state a new example starts from."""
        ...

    def dispose(self) -> None:
        """Drop what `Target.connect` created and release every connection."""
        ...

    # Optional: `footprints(uow) -> Sequence[Footprint]`, what each transaction of a Unit of
    # Work read and wrote at the level of aggregates (see `Footprint`): one per transaction it
    # ran, in order, the last one possibly still open, and still readable once the Unit of
    # Work is closed (it is read after a whole-transaction operation returns). When a system
    # offers it, the concurrent machine records every unit of work as a history, runs the
    # anomaly checker on it after every commit and judges what it finds against
    # `Target.guarantee`: a write skew or a lost update is then named (G2, G2-item, G-single,
    # P4, ...) with the units of work, aggregates and versions involved.
    #
    # Optional, older and coarser: `versions(uow) -> dict[str, int]`, the version of every
    # aggregate a Unit of Work holds. Used only when `footprints` is absent: the concurrent
    # machine reads it before and after each commit and reports two commits installing one
    # version of one aggregate as a lost update (P4).


@dataclass(frozen=True)
class AggregateRead:
    """A Unit of Work loaded aggregate `key` (e.g. "robot:r1") at `version`."""

    key: str
    version: int


@dataclass(frozen=True)
class PredicateRead:
    """A query of a Unit of Work: which aggregates it found in the database, at which version.

    `name` names the predicate with its parameters ("open sessions of robot r1"): two reads
    with one name must ask the same question. `matched` lists what the database returned,
    not the Unit of Work's own unsaved aggregates.
    """

    name: str
    matched: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AggregateWrite:
    """A commit installed `version` of aggregate `key` (an insert installs its first version).

    `matches` names every predicate (as in `PredicateRead.name`) that the new version
    satisfies. That is how the checker sees a phantom: a predicate read that missed a
    matching version another unit of work installed. Leave a predicate out and the checker
    misses the phantoms through it.
    """

    key: str
    version: int
    matches: frozenset[str] = frozenset()


FootprintOutcome = Literal["open", "committed", "aborted", "unknown"]


@dataclass(frozen=True)
class Footprint:
    """What one transaction of a Unit of Work did, at the level of aggregates.

    `reads` in the order they happened: every aggregate loaded (once, at the version loaded)
    and every query. `writes`: the versions its commit installed (empty unless committed).
    `outcome`: "open" while it runs, then "committed", "aborted" (rolled back, or its commit
    refused) or "unknown" (the connection died during the commit).
    """

    reads: tuple[AggregateRead | PredicateRead, ...] = ()
    writes: tuple[AggregateWrite, ...] = ()
    outcome: FootprintOutcome = "open"


class FootprintSource(Protocol):
    """A System that offers the optional `footprints(uow)` (see `System`)."""

    def footprints(self, uow: Any) -> Sequence[Footprint]: ...

    # Optional: `commits_outside_engine = True` when `committed_state` reads anything besides
    # the database of `engine`. The single-session machine otherwise skips the read when that
    # database reports no commit since the last one (SQLite's data_version).


class Target(Protocol):
    """A system under test, as uowstress sees it."""

    name: str
    guarantee: str  # one of GUARANTEES: what the system's Unit of Work promises
    operations: Sequence[Operation]
    queries: Sequence[Query]
    tables: frozenset[str]  # the tables `connect` creates; anything else is not ours to touch
    options: Mapping[str, str]  # option name -> what it does (documentation for --target-option)

    def connect(
        self, url: str, options: Mapping[str, str], *, isolation_level: str | None = None
    ) -> System:
        """Create the schema in the database at `url` (which uowstress has checked holds no
        foreign tables) and return the system set up on it."""
        ...


def check_target(target: object, where: str) -> Target:
    """Refuse an object that does not keep the protocol, naming what is missing."""
    missing = [
        name
        for name in ("name", "guarantee", "operations", "queries", "tables", "options", "connect")
        if not hasattr(target, name)
    ]
    if missing:
        raise TargetError(
            f"{where} is not a uowstress Target: it lacks {', '.join(missing)}."
            " See uowstress.target.Target for the protocol and examples/ for a small target."
        )
    candidate: Any = target
    guarantee = candidate.guarantee
    if guarantee not in GUARANTEES:
        raise TargetError(
            f"{where} declares guarantee {guarantee!r}; use one of {', '.join(GUARANTEES)}"
        )
    for field_name, kind, parts in (
        ("operations", "Operation", ("name", "arguments", "apply", "scope")),
        ("queries", "Query", ("name", "arguments", "run")),
    ):
        for i, entry in enumerate(getattr(candidate, field_name)):
            lacking = [part for part in parts if not hasattr(entry, part)]
            if lacking:
                raise TargetError(
                    f"{where}: {field_name}[{i}] is {briefly(entry)}, not a uowstress.{kind}"
                    f" (it lacks {', '.join(lacking)}); build each with uowstress.{kind}(...)"
                )
    for i, op in enumerate(candidate.operations):
        if op.scope not in ("step", "transaction"):
            # Each machine draws the operations of these two scopes only: any other would
            # never run, in a run that passes.
            raise TargetError(
                f"{where}: operation {op.name} (operations[{i}]) has scope {op.scope!r}; use"
                ' "step" (it runs inside a unit of work uowstress opened) or "transaction" (it'
                " opens and commits the unit of work it is given itself)"
            )
    names = [op.name for op in candidate.operations]
    if len(set(names)) != len(names):
        raise TargetError(f"{where} has two operations with one name: {sorted(names)}")
    if not _takes_keyword(candidate.connect, "isolation_level"):
        raise TargetError(
            f"{where}: its connect() takes no isolation_level; define it as"
            " connect(self, url, options, *, isolation_level=None) (None: the backend's"
            " default level)"
        )
    return candidate  # type: ignore[no-any-return]


def briefly(value: object, limit: int = 80) -> str:
    """`value`'s repr for a message, cut after `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _takes_keyword(function: Any, name: str) -> bool:
    """Whether `function` accepts the keyword argument `name` (True when it cannot be told)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin or C function without a signature
        return True
    return any(
        p.kind is p.VAR_KEYWORD
        or (p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        for p in parameters
    )


_SYSTEM_METHODS = (
    "unit_of_work",
    "new_model",
    "committed_state",
    "invariants",
    "reset",
    "dispose",
)


def connect_system(
    target: Target, url: str, options: Mapping[str, str], isolation_level: str | None = None
) -> System:
    """`target.connect(...)`, with the System it returns checked against the protocol.

    A ValueError (options the target refuses) and SQLAlchemy's errors (a server that fails)
    are the callers' to word; any other exception of `connect` is a TargetError naming it.
    Raises TargetError for a System or Model that lacks part of the protocol, so that a
    missing method is named before the run rather than reported as a finding of each step.
    """
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError  # see TYPE_CHECKING above

    try:
        system = target.connect(url, options, isolation_level=isolation_level)
    except ArgumentError as error:
        if isolation_level is not None and "isolation_level" in str(error):
            # SQLAlchemy refuses the level at the first connection: a usage error, not a
            # failure of the database or a traceback of the target's connect.
            raise TargetError(
                f"isolation level {isolation_level!r} is not one the database accepts"
                f" ({error}); give --isolation-level (under pytest --uowstress-isolation-level)"
                " one of those, or leave it out for the backend's default"
            ) from None
        raise
    except (ValueError, SQLAlchemyError):
        raise
    except Exception as error:
        from uowstress.scratch import hide_secrets  # imports SQLAlchemy: see TYPE_CHECKING

        # The target's words may quote the URL it was given, or its password decoded.
        said = hide_secrets(described(error), url)
        raise TargetError(
            f"target {target.name}: connect() failed: {said}. Fix connect, or check the"
            " options given with --target-option"
        ) from None
    try:
        check_system(system, f"target {target.name}")
    except TargetError:
        dispose = getattr(system, "dispose", None)
        if callable(dispose):
            dispose()
        raise
    return system


def check_system(system: object, where: str) -> None:
    """Refuse a System (and the Model it makes) that does not keep the protocol."""
    from sqlalchemy import Engine  # not at import: see TYPE_CHECKING above

    lacking = [name for name in _SYSTEM_METHODS if not callable(getattr(system, name, None))]
    if lacking:
        raise TargetError(
            f"{where}: the System its connect() returned ({type(system).__name__}) lacks"
            f" {', '.join(lacking)}; see uowstress.System for the protocol"
        )
    candidate: Any = system
    if not isinstance(getattr(candidate, "engine", None), Engine):
        raise TargetError(
            f"{where}: the System its connect() returned ({type(system).__name__}) has no"
            " `engine` (the SQLAlchemy Engine its Unit of Work runs on); uowstress times"
            " statements and watches connections through it"
        )
    if not _takes_keyword(candidate.unit_of_work, "fault_hook"):
        raise TargetError(
            f"{where}: {type(system).__name__}.unit_of_work() takes no fault_hook; define it as"
            " unit_of_work(self, fault_hook=None) and call fault_hook(point, connection) at"
            f" {', '.join(FAULT_HOOK_POINTS)} (see examples/README.md)"
        )
    uow = candidate.unit_of_work()  # made, not entered: nothing runs on the database
    if not isinstance(uow, UnitOfWork):
        parts = ("__enter__", "__exit__", "commit", "rollback")
        lacking = [name for name in parts if not hasattr(uow, name)]
        raise TargetError(
            f"{where}: {type(system).__name__}.unit_of_work() returned {briefly(uow)}, which is not"
            f" a Unit of Work (it lacks {', '.join(lacking)}); see uowstress.UnitOfWork"
        )
    try:
        model = candidate.new_model()
    except Exception as error:
        raise TargetError(f"{where}: new_model() failed: {described(error)}") from None
    lacking = [
        name for name in ("unit_of_work", "state") if not callable(getattr(model, name, None))
    ]
    if lacking:
        raise TargetError(
            f"{where}: the Model its new_model() returned ({type(model).__name__}) lacks"
            f" {', '.join(lacking)}; see uowstress.Model for the protocol"
        )
    state = model.state()
    if not isinstance(state, dict):
        raise TargetError(
            f"{where}: the Model's state() returned {type(state).__name__}; it must return the"
            " committed state as a dict of JSON values"
        )


def check_target_options(target: Target, spec: str, chosen: Mapping[str, str]) -> None:
    """Refuse option names the target does not declare, naming those it does. (Their values
    are the target's to judge, when it connects.)"""
    unknown = sorted(set(chosen) - set(target.options))
    if unknown:
        known = ", ".join(sorted(target.options)) or "none"
        raise TargetError(f"target {spec} has no option {', '.join(unknown)}; its options: {known}")


def in_a_line(error: BaseException) -> str:
    """The exception's type and the first line of its message (its type alone when it says
    nothing), with passwords hidden: a target's own message may quote its database URL."""
    lines = hide_passwords(str(error)).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def described(error: BaseException) -> str:
    """The exception, its message and where it was raised: a line instead of a traceback."""
    # A target's own message may quote its database URL: its password is hidden.
    said = hide_passwords(str(error))
    text = f"{type(error).__name__}: {said}" if said else type(error).__name__
    if isinstance(error, SyntaxError):
        return text  # str() of a SyntaxError already names the file and line
    tb = error.__traceback__
    if tb is None:
        return text
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{text} ({os.path.basename(tb.tb_frame.f_code.co_filename)}, line {tb.tb_lineno})"


def load_target(spec: str) -> Target:
    """Import `package.module:attribute`; the attribute is a Target or a callable returning one."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise TargetError(
            f"target {spec!r} is not of the form package.module:attribute"
            " (e.g. humanoid_training.target:TARGET)"
        )
    # Like `python -m`: a target module in the working directory is found.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise TargetError(
            f"cannot import target module {module_name!r}: {error}. Is it installed in this"
            " environment, or on PYTHONPATH?"
        ) from None
    except (Exception, SystemExit) as error:  # SystemExit: a script that exits at import
        raise TargetError(
            f"cannot import target module {module_name!r}: {described(error)}. Fix the module"
            " so that it imports, or name another target."
        ) from None
    try:
        obj = getattr(module, attribute)
    except AttributeError:
        raise TargetError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if inspect.isclass(obj):
        raise TargetError(
            f"target {spec!r} is a class, not a Target object: name an instance of it (e.g."
            f" TARGET = {obj.__name__}() in {module_name}, then {module_name}:TARGET)"
        )
    if inspect.isfunction(obj):  # a factory
        required = [
            p.name
            for p in inspect.signature(obj).parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if required:
            raise TargetError(
                f"target {spec!r} is a function that needs arguments ({', '.join(required)});"
                " a target factory must take none. Name a Target object (e.g."
                " humanoid_training.target:TARGET) or a factory without arguments."
            )
        try:
            obj = obj()
        except Exception as error:
            raise TargetError(
                f"target factory {spec!r} failed: {described(error)}. Fix the factory, or name"
                " a Target object instead."
            ) from None
    return check_target(obj, f"target {spec!r}")


DEFAULT_TARGET = "humanoid_training.target:TARGET"
