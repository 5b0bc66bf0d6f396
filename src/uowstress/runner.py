"""`uowstress run`: check what was asked, run the suites in-process through the pytest plugin,
and turn what they measured and found into a report.

Exit status: 0 when everything ran within budget and nothing was found, 1 for a finding, a
failed check, a critical figure or (with --fail-on-regression) a regression beyond the
threshold, 2 for an error. Before the run (nothing is run, no report written): a usage,
configuration or database error, or a suite that cannot be collected. During the run (the
report is written, with each error in its summary's errors): a state machine, durability
check, scenario or isolation search that could not run to its end, a test that could not be
set up or torn down, a crashed worker, collected tests that did not run. An error outweighs
a finding.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import platform
import re
import shlex
import socket
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any
from warnings import WarningMessage

import psutil
from pluggy import HookimplMarker

from uowstress.config import DEFAULT_CONFIG_FILE, load_config
from uowstress.database import objects_of, prepared_database
from uowstress.errors import (
    ConfigError,
    DatabaseUnreachable,
    LeftUndone,
    ReportError,
    UowstressError,
)
from uowstress.options import (
    DEFAULT_PATH,
    check_directory,
    check_options,
    parse_seed,
    parse_target_options,
    random_seed,
    unwritable,
)
from uowstress.profiles import draws
from uowstress.report.json_report import load_report
from uowstress.report.model import (
    DatabaseInfo,
    Finding,
    IsolationMatrix,
    MachineRun,
    Report,
    RunOptions,
    Summary,
    SystemInfo,
)
from uowstress.report.passwords import hide_passwords
from uowstress.reproducers import uv_run
from uowstress.scratch import (
    backend_name,
    reachable,
    redacted,
    redacted_as_written,
    repeated_database,
)
from uowstress.target import check_target_options, load_target

if TYPE_CHECKING:
    import pytest

    from uowstress.pytest_plugin import ResultStore

__all__ = ["EXIT_FINDING", "EXIT_OK", "EXIT_USAGE", "RunOutcome", "RunRequest", "run"]

EXIT_OK, EXIT_FINDING, EXIT_USAGE = 0, 1, 2
# pytest.hookimpl is this marker. pytest itself, the plugin and the whole tester behind it are
# imported only once _check has passed, so that a refused run is refused at once.
_hookimpl = HookimplMarker("pytest")
FORMATS = ("markdown", "json", "html")
# uowstress's own suites: in a wheel (pyproject.toml force-includes them), else in a checkout.
PACKAGED_SUITES = Path(__file__).resolve().parent / "_suites"
CHECKOUT_SUITES = Path(__file__).resolve().parents[2] / DEFAULT_PATH


def suites_path(path: str | None) -> str:
    """The folder of suites to run. None (no --path given): ./tests/performance when the
    working directory has one, else uowstress's own suites (e.g. run from an installed wheel).
    A path the user gave is kept as given, even DEFAULT_PATH: a missing one is then reported
    rather than silently replaced by other suites."""
    if path is not None:
        return path
    if Path(DEFAULT_PATH).exists():
        return DEFAULT_PATH
    for candidate in (PACKAGED_SUITES, CHECKOUT_SUITES):
        if candidate.is_dir():
            return str(candidate)
    raise ConfigError(
        f"no performance suites: the working directory has no {DEFAULT_PATH} and uowstress's"
        " own suites are not installed; give --path the folder that holds yours"
    )


@dataclass(frozen=True)
class RunRequest:
    """What `uowstress run` was asked; `options` holds the shared options (uowstress.options)."""

    options: dict[str, Any]
    pattern: str = "test_*.py"
    path: str | None = None  # None: see suites_path
    output_dir: Path = Path("performance_reports")
    formats: tuple[str, ...] = FORMATS
    verbose: bool = False
    workers: int = 1
    baseline: Path | None = None
    fail_on_regression: float | None = None
    isolation_budget_s: float | None = None  # search each database's isolation levels too
    command: str = "uowstress run"


@dataclass
class RunOutcome:
    report: Report
    exit_status: int
    written: dict[str, Path] = field(default_factory=dict)
    pytest_outcomes: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # for the console, after the outcome
    skip_reasons: list[str] = field(default_factory=list)  # why tests were skipped, each once


def _versions() -> dict[str, str]:
    out = {}
    for package in ("sqlalchemy", "hypothesis", "uowstress"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def system_info(databases: Sequence[DatabaseInfo]) -> SystemInfo:
    packages = _versions()
    return SystemInfo(
        hostname=socket.gethostname(),
        os=f"{platform.system()} {platform.release()} ({platform.platform()})",
        cpu=_cpu_model(),
        cpu_count=psutil.cpu_count() or 1,
        memory_gb=round(psutil.virtual_memory().total / 2**30, 1),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        sqlalchemy=packages["sqlalchemy"],
        hypothesis=packages["hypothesis"],
        uowstress=packages["uowstress"],
        databases=list(databases),
    )


def redacted_command(argv: Sequence[str]) -> str:
    """The command as typed, with every database URL's password hidden, started the way this
    run was (`uv run`, and the project when run from outside it) so that it runs again."""
    shown: list[str] = []
    for arg in argv:
        text = arg
        for prefix in ("--db-url=", ""):
            if text.startswith(prefix) and "://" in text[len(prefix) :]:
                try:
                    text = prefix + redacted_as_written(text[len(prefix) :])
                except ValueError:
                    text = prefix + "<not a database URL>"
                break
        shown.append(text)
    return uv_run() + shlex.join(shown)


def _check_report_places(request: RunRequest) -> None:
    """Refuse, before the run, what would stop its reports from being written at the end: a
    folder where a report goes, something other than a folder where its history goes."""
    from uowstress.report.history import HISTORY_DIR
    from uowstress.report.output import REPORT_NAMES

    for name in request.formats:
        place = request.output_dir / REPORT_NAMES[name]
        if place.is_dir():
            raise ConfigError(
                f"--output-dir {request.output_dir}: {place} is a folder, where the {name}"
                " report goes; remove it or give another --output-dir"
            )
    history = request.output_dir / HISTORY_DIR
    if os.path.lexists(history) and not history.is_dir():
        raise ConfigError(
            f"--output-dir {request.output_dir}: {history} is not a folder, where the run's"
            " history goes; remove it or give another --output-dir"
        )
    # The run's entry is written there with the reports, which are not written without it.
    why = unwritable(history) if history.is_dir() else None
    if why is not None:
        raise ConfigError(
            f"--output-dir {request.output_dir}: the run's history goes in {history},"
            f" which cannot be written: {why}; make it writable or give another --output-dir"
        )


def _check(request: RunRequest) -> tuple[list[str], list[DatabaseInfo], str | None]:
    """Everything that can be refused before running: the configuration, the target and its
    options, the databases, the suites. Returns the URLs, what they are, and the config path."""
    options = request.options
    check_options(options)
    check_directory("--output-dir", request.output_dir)
    if request.fail_on_regression is not None and request.baseline is None:
        raise ConfigError(
            "--fail-on-regression compares with a baseline; pass --baseline PATH, the"
            " uowstress-report.json of an earlier run"
        )
    config_path = options.get("config")
    default = Path(DEFAULT_CONFIG_FILE)
    # A folder or a broken link of that name is loaded, to be reported, not skipped for the
    # defaults.
    if config_path is None and (default.exists() or default.is_symlink()):
        config_path = DEFAULT_CONFIG_FILE
    load_config(config_path)
    target = load_target(options["target"])
    chosen = parse_target_options(options["target_option"])
    check_target_options(target, options["target"], chosen)
    for name in request.formats:
        if name not in FORMATS:
            raise ConfigError(f"unknown report format {name!r}; choose from {', '.join(FORMATS)}")
    _check_report_places(request)
    if request.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {request.workers}")
    if request.workers > 1 and importlib.util.find_spec("xdist") is None:
        raise ConfigError(
            "--workers needs pytest-xdist; install it (uv add pytest-xdist) or use --workers 1"
        )
    if request.baseline is not None:
        load_report(request.baseline)  # a malformed baseline stops the run before it starts
    suites = Path(suites_path(request.path))
    if not suites.exists():
        raise ConfigError(
            f"--path {suites}: no such file or folder; give --path the folder that holds your"
            f" performance suites, or leave it out to run ./{DEFAULT_PATH} (uowstress's own"
            " suites when there is none)"
        )
    if suites.is_dir() and not any(suites.rglob(request.pattern)):
        raise ConfigError(f"no file in {suites} matches --pattern {request.pattern!r}")
    urls = list(options["db_url"]) or ["sqlite://"]
    repeated = repeated_database(urls)
    if repeated is not None:
        earlier, later = repeated
        raise ConfigError(
            f"--db-url values {earlier + 1} and {later + 1} name the same database"
            f" ({redacted(urls[later])}); each database is run once: give it once"
        )
    # Every URL is tried before any is refused: one run then names all that need fixing.
    answers = [reachable(url) for url in urls]
    refused = [detail for ok, detail in answers if not ok]
    if len(refused) == 1:
        raise DatabaseUnreachable(refused[0])
    if refused:
        raise DatabaseUnreachable(
            "\n".join(
                [f"{len(refused)} of the {len(urls)} --db-url databases cannot be used:"]
                + [f"  {detail}" for detail in refused]
            )
        )
    databases = []
    for url, (_, detail) in zip(urls, answers, strict=True):
        # The target sets itself up once on each backend (on a database of uowstress's own),
        # so that a refused option, a table its `tables` does not name or a database holding
        # foreign tables stops the run before anything is measured.
        with prepared_database(
            url,
            allow_existing_tables=options["allow_existing_tables"],
            ours=functools.partial(objects_of, target, chosen, options["isolation_level"], url),
        ):
            objects_of(target, chosen, options["isolation_level"], url)  # found once
        databases.append(
            DatabaseInfo(backend=backend_name(url), database=redacted(url), server_version=detail)
        )
    return urls, databases, config_path


def _pytest_args(request: RunRequest, urls: list[str], config_path: str | None) -> list[str]:
    options = request.options
    args = [
        suites_path(request.path),
        "-o",
        f"python_files={request.pattern}",
        "-p",
        "no:cacheprovider",
        # uowstress and Hypothesis are imported before pytest starts; that is expected.
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
        "--uowstress-profile",
        options["profile"],
        "--uowstress-target",
        options["target"],
        "--uowstress-machine",
        options["machine"],
        "--uowstress-sessions",
        str(options["sessions"]),
        "--uowstress-reproducers-dir",
        str(options["reproducers_dir"]),
        "-v" if request.verbose else "-q",
    ]
    if not request.verbose:
        args += ["--tb=line", "--no-header", "--no-summary"]
    for url in urls:
        args += ["--uowstress-db-url", url]
    for pair in options["target_option"]:
        args += ["--uowstress-target-option", pair]
    for name in ("isolation_level", "kills", "seed"):
        if options.get(name) is not None:
            args += [f"--uowstress-{name.replace('_', '-')}", str(options[name])]
    if options.get("allow_existing_tables"):
        args.append("--uowstress-allow-existing-tables")
    if config_path is not None:
        args += ["--uowstress-config", str(config_path)]
    elif Path(suites_path(request.path)).resolve() in (PACKAGED_SUITES, CHECKOUT_SUITES):
        # uowstress's own suites make pytest's rootdir uowstress's folder, whose
        # performance_config.yaml is not the user's: the working directory has none, so the
        # built-in defaults apply, as --config says.
        args.append("--uowstress-builtin-config")
    if request.workers > 1:
        args += ["-n", str(request.workers), "--uowstress-shards", str(request.workers)]
    return args


class _OneProcess:
    """Keeps the tests in this process, whatever `-n` or `--dist` the ini file's addopts give:
    workers would share the CPU and change the figures the budgets judge. Not `-n 0` on the
    command line: pytest refuses that option where the ini file disables pytest-xdist."""

    @_hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        # pytest-xdist starts its workers in its own pytest_configure, which runs last.
        if hasattr(config.option, "dist"):
            config.option.dist = "no"
            config.option.tx = []
            config.option.numprocesses = 0


def _useful_lines(longrepr: str, limit: int = 8) -> list[str]:
    """What a pytest error report says, without the traceback: its `E` lines (the exception,
    a syntax error's line and caret), else its last lines."""
    lines = longrepr.rstrip().splitlines()
    quoted = [line[1:] for line in lines if line.startswith("E ") or line == "E"]
    chosen = textwrap.dedent("\n".join(quoted)).splitlines() if quoted else lines[-limit:]
    return [line.rstrip() for line in chosen if line.strip()][-limit:]


class _Collector:
    """Takes the results out of the pytest session, counts outcomes, drives a progress bar,
    and keeps what went wrong around the tests: collection errors, tests that could not be set
    up or torn down, crashed pytest-xdist workers, tests that did not run."""

    def __init__(
        self, progress: Callable[[str, int, int], None] | None, suites: Path = Path(".")
    ) -> None:
        from uowstress.pytest_plugin import ResultStore

        self.suites = suites
        self.store = ResultStore()
        self.outcomes: Counter[str] = Counter()
        self.total = 0
        self.finished: set[str] = set()
        self.progress = progress
        self.rootpath = Path.cwd()
        self.config_source: str | None = None
        self.collect_errors: list[tuple[str, list[str]]] = []  # (file, what pytest said)
        self.test_errors: list[tuple[str, str, str]] = []  # (node id, phase, what went wrong)
        self.failed_calls: list[tuple[str, str]] = []  # (node id, what its failure said)
        self.workers_down: dict[str, str] = {}  # worker id -> why it went down
        self.left_undone: list[str] = []  # LeftUndone warnings, each once
        self.crashed_in: dict[str, str] = {}  # worker id -> the test it crashed in
        self.skip_reasons: list[str] = []  # why tests were skipped, each once

    @property
    def done(self) -> int:
        return len(self.finished)

    def errors(self) -> list[str]:
        """Tests that could not be set up or torn down, workers that crashed, tests that did
        not run. A failed teardown of a performance scenario is left out: its result already
        says so, and is counted as an error from there (runner._run_errors)."""
        errored = {s.id for s in self.store.scenarios if s.status == "error"}
        found = [
            message
            for nodeid, when, message in self.test_errors
            if not (when == "teardown" and nodeid in errored)
        ]
        for worker, reason in self.workers_down.items():
            during = self.crashed_in.get(worker)
            found.append(
                f"worker {worker} crashed ({reason})"
                + (f" while running {during}" if during else " between tests")
            )
        if self.done < self.total:
            found.append(f"{self.total - self.done} of {self.total} collected tests did not run")
        return found

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        from uowstress.pytest_plugin import CONFIG_SOURCE

        self.rootpath = session.config.rootpath
        # Without --config the plugin may find a file of its own (the ini's uowstress_config,
        # or one in pytest's rootdir): the report names the one the suites were judged by.
        self.config_source = session.config.stash.get(CONFIG_SOURCE, None)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            where = self._file_of(report.nodeid.split("::")[0])
            with contextlib.suppress(ValueError):
                where = where.relative_to(Path.cwd())
            self.collect_errors.append((str(where), _useful_lines(report.longreprtext)))

    def _file_of(self, name: str) -> Path:
        # pytest names a file outside its rootdir relative to the path it was given.
        if not name:
            return self.suites.absolute()
        for folder in (self.rootpath, self.suites):
            if (folder / name).exists():
                return (folder / name).absolute()
        return Path(name)

    def pytest_warning_recorded(self, warning_message: WarningMessage) -> None:
        # Also a pytest-xdist worker's, which the controller records again.
        said = str(warning_message.message)
        if issubclass(warning_message.category, LeftUndone) and said not in self.left_undone:
            self.left_undone.append(said)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.total = len(session.items)
        if self.progress is not None:
            self.progress("collected", 0, self.total)

    @_hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: Sequence[str]) -> None:
        # Under pytest-xdist the workers collect, each of them every test.
        self.total = max(self.total, len(ids))
        if self.progress is not None:
            self.progress("collected", self.done, self.total)

    @_hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        if error is not None:
            self.workers_down[str(node.gateway.id)] = str(error)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from uowstress.pytest_plugin import reported_exception

        if report.when not in ("setup", "call", "teardown"):
            # pytest-xdist's report of the test a worker crashed in (its "when" is "???").
            worker = getattr(getattr(report, "node", None), "gateway", None)
            if worker is not None:
                self.crashed_in[str(worker.id)] = report.nodeid
            else:
                message = f"{report.nodeid}: {report.longreprtext.strip()}"
                self.test_errors.append((report.nodeid, report.when, message))
            self.outcomes["error"] += 1
            self._finished(report.nodeid)
            return
        if report.failed and report.when != "call":
            lines = reported_exception(report.longreprtext)
            said = f": {'; '.join(lines)}" if lines else ""
            message = f"{report.nodeid}: error in {report.when}{said}"
            self.test_errors.append((report.nodeid, report.when, message))
            self.outcomes["error"] += 1
        if report.skipped:
            self._skipped_because(report)
        if report.when == "call":
            self.outcomes[report.outcome] += 1
            if report.failed:
                lines = reported_exception(report.longreprtext)
                said = f": {'; '.join(lines)}" if lines else ""
                self.failed_calls.append((report.nodeid, f"{report.nodeid}{said}"))
        elif report.when == "setup" and not report.passed:
            if report.skipped:
                self.outcomes["skipped"] += 1
        else:
            return
        self._finished(report.nodeid)

    def _skipped_because(self, report: pytest.TestReport) -> None:
        # pytest keeps a skip's reason as (file, line, "Skipped: reason").
        longrepr = report.longrepr
        said = longrepr[2] if isinstance(longrepr, tuple | list) and len(longrepr) == 3 else ""
        reason = hide_passwords(str(said).removeprefix("Skipped: ").strip())
        if reason and reason not in self.skip_reasons:
            self.skip_reasons.append(reason)

    def _finished(self, nodeid: str) -> None:
        self.finished.add(nodeid)
        if self.progress is not None:
            self.progress(nodeid, self.done, self.total)

    @_hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from uowstress.pytest_plugin import RESULTS, ResultStore

        self.store = session.config.stash.get(RESULTS, ResultStore())


def _machines(store: ResultStore) -> list[MachineRun]:
    """The machine runs in the order of their tests, the shards of one in their own order
    (pytest-xdist's workers finish in any)."""
    return sorted(store.machines, key=lambda m: (_SHARD.sub("", m.id), m.shard or 0))


_SHARD = re.compile(r"shard\d+")


def _findings(store: ResultStore) -> list[Finding]:
    """Every finding once: shards sharing the example database each replay a failure another
    saved, and report the same reproducer."""
    found = [m.finding for m in _machines(store) if m.finding is not None]
    for durability in store.durability:
        found.extend(durability.findings)
    seen: set[str] = set()
    unique = []
    for finding in found:
        if finding.reproducer_id is not None:
            if finding.reproducer_id in seen:
                continue
            seen.add(finding.reproducer_id)
        unique.append(finding)
    return unique


def found_before_interrupt(store: ResultStore, directory: Path, since: float) -> list[str]:
    """What an interrupted run found before it stopped, for the console, since no report is
    written: the findings of the tests that ended, and every reproducer the run wrote in
    `directory` (those of the test it stopped in too), each with its replay command."""
    from uowstress.reproducers import uv_run

    lines: list[str] = []
    listed: set[Path] = set()
    for finding in _findings(store):
        line = f"FINDING [{finding.kind}] {finding.source}"
        if finding.reproducer_path is not None:
            listed.add(Path(finding.reproducer_path).resolve())
            line += f", written to {finding.reproducer_path}"
        if finding.replay_command is not None:
            line += f"; replay: {finding.replay_command}"
        lines.append(line)
    try:
        written = sorted(directory.glob("*.json"))
    except OSError:
        written = []
    for path in written:
        try:
            recent = path.stat().st_mtime >= since
        except OSError:
            continue
        if recent and path.resolve() not in listed:
            where = shlex.quote(str(path))
            lines.append(
                f"reproducer written before the interrupt: {path};"
                f" replay: {uv_run()}uowstress replay {where}"
            )
    if lines:
        lines.insert(0, "what the run found before the interrupt (kept):")
    return lines


def _run_errors(store: ResultStore) -> list[str]:
    """The runs that could not go to their end: an error, not a finding."""
    found = [f"{s.id}: {s.message or 'error'}" for s in store.scenarios if s.status == "error"]
    found += [
        f"{m.machine} machine on {m.backend} ({m.id}): {m.error or 'error'}"
        for m in store.machines
        if m.status == "error"
    ]
    found += [
        f"durability on {d.backend} ({d.id}): {d.error or 'error'}"
        for d in store.durability
        if d.status == "error"
    ]
    return found


def build_report(
    request: RunRequest,
    store: ResultStore,
    databases: Sequence[DatabaseInfo],
    config_path: str | None,
    seconds: float,
    pytest_status: int,
    outcomes: Counter[str],
    errors: Sequence[str] = (),
    isolation: Sequence[IsolationMatrix] = (),
) -> Report:
    """The report of the run; ``errors`` are what went wrong outside the results in ``store``
    (crashed workers, tests not set up or torn down, tests that did not run, a failed isolation
    search)."""
    import pytest

    findings = _findings(store)
    verdicts = [v for s in store.scenarios for v in s.verdicts] + [
        v for m in store.machines for v in m.verdicts
    ]
    critical = sum(1 for v in verdicts if v.tier == "critical")
    warnings = sum(1 for v in verdicts if v.tier == "warning")
    all_errors = [hide_passwords(e) for e in [*_run_errors(store), *errors]]
    failed = (
        outcomes.get("failed", 0) + outcomes.get("error", 0) > 0
        or pytest_status == int(pytest.ExitCode.TESTS_FAILED)
        or bool(findings)
        or critical > 0
    )
    if all_errors:
        status, exit_status = "error", EXIT_USAGE
    elif failed:
        status, exit_status = "failed", EXIT_FINDING
    else:
        status, exit_status = "passed", EXIT_OK
    options = request.options
    return Report(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        command=request.command,
        system=system_info(databases),
        options=RunOptions(
            profile=options["profile"],
            target=options["target"],
            target_options=parse_target_options(options["target_option"]),
            pattern=request.pattern,
            path=suites_path(request.path),
            config=config_path,
            workers=request.workers,
            seed=parse_seed(options.get("seed")),
            baseline=None if request.baseline is None else str(request.baseline),
            fail_on_regression=request.fail_on_regression,
        ),
        summary=Summary(
            status=status,
            exit_status=exit_status,
            seconds=round(seconds, 3),
            scenarios=dict(Counter(s.status for s in store.scenarios)),
            machines=dict(Counter(m.status for m in store.machines)),
            durability=dict(Counter(d.status for d in store.durability)),
            findings=len(findings),
            critical=critical,
            warnings=warnings,
            errors=all_errors,
        ),
        scenarios=store.scenarios,
        machines=_machines(store),
        durability=store.durability,
        findings=findings,
        isolation=list(isolation),
    )


def _collection_error(problems: Sequence[tuple[str, list[str]]]) -> ConfigError:
    lines = ["pytest could not collect the suites, so nothing was run:"]
    for where, said in problems:
        lines.append(f"  {where}:")
        lines += [f"    {line}" for line in said] or ["    (pytest said nothing more)"]
    lines.append("Fix the file, or leave it out with --path or --pattern.")
    return ConfigError(hide_passwords("\n".join(lines)))


def run(
    request: RunRequest,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> RunOutcome:
    """Run the suites and write the reports; raises UowstressError when nothing could run.

    An error during the run (see the module's docstring) does not lose the report: it is
    written, with the error in its summary, and the exit status is 2."""
    # Resolved once: from here on suites_path(request.path) is request.path.
    path = suites_path(request.path)
    request = replace(request, path=path)
    urls, databases, config_path = _check(request)
    # Every run can be repeated: when no seed is given, one is chosen here and reported
    # (none when nothing is drawn: the replay profile without --kills).
    seed = parse_seed(request.options.get("seed"))
    if seed is None and draws(request.options["profile"], request.options.get("kills")):
        seed = random_seed()
    request = replace(request, options={**request.options, "seed": seed})
    import pytest  # once the run is known to go ahead (see _hookimpl)

    collector = _Collector(progress, Path(path))
    started = time.perf_counter()
    started_at = time.time()  # reproducers written from here on are this run's
    # The suites import the target and the tests from the working directory, as pytest does.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    plugins: list[object] = [collector] if request.workers > 1 else [collector, _OneProcess()]
    # pytest's temporary folders (pytest-of-<user>/pytest-N, which pytest-xdist makes for its
    # workers whether a test asks for one or not) go into a folder of the run's own, removed
    # when the suites are done: a run leaves nothing behind in the temporary folder.
    with tempfile.TemporaryDirectory(
        prefix="uowstress-pytest-", ignore_cleanup_errors=True
    ) as scratch:
        args = [*_pytest_args(request, urls, config_path), "--basetemp", str(Path(scratch, "tmp"))]
        status = pytest.main(args, plugins=plugins)
    seconds = time.perf_counter() - started
    if collector.collect_errors:
        raise _collection_error(collector.collect_errors)
    if status in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERNAL_ERROR):
        raise UowstressError(
            "pytest could not run the suites: its message above names the problem (an option,"
            " --path, --pattern, or a setting of the ini file such as uowstress_config); no"
            " report was written"
        )
    if status == pytest.ExitCode.INTERRUPTED:
        found = found_before_interrupt(
            collector.store, Path(str(request.options["reproducers_dir"])), started_at
        )
        raise UowstressError(
            "the run was interrupted; no report written" + "".join(f"\n  {line}" for line in found)
        )
    if status == pytest.ExitCode.NO_TESTS_COLLECTED:
        raise ConfigError(f"no test was collected from {path} with --pattern {request.pattern!r}")
    errors = collector.errors()
    isolation = []
    if request.isolation_budget_s is not None:
        for url in urls:
            try:
                isolation.append(
                    _isolation_matrix(
                        url,
                        request.isolation_budget_s,
                        request.options["profile"],
                        allow_existing_tables=request.options["allow_existing_tables"],
                        seed=parse_seed(request.options.get("seed")),
                    )
                )
            except Exception as error:  # any failure: it goes into the report, which is kept
                errors.append(f"isolation search on {redacted(url)} failed: {_said(error)}")
    report = build_report(
        request,
        collector.store,
        databases,
        collector.config_source,
        seconds,
        int(status),
        collector.outcomes,
        errors,
        isolation,
    )
    # A failed test with a result of its own is reported there; any other would fail the run
    # without a word of why.
    results = {
        *(r.id for r in report.scenarios),
        *(r.id for r in report.machines),
        *(r.id for r in report.durability),
    }
    report.summary.failed_tests = [
        said for nodeid, said in collector.failed_calls if nodeid not in results
    ]
    report.summary.left_undone = list(collector.left_undone)
    # Here, once the suites ran: the comparison brings scipy, the renderers Jinja and Plotly,
    # which a run refused by _check never needs.
    from uowstress.report.compare import DEFAULT_THRESHOLD_PCT, holdings, other_sizes
    from uowstress.report.output import analyse, without_passwords, write_reports

    baseline = None if request.baseline is None else load_report(request.baseline)
    report = analyse(
        report,
        baseline=baseline,
        threshold_pct=(
            DEFAULT_THRESHOLD_PCT
            if request.fail_on_regression is None
            else request.fail_on_regression
        ),
    )
    warnings = machine_warnings(report)
    if baseline is not None:
        differ = other_sizes(baseline, report)
        if differ:
            warnings.append(
                "WARNING: not judged against the baseline, run at other workload sizes: "
                + "; ".join(differ)
            )
    if baseline is not None and report.summary.compared == 0:
        # As `uowstress compare` says: a baseline of other scenarios or another backend judges
        # nothing, and a run it cannot judge must not pass for one without regression.
        nothing = (
            f"nothing to compare: the baseline {request.baseline} shares no scenario run at the"
            f" same workload sizes with this run (the baseline holds {holdings(baseline)};"
            f" this run holds {holdings(report)}), so no figure was judged against it; give the"
            " report of a run of the same scenarios on the same backend"
        )
        if request.fail_on_regression is not None:
            report.summary.errors.append(nothing + ", or leave out --fail-on-regression")
            report.summary.status = "error"
            report.summary.exit_status = EXIT_USAGE
        else:
            warnings.append(f"WARNING: {nothing}")
    if (
        request.fail_on_regression is not None
        and report.summary.regressions
        and report.summary.status != "error"
    ):
        report.summary.status = "failed"
        report.summary.exit_status = EXIT_FINDING
    # What is printed is what is written: passwords hidden in every message.
    report = without_passwords(report)
    try:
        written = write_reports(report, request.output_dir, request.formats)
    except ReportError as error:
        # What the run found is still told on the console; only the files are missing.
        report.summary.errors.append(str(error))
        report.summary.status = "error"
        report.summary.exit_status = EXIT_USAGE
        written = {}
    return RunOutcome(
        report,
        report.summary.exit_status,
        written,
        dict(collector.outcomes),
        warnings,
        collector.skip_reasons,
    )


def machine_warnings(report: Report) -> list[str]:
    """The warnings of the report's machine runs, for the console (a run that passed may have
    injected fewer faults than it drew: it must say so, not only in the report's files)."""
    out = []
    for machine in report.machines:
        shard = (
            f", shard {machine.shard + 1} of {machine.shards}"
            if machine.shard is not None and machine.shards is not None
            else ""
        )
        for said in machine.warnings:
            out.append(f"WARNING: {machine.machine} machine on {machine.backend}{shard}: {said}")
    return out


def _said(error: BaseException) -> str:
    """An exception as one line: a database error's own first line, not SQLAlchemy's wrapping."""
    from sqlalchemy import exc as sa_exc

    if isinstance(error, sa_exc.DBAPIError) and error.orig is not None:
        error = error.orig
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _isolation_matrix(
    url: str, budget_s: float, profile: str, *, allow_existing_tables: bool, seed: int | None
) -> IsolationMatrix:
    from uowstress.isolation import search_isolation

    searched = search_isolation(
        url,
        budget_s=budget_s,
        profile=profile,
        allow_existing_tables=allow_existing_tables,
        seed=seed,
    )
    return IsolationMatrix.model_validate(searched.to_json())
