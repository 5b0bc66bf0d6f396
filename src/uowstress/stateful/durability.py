"""The durability check: a workload in a child process, killed with SIGKILL at a drawn point.

For each kill, Hypothesis draws a few transactions of the target's step operations and a kill
point, and the parent computes with the model alone the committed state after each prefix of
commits. A worker process (`_durability_child`, one per kill, forked by a child server that has
imported the target once) runs the transactions on the prepared database and acknowledges each
commit. The parent SIGKILLs it after a drawn number of acknowledgements, a drawn number of the
next transaction's steps (its commit last) and a drawn delay of a few milliseconds after the
worker reported the last of them, so that kills land anywhere in a transaction, commits
included. The worker may get further before the kill lands (the parent reads its reports late,
the delay outlasts a step): each kill records where it landed, the acknowledgements and steps
the worker reported before it died and how long after the last of them the kill was sent, and
a reproducer replays that point, not the drawn one. Then the parent reads what is committed
through a fresh engine (for SQLite the first connection to the file since the kill, which
recovers the write-ahead log the worker left) and checks:

* every acknowledged commit is there: the state is the one after the a acknowledged commits, or
  after a + 1 when the commit in flight landed before the kill, and never anything in between;
* every invariant of committed state holds.

The database is emptied between kills. No process started here outlives the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from uowstress import reproducers
from uowstress.database import PreparedDatabase, objects_of, prepared_database
from uowstress.errors import ReproducerError, UowstressError
from uowstress.interrupts import raise_if_lost
from uowstress.options import random_seed
from uowstress.profiles import REPRODUCERS_DIR
from uowstress.report.passwords import hide_passwords
from uowstress.reproducers import KillPoint
from uowstress.scratch import hide_secrets, redacted, scratch_database
from uowstress.stateful._durability_child import clock_ns
from uowstress.stateful.drawing import draw_arguments, is_enabled
from uowstress.stateful.executor import (
    StepError,
    call,
    diff_states,
    invariants_of,
    refuse_failing_code,
    refuse_misfit,
)
from uowstress.target import (
    DEFAULT_TARGET,
    Ids,
    Model,
    Operation,
    State,
    System,
    Target,
    connect_system,
    load_target,
)

CHILD_MODULE = "uowstress.stateful._durability_child"
MAX_TRANSACTIONS = 4
MAX_OPS_PER_TRANSACTION = 3
# A commit of a few operations takes milliseconds; a kill delayed by up to this much lands
# anywhere in it, from its first statement to after its COMMIT.
MAX_KILL_DELAY_US = 15_000
# Connecting to a server and running one step take well under a second; a child silent this
# long is hung, and is killed.
CHILD_TIMEOUT_S = 30.0
# After SIGKILL the kernel reaps the child at once; this only bounds a wait that cannot hang.
REAP_TIMEOUT_S = 10.0
STDERR_TAIL_CHARS = 2000
# Per finding, the time its workload may take to be made smaller (a kill costs a fork and a
# fresh database read, a few hundred milliseconds on SQLite).
SHRINK_BUDGET_S = 8.0
# Each finding's reproducer is replayed this many times before it is written: a kill inside a
# commit races with it, and a reproducer that seldom fails again is said to be one.
CONFIRMATIONS = 3


class DurabilityError(UowstressError):
    """The durability check could not run (the child would not start, hung or failed)."""


@dataclass(frozen=True)
class KillPlan:
    """One drawn kill: the child's steps, the expected committed states and the kill point."""

    steps: list[dict[str, Any]]  # "begin", "apply"s, "commit", per transaction
    states: list[State]  # states[k]: what must be committed after the first k commits
    outcomes: list[str | None]  # per step: the error type the model raised, None when it returned
    kill_after_acks: int  # kill once this many commits are acknowledged (0: after connecting)
    # ... and this many steps of the next transaction have started: its "begin", its "apply"s
    # and, last, its "commit" (the kill then lands inside the commit)
    extra_steps: int
    # ... and then this long after the worker reported that step: the parent reacts within a
    # fraction of a millisecond, faster than a commit runs, so without a delay the kill would
    # always land at a commit's first statement
    kill_delay_s: float = 0.0

    @property
    def commits(self) -> int:
        return len(self.states) - 1

    @property
    def point(self) -> KillPoint:
        """The planned kill point, in a reproducer's terms."""
        return KillPoint(
            after_acks=self.kill_after_acks,
            extra_steps=self.extra_steps,
            delay_us=round(self.kill_delay_s * 1e6),
        )

    def at(self, point: KillPoint) -> KillPlan:
        """The same workload, killed at `point`."""
        return replace(
            self,
            kill_after_acks=point.after_acks,
            extra_steps=point.extra_steps,
            kill_delay_s=point.delay_us / 1e6,
        )


@dataclass(frozen=True)
class DurabilityFinding:
    kind: str  # "lost", "partial", "invariant", "outcome" or "error"
    message: str


@dataclass(frozen=True)
class KillResult:
    """What one kill did and what was found committed afterwards."""

    index: int  # 1-based, within the run
    commits: int  # transactions in the child's workload
    # The planned kill point (the plan's): where the kill was due
    kill_after_acks: int
    extra_steps: int
    kill_delay_s: float
    acknowledged: int  # commits the child acknowledged before it died
    in_commit: bool  # the kill landed inside a commit (started, not acknowledged)
    landed: int | None  # commits found committed after the kill; None when no prefix matches
    # Where the kill landed, as a reproducer records it: `acknowledged`, the steps of the next
    # transaction the worker had reported, and the delay after the last of them. Never before
    # the planned point; later when the worker got further before it died.
    killed_at: KillPoint
    seconds: float
    finding: DurabilityFinding | None = None

    @property
    def in_flight_landed(self) -> bool:
        """The commit under way at the kill was found committed, though never acknowledged."""
        return self.landed is not None and self.landed == self.acknowledged + 1


@dataclass
class DurabilityResult:
    target: str
    backend: str
    database: str  # password hidden
    server_version: str
    options: dict[str, str]
    isolation_level: str | None
    seed: int  # run again with this seed to draw the same workloads and kill points
    kills_requested: int
    kills: list[KillResult] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None  # the run itself could not be completed
    # Per kill index with a finding: its reproducer and the file it was written to, its
    # failure that of the shrunk workload; or, replaying saved ones, the file it was read from.
    # Per kill with a finding, its reproducer and the file it was written to (None: it could
    # not be written; its steps are still reported)
    reproducers: dict[int, tuple[reproducers.Reproducer, Path | None]] = field(default_factory=dict)
    replayed_saved: bool = False

    @property
    def findings(self) -> list[KillResult]:
        return [k for k in self.kills if k.finding is not None]

    @property
    def passed(self) -> bool:
        return self.error is None and not self.findings

    @property
    def acknowledged(self) -> int:
        return sum(k.acknowledged for k in self.kills)

    @property
    def in_flight_landed(self) -> int:
        return sum(1 for k in self.kills if k.in_flight_landed)

    @property
    def kills_in_commit(self) -> int:
        return sum(1 for k in self.kills if k.in_commit)

    def summary(self) -> dict[str, Any]:
        done = len(self.kills)
        return {
            "target": self.target,
            "backend": self.backend,
            "database": self.database,
            "options": self.options,
            "seed": self.seed,
            "passed": self.passed,
            "kills": done,
            "kills_requested": self.kills_requested,
            "commits_acknowledged": self.acknowledged,
            "kills_in_commit": self.kills_in_commit,
            "in_flight_commits_landed": self.in_flight_landed,
            "seconds": round(self.seconds, 3),
            "seconds_per_kill": round(self.seconds / done, 3) if done else None,
            "findings": [
                {
                    "kill": k.index,
                    "kind": k.finding.kind,
                    "message": k.finding.message,
                    "killed_at": k.killed_at.model_dump(),  # where the kill landed
                }
                for k in self.findings
                if k.finding is not None
            ],
            "error": self.error,
        }


# -- drawing a workload --------------------------------------------------------------------------


def _choose(ops: list[Operation], state: State) -> st.SearchStrategy[Operation]:
    # Operations that can succeed: a refused one commits nothing new worth losing.
    ready = [op for op in ops if is_enabled(op, state)]
    return st.sampled_from(ready or ops)


@st.composite
def kill_plans(
    draw: st.DrawFn,
    target: Target,
    new_model: Callable[[], Model],
    max_transactions: int = MAX_TRANSACTIONS,
) -> KillPlan:
    """A workload of committed transactions, its expected states, and where to kill it."""
    ops = [op for op in target.operations if op.scope == "step"]
    if not ops:
        raise DurabilityError(
            f"target {target.name} has no operation of scope 'step'; the durability check"
            " needs operations it can run inside a unit of work it commits itself"
        )
    model = new_model()
    ids = Ids()
    steps: list[dict[str, Any]] = []
    outcomes: list[str | None] = []
    states = [model.state()]
    for _ in range(draw(st.integers(1, max_transactions))):
        mirror = model.unit_of_work()
        mirror.__enter__()
        steps.append({"action": "begin"})
        outcomes.append(None)
        for _ in range(draw(st.integers(1, MAX_OPS_PER_TRANSACTION))):
            state = model.state()
            op = draw(_choose(ops, state))
            args = draw_arguments(draw, op, state, ids)
            outcome = call(op.apply, mirror, args)
            steps.append({"action": "apply", "op": op.name, "args": args})
            refuse_failing_code(len(steps), op.name, args, outcome)
            outcomes.append(None if outcome.ok else outcome.error_type)
        mirror.commit()
        mirror.__exit__(None, None, None)
        steps.append({"action": "commit"})
        outcomes.append(None)
        states.append(model.state())
    commits = len(states) - 1
    kill_after = draw(st.integers(0, commits))
    # Steps of the transaction after the kill point's acknowledgement (none after the last).
    following = reproducers.steps_after_acks([step["action"] for step in steps], kill_after)
    # A third each: inside the next commit, right after the acknowledgement, anywhere between.
    extra = draw(st.one_of(st.just(following), st.just(0), st.integers(0, following)))
    delay_us = draw(st.one_of(st.just(0), st.integers(0, MAX_KILL_DELAY_US)))
    return KillPlan(steps, states, outcomes, kill_after, extra, delay_us / 1e6)


def plan_of(
    target: Target,
    new_model: Callable[[], Model],
    steps: list[dict[str, Any]],
    kill: KillPoint,
    *,
    from_file: bool = False,
) -> KillPlan:
    """The plan a durability reproducer describes: its steps run once on a fresh model, for
    the state after each commit and each step's outcome, as `kill_plans` computes them.
    `from_file`: steps read from a file, whose arguments may fit no operation (see
    `refuse_misfit`): StepError, a UowstressError, names such a step."""
    ops = {op.name: op for op in target.operations if op.scope == "step"}
    model = new_model()
    states = [model.state()]
    outcomes: list[str | None] = []
    mirror: Any = None
    for index, step in enumerate(steps, 1):
        action = step["action"]
        if action == "begin":
            mirror = model.unit_of_work()
            mirror.__enter__()
            outcomes.append(None)
        elif action == "apply":
            op = ops.get(step.get("op") or "")
            if op is None:
                raise UowstressError(
                    f"step {index}: target {target.name} has no operation {step.get('op')!r} of"
                    f" scope 'step'; it has {', '.join(sorted(ops))}"
                )
            args = step.get("args", {})
            outcome = call(op.apply, mirror, args)
            if from_file:
                refuse_misfit(index, op.name, args, outcome)
            outcomes.append(None if outcome.ok else outcome.error_type)
        else:
            mirror.commit()
            mirror.__exit__(None, None, None)
            states.append(model.state())
            outcomes.append(None)
    return KillPlan(steps, states, outcomes, kill.after_acks, kill.extra_steps, kill.delay_us / 1e6)


# -- judging what survived -----------------------------------------------------------------------


def _commits(n: int) -> str:
    return f"{n} commit{'' if n == 1 else 's'}"


def judge(
    states: list[State], acknowledged: int, actual: State, violations: list[str]
) -> tuple[int | None, DurabilityFinding | None]:
    """(commits found committed, finding) for the state read after a kill.

    The state must be the one after the acknowledged commits, or after one more (the commit in
    flight may land before the process dies), and its invariants must hold.
    """
    commits = len(states) - 1
    matches = [k for k, state in enumerate(states) if state == actual]
    # A transaction that changed nothing leaves two equal states: name the fewest lost commits.
    below = [k for k in matches if k < acknowledged]
    landed = next(
        (k for k in matches if acknowledged <= k <= acknowledged + 1),
        below[-1] if below else (matches[0] if matches else None),
    )
    if violations:
        return landed, DurabilityFinding(
            "invariant",
            f"after a kill with {_commits(acknowledged)} acknowledged, committed state breaks"
            f" invariants: {'; '.join(violations)}",
        )
    if landed is not None and acknowledged <= landed <= acknowledged + 1:
        return landed, None
    if landed is not None and landed < acknowledged:
        lost = (
            f"commit {acknowledged} was"
            if landed + 1 == acknowledged
            else f"commits {landed + 1} to {acknowledged} were"
        )
        return landed, DurabilityFinding(
            "lost",
            f"{lost} acknowledged but {'is' if landed + 1 == acknowledged else 'are'} missing"
            f" after the process was killed: the database holds the state after commit {landed}"
            f" of {commits}. A commit the Unit of Work has returned from must survive a crash;"
            " check that commit() waits for the database's COMMIT (and, for SQLite, the"
            " journal and synchronous settings).",
        )
    if landed is not None:
        return landed, DurabilityFinding(
            "lost",
            f"the database holds the state after commit {landed} of {commits}, but only"
            f" {_commits(acknowledged)} {'was' if acknowledged == 1 else 'were'} acknowledged"
            " and at most one more was in flight:"
            " the child's acknowledgements did not reach the checker",
        )
    against = [
        f"against commit {acknowledged} (acknowledged): "
        + "; ".join(diff_states(states[acknowledged], actual))
    ]
    if acknowledged < commits:
        against.append(
            f"against commit {acknowledged + 1} (in flight): "
            + "; ".join(diff_states(states[acknowledged + 1], actual))
        )
    return None, DurabilityFinding(
        "partial",
        f"after a kill with {_commits(acknowledged)} acknowledged, the committed state is"
        " neither the state after the acknowledged commits nor after the one in flight: part"
        f" of a transaction is present. Differences {' | '.join(against)}",
    )


# -- the child process ---------------------------------------------------------------------------


class _Lines:
    """Lines from the child's stdout, each read with a deadline (a hung child is not waited
    for)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self.buffer = b""
        self.eof = False

    def next(self, timeout_s: float) -> str | None:
        """The next line; None at end of output; TimeoutError when none comes in time."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                if chunk:
                    self.buffer += chunk
                else:
                    self.eof = True
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode(errors="replace")


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Paths the parent added (a test's root, a target's checkout) are needed to import the
    # target in the child too; the interpreter's own paths it finds by itself.
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}

    def own(path: str) -> bool:
        real = os.path.realpath(path)
        return any(os.path.commonpath([real, prefix]) == prefix for prefix in prefixes)

    extra = [p for p in sys.path if p and not own(p)]
    if extra:
        env["PYTHONPATH"] = os.pathsep.join([*extra, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


class _Scrubber:
    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, text: str) -> str:
        return hide_secrets(text, self.url)


@dataclass
class _Watch:
    acknowledged: int = 0
    steps_since_ack: int = 0
    ready: bool = False
    done: bool = False
    committing: bool = False  # a commit has started and not been acknowledged
    mismatch: str | None = None
    # When the worker wrote its last "ready", "step" or "ack" (`clock_ns`, the worker's stamp)
    progressed_ns: int = 0

    @property
    def progress(self) -> tuple[int, int]:
        """How far the worker has reported: acknowledged commits, steps of the next
        transaction (a kill point's after_acks and extra_steps)."""
        return self.acknowledged, self.steps_since_ack

    def take(self, line: str, plan: KillPlan) -> None:
        body, marker, stamp = line.rpartition(" @")
        if marker and stamp.isdigit():
            line, written_ns = body, int(stamp)
        else:
            written_ns = clock_ns()  # unstamped: when it was read
        kind, _, rest = line.partition(" ")
        if kind in ("ready", "step", "ack"):
            self.progressed_ns = written_ns
        if kind == "ready":
            self.ready = True
        elif kind == "step":
            self.steps_since_ack += 1
            index_text, _, outcome = rest.partition(" ")
            index = int(index_text)
            self.committing = outcome == "commit"
            if self.committing:
                return
            got = None if outcome == "ok" else outcome.removeprefix("raised ")
            want = plan.outcomes[index]
            if got != want and self.mismatch is None:
                step = plan.steps[index]
                self.mismatch = (
                    f"step {index + 1} ({step.get('op') or step['action']}"
                    f"({json.dumps(step.get('args', {}))[:200]})):"
                    f" the model {'returned' if want is None else f'raised {want}'},"
                    f" the system {'returned' if got is None else f'raised {got}'}"
                )
        elif kind == "ack":
            self.acknowledged = int(rest)
            self.steps_since_ack = 0
            self.committing = False
        elif kind == "done":
            self.done = True

    def due(self, plan: KillPlan) -> bool:
        if not self.ready:
            return False
        if self.done or self.mismatch is not None or self.acknowledged > plan.kill_after_acks:
            return True
        return (
            self.acknowledged == plan.kill_after_acks and self.steps_since_ack >= plan.extra_steps
        )


class ChildServer:
    """The durability child: imports the target once, then forks a fresh worker per kill.

    Use as a context manager, or call close(): nothing it started outlives it.
    """

    def __init__(self, target_spec: str) -> None:
        # Kept open for the child's whole life and closed by close(): no `with` block fits.
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", CHILD_MODULE, target_spec],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                env=_child_env(),
                close_fds=True,
            )
        except OSError as error:
            self.stderr.close()
            raise DurabilityError(
                f"cannot start the durability child ({sys.executable} -m {CHILD_MODULE}): {error}"
            ) from None
        assert self.process.stdout is not None
        self.lines = _Lines(self.process.stdout)

    def __enter__(self) -> ChildServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, request: Mapping[str, Any]) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(request).encode() + b"\n")
            stdin.flush()
        except BrokenPipeError:
            pass  # it died; the caller sees its output end, and its stderr says why

    def stderr_tail(self, scrub: Callable[[str], str]) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace").strip()
        tail = text[-STDERR_TAIL_CHARS:]
        return scrub(tail) if tail else "(nothing on stderr)"

    def close(self) -> None:
        """End the server (its workers die with it) and reap it; safe to call again."""
        process = self.process
        if process.stdin is not None and not process.stdin.closed:
            with contextlib.suppress(OSError):
                process.stdin.close()  # end of input: an idle server leaves by itself
        try:
            process.wait(0.5)
        except subprocess.TimeoutExpired:
            process.kill()
        try:
            process.wait(REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # SIGKILL cannot be ignored; a process still there is stuck in the kernel.
            raise DurabilityError(
                f"durability child {process.pid} did not end {REAP_TIMEOUT_S:.0f} s after"
                " SIGKILL; it may be stuck in uninterruptible I/O. Check the machine's storage."
            ) from None
        finally:
            for stream in (process.stdout, self.stderr):
                if stream is not None:
                    stream.close()


@dataclass(frozen=True)
class ChildReport:
    acknowledged: int  # commits the worker acknowledged before it died
    in_commit: bool  # it died inside a commit (started, not acknowledged)
    mismatch: str | None  # a step whose outcome differed from the model's
    killed_at: KillPoint  # where the kill landed (see `landed_point`)


def landed_point(progress: tuple[int, int], sent_after_ns: int) -> KillPoint:
    """Where a kill landed, as a kill point that replays it: `progress`, the acknowledged
    commits and steps of the next transaction the worker reported before it died, and the time
    from its last report to the kill (none when the report was written after the kill was sent,
    before the signal reached the worker)."""
    delay_us = min(max(round(sent_after_ns / 1e3), 0), reproducers.KILL_DELAY_LIMIT_US)
    return KillPoint(after_acks=progress[0], extra_steps=progress[1], delay_us=delay_us)


def _kill(pid: int) -> None:
    # The worker waits to be killed whatever happens, so the pid is still its own here.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def run_child(
    plan: KillPlan,
    *,
    server: ChildServer,
    url: str,
    target_spec: str,
    options: Mapping[str, str],
    isolation_level: str | None,
    timeout_s: float = CHILD_TIMEOUT_S,
) -> ChildReport:
    """Run the plan's steps in a fresh worker of `server` and SIGKILL it at the plan's kill
    point.

    Returns what the worker reported once it is dead and reaped, and where the kill landed.
    Raises DurabilityError when it fails or hangs before its kill point; the server is then in
    an unknown state and must be closed.
    """
    scrub = _Scrubber(url)
    watch = _Watch()
    pid: int | None = None

    def failure(why: str) -> DurabilityError:
        where = (
            f"{'running' if watch.ready else 'connecting'}, after {_commits(watch.acknowledged)}"
        )
        if pid is not None:
            _kill(pid)
        return DurabilityError(
            f"the durability child {why} ({where}). Its stderr: " + server.stderr_tail(scrub)
        )

    # The URL (with its password) goes on stdin, never on the command line others can read.
    server.send(
        {
            "url": url,
            "target": target_spec,
            "options": dict(options),
            "isolation_level": isolation_level,
            "steps": plan.steps,
        }
    )
    while pid is None or not watch.due(plan):
        try:
            line = server.lines.next(timeout_s)
        except TimeoutError:
            raise failure(
                f"sent nothing for {timeout_s:g} s and was killed; is the database locked by"
                " another client?"
            ) from None
        if line is None:
            raise failure(f"ended unexpectedly (status {server.process.poll()})")
        kind, _, rest = line.partition(" ")
        if kind == "pid":
            pid = int(rest)
        elif kind == "error":
            raise failure(f"failed before its kill point: {scrub(str(json.loads(rest)))}")
        elif kind == "reaped":
            raise failure(f"worker ended by itself before its kill point ({rest})")
        else:
            watch.take(line, plan)
    # The delay counts from when the worker wrote the report the kill is due at, not from when
    # the parent read it: a replay's kill then lands as far into the step, however late either
    # parent reads.
    left_ns = watch.progressed_ns + round(plan.kill_delay_s * 1e9) - clock_ns()
    if left_ns > 0:
        time.sleep(left_ns / 1e9)
    sent_ns = clock_ns()
    _kill(pid)
    # Acknowledgements written before the worker died count, even if read only now.
    while True:
        try:
            line = server.lines.next(REAP_TIMEOUT_S)
        except TimeoutError:
            raise failure(f"did not report its worker {pid} dead after SIGKILL") from None
        if line is None:
            raise failure(f"ended unexpectedly (status {server.process.poll()})")
        kind, _, rest = line.partition(" ")
        if kind == "reaped":
            if rest != f"{pid} killed {int(signal.SIGKILL)}":
                raise failure(f"worker was not ended by the SIGKILL: reaped {rest}")
            return ChildReport(
                watch.acknowledged,
                watch.committing,
                watch.mismatch,
                # Reports read after the kill count too: the worker got that far before it died.
                landed_point(watch.progress, sent_ns - watch.progressed_ns),
            )
        if kind != "error":  # a failure after the kill point changes nothing of the check
            watch.take(line, plan)


def replay_kill(
    reproducer: reproducers.Reproducer,
    target: Target,
    options: Mapping[str, str],
    url: str,
    allow_existing_tables: bool = False,
) -> tuple[reproducers.Failure | None, str]:
    """One kill of a durability reproducer's steps at its kill point, on a database of its
    own: the finding (None: every acknowledged commit survived), and the database, named."""
    assert reproducer.kill is not None  # a durability reproducer is loaded with one
    level = reproducer.isolation_level
    with _durable_database(
        url, allow_existing_tables, lambda: objects_of(target, options, level, url)
    ) as db:
        system = connect_system(target, db.url, options, level)
        try:
            steps = [s.as_dict() for s in reproducer.steps]
            plan = plan_of(target, system.new_model, steps, reproducer.kill, from_file=True)
            with ChildServer(reproducer.target) as server:
                kill = kill_once(
                    plan,
                    1,
                    target=target,
                    system=system,
                    url=db.url,
                    target_spec=reproducer.target,
                    options=options,
                    server=server,
                    isolation_level=level,
                )
        finally:
            system.dispose()
    if kill.finding is None:
        return None, db.display
    return reproducers.Failure(kind=kill.finding.kind, message=kill.finding.message), db.display


def _transactions(steps: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = []
    for step in steps:
        if step["action"] == "begin":
            out.append([])
        out[-1].append(step)
    return out


def smaller_workloads(plan: KillPlan) -> Iterator[tuple[list[dict[str, Any]], int, int]]:
    """Workloads of fewer steps with the kill at the same place, each with its kill point's
    acknowledged commits and steps into the killed transaction: without the transactions after
    the one the kill lands in, then without each transaction before it, then without each
    operation of those; then the killed transaction without the steps after the kill point
    (with a delay they may have started before the kill: a trial decides) and without each of
    its operations, the kill point moved back by one step when that operation started before
    it (a kill inside the commit stays inside it)."""
    # Never an empty one: a reproducer without steps cannot be loaded to replay it.
    return (tried for tried in _smaller_workloads(plan) if tried[0])


def _smaller_workloads(plan: KillPlan) -> Iterator[tuple[list[dict[str, Any]], int, int]]:
    txs = _transactions(plan.steps)
    acks, extra = plan.kill_after_acks, plan.extra_steps

    def flat(kept: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        return [step for tx in kept for step in tx]

    if len(txs) > acks + 1:
        yield flat(txs[: acks + 1]), acks, extra
    for j in range(acks):
        yield flat(txs[:j] + txs[j + 1 :]), acks - 1, extra
    for j in range(acks):
        for k, step in enumerate(txs[j]):
            if step["action"] == "apply":
                yield flat([*txs[:j], txs[j][:k] + txs[j][k + 1 :], *txs[j + 1 :]]), acks, extra
    if acks >= len(txs):
        return  # killed after the last commit: no transaction of its own
    killed, before, after = txs[acks], txs[:acks], txs[acks + 1 :]
    if extra == 0:
        # Killed before its transaction began (with a delay it may have begun: a trial decides).
        yield flat([*before, *after]), acks, 0
    elif extra < len(killed) - 1:
        # Its begin and the operations started before the kill, then its commit.
        yield flat([*before, killed[:extra] + killed[-1:], *after]), acks, extra
    for k, step in enumerate(killed):
        if step["action"] == "apply":
            moved = extra - 1 if k < extra else extra
            yield flat([*before, killed[:k] + killed[k + 1 :], *after]), acks, moved


def shrink_kill(
    plan: KillPlan,
    kill: KillResult,
    kill_at: Callable[[KillPlan], KillResult],
    target: Target,
    new_model: Callable[[], Model],
    until: float,
) -> tuple[KillPlan, KillResult]:
    """The smallest workload found before `until` (a time.perf_counter() reading) whose kill,
    by `kill_at`, finds the same kind of problem as `kill` did, with that kill. Workloads are
    made smaller around where each kill landed, not where it was planned (the steps after it
    never ran), and the plan returned is killed where its kill landed: a reproducer of it kills
    where the finding was made. A kill inside a commit races with it: a smaller workload that
    happened to pass is only not taken. A DurabilityError of `kill_at` ends the search."""
    assert kill.finding is not None
    kind = kill.finding.kind
    plan = plan.at(kill.killed_at)
    shrinking = True
    while shrinking and time.perf_counter() < until:
        shrinking = False
        for steps, acks, extra in smaller_workloads(plan):
            if time.perf_counter() >= until:
                break
            point = plan.point.model_copy(update={"after_acks": acks, "extra_steps": extra})
            candidate = plan_of(target, new_model, steps, point)
            try:
                trial = kill_at(candidate)
            except DurabilityError:
                return plan, kill
            if trial.finding is not None and trial.finding.kind == kind:
                plan, kill, shrinking = candidate.at(trial.killed_at), trial, True
                break
    return plan, kill


def _timing_dependent(kill: KillResult, again: int) -> KillResult:
    """`kill`, its finding saying how seldom its reproducer found it again."""
    assert kill.finding is not None
    said = (
        f"{kill.finding.message} (timing-dependent: replayed {CONFIRMATIONS} times where the"
        f" kill landed, it was found again {again} time{'s' if again != 1 else ''}; the kill"
        " races with the commit, so `uowstress replay ID --repeat 20` shows how often it"
        " fails)"
    )
    return replace(kill, finding=replace(kill.finding, message=said))


def _reproducer_of(
    plan: KillPlan,
    kill: KillResult,
    result: DurabilityResult,
    target: Target,
    shrunk_from: int | None = None,
) -> reproducers.Reproducer:
    """The reproducer of `kill`, a kill of `plan`'s steps: killed where the kill landed."""
    assert kill.finding is not None
    return reproducers.make_reproducer(
        machine="durability",
        target=result.target,
        target_options=result.options,
        backend=result.backend,
        isolation_level=result.isolation_level,
        guarantee=target.guarantee,
        seed=str(result.seed),
        steps=[reproducers.Step(**step) for step in plan.steps],
        shrunk_from=len(plan.steps) if shrunk_from is None else shrunk_from,
        failure=reproducers.Failure(kind=kill.finding.kind, message=kill.finding.message),
        kill=kill.killed_at,
        versions=reproducers.versions(result.server_version),
    )


# -- one kill and a run --------------------------------------------------------------------------


def kill_once(
    plan: KillPlan,
    index: int,
    *,
    target: Target,
    system: System,
    url: str,
    target_spec: str,
    options: Mapping[str, str],
    server: ChildServer,
    isolation_level: str | None = None,
    child_timeout_s: float = CHILD_TIMEOUT_S,
) -> KillResult:
    """One kill on the prepared database that `system` (the parent's) is set up on: run the
    plan in a worker of `server`, kill it, check what is committed, then empty the database."""
    started = time.perf_counter()
    # No connection of ours stays open across the kill: for SQLite the reader after it is then
    # the first to open the file, and recovers the write-ahead log the child left behind.
    system.engine.dispose()
    try:
        report = run_child(
            plan,
            server=server,
            url=url,
            target_spec=target_spec,
            options=options,
            isolation_level=isolation_level,
            timeout_s=child_timeout_s,
        )
    except DurabilityError:
        # Emptied all the same: what the worker committed must not meet the next kill.
        with contextlib.suppress(Exception):
            system.reset()
        raise
    landed: int | None = None
    finding: DurabilityFinding | None = None
    reader: System | None = None
    # The target's invariants raising or answering wrongly: an error of the run, raised once
    # the database is emptied for the next kill, not a finding of the system.
    broken: StepError | None = None
    try:
        reader = target.connect(url, options, isolation_level=isolation_level)
        actual = reader.committed_state()
    except Exception as error:
        # A database that cannot be opened or read after a crash has not kept its commits.
        finding = DurabilityFinding(
            "error",
            f"reading the committed state after the kill failed:"
            f" {type(error).__name__}: {_Scrubber(url)(str(error))}",
        )
    else:
        try:
            violations = invariants_of(reader, actual)
        except StepError as error:
            broken = error
        else:
            landed, finding = judge(plan.states, report.acknowledged, actual, violations)
    finally:
        if reader is not None:
            # Only the engine: System.dispose would drop the schema the run still uses.
            reader.engine.dispose()
    if report.mismatch is not None and finding is None and broken is None:
        finding = DurabilityFinding("outcome", f"in the child, {report.mismatch}")
    system.reset()
    if broken is not None:
        raise broken
    return KillResult(
        index=index,
        commits=plan.commits,
        kill_after_acks=plan.kill_after_acks,
        extra_steps=plan.extra_steps,
        kill_delay_s=plan.kill_delay_s,
        acknowledged=report.acknowledged,
        in_commit=report.in_commit,
        landed=landed,
        killed_at=report.killed_at,
        seconds=time.perf_counter() - started,
        finding=finding,
    )


def _is_memory_sqlite(url: str) -> bool:
    parsed = make_url(url)
    return parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"


@contextmanager
def _durable_database(
    url: str, allow_existing_tables: bool, ours: Callable[[], Collection[str]]
) -> Iterator[PreparedDatabase]:
    with prepared_database(url, allow_existing_tables=allow_existing_tables, ours=ours) as db:
        if db.backend == "sqlite" and _is_memory_sqlite(db.url):
            # Two processes and a crash need a file both can open.
            with scratch_database(db.url) as scratch:
                yield replace(
                    db, url=scratch.render_as_string(hide_password=False), display=redacted(scratch)
                )
            return
        yield db


def run_durability(
    url: str,
    *,
    target_spec: str = DEFAULT_TARGET,
    options: Mapping[str, str] | None = None,
    kills: int,
    seed: int | None = None,
    isolation_level: str | None = None,
    timeout_s: float | None = None,
    child_timeout_s: float = CHILD_TIMEOUT_S,
    allow_existing_tables: bool = False,
    reproducers_dir: Path | None = REPRODUCERS_DIR,
    replay_saved: bool = False,
) -> DurabilityResult:
    """SIGKILL a workload `kills` times and check after each that no acknowledged commit is
    lost and no transaction is half present.

    `seed` fixes the drawn workloads and kill points (one is chosen, and reported, when None).
    Each kill with a finding is written as a reproducer to `reproducers_dir` (None: not
    written), for `uowstress replay`. With `replay_saved` (the replay profile) nothing is
    drawn: each durability reproducer in `reproducers_dir` written for this target, its
    options, this backend and level is killed again at its kill point (`kills` is not used).
    The run stops with `error` set when it exceeds `timeout_s` (default: 30 s per kill plus a
    minute). Raises UowstressError for what stops a run before it starts.
    """
    if kills < 1 and not replay_saved:
        raise UowstressError(f"kills is {kills}; the durability check needs at least 1")
    target = load_target(target_spec)
    if not any(op.scope == "step" for op in target.operations):
        raise UowstressError(
            f"target {target_spec} has no operation of scope 'step'; the durability check"
            " needs operations it can run inside a unit of work it commits itself"
        )
    chosen = dict(options or {})
    run_seed = seed if seed is not None else random_seed()
    budget_s = timeout_s if timeout_s is not None else 60.0 + 30.0 * kills
    with _durable_database(
        url, allow_existing_tables, lambda: objects_of(target, chosen, isolation_level, url)
    ) as db:
        result = DurabilityResult(
            target=target_spec,
            backend=db.backend,
            database=db.display,
            server_version=db.server_version,
            options=chosen,
            isolation_level=isolation_level,
            seed=run_seed,
            kills_requested=kills,
            replayed_saved=replay_saved,
        )
        saved: list[tuple[Path, reproducers.Reproducer]] = []
        if replay_saved:
            configuration = {
                "machine": "durability",
                "target": target_spec,
                "target_options": chosen,
                "backend": db.backend,
                "isolation_level": isolation_level,
            }
            saved, broken = reproducers.written_for(
                reproducers_dir or REPRODUCERS_DIR, configuration
            )
            if broken:
                result.error = "; ".join(broken)
            kills = result.kills_requested = len(saved)
            budget_s = timeout_s if timeout_s is not None else 60.0 + 30.0 * kills
        try:
            system = connect_system(target, db.url, chosen, isolation_level)
        except ValueError as error:
            said = hide_passwords(_Scrubber(url)(str(error)))
            raise UowstressError(f"target {target_spec} refused its options: {said}") from None
        started = time.perf_counter()
        server: list[ChildServer] = []  # started at the first kill, inside the budget

        def kill_at(plan: KillPlan, index: int) -> KillResult:
            if not server:
                server.append(ChildServer(target_spec))
            return kill_once(
                plan,
                index,
                target=target,
                system=system,
                server=server[0],
                url=db.url,
                target_spec=target_spec,
                options=chosen,
                isolation_level=isolation_level,
                child_timeout_s=child_timeout_s,
            )

        def run_plan(plan: KillPlan, written: tuple[reproducers.Reproducer, Path] | None) -> None:
            """One kill of the run, its finding written as a reproducer (or, replaying one,
            attributed to the file it came from)."""
            kill = kill_at(plan, len(result.kills) + 1)
            result.kills.append(kill)
            if kill.finding is None:
                return
            if written is not None:
                result.reproducers[kill.index] = written
            elif reproducers_dir is not None:
                try:
                    small, found = shrink(plan, kill)
                except Exception:
                    # Shrinking is a nicety: the finding stands, with its steps as found.
                    small, found = plan, kill
                again = confirm(small, found)
                if again is not None and again < CONFIRMATIONS:
                    found = _timing_dependent(found, again)
                    result.kills[-1] = _timing_dependent(kill, again)
                made = _reproducer_of(small, found, result, target, shrunk_from=len(plan.steps))
                try:
                    result.reproducers[kill.index] = (
                        made,
                        reproducers.write(made, reproducers_dir),
                    )
                except ReproducerError as unwritten:
                    # The kill's finding stands, its steps in the report; the missing file is an
                    # error of the run.
                    result.reproducers[kill.index] = (made, None)
                    result.error = "; ".join(filter(None, [result.error, str(unwritten)]))

        def shrink(plan: KillPlan, kill: KillResult) -> tuple[KillPlan, KillResult]:
            """`shrink_kill` within SHRINK_BUDGET_S and the run's budget."""

            def trial(candidate: KillPlan) -> KillResult:
                try:
                    return kill_at(candidate, kill.index)
                except DurabilityError:
                    # The child server is in an unknown state: the next kill starts anew.
                    server.pop().close()
                    raise

            until = min(time.perf_counter() + SHRINK_BUDGET_S, started + budget_s)
            return shrink_kill(plan, kill, trial, target, system.new_model, until)

        def confirm(plan: KillPlan, kill: KillResult) -> int | None:
            """How many of CONFIRMATIONS kills of `plan` where `kill` landed, as its
            reproducer will replay it, find the same kind of problem; None when they could
            not all run (the run's budget, the child failing)."""
            assert kill.finding is not None
            found = 0
            for _ in range(CONFIRMATIONS):
                if time.perf_counter() - started > budget_s:
                    return None
                try:
                    trial = kill_at(plan.at(kill.killed_at), kill.index)
                except DurabilityError:
                    server.pop().close()  # the next kill starts a child anew
                    return None
                except Exception:
                    # A nicety, like shrinking: the finding stands, said as found.
                    return None
                found += trial.finding is not None and trial.finding.kind == kill.finding.kind
            return found

        drawn: list[KillPlan] = []

        # Generation only: a kill is not repeatable (its timing is not drawn), so there is
        # nothing for Hypothesis to replay or shrink; findings are collected, not raised.
        @settings(
            max_examples=max(kills, 1),  # 0 when replaying: not run then
            phases=[Phase.generate],
            database=None,
            derandomize=False,  # the seed decides, whatever profile is loaded
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis_seed(run_seed)
        @given(plan=kill_plans(target, system.new_model))
        def one_kill(plan: KillPlan) -> None:
            raise_if_lost()
            if not drawn:
                # Hypothesis tries the simplest plan first, whatever the seed: without this,
                # `--kills 1` would kill the same workload at the same point in every run.
                drawn.append(plan)
                reject()
            if result.error is not None or len(result.kills) >= kills:
                return
            if time.perf_counter() - started > budget_s:
                result.error = (
                    f"stopped after {len(result.kills)} of {kills} kills: the run exceeded its"
                    f" budget of {budget_s:.0f} s; ask for fewer kills or a larger timeout"
                )
                return
            try:
                run_plan(plan, None)
            except DurabilityError as error:
                result.error = str(error)
            except Exception as error:
                result.error = (
                    f"kill {len(result.kills) + 1} could not be checked:"
                    f" {type(error).__name__}: {_Scrubber(db.url)(str(error))}"
                )

        try:
            if not replay_saved:
                one_kill()
            for path, written in saved:
                if time.perf_counter() - started > budget_s:
                    result.error = (
                        f"stopped after {len(result.kills)} of {kills} saved kills: the run"
                        f" exceeded its budget of {budget_s:.0f} s"
                    )
                    break
                assert written.kill is not None  # a durability reproducer is loaded with one
                steps = [step.as_dict() for step in written.steps]
                try:
                    plan = plan_of(target, system.new_model, steps, written.kill, from_file=True)
                    run_plan(plan, (written, path))
                except Exception as error:
                    said = _Scrubber(db.url)(str(error))
                    result.error = f"replaying {path}: {type(error).__name__}: {said}"
                    break
        finally:
            result.seconds = time.perf_counter() - started
            try:
                for child in server:
                    child.close()
            finally:
                try:
                    system.dispose()
                except Exception as error:
                    # Its server stopped answering, say: the kills checked and what they found
                    # stand, and the run is an error, said beside its own.
                    line = _Scrubber(db.url)(_first_line(error))
                    said = "the system could not be disposed of: " + (
                        f"{type(error).__name__}: {line}" if line else type(error).__name__
                    )
                    result.error = "; ".join(filter(None, [result.error, said]))
    return result


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""
