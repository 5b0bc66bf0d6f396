"""The `uowstress` command: run, replay, compare, isolation, cleanup.

Only click and uowstress's light modules are imported here. Each command imports what it
works with (SQLAlchemy, Hypothesis, pytest, the report renderers, scipy) in its body, so that
`--version`, `--help` and usage errors answer at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from uowstress.errors import ConfigError, UowstressError
from uowstress.interrupts import (
    acknowledge,
    merge_repeated_interrupts,
    stop_cleanly_on_sigterm,
)
from uowstress.options import (
    DEFAULT_PATH,
    OPTIONS,
    OptionSpec,
    check_options,
    check_output_file,
    option_values,
    parse_seed,
    parse_target_options,
)

if TYPE_CHECKING:
    from uowstress.report.model import Report

EXIT_OK, EXIT_FINDING, EXIT_USAGE = 0, 1, 2


class Number(click.FloatRange):
    """A number within a range, as every number option of every command takes it: click's
    FloatRange takes "nan" (no comparison refuses it) and "inf" (when no maximum is set), which
    would only fail in the middle of the work, judge nothing or write what JSON cannot hold."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _click_option(spec: OptionSpec) -> Callable[[Any], Any]:
    if spec.flag:
        return click.option(spec.cli_flag, spec.name, is_flag=True, default=False, help=spec.help)
    kwargs: dict[str, Any] = {"help": spec.help, "multiple": spec.multiple}
    if spec.choices:
        kwargs["type"] = click.Choice(spec.choices)
    if not spec.multiple and spec.default is not None:
        kwargs["default"] = spec.default
        kwargs["show_default"] = True
    return click.option(spec.cli_flag, spec.name, **kwargs)


def shared_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for spec in reversed(OPTIONS):
        fn = _click_option(spec)(fn)
    return fn


def shared_option(name: str) -> Callable[[Any], Any]:
    """One of the shared options (uowstress.options), for a command that takes only a few."""
    (spec,) = [spec for spec in OPTIONS if spec.name == name]
    return _click_option(spec)


class _Commands(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as stop:
            acknowledge()
            # Said in uowstress's words and with its exit status for an error: click's
            # "Aborted!" exits 1, which means a finding.
            how = f" ({stop})" if str(stop) else ""
            click.echo(
                f"uowstress: interrupted{how}; what the command set up was dropped, and no"
                " report was written",
                err=True,
            )
            sys.exit(EXIT_USAGE)


@click.group(cls=_Commands)
@click.version_option(package_name="uowstress")
def main() -> None:
    """Stateful stress and property testing for Unit-of-Work persistence layers."""
    stop_cleanly_on_sigterm()
    merge_repeated_interrupts()


@main.command()
@shared_options
@click.option(
    "--pattern",
    default="test_*.py",
    show_default=True,
    help="which suite files to run (a file name pattern)",
)
@click.option(
    "--path",
    default=None,
    help=f"the folder of the performance suites (default: ./{DEFAULT_PATH}, or uowstress's own"
    " suites when the working directory has none)",
)
@click.option(
    "--output-dir",
    default="performance_reports",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="where the reports are written",
)
@click.option(
    "--format",
    "report_format",
    type=click.Choice(["markdown", "json", "html", "all"]),
    default="all",
    show_default=True,
    help="report formats to write",
)
@click.option("--verbose", is_flag=True, help="pytest's verbose output, and every shrunk step")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="parallel workers (pytest-xdist); each state machine's exploration is split among"
    " them, sharing the example database",
)
@click.option(
    "--baseline",
    type=click.Path(path_type=Path),
    help="the JSON report of an earlier run to compare with (or the folder holding its"
    " uowstress-report.json)",
)
@click.option(
    "--fail-on-regression",
    type=Number(min=0),
    metavar="PCT",
    help="exit 1 when a metric got significantly worse than the --baseline by PCT % or more",
)
@click.option(
    "--isolation",
    "isolation_budget",
    type=Number(min=0, min_open=True),
    metavar="SECONDS",
    help="also search each database's isolation levels for anomalies, in SECONDS per database,"
    " and put the matrix in the report (see uowstress isolation)",
)
def run(
    pattern: str,
    path: str | None,
    output_dir: Path,
    report_format: str,
    verbose: bool,
    workers: int,
    baseline: Path | None,
    fail_on_regression: float | None,
    isolation_budget: float | None,
    **raw: Any,
) -> None:
    """Run the performance suites and the state machines on each database, and write the
    reports (Markdown, JSON, HTML).

    Exit status: 0 all within budget and no finding, 1 a finding, a failed check, a critical
    figure or (with --fail-on-regression) a regression, 2 an error: before the run (nothing
    runs, no report) a usage, configuration or database error or a suite that cannot be
    collected; during the run (the reports are written, with the errors in them) a state
    machine, durability check, scenario or isolation search that could not finish, a test
    that could not be set up or torn down, a crashed worker, collected tests that did not run.
    """
    options = option_values(raw)
    try:
        # Checked again by the runner; here first, so that an option value that cannot work is
        # refused before the tester is imported.
        check_options(options)
    except UowstressError as error:
        click.echo(f"uowstress: {error}", err=True)
        sys.exit(EXIT_USAGE)
    from uowstress.runner import FORMATS, RunRequest, redacted_command
    from uowstress.runner import run as run_suites

    try:
        request = RunRequest(
            options=options,
            pattern=pattern,
            path=path,
            output_dir=output_dir,
            formats=FORMATS if report_format == "all" else (report_format,),
            verbose=verbose,
            workers=workers,
            baseline=baseline,
            fail_on_regression=fail_on_regression,
            isolation_budget_s=isolation_budget,
            command=redacted_command(["uowstress", *sys.argv[1:]]),
        )
        with _progress_bar() as progress:
            outcome = run_suites(request, progress=progress)
    except UowstressError as error:
        click.echo(f"uowstress: {error}", err=True)
        sys.exit(EXIT_USAGE)
    _print_outcome(outcome.report, verbose)
    warning = skipped_warning(outcome.report, outcome.pytest_outcomes, outcome.skip_reasons)
    for line in [*outcome.warnings, *([] if warning is None else [warning])]:
        click.echo(line)
    for kind, written in sorted(outcome.written.items()):
        click.echo(f"{kind} report: {written}")
    if "history" in outcome.written:
        from uowstress.report.history import load_history

        for _, reason in load_history(output_dir).unreadable:
            click.echo(f"WARNING: a history entry cannot be read: {reason}")
    sys.exit(outcome.exit_status)


@contextlib.contextmanager
def _progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar on standard error while the suites run (none when not a terminal)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("[bold]uowstress run"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    task = bar.add_task("collecting", total=None)

    def update(current: str, done: int, total: int) -> None:
        bar.update(task, completed=done, total=total, description=current.split("::")[-1])

    with bar:
        yield update


def _print_outcome(report: Report, verbose: bool) -> None:
    from uowstress.report.compare import shown_value
    from uowstress.report.formatting import counted, signed_percent
    from uowstress.report.model import shrunk_words

    summary = report.summary
    for scenario in report.scenarios:
        if scenario.status != "passed":
            message = (scenario.message or "").replace("\n", "\n  ")
            click.echo(f"{scenario.status.upper()} {scenario.id}: {message}")
    for machine in report.machines:
        shard = (
            f", shard {machine.shard + 1} of {machine.shards}"
            if machine.shard is not None and machine.shards is not None
            else ""
        )
        # A machine that stopped before it connected has no version of its own.
        version = machine.server_version or next(
            (d.server_version for d in report.system.databases if d.database == machine.database),
            "",
        )
        where = f"{machine.database}, {version}" if version else machine.database
        head = (
            f"{machine.machine} on {machine.backend}{shard} ({where}):"
            f" {machine.examples} examples in {machine.seconds:.1f}s"
        )
        if machine.error:
            click.echo(f"{head}: ERROR")
        elif machine.status == "passed":
            click.echo(f"{head}: PASSED, no finding")
        elif machine.finding is None:
            # Failed without a finding: a critical step budget (its finding, if any, is
            # printed below with its reproducer).
            breaches = [v.message for v in machine.verdicts if v.tier == "critical"]
            click.echo(
                f"{head}: {machine.status.upper()}"
                + (f", {_count(len(breaches), 'critical figure')}" if breaches else "")
            )
            for breach in breaches:
                click.echo(f"  CRITICAL {breach}")
    for durable in report.durability:
        head = (
            f"durability on {durable.backend} ({durable.database}):"
            f" {counted(durable.kills, 'kill')},"
            f" {counted(durable.commits_acknowledged, 'acknowledged commit')},"
            f" {durable.seconds:.1f}s"
        )
        click.echo(f"{head}: {'PASSED' if durable.status == 'passed' else durable.status.upper()}")
    for finding in report.findings:
        click.echo(f"FINDING [{finding.kind}] {finding.source}: {finding.message}")
        steps = sum(len(session) for session in finding.steps_by_session)
        if finding.replay_command:
            shrunk = shrunk_words(steps, finding.shrunk_from)
            click.echo(f"  {shrunk}, written to {finding.reproducer_path}")
            click.echo(f"  replay: {finding.replay_command}")
        if verbose:
            for session, lines in zip(
                finding.session_labels(), finding.steps_by_session, strict=True
            ):
                for line in lines:
                    click.echo(f"    session {session}: {line}")
    regressed = [r for r in report.regressions if r.regressed]
    for regression in regressed:
        click.echo(
            f"REGRESSED {regression.scenario} {regression.metric}:"
            f" {shown_value(regression.metric, regression.baseline)} in the baseline,"
            f" {shown_value(regression.metric, regression.current)} now (worse by"
            f" {signed_percent(regression.change)})"
        )
    for failed in summary.failed_tests:
        click.echo("FAILED test " + failed.replace("\n", "\n    "))
    if summary.errors:
        click.echo("ERRORS: part of the run could not go to its end:")
        for error in summary.errors:
            click.echo("  " + error.replace("\n", "\n    "))
    if summary.left_undone:
        click.echo("LEFT UNDONE: the run could not put back as it was:")
        for undone in summary.left_undone:
            click.echo("  " + undone)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.scenarios.items()))
    click.echo(
        f"{summary.status.upper()}: scenarios {counts or 'none'};"
        # "figures": the judged tiers, not pytest's own warnings, which it counts above.
        f" {_count(summary.findings, 'finding')}, {_count(summary.critical, 'critical figure')},"
        f" {_count(summary.warnings, 'figure')} at warning"
        + (f", {_count(summary.regressions, 'regression')}" if report.options.baseline else "")
        + f"; {summary.seconds:.0f}s"
        # The run's seed: `--seed N` draws the same steps again.
        + (f"; seed {report.options.seed}" if report.options.seed is not None else "")
    )


def skipped_warning(
    report: Report, outcomes: Mapping[str, int], reasons: Sequence[str] = ()
) -> str | None:
    """A warning when everything was skipped: a run that measured or checked nothing must not
    pass unnoticed. `reasons`: why the tests were skipped, as pytest said."""
    scenarios = report.scenarios
    if scenarios and all(s.status == "skipped" for s in scenarios):
        reasons = sorted({s.message for s in scenarios if s.message})
        why = "; ".join(reasons[:3]) if reasons else "run with --verbose to see why"
        return (
            f"WARNING: every performance scenario ({len(scenarios)}) was skipped, so nothing"
            f" was measured: {why}"
        )
    skipped = outcomes.get("skipped", 0)
    if skipped and not any(n for kind, n in outcomes.items() if kind != "skipped"):
        head = f"WARNING: every collected test ({skipped}) was skipped, so nothing was checked"
        distinct = list(dict.fromkeys(reason for reason in reasons if reason))
        if not distinct:
            return f"{head}; run with --verbose to see which tests"
        return f"{head}:" + "".join(f"\n  {reason}" for reason in distinct)
    return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _replay_path(spec: str, folder: Path) -> Path:
    """The reproducer file `spec` names; a directory is refused with the option it meant."""
    from uowstress import reproducers

    if Path(spec).is_dir():
        raise UowstressError(
            f"{spec} is a directory, not a reproducer file; to replay the reproducers in it,"
            f" use --dir {shlex.quote(spec)}"
        )
    return reproducers.resolve(spec, folder)


# How each fate of a leftover reads.
_FATES = {
    "in use": "in use by a running uowstress, left",
    "not ours": "not made by uowstress, left",
}


@main.command()
@click.argument("names", nargs=-1)
@click.option(
    "--db-url",
    "db_urls",
    multiple=True,
    help="a database whose scratch schemas (PostgreSQL) or databases (MariaDB) to look at;"
    " repeatable; a SQLite URL looks at the folder its scratch files go to and at the file"
    " it names, when a run created it (default: sqlite://, the default folder)",
)
@click.option("--dry-run", is_flag=True, help="list what would be dropped, drop nothing")
def cleanup(names: tuple[str, ...], db_urls: tuple[str, ...], dry_run: bool) -> None:
    """Drop the scratch databases that killed runs left behind (NAMES: only these; a name
    that matches none is said).

    A run drops its scratch schemas, databases and files on the way out, after Ctrl-C and
    SIGTERM too; a SIGKILL leaves them. Each is kept by a lock while its run lives: those
    no running uowstress keeps are dropped, those in use are left. Only what carries
    uowstress's mark is dropped: a schema, database or folder merely named alike is left and
    said, with how to remove it by hand. Exit status: 0, or 2 when a database cannot be
    reached or a leftover could not be dropped.
    """
    from uowstress.leftovers import clean, not_found, places

    urls = list(db_urls) or ["sqlite://"]
    try:
        found = clean(urls, only=names, dry_run=dry_run)
        looked_at = places(urls)
    except (UowstressError, ValueError) as error:
        click.echo(f"uowstress: {error}", err=True)
        sys.exit(EXIT_USAGE)
    # One error entry per server that did not answer.
    unreachable = sum(f.fate == "error" for f in found)
    if names and unreachable < looked_at:
        # Said of each name, not as "nothing left behind": the name may be mistyped.
        others = " on the others" if unreachable else ""
        for name in not_found(names, found):
            click.echo(
                f"not found: {name} (no scratch database, schema or file by that name{others})"
            )
    elif not any(f.fate != "error" for f in found):
        # Said only of what could be looked at: a server that did not answer may hold some.
        if not unreachable:
            click.echo("no scratch database left behind")
        elif unreachable < looked_at:
            click.echo("no scratch database left behind on the others")
    for leftover in found:
        if leftover.fate == "error":
            click.echo(f"uowstress: {leftover.where}: {leftover.why}", err=True)
            continue
        fate = _FATES.get(leftover.fate, leftover.fate)
        click.echo(f"{fate}: {leftover.name} ({leftover.where})")
        if leftover.why:
            click.echo(f"  {leftover.why}")
    failed = any(f.fate in ("not dropped", "error") for f in found)
    sys.exit(EXIT_USAGE if failed else EXIT_OK)


@main.command()
@click.argument("specs", nargs=-1)
@click.option(
    "--dir",
    "directory",
    default=".hypothesis/reproducers",
    show_default=True,
    help="where reproducers are looked up by id",
)
@click.option(
    "--db-url",
    "db_urls",
    multiple=True,
    help="server URL to replay on (one per backend; defaults from UOWSTRESS_PG_URL,"
    " UOWSTRESS_MYSQL_URL)",
)
@click.option(
    "--target-option",
    "target_option",
    multiple=True,
    metavar="NAME=VALUE",
    help="replace the reproducer's target option NAME (repeatable), e.g. to replay with a"
    " weakening switch off; NAME= (nothing after the =) removes the option",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="run each reproducer N times: FIXED only if every run passes, FAILED only if every"
    " run fails the same way; any other mix is an ERROR saying it is not repeatable",
)
@shared_option("allow_existing_tables")
@click.pass_context
def replay(
    ctx: click.Context,
    specs: tuple[str, ...],
    directory: str,
    db_urls: tuple[str, ...],
    target_option: tuple[str, ...],
    repeat: int,
    allow_existing_tables: bool,
) -> None:
    """Replay reproducers (ids or paths; all in --dir when none is given).

    Prints FIXED, FAILED or ERROR for each; a failure other than the one recorded (another
    kind, or at another step) is FAILED with both described. Exit status: 0 all fixed, 1 one
    failed, 2 one could not be replayed or did not give the same outcome each time.
    """
    from uowstress import reproducers
    from uowstress.report.passwords import hide_passwords
    from uowstress.scratch import backend_name

    if not logging.getLogger().handlers:
        # What the system under test logs (a weakened commit saying it swallowed an error)
        # would reach standard error through Python's last-resort handler, between the verdicts.
        logging.getLogger().addHandler(logging.NullHandler())
    folder = Path(directory)
    try:
        given = ctx.get_parameter_source("directory") is not ParameterSource.DEFAULT
        if not given:
            folder = reproducers.nearest(folder)
            if folder != Path(directory):
                # Found in a folder above: the run started there, and a target module of that
                # project is imported from there, as the run imported it.
                project = str(folder.parents[len(Path(directory).parts) - 1])
                if project not in sys.path:
                    sys.path.insert(1, project)
        elif not folder.is_dir():
            # A typo in CI would otherwise replay nothing and pass.
            what = "a file" if folder.exists() else "no such folder"
            raise UowstressError(
                f"--dir {folder}: {what}; give the folder that holds the reproducers"
            )
        urls: dict[str, str] = {}
        for url in db_urls:
            backend = backend_name(url)
            if backend in urls:
                raise UowstressError(
                    f"--db-url names two {backend} databases; a reproducer replays on the"
                    f" backend it was found on, so give one --db-url per backend"
                )
            urls[backend] = url
        paths = [_replay_path(s, folder) for s in specs] or reproducers.all_paths(folder)
        options = parse_target_options(target_option)
    except (UowstressError, ValueError) as error:
        click.echo(f"uowstress: {error}", err=True)
        sys.exit(EXIT_USAGE)
    if not paths:
        click.echo(f"no reproducers in {folder}")
        sys.exit(EXIT_OK)
    # After the checks: the state machines bring Hypothesis and the whole tester.
    from uowstress.stateful.run import replay as replay_one

    verdicts = []
    for path in paths:
        result = replay_one(
            path,
            db_urls=urls,
            target_options=options,
            repeat=repeat,
            allow_existing_tables=allow_existing_tables,
        )
        verdicts.append(result.verdict)
        # A target's error may quote its database URL.
        click.echo(f"{result.verdict:6s} {path}: {hide_passwords(result.detail)}")
    if "ERROR" in verdicts:
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_FINDING if "FAILED" in verdicts else EXIT_OK)


@main.command()
@click.option(
    "--db-url",
    required=True,
    # Taken as many to refuse a second one: click would keep the last without a word.
    multiple=True,
    help="database to examine: sqlite://..., postgresql://... or mysql:// / mariadb://...",
)
@click.option(
    "--levels",
    multiple=True,
    metavar="LEVEL",
    help="isolation level to search, e.g. 'read committed' (repeatable, or comma-separated;"
    " default: every level the backend offers)",
)
@click.option(
    "--budget-seconds",
    type=Number(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="time for the whole matrix, split across the levels",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="write JSON"
)
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write Markdown: the matrix and each reproducer as steps per session",
)
@click.option(
    "--profile",
    type=click.Choice(["dev", "ci", "nightly"]),
    default="dev",
    show_default=True,
    help="Hypothesis profile: bounds the examples per level (ci or nightly for a report)",
)
@click.option(
    "--seed",
    help="seed of the examples drawn, a whole number below 2**128: the same seed draws the"
    " same examples, as far as the time budget goes (default: one chosen at random, printed"
    " and in the JSON)",
)
@shared_option("allow_existing_tables")
def isolation(
    db_url: tuple[str, ...],
    levels: tuple[str, ...],
    budget_seconds: float,
    json_path: Path | None,
    markdown_path: Path | None,
    profile: str,
    seed: str | None,
    allow_existing_tables: bool,
) -> None:
    """Search each isolation level of a database for the anomalies it really shows.

    For every level and every anomaly class (G0, G1a, G1b, G1c, OTV, PMP, P4, G-single,
    G-nonadjacent, G2-item, G2), Hypothesis drives concurrent sessions over a small register table
    (uows_registers, dropped at the end); what the server did decides each verdict. Prints
    the matrix; observed anomalies come with a shrunk reproducer. Exit status: 0 done, 2 a
    usage or database error (a SQLite file holding tables needs --allow-existing-tables, and
    is refused when one of them is named uows_registers).
    """

    def progress(message: str) -> None:
        click.echo(message, err=True)

    if len(db_url) > 1:
        click.echo(
            "uowstress: --db-url is given more than once; the search examines one database:"
            " run it once per database, each with its own --json / --markdown",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    try:
        check_options({"seed": seed}, flag=lambda _spec: "--seed")
        for option, path in (("--json", json_path), ("--markdown", markdown_path)):
            if path is not None:
                check_output_file(option, path)
    except ConfigError as error:
        click.echo(f"uowstress: {error}", err=True)
        sys.exit(EXIT_USAGE)
    # After the checks of the options: the search brings SQLAlchemy and Hypothesis.
    from sqlalchemy import exc as sa_exc

    from uowstress.isolation import render_markdown, render_matrix, search_isolation
    from uowstress.scratch import hide_secrets

    try:
        report = search_isolation(
            db_url[0],
            levels=levels,
            budget_s=budget_seconds,
            profile=profile,
            progress=progress,
            allow_existing_tables=allow_existing_tables,
            seed=parse_seed(seed) if seed is not None else None,
        )
    except (UowstressError, ValueError) as error:
        click.echo(f"uowstress: {error}", err=True)
        sys.exit(EXIT_USAGE)
    except sa_exc.SQLAlchemyError as error:
        orig = error.orig if isinstance(error, sa_exc.DBAPIError) else error
        lines = str(orig).strip().splitlines()
        reason = hide_secrets(lines[0] if lines else "", db_url[0])
        click.echo(
            f"uowstress: the database failed during the search: {type(orig).__name__}:"
            f" {reason}. Check that the server is up and the user may create tables in the"
            " scratch database.",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    click.echo(render_matrix(report))
    try:
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
            click.echo(f"JSON written to {json_path}")
        if markdown_path is not None:
            markdown_path.parent.mkdir(parents=True, exist_ok=True)
            markdown_path.write_text(render_markdown(report))
            click.echo(f"Markdown written to {markdown_path}")
    except OSError as error:
        click.echo(
            f"uowstress: cannot write {error.filename or 'the report'}: {error.strerror or error}",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_OK)


# --------------------------------------------------------------------------- compare


@main.command()
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option(
    "--fail-on-regression",
    "threshold_pct",
    type=Number(min=0),
    default=10.0,
    show_default=True,
    metavar="PCT",
    help="a change counts when the median transaction time (or ops/s, memory peak) moved by"
    " PCT percent or more; exit 1 when one got worse",
)
@click.option(
    "--alpha",
    type=Number(min=0, max=1, min_open=True, max_open=True),
    default=0.01,
    show_default=True,
    help="significance level of the Mann-Whitney U test on transaction times",
)
@click.option(
    "--min-effect",
    type=Number(min=0, max=1),
    default=0.147,
    show_default=True,
    help="smallest |Cliff's delta| of transaction times that counts (0.147: a small effect)",
)
def compare(old: Path, new: Path, threshold_pct: float, alpha: float, min_effect: float) -> None:
    """Compare two reports (uowstress-report.json, or the folders holding them): OLD is the
    baseline, NEW the run to judge.

    Scenarios are matched on suite, scenario, the test's parameters and backend. Transaction
    times are compared with a Mann-Whitney U test and Cliff's delta, and count only beyond
    --fail-on-regression too; ops/s and memory peak are single figures, compared by their
    relative change. Exit status: 0 no regression, 1 a regression, 2 a file that cannot be
    read or two reports with no scenario in common (a baseline of other scenarios or another
    backend judges nothing).
    """
    from uowstress.report.json_report import load_report

    try:
        baseline = load_report(old)
        current = load_report(new)
    except UowstressError as error:
        click.echo(f"uowstress: {error}", err=True)
        sys.exit(EXIT_USAGE)
    # After reading the reports: the statistics bring scipy.
    from uowstress.report.compare import compare_all, render_comparison

    comparisons = compare_all(
        baseline, current, threshold_pct=threshold_pct, alpha=alpha, min_effect=min_effect
    )
    click.echo(f"baseline {old} ({baseline.created_at}) -> {new} ({current.created_at})")
    click.echo(render_comparison(comparisons, baseline, current), nl=False)
    if not comparisons:
        sys.exit(EXIT_USAGE)
    regressed = any(c.verdict == "regressed" for c in comparisons)
    sys.exit(EXIT_FINDING if regressed else EXIT_OK)
