"""Command-line options, defined once and shared by the CLI and the pytest plugin.

Imported by the command line before it parses anything: only light modules here (no
SQLAlchemy, Hypothesis, pytest), so that `uowstress --help` answers at once.
"""

from __future__ import annotations

import errno
import os
import random
import reprlib
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uowstress.errors import ConfigError
from uowstress.profiles import DEFAULT_PROFILE, PROFILES, REPRODUCERS_DIR
from uowstress.target import DEFAULT_TARGET

# The folder of the performance suites `uowstress run` runs when not given --path.
DEFAULT_PATH = "tests/performance"


def in_ci() -> bool:
    """Whether this runs in CI, where a database server that does not answer fails a test
    instead of skipping it: CI set to anything but empty, 0, false or no (CI=true, CI=1)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@dataclass(frozen=True)
class OptionSpec:
    name: str  # python name; CLI flag --name-with-dashes, pytest flag --uowstress-name...
    help: str
    default: Any = None
    multiple: bool = False
    flag: bool = False
    choices: tuple[str, ...] | None = None

    @property
    def cli_flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def pytest_flag(self) -> str:
        return "--uowstress-" + self.name.replace("_", "-")


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "profile",
        "Hypothesis profile: "
        + ", ".join(f"{p.name} ({p.description})" for p in PROFILES.values()),
        DEFAULT_PROFILE,
        choices=tuple(PROFILES),
    ),
    OptionSpec(
        "db_url",
        "database URL to test against; repeat for several backends"
        " (default: a temporary SQLite file)",
        multiple=True,
    ),
    OptionSpec("target", "the system under test, as package.module:attribute", DEFAULT_TARGET),
    OptionSpec(
        "target_option",
        "KEY=VALUE option of the target (repeatable), e.g. weaken=no_version_check",
        multiple=True,
    ),
    OptionSpec(
        "isolation_level",
        "isolation level of the system's connections (backend default when absent)",
    ),
    OptionSpec(
        "machine",
        "which state machine: acid (one session, faults, model), sessions (concurrent"
        " sessions, invariants), or both",
        "both",
        choices=("acid", "sessions", "both"),
    ),
    OptionSpec(
        "sessions", "logical sessions of the concurrent machine", "2", choices=("2", "3", "4")
    ),
    OptionSpec(
        "kills",
        "SIGKILLs of a child process for the durability check, per database (default: the"
        " profile's: dev 5, ci 20, nightly 100; 0 skips it)",
    ),
    OptionSpec(
        "seed",
        "seed of the run's random choices, a whole number below 2**128: with the same seed (and"
        " the same saved failures) the state machines draw the same steps, the durability"
        " check the same workloads and kill points and the isolation search the same examples"
        " (default: one chosen at random, written in the report)",
    ),
    OptionSpec(
        "reproducers_dir", "where shrunk failures are written as JSON", str(REPRODUCERS_DIR)
    ),
    OptionSpec(
        "allow_existing_tables", "use a SQLite database that already holds tables", False, flag=True
    ),
    OptionSpec(
        "config",
        "performance_config.yaml with the thresholds and workload sizes (default: that file in"
        " the working directory if there is one, else the built-in defaults)",
    ),
)


def parse_target_options(pairs: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"target option {pair!r} is not KEY=VALUE (e.g. weaken=no_version_check)"
            )
        key, value = key.strip(), value.strip()
        if key in out and out[key] != value:
            # Which one was meant is the target's business (a list? the last?): ask.
            raise ConfigError(
                f"target option {key} is given twice ({out[key]!r} and {value!r}); give it"
                f" once, with the value the target expects (for a list, e.g."
                f" {key}={out[key]},{value})"
            )
        out[key] = value
    return out


def option_values(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults filled in, multiple options as lists."""
    values: dict[str, Any] = {}
    for spec in OPTIONS:
        value = raw.get(spec.name)
        if spec.multiple:
            value = list(value or [])
        elif value is None:
            value = spec.default
        values[spec.name] = value
    return values


def check_options(
    values: Mapping[str, Any], flag: Callable[[OptionSpec], str] = lambda spec: spec.cli_flag
) -> None:
    """Refuse, before anything runs, an option value that would only fail (or be ignored) in
    the middle of the run. `flag` names an option as the user typed it (CLI or pytest)."""
    specs = {spec.name: spec for spec in OPTIONS}
    kills = values.get("kills")
    if kills is not None:
        text = str(kills).strip()
        if not (text.isascii() and text.isdigit()):
            raise ConfigError(
                f"{flag(specs['kills'])} {kills!r} is not a whole number of 0 or more; give the"
                " SIGKILLs per database (0 skips the durability check), or leave it out for the"
                " profile's"
            )
    seed = values.get("seed")
    if seed is not None and parse_seed(seed) is None:
        text = str(seed).strip()
        if text.isascii() and text.isdigit():
            raise ConfigError(
                f"{flag(specs['seed'])} {reprlib.repr(text)} is larger than a seed can be (at"
                f" most {MAX_SEED}); give the seed a report names, or leave it out for a random"
                " one"
            )
        raise ConfigError(
            f"{flag(specs['seed'])} {seed!r} is not a whole number of 0 or more; give the seed"
            " a report names (e.g. 1234), or leave it out for a random one"
        )
    directory = values.get("reproducers_dir")
    if directory is not None:
        check_directory(flag(specs["reproducers_dir"]), Path(directory))


# Hypothesis draws its own seeds from 128 bits: any seed it prints is taken.
MAX_SEED = 2**128 - 1


def parse_seed(value: object) -> int | None:
    """The seed a --seed value names: a whole number from 0 to MAX_SEED (None if it is not
    one)."""
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()):
        return None
    # Its length is checked first: Python refuses to convert a string of thousands of digits.
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(MAX_SEED)) or int(digits) > MAX_SEED:
        return None
    return int(digits)


def random_seed() -> int:
    """A seed for a run given none: chosen afresh (not from the random module's state, which a
    test or a target may have seeded) and reported, so that the run can be drawn again."""
    return random.SystemRandom().randrange(2**32)


def check_directory(option: str, path: Path, given: Path | None = None) -> None:
    """Refuse a folder a run would write into only at its end, when it cannot be written: a
    file by that name, or a place where no folder can be made. Nothing is left behind.
    `given`: the path the user gave, when `path` is the folder of that file."""
    shown = path if given is None else given
    try:
        _probe_directory(option, path, shown)
    except OSError as error:  # e.g. a parent folder that cannot be read
        raise ConfigError(
            f"{option} {shown}: cannot write there ({error.strerror or error}); give a"
            f" {'folder' if given is None else 'path'} you can write to"
        ) from None


def _unwritable(where: Path, error: OSError) -> str:
    """Why nothing can be made in the existing folder `where`, in words: the error's own
    (ENOENT from /proc, for one) would name a file that does not exist, not the cause."""
    said = error.strerror or str(error)
    if error.errno == errno.ENOENT:
        return (
            f"{where} takes no new files or folders (a virtual file system such as /proc or"
            f" /sys; making one there fails with: {said})"
        )
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to make files or folders in {where}"
    if error.errno == errno.EROFS:
        return f"{where} is on a read-only file system"
    return f"cannot make files or folders in {where} ({said})"


def check_output_file(option: str, path: Path) -> None:
    """Refuse a file a command would write only at its end when it cannot be written there: a
    folder by that name, an existing file that cannot be replaced, a folder that cannot hold
    it. Checked before the work, so that the work is not lost; nothing is left behind."""
    if path.is_dir():
        raise ConfigError(f"{option} {path}: that is a folder; give the path of a file")
    where = path.parent
    while not os.path.lexists(where):
        where = where.parent
    if not where.is_dir():
        raise ConfigError(
            f"{option} {path}: {where} is a file, so no folder can be made there; give another path"
        )
    check_directory(option, path.parent, given=path)
    if os.path.lexists(path) and not os.access(path, os.W_OK):
        raise ConfigError(f"{option} {path}: that file cannot be written; give another path")


def _probe_directory(option: str, path: Path, shown: Path) -> None:
    if path.is_dir():
        where = path
    elif os.path.lexists(path):
        kind = "a link to nothing" if path.is_symlink() else "a file"
        that = "that" if shown == path else str(path)
        raise ConfigError(f"{option} {shown}: {that} is {kind}; give a folder (made if missing)")
    else:
        where = path.parent
        while not os.path.lexists(where):
            where = where.parent
        if not where.is_dir():
            raise ConfigError(
                f"{option} {shown}: {where} is a file, so no folder can be made there"
            )
    why = unwritable(where)
    if why is not None:
        what = "folder" if shown == path else "path"
        raise ConfigError(f"{option} {shown}: {why}; give a {what} you can write to")


def unwritable(folder: Path) -> str | None:
    """Why nothing can be made in the existing `folder`, in words; None when something can.
    Found by a real attempt: permission bits say little for root, or on read-only mounts."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".uowstress-probe-", dir=folder))
    except OSError as error:
        return _unwritable(folder, error)
    return None
