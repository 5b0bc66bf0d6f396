"""Stable reproducers: each shrunk failure as a readable JSON list of steps.

Hypothesis keys its saved examples on a hash of the test's source, so an edit orphans them. A
reproducer names the target, backend and options and lists the steps per session in order; it
survives any edit of uowstress or the system, and `uowstress replay` runs it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import reprlib
import shlex
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from uowstress.errors import ReproducerError
from uowstress.faults import spec_problem
from uowstress.json_input import NotJson, parse_json
from uowstress.profiles import REPRODUCERS_DIR

FORMAT = "uowstress.reproducer"
VERSION: Final = 1  # of the file's layout, which Reproducer.version holds
MAX_REPRODUCER_BYTES = 16 * 1024 * 1024
Backend = Literal["sqlite", "postgresql", "mysql"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Strict):
    session: int = Field(0, ge=0, le=15)
    action: str
    op: str | None = None
    query: str | None = None
    args: dict[str, Any] | None = None
    fault: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


# The longest delay a kill point may have.
KILL_DELAY_LIMIT_US = 1_000_000


class KillPoint(_Strict):
    """Where the durability check killed its worker: after `after_acks` acknowledged commits,
    `extra_steps` steps into the next transaction (its commit last), and `delay_us` later."""

    after_acks: int = Field(ge=0)
    extra_steps: int = Field(0, ge=0)
    delay_us: int = Field(0, ge=0, le=KILL_DELAY_LIMIT_US)


def steps_after_acks(actions: Sequence[str], acks: int) -> int:
    """How many steps the transaction after the first `acks` commits of well-formed
    transactions ('begin', 'apply's, 'commit') has: how far into it a kill point may go (0
    after the last)."""
    begins = [i for i, action in enumerate(actions) if action == "begin"]
    if acks >= len(begins):
        return 0
    end = begins[acks + 1] if acks + 1 < len(begins) else len(actions)
    return end - begins[acks]


class Failure(_Strict):
    kind: str
    message: str
    step: int | None = None  # 1-based index of the step that failed


class Reproducer(_Strict):
    format: Literal["uowstress.reproducer"] = "uowstress.reproducer"
    version: Literal[1] = 1
    id: str = ""
    machine: Literal["acid", "sessions", "durability"] = "acid"
    sessions: int = Field(1, ge=1, le=16)  # logical sessions (1 for the single-session machine)
    target: str
    target_options: dict[str, str] = Field(default_factory=dict)
    backend: Backend
    isolation_level: str | None = None
    guarantee: str
    profile: str | None = None
    seed: str | None = None
    steps: list[Step]
    shrunk_from: int | None = None  # steps of the run as found, before shrinking
    failure: Failure
    kill: KillPoint | None = None  # the durability check's kill (machine "durability" only)
    versions: dict[str, str] = Field(default_factory=dict)
    created_at: str = ""

    def content_id(self) -> str:
        """Same target, options, backend and steps: same id, so one failure is one file."""
        key = json.dumps(
            [
                self.machine,
                self.target,
                self.target_options,
                self.backend,
                self.isolation_level,
                [s.as_dict() for s in self.steps],
                *([] if self.kill is None else [self.kill.model_dump()]),
            ],
            sort_keys=True,
        )
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def steps_by_session(self) -> dict[int, list[tuple[int, Step]]]:
        out: dict[int, list[tuple[int, Step]]] = {}
        for index, step in enumerate(self.steps, 1):
            out.setdefault(step.session, []).append((index, step))
        return out

    def step_problems(self) -> list[str]:
        """What the schema cannot see: a step on a session the reproducer does not declare, or
        a fault that would crash the replay or inject some other fault than the run did; no
        step at all (it would replay as FIXED, having checked nothing); a failure recorded at a
        step it does not have."""
        problems = [] if self.steps else ["it has no steps; a reproducer lists the steps to run"]
        for index, step in enumerate(self.steps, 1):
            if step.session >= self.sessions:
                problems.append(
                    f"step {index}: session {step.session} does not exist; the reproducer"
                    f" declares {self.sessions} session(s), numbered from 0 to {self.sessions - 1}"
                )
            if step.action == "fault" and step.fault is None:
                problems.append(
                    f"step {index}: a 'fault' step needs a 'fault' object,"
                    ' e.g. {"point": "commit"}'
                )
            problem = None if step.fault is None else spec_problem(step.fault)
            if problem is not None:
                problems.append(f"step {index}: {problem}")
        failed_at = self.failure.step
        if failed_at is not None and not 1 <= failed_at <= len(self.steps):
            problems.append(
                f"failure.step is {failed_at}, but the reproducer has {len(self.steps)} step(s)"
                " (the failing step is counted from 1)"
            )
        return problems + self._kill_problems()

    def _kill_problems(self) -> list[str]:
        """A durability reproducer: its kill point, and transactions its worker can run."""
        if self.machine != "durability":
            if self.kill is None:
                return []
            return [f"'kill' belongs to a durability reproducer, not to machine {self.machine!r}"]
        if self.kill is None:
            return [
                "a durability reproducer needs 'kill', where the worker is killed, e.g."
                ' {"after_acks": 1, "extra_steps": 0, "delay_us": 0}'
            ]
        problems: list[str] = []
        open_ = False
        for index, step in enumerate(self.steps, 1):
            expected = ("apply", "commit") if open_ else ("begin",)
            if step.action not in expected:
                problems.append(
                    f"step {index}: {step.action!r} where the worker's transactions need"
                    f" {' or '.join(repr(a) for a in expected)} (each is a 'begin', its"
                    " 'apply' steps and a 'commit')"
                )
                break
            open_ = step.action != "commit" and (open_ or step.action == "begin")
        commits = sum(step.action == "commit" for step in self.steps)
        if open_ and not problems:
            problems.append("the last transaction has no 'commit'")
        if self.kill.after_acks > commits:
            problems.append(
                f"kill.after_acks is {self.kill.after_acks}, but the steps commit only {commits}"
                " time(s)"
            )
        elif not problems:
            # The worker must reach the kill point: no more steps than the next transaction has.
            after = self.kill.after_acks
            following = steps_after_acks([step.action for step in self.steps], after)
            if self.kill.extra_steps > following:
                problems.append(
                    f"kill.extra_steps is {self.kill.extra_steps}, but the transaction after"
                    f" {after} acknowledged commit(s) has {following} step(s)"
                )
        return problems

    def replay_command(self, path: Path | str | None = None) -> str:
        return f"{uv_run()}uowstress replay {path or self.id}"


def uv_run() -> str:
    """How a command reaches this uowstress again, said the way the run was started: `uv run`
    exists only inside a uv project (a team running an installed uowstress from its own folder
    has none), and from a folder outside the project whose environment runs uowstress (a run
    started as `uv run --project CHECKOUT uowstress ...`) it needs that project named."""
    if not os.environ.get("UV_RUN_RECURSION_DEPTH"):
        return ""
    environment = Path(sys.prefix)
    project = environment.parent
    if environment.name != ".venv" or not (project / "pyproject.toml").is_file():
        return "uv run "
    try:
        Path.cwd().resolve().relative_to(project.resolve())
    except ValueError:
        return f"uv run --project {shlex.quote(str(project))} "
    return "uv run "


_KEEP = "# uowstress: its reproducers are meant to be committed, a regression corpus"


def _let_git_keep(directory: Path) -> None:
    """Hypothesis makes .hypothesis/.gitignore ignore everything in that folder, where the
    reproducers are written by default: git would refuse to add them, and a CI job replaying
    the committed ones would replay none and pass. That file is told to let them through."""
    ignore = directory.parent / ".gitignore"
    try:
        lines = ignore.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return  # none (or not one to touch): nothing hides the reproducers there
    if "*" not in lines or _KEEP in lines:
        return
    name = directory.name
    ignore.write_text("\n".join([*lines, "", _KEEP, f"!{name}/", f"!{name}/**", ""]))


def versions(server_version: str | None = None) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("uowstress", "hypothesis", "sqlalchemy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    if server_version:
        out["database"] = server_version
    return out


def make_reproducer(**fields: Any) -> Reproducer:
    draft = Reproducer(**fields)
    return draft.model_copy(
        update={
            "id": draft.content_id(),
            "created_at": draft.created_at or datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )


def write(reproducer: Reproducer, directory: Path = REPRODUCERS_DIR) -> Path:
    """Write `reproducer` as `directory/<id>.json`; ReproducerError when it cannot be (a folder
    in its place, a full disk), leaving nothing behind.

    A file already there for the same id (the same target, options, backend, level and steps:
    the same failure, found again, as the replay profile does on every run) is kept as it is:
    it is the committed record of when and with which seed and profile the failure was found,
    and a run replaying it must not rewrite it. A file of that name that does not load (damaged,
    of another version, another id) is replaced."""
    path = directory / f"{reproducer.id}.json"
    if _holds(path, reproducer):
        return path
    tmp = path.with_suffix(".json.tmp")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _let_git_keep(directory)
        tmp.write_text(json.dumps(reproducer.model_dump(mode="json"), indent=2) + "\n")
        tmp.replace(path)  # never a half-written file, even if interrupted
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ReproducerError(
            f"cannot write the reproducer {path}: {error.strerror or error}; make room for it"
            " there, or give --reproducers-dir a folder you can write to"
        ) from None
    return path


def _holds(path: Path, reproducer: Reproducer) -> bool:
    """Whether `path` is already `reproducer`: the same id (steps, kill, configuration) and
    the same kind of failure. The same steps failing another way are a new record."""
    try:
        if not path.is_file():
            return False
        kept = load(path)
    except (ReproducerError, OSError):
        return False
    return kept.content_id() == reproducer.id and kept.failure.kind == reproducer.failure.kind


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
        for e in error.errors()[:8]
    )


def load(path: Path) -> Reproducer:
    """Read and validate one file; a malformed or foreign file raises ReproducerError."""
    if path.is_dir():
        raise ReproducerError(f"{path}: is a directory, not a reproducer file")
    if not path.is_file():
        raise ReproducerError(f"{path}: no such reproducer file")
    size = path.stat().st_size
    if size > MAX_REPRODUCER_BYTES:
        raise ReproducerError(
            f"{path}: {size} bytes is larger than a reproducer can be"
            f" ({MAX_REPRODUCER_BYTES}); is it the right file?"
        )
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except (NotJson, UnicodeDecodeError) as error:
        raise ReproducerError(
            f"{path}: not valid JSON ({error}); the file is damaged or not a reproducer"
            " (it was left as it is): run again to write the failure's reproducer anew"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ReproducerError(
            f"{path}: not a uowstress reproducer (its 'format' must be {FORMAT!r});"
            " Hypothesis's own example database lives in .hypothesis/examples and is not"
            " replayed by this command"
        )
    file_version = data.get("version", VERSION)
    # A whole number other than ours: the file is sound, only of another layout (anything
    # else in the field is malformed, said below).
    if (
        isinstance(file_version, int)
        and not isinstance(file_version, bool)
        and file_version != VERSION
    ):
        raise ReproducerError(
            f"{path}: reproducer version {reprlib.repr(file_version)}, this uowstress reads version"
            f" {VERSION}: it was written by another version of uowstress; replay it with the"
            " uowstress that wrote it, or run again (uowstress run) to write it anew"
        )
    try:
        reproducer = Reproducer.model_validate(data)
        problems = reproducer.step_problems()
    except ValidationError as error:
        raise ReproducerError(f"{path}: malformed reproducer: {_describe(error)}") from None
    except RecursionError:
        # What the parser read may still be nested too deeply for the checks that walk it.
        raise ReproducerError(
            f"{path}: malformed reproducer: nested too deeply to check; it was edited or"
            " damaged: run again to write the failure's reproducer anew"
        ) from None
    if problems:
        raise ReproducerError(f"{path}: malformed reproducer: {'; '.join(problems[:8])}")
    return reproducer


def nearest(directory: Path) -> Path:
    """A relative `directory` as found from the working directory, or else from the nearest
    folder above it that has one: a replay command copied from a report and run in a folder
    below the one the run started in (the reports' folder, say) finds the reproducers as git
    finds .git."""
    if not directory.is_absolute() and not directory.is_dir():
        for parent in Path.cwd().parents:
            if (parent / directory).is_dir():
                return parent / directory
    return directory


def resolve(spec: str, directory: Path = REPRODUCERS_DIR) -> Path:
    """A path, or an id (or unique id prefix) of a file in `directory`."""
    path = Path(spec)
    # A path by its form (a folder in it, or a .json name), even when there is no such file:
    # loading it then says so.
    if path.suffix == ".json" or path.exists() or path.is_absolute() or len(path.parts) > 1:
        return path
    directory = nearest(directory)
    matches = sorted(directory.glob(f"{spec}*.json")) if directory.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ReproducerError(f"no reproducer {spec!r} in {directory}")
    raise ReproducerError(
        f"{spec!r} matches {len(matches)} reproducers in {directory}; give more of the id"
    )


def all_paths(directory: Path = REPRODUCERS_DIR) -> list[Path]:
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def written_for(
    directory: Path, configuration: Mapping[str, Any]
) -> tuple[list[tuple[Path, Reproducer]], list[str]]:
    """The reproducers in `directory` written for this very configuration (the reproducer's
    fields of those names), for the replay profile; and what is wrong with each file that
    seems to be one of them (its machine and target match) but cannot be loaded: a run that
    skipped it would pass having replayed nothing."""
    found: list[tuple[Path, Reproducer]] = []
    broken: list[str] = []
    for path in all_paths(directory):
        try:
            written = load(path)
        except (ReproducerError, OSError) as error:
            if _seems_for(path, configuration):
                broken.append(str(error))
            continue
        if all(getattr(written, name) == value for name, value in configuration.items()):
            found.append((path, written))
    return found, broken


def _seems_for(path: Path, configuration: Mapping[str, Any]) -> bool:
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # NotJson, or not UTF-8
        return True  # unreadable: it may be, and is named
    if not isinstance(data, dict):
        return False
    return all(
        data.get(name, default) == configuration[name]
        for name, default in (("machine", "acid"), ("target", None))
        if name in configuration
    )
