"""The `uowstress` command: run, replay."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from uowstress import reproducers
from uowstress.errors import UowstressError
from uowstress.options import OPTIONS, OptionSpec, option_values, parse_target_options
from uowstress.profiles import REPRODUCERS_DIR, get_profile
from uowstress.stateful.durability import DurabilityResult, run_durability
from uowstress.stateful.run import replay as replay_one
from uowstress.stateful.run import result_summary, run_acid

EXIT_OK, EXIT_FINDING, EXIT_USAGE = 0, 1, 2


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


@click.group()
@click.version_option(package_name="uowstress")
def main() -> None:
    """Stateful stress and property testing for Unit-of-Work persistence layers."""


@main.command()
@shared_options
@click.option(
    "--output-dir",
    default="performance_reports",
    show_default=True,
    help="where the run's summary is written",
)
@click.option("--verbose", is_flag=True, help="print every step of each shrunk failure")
def run(output_dir: str, verbose: bool, **raw: Any) -> None:
    """Explore the target with the ACID state machine on each database.

    Exit status: 0 no finding, 1 a finding, 2 a usage, configuration or database error.
    """
    values = option_values(raw)
    try:
        options = parse_target_options(values["target_option"])
        urls = values["db_url"] or ["sqlite://"]
        results = []
        durability: list[DurabilityResult] = []
        machines = ["acid", "sessions"] if values["machine"] == "both" else [values["machine"]]
        for url in urls:
            for machine in machines:
                click.echo(
                    f"{machine} machine, profile {values['profile']}: {values['target']} ...",
                    err=True,
                )
                result = run_acid(
                    url,
                    target_spec=values["target"],
                    options=options,
                    profile=values["profile"],
                    isolation_level=values["isolation_level"],
                    reproducers_dir=Path(values["reproducers_dir"]),
                    allow_existing_tables=values["allow_existing_tables"],
                    machine=machine,
                    sessions=int(values["sessions"]),
                )
                results.append(result)
                _print_result(result, verbose)
            kills = (
                int(values["kills"])
                if values["kills"] is not None
                else get_profile(values["profile"]).durability_kills
            )
            if kills > 0:
                click.echo(f"durability: {kills} kills of a child process ...", err=True)
                durable = run_durability(
                    url,
                    target_spec=values["target"],
                    options=options,
                    kills=kills,
                    isolation_level=values["isolation_level"],
                )
                durability.append(durable)
                _print_durability(durable)
    except UowstressError as error:
        click.echo(f"uowstress: {error}", err=True)
        sys.exit(EXIT_USAGE)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "uowstress-run.json").write_text(
        json.dumps(
            {
                "machines": [result_summary(r) for r in results],
                "durability": [d.summary() for d in durability],
            },
            indent=2,
        )
        + "\n"
    )
    click.echo(f"summary written to {out / 'uowstress-run.json'}")
    if any(r.error for r in results) or any(d.error for d in durability):
        sys.exit(EXIT_USAGE)
    found = any(r.finding for r in results) or any(not d.passed for d in durability)
    sys.exit(EXIT_FINDING if found else EXIT_OK)


def _print_durability(result: DurabilityResult) -> None:
    head = (
        f"durability on {result.backend} ({result.database}): {len(result.kills)} kills,"
        f" {result.acknowledged} acknowledged commits, {result.seconds:.1f}s"
    )
    if result.error:
        click.echo(f"{head}: ERROR {result.error}")
    elif result.passed:
        click.echo(f"{head}: PASSED, every acknowledged commit survived, nothing half present")
    else:
        for kill in result.findings:
            assert kill.finding is not None
            click.echo(
                f"{head}: FINDING [{kill.finding.kind}] kill {kill.index}: {kill.finding.message}"
            )


def _print_result(result: Any, verbose: bool) -> None:
    head = (
        f"{result.machine} on {result.backend} ({result.database}, {result.server_version}):"
        f" {result.examples} examples in {result.seconds:.1f}s"
    )
    if result.error:
        click.echo(f"{head}: ERROR {result.error}")
        return
    if result.passed:
        click.echo(f"{head}: PASSED, no finding")
        return
    click.echo(f"{head}: FINDING [{result.finding.kind}] {result.finding.message}")
    rep = result.reproducer
    steps = len(rep.steps)
    click.echo(
        f"  shrunk to {steps} step{'s' if steps != 1 else ''}, written to {result.reproducer_path}"
    )
    # By id from the default folder; by path from any other.
    default_dir = result.reproducer_path.parent.resolve() == REPRODUCERS_DIR.resolve()
    click.echo(f"  replay: {rep.replay_command(rep.id if default_dir else result.reproducer_path)}")
    if verbose:
        for index, step in enumerate(rep.steps, 1):
            click.echo(f"    {index:3d}. {json.dumps(step.as_dict())}")


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
def replay(specs: tuple[str, ...], directory: str, db_urls: tuple[str, ...]) -> None:
    """Replay reproducers (ids or paths; all in --dir when none is given).

    Prints FIXED, FAILED or ERROR for each. Exit status: 0 all fixed, 1 one failed,
    2 one could not be replayed.
    """
    from uowstress.scratch import backend_name

    folder = Path(directory)
    try:
        urls: dict[str, str] = {backend_name(u): u for u in db_urls}
        paths = [reproducers.resolve(s, folder) for s in specs] or reproducers.all_paths(folder)
    except (UowstressError, ValueError) as error:
        click.echo(f"uowstress: {error}", err=True)
        sys.exit(EXIT_USAGE)
    if not paths:
        click.echo(f"no reproducers in {folder}")
        sys.exit(EXIT_OK)
    verdicts = []
    for path in paths:
        result = replay_one(path, db_urls=urls)
        verdicts.append(result.verdict)
        click.echo(f"{result.verdict:6s} {path}: {result.detail}")
    if "ERROR" in verdicts:
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_FINDING if "FAILED" in verdicts else EXIT_OK)


@main.command()
@click.option(
    "--db-url",
    required=True,
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
    type=click.FloatRange(min=0, min_open=True),
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
def isolation(
    db_url: str,
    levels: tuple[str, ...],
    budget_seconds: float,
    json_path: Path | None,
    markdown_path: Path | None,
    profile: str,
) -> None:
    """Search each isolation level of a database for the anomalies it really shows.

    For every level and every anomaly class (G0, G1a, G1b, G1c, OTV, PMP, P4, G-single,
    G2-item, G2), Hypothesis drives concurrent sessions over a small register table; what
    the server did decides each verdict. Prints the matrix; observed anomalies come with a
    shrunk reproducer. Exit status: 0 done, 2 a usage or database error.
    """
    import contextlib

    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import make_url

    from uowstress.isolation import render_markdown, render_matrix, search_isolation

    def progress(message: str) -> None:
        click.echo(message, err=True)

    try:
        report = search_isolation(
            db_url,
            levels=levels,
            budget_s=budget_seconds,
            profile=profile,
            progress=progress,
        )
    except (UowstressError, ValueError) as error:
        click.echo(f"uowstress: {error}", err=True)
        sys.exit(EXIT_USAGE)
    except sa_exc.SQLAlchemyError as error:
        orig = error.orig if isinstance(error, sa_exc.DBAPIError) else error
        lines = str(orig).strip().splitlines()
        reason = lines[0] if lines else ""
        with contextlib.suppress(sa_exc.ArgumentError):
            password = make_url(db_url).password
            if isinstance(password, str) and password:
                reason = reason.replace(password, "***")
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
        click.echo(f"uowstress: cannot write the report: {error}", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_OK)


# --------------------------------------------------------------------------- compare


@main.command()
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option(
    "--fail-on-regression",
    "threshold_pct",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="PCT",
    help="a change counts when the median transaction time (or ops/s, memory peak) moved by"
    " more than PCT percent; exit 1 when one got worse",
)
@click.option(
    "--alpha",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=0.01,
    show_default=True,
    help="significance level of the Mann-Whitney U test on transaction times",
)
@click.option(
    "--min-effect",
    type=click.FloatRange(min=0, max=1),
    default=0.147,
    show_default=True,
    help="smallest |Cliff's delta| of transaction times that counts (0.147: a small effect)",
)
def compare(old: Path, new: Path, threshold_pct: float, alpha: float, min_effect: float) -> None:
    """Compare two reports (uowstress-report.json, or the folders holding them): OLD is the
    baseline, NEW the run to judge.

    Scenarios are matched on suite, scenario and backend. Transaction times are compared with a
    Mann-Whitney U test and Cliff's delta, and count only beyond --fail-on-regression too;
    ops/s and memory peak are single figures, compared by their relative change. Exit status:
    0 no regression, 1 a regression, 2 a file that cannot be read.
    """
    from uowstress.report.compare import compare_all, render_comparison
    from uowstress.report.json_report import load_report

    try:
        baseline = load_report(old)
        current = load_report(new)
    except UowstressError as error:
        click.echo(f"uowstress: {error}", err=True)
        sys.exit(EXIT_USAGE)
    comparisons = compare_all(
        baseline, current, threshold_pct=threshold_pct, alpha=alpha, min_effect=min_effect
    )
    click.echo(f"baseline {old} ({baseline.created_at}) -> {new} ({current.created_at})")
    click.echo(render_comparison(comparisons, baseline, current), nl=False)
    regressed = any(c.verdict == "regressed" for c in comparisons)
    sys.exit(EXIT_FINDING if regressed else EXIT_OK)
