"""Run the ACID machine against a target on one database, and replay written reproducers."""

from __future__ import annotations

import hashlib
import json
import shlex
import time
import unittest
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hypothesis import Phase
from hypothesis import seed as hypothesis_seed
from hypothesis import settings as Settings
from hypothesis.errors import Flaky, HypothesisException
from hypothesis.stateful import run_state_machine_as_test
from sqlalchemy import exc as sa_exc

from uowstress import reproducers
from uowstress.database import default_url, objects_of, prepared_database
from uowstress.errors import NothingToReplay, ReproducerError, UowstressError
from uowstress.faults import HookUse
from uowstress.interrupts import raise_if_lost
from uowstress.metrics import LatencyStats
from uowstress.profiles import EXAMPLES_DIR, REPRODUCERS_DIR, get_profile, machine_settings
from uowstress.report.passwords import hide_passwords
from uowstress.scratch import backend_name, hide_secrets, reachable
from uowstress.stateful.acid import RunRecorder, acid_machine
from uowstress.stateful.concurrent import AnomalyTally, ConcurrentExecutor, concurrent_machine
from uowstress.stateful.durability import replay_kill
from uowstress.stateful.example_cache import bounded_example_cache
from uowstress.stateful.executor import Finding, SingleSessionExecutor, StepError
from uowstress.stateful.minimize import minimize
from uowstress.target import (
    DEFAULT_TARGET,
    System,
    Target,
    check_target_options,
    connect_system,
    in_a_line,
    load_target,
)


@dataclass
class AcidResult:
    """One run of the ACID machine on one backend."""

    target: str
    backend: str
    database: str  # password hidden
    server_version: str
    profile: str
    options: dict[str, str]
    machine: str = "acid"
    examples: int = 0
    seconds: float = 0.0
    finding: reproducers.Failure | None = None
    reproducer: reproducers.Reproducer | None = None
    reproducer_path: Path | None = None
    error: str | None = None  # the run itself could not be completed
    step_ns: dict[str, list[int]] = field(default_factory=dict)
    fault_counts: dict[str, int] = field(default_factory=dict)
    memory_peaks: list[int] = field(default_factory=list)
    memory_growth: list[int] = field(default_factory=list)  # per example, bytes
    shrink_trials: int = 0
    # Anomalies the target's guarantee permits, seen by the concurrent machine: per class, the
    # examples that showed it and the first one in words (forbidden ones are the finding).
    permitted_anomalies: list[dict[str, Any]] = field(default_factory=list)
    anomaly_checks: int = 0  # histories of units of work the checker judged
    machine_steps: int = 0  # Hypothesis steps of the ACID machine (its rules and initialize)
    # What the run must say though it passed, in plain words: faults it drew that it could not
    # inject (the Unit of Work never called the fault hook at their points).
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.finding is None and self.error is None


# Hypothesis ran an example again and the system answered the same steps differently (the
# machine drew differently, or a failure did not fail again): the outcome depends on more than
# the steps.
_NOT_REPEATABLE = (
    "the system under test answered the same steps differently when an example ran again, so"
    " the exploration could not go on: its outcomes depend on something besides the steps,"
    " such as state an earlier example left behind (a reset() that does not restore a clean"
    " database, a pooled connection handed back inside a transaction, a cache kept across"
    " units of work) or timing. Make reset() and the Unit of Work's end leave nothing behind,"
    " then run again"
)


def _first_run(flaky: BaseException) -> str:
    """What the first run of an example that did not fail again found, as Hypothesis kept it
    (a finding, or what the system or the database raised: a connection the server ended, a
    timeout), said after the error; nothing when Hypothesis kept none."""
    kept = [e for e in getattr(flaky, "exceptions", ()) if isinstance(e, Exception)]
    if not kept:
        return ""
    first = kept[0]
    what = hide_passwords(str(first)) if isinstance(first, Finding) else in_a_line(first)
    return f"; the example's first run failed with {what}"


def _failure_from(error: BaseException, recorder: RunRecorder) -> reproducers.Failure:
    if isinstance(error, Finding):
        return reproducers.Failure(
            kind=error.kind, message=error.message, step=len(recorder.last_steps) or None
        )
    return reproducers.Failure(
        kind="error",
        message=f"{type(error).__name__}: {error}",
        step=len(recorder.last_steps) or None,
    )


# The server said it is going away or not yet back (PostgreSQL's crash_shutdown and
# cannot_connect_now; MariaDB/MySQL's ER_SERVER_SHUTDOWN). PostgreSQL's admin_shutdown is not
# among them: pg_terminate_backend, which the injected connection kills use, says it too, and
# how the system copes with a killed connection is what the machine checks. It counts only
# when the server no longer answers.
_SHUTDOWN_SQLSTATES = frozenset({"57P02", "57P03"})
_SHUTDOWN_MYSQL_CODES = frozenset({1053})


def _database_errors(error: BaseException) -> Iterator[BaseException]:
    """The drivers' errors in the chain of causes of `error`, each once."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, sa_exc.DBAPIError) and current.orig is not None:
            yield current.orig
        pending += [current.__cause__, current.__context__]


def server_outage(url: str, error: BaseException, *, database_error: bool = False) -> str | None:
    """Why `error` is the database server's outage rather than the system's failure (None
    when it is not): the server said it is shutting down, or, the error being a database
    error (or taken for one: `database_error`, for Hypothesis's report of an example that ran
    differently the second time, which does not carry it), the server no longer answers. A
    finding then would blame the system for the outage, and its reproducer would replay as
    FIXED once the server is back."""
    if backend_name(url) == "sqlite":
        return None
    drivers = list(_database_errors(error))
    if not drivers and not database_error:
        return None
    said = None
    for orig in drivers:
        code = getattr(orig, "sqlstate", None)
        args: tuple[object, ...] = getattr(orig, "args", ())
        if code in _SHUTDOWN_SQLSTATES or (bool(args) and args[0] in _SHUTDOWN_MYSQL_CODES):
            said = in_a_line(orig)
            break
    if said is None:
        answers, why = reachable(url)
        if answers:
            return None
        said = why
    return (
        f"the database server stopped answering during the run ({hide_secrets(said, url)}):"
        " what the system did then cannot be judged, so nothing was reported as a finding;"
        " run again once the server is back"
    )


def new_executor(
    machine: str,
    target: Target,
    system: System,
    sessions: int,
    *,
    replaying: bool = False,
    hook_use: HookUse | None = None,
) -> SingleSessionExecutor | ConcurrentExecutor:
    """`hook_use`: what the run has learnt of where the system's Unit of Work calls the fault
    hook (see HookUse); None, for a run of its own, learns it afresh."""
    if machine == "sessions":
        return ConcurrentExecutor(target, system, sessions, replaying=replaying)
    return SingleSessionExecutor(target, system, replaying=replaying, hook_use=hook_use)


def _describe(failure: reproducers.Failure | None, steps: int) -> str:
    if failure is None:
        return f"passed every check of all {steps} steps"
    said = failure.message.strip().splitlines()
    # A durability finding belongs to the kill, not to a step.
    at = "after the kill" if failure.step is None else f"at step {failure.step} of {steps}"
    return f"failed {at} ([{failure.kind}] {said[0] if said else ''})"


def _same_failure(one: reproducers.Failure | None, other: reproducers.Failure | None) -> bool:
    """The same kind of finding at the same step (messages may name ids or counts that
    differ without the failure being another)."""
    if one is None or other is None:
        return one is other
    return (one.kind, one.step) == (other.kind, other.step)


def _before_steps(finding: Finding) -> reproducers.Failure:
    """A finding raised as an executor started, before its first step (the concurrent
    machine reads the committed state then), as the machines record it: at no step."""
    return reproducers.Failure(kind=finding.kind, message=finding.message, step=None)


def _first_failure(
    executor: SingleSessionExecutor | ConcurrentExecutor, steps: Iterable[dict[str, Any]]
) -> reproducers.Failure | None:
    """Run `steps`; the first finding, at its step (None: every step passed its checks). Any
    other exception is raised. The executor is closed either way."""
    try:
        for step in steps:
            # Replays and shrinking run steps outside the machines: an interrupt Python
            # dropped is raised again here, as a machine raises it before its next step.
            raise_if_lost()
            executor.run(step)
    except Finding as finding:
        # Each executor counts a step before running it: the count is the failing step.
        return reproducers.Failure(
            kind=finding.kind, message=finding.message, step=len(executor.steps)
        )
    finally:
        executor.close()
    return None


def shrink(
    target: Target,
    system: System,
    steps: list[dict[str, Any]],
    failure: reproducers.Failure,
    *,
    budget_s: float = 60.0,
    machine: str = "acid",
    sessions: int = 1,
    hook_use: HookUse | None = None,
) -> tuple[list[dict[str, Any]], reproducers.Failure, int]:
    """Delete steps while the run still fails with the same kind of finding.

    The steps as found are run once more first: when they do not fail again with the same kind
    at the same step, NotRepeatable is raised (shrinking would follow chance, not the steps).
    A system that cannot be reset between attempts (the failure may have broken it) keeps the
    steps as found, and the finding says why they were not shrunk."""
    last: dict[str, reproducers.Failure] = {}

    def outcome(candidate: list[dict[str, Any]]) -> tuple[reproducers.Failure | None, bool]:
        """How the candidate fails on a reset system (None: it passes), and whether the
        failure is a finding (another exception ends the run without one)."""
        try:
            system.reset()
        except Exception as error:
            raise _ResetFailed from error
        try:
            executor = new_executor(machine, target, system, sessions, hook_use=hook_use)
        except Finding as finding:  # before any step: reading the committed state failed
            return _before_steps(finding), True
        except Exception as error:
            return reproducers.Failure(kind="error", message=in_a_line(error)), False
        try:
            found = _first_failure(executor, candidate)
        except Exception as error:
            return reproducers.Failure(
                kind="error", message=f"{type(error).__name__}: {error}", step=len(executor.steps)
            ), False
        return found, found is not None

    def still_fails(candidate: list[dict[str, Any]]) -> bool:
        found, is_finding = outcome(candidate)
        if found is None or not is_finding or found.kind != failure.kind:
            return False
        last["failure"] = found
        return found.step == len(candidate)

    try:
        again, _ = outcome(steps)
        if not _same_failure(failure, again):
            raise NotRepeatable(
                f"the system under test answered the same steps differently when they ran"
                f" again: as found, they {_describe(failure, len(steps))}; run again on a reset"
                f" database, they {_describe(again, len(steps))}. Its outcomes depend on"
                " something besides the steps (randomness, timing, or state an earlier example"
                " left behind: a reset() that does not restore a clean database, a cache kept"
                " across units of work); make them depend on the steps alone, then run again"
            )
        smallest, trials = minimize(steps, still_fails, budget_s=budget_s)
        if smallest is steps or not still_fails(smallest):
            return steps, failure, trials + 1
    except _ResetFailed as broken:
        why = (
            f"{failure.message}\n(not shrunk: the system could not be reset to try smaller"
            f" sequences, {in_a_line(broken.__cause__ or broken)}; the failure may have left"
            " its database or connection pool broken)"
        )
        return steps, failure.model_copy(update={"message": why}), 0
    return smallest, last["failure"], trials + 2


class NotRepeatable(Exception):
    """The steps of a failure did not fail the same way when they ran again."""


class _ResetFailed(Exception):
    """The system's reset() raised while shrinking (the exception is the cause)."""


def run_acid(
    url: str,
    *,
    target_spec: str = DEFAULT_TARGET,
    options: Mapping[str, str] | None = None,
    profile: str = "dev",
    settings: Settings | None = None,
    isolation_level: str | None = None,
    reproducers_dir: Path = REPRODUCERS_DIR,
    allow_existing_tables: bool = False,
    trace_memory: bool = False,
    shrink_budget_s: float = 60.0,
    machine: str = "acid",
    sessions: int = 2,
    max_examples: int | None = None,
    seed: int | None = None,
) -> AcidResult:
    """Explore the target with the single-session ACID machine; write a reproducer on failure.

    `seed` fixes the examples Hypothesis draws (after it has replayed the failures saved in
    its example database); None lets Hypothesis choose.

    Raises UowstressError for what stops a run before it starts (bad target, unreachable or
    unsafe database); a finding, or an error of the system, is in the result.
    """
    target = load_target(target_spec)
    chosen = dict(options or {})
    get_profile(profile)
    with prepared_database(
        url,
        allow_existing_tables=allow_existing_tables,
        ours=lambda: objects_of(target, chosen, isolation_level, url),
    ) as db:
        result = AcidResult(
            target=target_spec,
            backend=db.backend,
            database=db.display,
            server_version=db.server_version,
            profile=profile,
            options=chosen,
            machine=machine,
        )
        try:
            system = connect_system(target, db.url, chosen, isolation_level)
        except ValueError as error:
            raise UowstressError(
                f"target {target_spec} refused its options: {_hidden(str(error), url)}"
            ) from None
        recorder = RunRecorder()
        started = time.perf_counter()
        # One example database per configuration: a failure saved for one switch or backend is
        # not replayed as if it belonged to another.
        config_key = hashlib.sha256(
            json.dumps(
                [machine, sessions, target_spec, chosen, db.backend, isolation_level]
            ).encode()
        ).hexdigest()[:12]
        used_sessions = sessions if machine == "sessions" else 1
        # What a reproducer of this run is written with, and what one must hold to be replayed
        # as this run's by the replay profile.
        configuration: dict[str, Any] = {
            "machine": machine,
            "sessions": used_sessions,
            "target": target_spec,
            "target_options": chosen,
            "backend": db.backend,
            "isolation_level": isolation_level,
        }
        permitted = AnomalyTally()
        try:
            if machine == "sessions":
                machine_class = concurrent_machine(
                    target, system, recorder, sessions=sessions, permitted=permitted
                )
            else:
                machine_class = acid_machine(target, system, recorder, trace_memory=trace_memory)
            if seed is not None:
                # Hypothesis's own decorator; the explicit settings below keep the example
                # database, which the decorator would otherwise switch off.
                machine_class = hypothesis_seed(seed)(machine_class)
            explore_with = settings or machine_settings(
                profile, examples_dir=EXAMPLES_DIR / f"{machine}-{config_key}"
            )
            if max_examples is not None:  # a shard of a split exploration
                explore_with = Settings(explore_with, max_examples=max_examples)
            only_saved = Phase.generate not in explore_with.phases
            saved_examples = True
            with bounded_example_cache():
                try:
                    run_state_machine_as_test(machine_class, settings=explore_with)
                except unittest.SkipTest:
                    if not only_saved:
                        raise
                    # Hypothesis was told to run only saved examples, and there are none.
                    saved_examples = False
            if only_saved:
                # The replay profile: the written reproducers of this configuration too (a
                # fresh clone or CI cache has those and no example database).
                written, broken = reproducers.written_for(reproducers_dir, configuration)
                if broken:
                    # A saved failure that cannot be replayed must not pass as replayed.
                    result.error = "; ".join(broken)
                elif not written and not saved_examples:
                    raise NothingToReplay(
                        f"nothing saved to replay for the {machine} machine on {db.display}:"
                        " the replay profile runs only the failures earlier runs saved (in the"
                        f" example database, or written to {reproducers_dir} for this target,"
                        " its options and this backend); run with another profile to explore"
                    )
                if result.error is None:
                    _replay_written(
                        result,
                        written,
                        target,
                        system,
                        machine,
                        used_sessions,
                        recorder.hook_use,
                    )
        except NothingToReplay:
            raise
        except (Finding, Exception) as error:
            broken_by = recorder.broken_by() if isinstance(error, Flaky) else None
            if broken_by is not None:
                # Hypothesis ran the failing example again and reset() failed before it drew
                # anything: the failure is the one found before, not the system's whim.
                error, recorder.last_steps = broken_by
            if isinstance(error, Flaky) and (
                outage := server_outage(db.url, error, database_error=True)
            ):
                # The example ran differently the second time because the server went away,
                # not because of the system.
                result.error = outage
            elif isinstance(error, Flaky):
                said = str(error).strip().splitlines()
                result.error = (
                    f"{_NOT_REPEATABLE} ({type(error).__name__}: {said[0] if said else ''})"
                    f"{_first_run(error)}"
                )
            elif isinstance(error, StepError | HypothesisException):
                result.error = f"{type(error).__name__}: {error}"
            elif isinstance(error, UowstressError) and not recorder.last_steps:
                # uowstress's own machinery could not start (the scheduler without the
                # privilege it needs, say): nothing of the system was tried.
                result.error = str(error)
            elif (outage := server_outage(db.url, error)) is not None:
                # Not the system's doing: no finding, and no reproducer for CI to replay.
                result.error = outage
            else:
                found = _failure_from(error, recorder)
                steps = recorder.last_steps
                try:
                    steps, found, result.shrink_trials = shrink(
                        target,
                        system,
                        steps,
                        found,
                        budget_s=shrink_budget_s,
                        machine=machine,
                        sessions=used_sessions,
                        hook_use=recorder.hook_use,
                    )
                except NotRepeatable as differing:
                    # An error, not a finding: which step fails, if any, is left to chance. The
                    # steps are still written, for `uowstress replay --repeat` to show how often.
                    result.error = str(differing)
                else:
                    result.finding = found
                # The system's and the target's own words may quote the URL they were given.
                found = found.model_copy(update={"message": _hidden(found.message, url)})
                if result.finding is not None:
                    result.finding = found
                if not steps and result.finding is not None:
                    # Found as the machine started (the concurrent machine reads the committed
                    # state then): a reproducer of no steps would be malformed.
                    result.finding = found.model_copy(
                        update={
                            "message": f"{found.message} (as the machine started, before its"
                            " first step: no reproducer is written)"
                        }
                    )
                else:
                    result.reproducer = reproducers.make_reproducer(
                        **configuration,
                        guarantee=target.guarantee,
                        profile=profile,
                        # What the run drew with (the steps replay without it).
                        seed=None if seed is None else str(seed),
                        steps=[reproducers.Step(**s) for s in steps],
                        shrunk_from=len(recorder.last_steps),
                        failure=found,
                        versions=reproducers.versions(db.server_version),
                    )
                    try:
                        result.reproducer_path = reproducers.write(
                            result.reproducer, reproducers_dir
                        )
                    except ReproducerError as unwritten:
                        # The finding stands, its steps in the report; the missing file is an
                        # error of the run, said with it.
                        result.error = "; ".join(filter(None, [result.error, str(unwritten)]))
                if (
                    result.error is not None
                    and result.reproducer is not None
                    and result.reproducer_path is not None
                ):
                    where = shlex.quote(str(result.reproducer_path))
                    result.error += (
                        f". The steps as found are written to {result.reproducer_path}:"
                        f" `{result.reproducer.replay_command(where)} --repeat 10` runs them ten"
                        " times"
                    )
        finally:
            if result.error is not None:
                result.error = _hidden(result.error, url)
            result.seconds = time.perf_counter() - started
            result.examples += recorder.examples  # and the written reproducers replayed
            result.step_ns = {label: ns.tolist() for label, ns in recorder.step_ns.items()}
            result.fault_counts = recorder.fault_counts
            result.memory_peaks = recorder.memory_peaks
            result.memory_growth = recorder.memory_growth
            result.permitted_anomalies = permitted.as_json()
            result.anomaly_checks = permitted.checks
            result.machine_steps = recorder.machine_steps
            result.warnings = recorder.warnings()
            _dispose(system, result)
    return result


def _hidden(text: str, url: str) -> str:
    """`text` with the secrets of `url` hidden, as written, percent-encoded or decoded, and
    every URL's password: what a system or its target says may quote the URL it was given."""
    return hide_passwords(hide_secrets(text, url))


def _dispose(system: System, result: AcidResult) -> None:
    """Put the system away. When that fails (its server stopped answering, say), what the run
    found and explored stands: the failure makes the run an error, said beside its own."""
    try:
        system.dispose()
    except Exception as error:
        said = f"the system could not be disposed of: {in_a_line(error)}"
        result.error = "; ".join(filter(None, [result.error, said]))


def _replay_written(
    result: AcidResult,
    written: list[tuple[Path, reproducers.Reproducer]],
    target: Target,
    system: System,
    machine: str,
    sessions: int,
    hook_use: HookUse | None = None,
) -> None:
    """Run each written reproducer's steps on a reset system; the first that fails again is
    the run's finding (its reproducer is the file it came from). Each counts as an example."""
    for path, saved in written:
        result.examples += 1
        system.reset()
        executor = new_executor(
            machine, target, system, sessions, replaying=True, hook_use=hook_use
        )
        try:
            found = _first_failure(executor, (step.as_dict() for step in saved.steps))
        except Exception as error:
            result.error = f"replaying {path}: {type(error).__name__}: {error}"
            return
        if found is not None:
            result.finding = found
            result.reproducer, result.reproducer_path = saved, path
            return


Verdict = Literal["FIXED", "FAILED", "ERROR"]


@dataclass
class ReplayResult:
    path: Path
    verdict: Verdict
    detail: str
    reproducer: reproducers.Reproducer | None = None


def replay(
    path: Path,
    *,
    db_urls: Mapping[str, str] | None = None,
    target_options: Mapping[str, str] | None = None,
    repeat: int = 1,
    allow_existing_tables: bool = False,
) -> ReplayResult:
    """Run a reproducer's steps again: FIXED when every step passes its checks, FAILED when a
    check fails again, ERROR when it cannot be run (malformed, unknown target, no database).

    `target_options` replace the reproducer's options of those names; an empty value removes
    one. With `repeat`, the steps run that many times, each on a database of their own: FIXED
    only if every run passes, FAILED only if every run fails the same way, and any other mix
    is an ERROR saying the outcome is not repeatable."""
    try:
        reproducer = reproducers.load(path)
    except UowstressError as error:
        # The result names its file: the detail says what is wrong with it, once.
        return ReplayResult(path, "ERROR", str(error).removeprefix(f"{path}: "))
    steps = len(reproducer.steps)
    recorded = reproducer.failure
    url: str | None = None
    try:
        url = (db_urls or {}).get(reproducer.backend) or default_url(reproducer.backend)
        target = load_target(reproducer.target)
        options = dict(reproducer.target_options)
        if target_options:
            # Removing an option the target no longer has is how such a reproducer is replayed.
            given = {name: value for name, value in target_options.items() if value != ""}
            check_target_options(target, reproducer.target, given)
            options.update(target_options)
            options = {name: value for name, value in options.items() if value != ""}
        runs = []
        for _ in range(repeat):
            raise_if_lost()  # a durability replay runs no steps here
            runs.append(_replay_once(reproducer, target, options, url, allow_existing_tables))
    except (UowstressError, ValueError) as error:
        said = str(error) if url is None else _hidden(str(error), url)
        return ReplayResult(path, "ERROR", said, reproducer)
    runs = [
        (
            None
            if found is None
            else found.model_copy(update={"message": _hidden(found.message, url)}),
            shown,
        )
        for found, shown in runs
    ]
    display = runs[0][1]
    where = f"on {display}"
    if options != dict(reproducer.target_options):
        shown = ", ".join(f"{name}={value}" for name, value in sorted(options.items()))
        where += f" with target options {shown or 'none'}"
    failures = [failure for failure, _ in runs]
    first = failures[0]
    if any(not _same_failure(first, other) for other in failures[1:]):
        tally = Counter(_describe(failure, steps) for failure in failures)
        said = "; ".join(f"{n} of {repeat} runs {what}" for what, n in tally.most_common())
        return ReplayResult(
            path,
            "ERROR",
            f"not repeatable {where}: the same steps gave different outcomes ({said}); the"
            " system's answers depend on something besides the steps (randomness, timing,"
            " state left behind)",
            reproducer,
        )
    each = f" (the same in each of {repeat} runs)" if repeat > 1 else ""
    if first is None:
        passed = "the 1 step passes" if steps == 1 else f"all {steps} steps pass"
        if reproducer.machine == "durability":
            # What is checked after a kill, not only the loss of commits: the recorded finding
            # may have been a transaction half there, or a broken invariant.
            passed = (
                f"after the kill ({steps} steps) every acknowledged commit is there, none is"
                " half there and every invariant holds"
            )
            if repeat == 1:
                each = (
                    "; a kill's timing varies from run to run, and --repeat 10 tells a fix"
                    " from a kill that missed"
                )
        return ReplayResult(path, "FIXED", f"{passed} {where}{each}", reproducer)
    at = "the kill" if first.step is None else f"step {first.step}"
    detail = f"{at} {where}: [{first.kind}] {first.message}{each}"
    if first.kind != recorded.kind or recorded.step not in (None, first.step):
        at = "" if recorded.step is None else f", at step {recorded.step}"
        detail += (
            f"; this differs from the recorded failure{at}: [{recorded.kind}] {recorded.message}"
        )
    return ReplayResult(path, "FAILED", detail, reproducer)


def _replay_once(
    reproducer: reproducers.Reproducer,
    target: Target,
    options: dict[str, str],
    url: str,
    allow_existing_tables: bool = False,
) -> tuple[reproducers.Failure | None, str]:
    """The failure of one run of the steps on a database of their own (None: all passed), and
    the database, named (without a --db-url of its backend, a default server is used)."""
    if reproducer.machine == "durability":
        return replay_kill(reproducer, target, options, url, allow_existing_tables)
    with prepared_database(
        url,
        allow_existing_tables=allow_existing_tables,
        ours=lambda: objects_of(target, options, reproducer.isolation_level, url),
    ) as db:
        system = connect_system(target, db.url, options, reproducer.isolation_level)
        try:
            try:
                executor = new_executor(
                    reproducer.machine, target, system, reproducer.sessions, replaying=True
                )
            except Finding as finding:
                return _before_steps(finding), db.display
            return _first_failure(executor, (s.as_dict() for s in reproducer.steps)), db.display
        finally:
            system.dispose()


def result_summary(result: AcidResult) -> dict[str, Any]:
    return {
        "target": result.target,
        "machine": result.machine,
        "backend": result.backend,
        "database": result.database,
        "passed": result.passed,
        "examples": result.examples,
        "seconds": round(result.seconds, 3),
        "finding": None if result.finding is None else result.finding.model_dump(),
        "reproducer": None if result.reproducer_path is None else str(result.reproducer_path),
        "error": result.error,
        "anomaly_checks": result.anomaly_checks,
        "permitted_anomalies": result.permitted_anomalies,
        "fault_counts": result.fault_counts,
        "warnings": result.warnings,
        "step_seconds": {
            label: {
                "count": stats.count,
                "p50": round(stats.p50, 6),
                "p95": round(stats.p95, 6),
                "max": round(stats.max, 6),
            }
            for label, samples in sorted(result.step_ns.items())
            if samples
            for stats in [LatencyStats.from_samples([ns / 1e9 for ns in samples])]
        },
        "example_memory_peak_mb": round(max(result.memory_peaks) / 2**20, 1)
        if result.memory_peaks
        else None,
    }
