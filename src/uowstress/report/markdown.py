"""The report as Markdown: what a team reads the morning after the nightly run.

Order: the verdict, what kept the run from its end (errors), the machine and the suites, then
what needs attention (findings, regressions, recommendations, insights), then every scenario's
figures, the state machines, durability and the isolation matrices. Text that comes from the
system under test or the user (error messages, step lines, statements, option values) is
escaped or fenced, so that it shows as written and cannot turn into markup or links.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from uowstress.report import formatting as fmt
from uowstress.report import views
from uowstress.report.history import database_id, scenario_name
from uowstress.report.model import (
    DurabilityRun,
    Finding,
    MachineRun,
    Regression,
    Report,
    ScenarioResult,
)

__all__ = ["code", "code_block", "render_markdown", "text"]

_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
# What starts a heading, list or quote when it opens a line.
_LINE_START = re.compile(r"^([#+=-])(?=[\s#=-]|$)")
_ORDERED = re.compile(r"^(\d+)([.)])(?=\s|$)")
_TIER_MARK = {
    "optimal": "optimal",
    "ok": "ok",
    "warning": "**warning**",
    "critical": "**CRITICAL**",
}


def text(value: object) -> str:
    """Plain text safe anywhere in Markdown, table cells included: no markup, no HTML, one
    line."""
    flat = " ".join(str(value).split())
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    flat = _LINE_START.sub(r"\\\1", _SPECIAL.sub(r"\\\1", flat))
    return _ORDERED.sub(r"\1\\\2", flat)


def code(value: object, *, cell: bool = True) -> str:
    """An inline code span holding ``value`` verbatim (one line). In a table cell (`cell`) a
    pipe is escaped, which the table reads before the span; elsewhere the backslash would
    stay in the span, and a copied command or path would be wrong."""
    flat = " ".join(str(value).split())
    if cell:
        flat = flat.replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") or not flat else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def code_block(lines: Iterable[str], language: str = "text") -> str:
    """A fenced block holding ``lines`` verbatim: the fence is longer than any backtick run."""
    body = "\n".join(lines)
    longest = max((len(run) for run in re.findall(r"`{3,}", body)), default=2)
    fence = "`" * (longest + 1)
    return f"{fence}{language}\n{body}\n{fence}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _tier(tier: str | None) -> str:
    return _TIER_MARK.get(tier or "", "")


def render_markdown(report: Report) -> str:
    out: list[str] = []
    out += _header(report)
    out += _errors(report)
    out += _system(report)
    out += _summary(report)
    out += _findings(report)
    out += _regressions(report)
    out += _recommendations(report)
    out += _insights(report)
    out += _scenarios(report)
    out += _machines(report)
    out += _durability(report)
    out += _isolation(report)
    return "\n".join(out).rstrip() + "\n"


def _header(report: Report) -> list[str]:
    s = report.summary
    scenario_counts = ", ".join(f"{n} {status}" for status, n in s.scenarios.items() if n)
    machine_counts = ", ".join(f"{n} {status}" for status, n in s.machines.items() if n)
    durability_counts = ", ".join(f"{n} {status}" for status, n in s.durability.items() if n)
    return [
        f"# uowstress report: {s.status.upper()}",
        "",
        f"{text(report.created_at)}, profile {text(report.options.profile)}, target"
        f" {code(report.options.target, cell=False)}, {fmt.duration(s.seconds)}, exit status"
        f" {s.exit_status}.",
        "",
        f"- scenarios: {scenario_counts or 'none'}",
        f"- state-machine runs: {machine_counts or 'none'}",
        f"- durability checks: {durability_counts or 'none'}",
        f"- findings: {s.findings}; critical figures: {s.critical}; warnings: {s.warnings};"
        f" regressions: {s.regressions}",
        "",
        f"Command: {code(report.command, cell=False)}",
        "",
    ]


def _errors(report: Report) -> list[str]:
    failed = []
    if report.summary.failed_tests:
        failed = [
            "## Failed tests",
            "",
            "Tests of the suites that failed outside any scenario or state machine:",
            "",
            *(f"- {text(said)}" for said in report.summary.failed_tests),
            "",
        ]
    if report.summary.left_undone:
        failed += [
            "## Left undone",
            "",
            "What the run changed and could not put back as it was, and what to run:",
            "",
            *(f"- {text(undone)}" for undone in report.summary.left_undone),
            "",
        ]
    if not report.summary.errors:
        return failed
    return [
        *failed,
        "## Errors",
        "",
        "Part of the run could not go to its end; its results are missing or incomplete:",
        "",
        *(f"- {text(error)}" for error in report.summary.errors),
        "",
    ]


def _system(report: Report) -> list[str]:
    sysinfo = report.system
    rows = [
        ("host", text(sysinfo.hostname)),
        ("OS", text(sysinfo.os)),
        ("CPU", f"{text(sysinfo.cpu)} ({sysinfo.cpu_count} logical cores)"),
        ("memory", f"{sysinfo.memory_gb:.1f} GB"),
        ("Python", text(sysinfo.python)),
        ("SQLAlchemy", text(sysinfo.sqlalchemy)),
        ("Hypothesis", text(sysinfo.hypothesis)),
        ("uowstress", text(sysinfo.uowstress)),
    ]
    rows += [
        (f"database ({text(db.backend)})", f"{text(db.server_version)}, {code(db.database)}")
        for db in sysinfo.databases
    ]
    options = report.options
    rows += [
        (
            "target options",
            ", ".join(code(f"{k}={v}") for k, v in options.target_options.items()) or "none",
        ),
        ("configuration", code(options.config) if options.config else "built-in defaults"),
        (
            "tests",
            f"{code(options.path or '.')} matching {code(options.pattern)}, "
            f"{options.workers} worker(s)",
        ),
    ]
    if options.seed is not None:
        rows.append(
            ("seed", f"{options.seed} ({code(f'--seed {options.seed}')} draws the same again)")
        )
    if options.baseline:
        rows.append(("baseline", code(options.baseline)))
    return ["## System", "", *_table(("", ""), rows), ""]


def _summary(report: Report) -> list[str]:
    out = ["## Suites", ""]
    rows = views.suite_rows(report)
    if rows:
        out += _table(
            ("suite", "backend", "passed", "failed", "error", "skipped", "time"),
            (
                (
                    text(r.suite),
                    text(r.backend),
                    *(str(r.counts.get(s, 0)) for s in views.STATUSES),
                    fmt.duration(r.seconds),
                )
                for r in rows
            ),
        )
    else:
        out.append("No performance scenario ran.")
    if report.machines or report.durability:
        out += ["", "State machines and durability:", ""]
        out += _table(
            ("run", "backend", "status", "examples / kills", "time"),
            [
                (
                    text(views.machine_label(m)),
                    text(m.backend),
                    _status(m.status),
                    fmt.count(m.examples),
                    fmt.duration(m.seconds),
                )
                for m in report.machines
            ]
            + [
                (
                    "durability",
                    text(d.backend),
                    _status(d.status),
                    fmt.count(d.kills),
                    fmt.duration(d.seconds),
                )
                for d in report.durability
            ],
        )
    return [*out, ""]


def _status(status: str) -> str:
    return status if status in ("passed", "skipped") else f"**{status.upper()}**"


def _findings(report: Report) -> list[str]:
    if not report.findings:
        return []
    out = [f"## Findings ({len(report.findings)})", ""]
    for number, finding in enumerate(report.findings, 1):
        out += _finding(number, finding)
    return out


def _finding(number: int, finding: Finding) -> list[str]:
    anomaly = f" ({text(finding.anomaly)})" if finding.anomaly else ""
    out = [
        f"### {number}. {text(finding.kind)}{anomaly}: {text(finding.source)}",
        "",
        text(finding.message),
        "",
    ]
    if finding.explanation:
        out += [text(finding.explanation), ""]
    steps = sum(len(s) for s in finding.steps_by_session)
    if finding.steps_by_session:
        shrunk = (
            ""
            if finding.shrunk_from is None
            else ", not shrunk"
            if finding.shrunk_from <= steps
            else f", shrunk from {finding.shrunk_from}"
        )
        out += [f"Steps: {steps}{shrunk}.", ""]
        # Each line carries its number in the whole sequence, the one the message names.
        for session, lines in zip(finding.session_labels(), finding.steps_by_session, strict=True):
            out += [f"Session {session}:", ""]
            out += [code_block(lines), ""]
    if finding.replay_command:
        out += ["Replay:", "", code_block([finding.replay_command], "bash"), ""]
    if finding.reproducer_path:
        out += [f"Reproducer: {code(finding.reproducer_path, cell=False)}", ""]
    return out


def _regressions(report: Report) -> list[str]:
    if not report.regressions and not report.options.baseline:
        return []
    out = ["## Against the baseline", ""]
    if report.options.baseline:
        out += [f"Baseline: {code(report.options.baseline, cell=False)}.", ""]
    if report.summary.compared == 0:
        return [*out, _NOTHING_COMPARED, ""]
    if not report.regressions:
        return [*out, "No significant change.", ""]
    out += _regression_table(report.regressions)
    out += [
        "",
        "Latency is compared on the transaction times with a Mann-Whitney U test (p) and"
        " Cliff's delta (effect); throughput and memory are single figures, shown by their"
        " relative change only.",
        "",
    ]
    return out


_NOTHING_COMPARED = (
    "**Nothing to compare**: no scenario has figures in both this run and the baseline, so"
    " nothing was judged against it. A baseline of other scenarios or another backend judges"
    " nothing: compare runs of the same scenarios on the same backend."
)


def _regression_table(regressions: Sequence[Regression]) -> list[str]:
    return _table(
        ("scenario", "metric", "baseline", "now", "worse by", "p", "effect", "verdict"),
        (
            (
                text(r.scenario),
                text(r.metric),
                fmt.number(r.baseline),
                fmt.number(r.current),
                fmt.signed_percent(r.change),
                "n/a" if r.p_value is None else f"{r.p_value:.2g}",
                "n/a" if r.effect_size is None else f"{r.effect_size:+.2f}",
                "**regressed**" if r.regressed else ("improved" if r.change < 0 else "changed"),
            )
            for r in regressions
        ),
    )


def _recommendations(report: Report) -> list[str]:
    if not report.recommendations:
        return []
    out = ["## Recommendations", ""]
    for rec in report.recommendations:
        where = f" in {code(rec.scenario, cell=False)}" if rec.scenario else ""
        out.append(
            f"- {text(rec.text)} (measured: {code(rec.metric, cell=False)} ="
            f" {fmt.number(rec.value)}{where})"
        )
    return [*out, ""]


def _insights(report: Report) -> list[str]:
    if not report.insights:
        return []
    out = ["## Insights", ""]
    for insight in report.insights:
        out.append(f"- **{text(insight.title)}**: {text(insight.text)}")
    return [*out, ""]


def _scenarios(report: Report) -> list[str]:
    if not report.scenarios:
        return []
    out = ["## Scenario results", ""]
    for result in report.scenarios:
        out += _scenario(result)
    return out


def _scenario(result: ScenarioResult) -> list[str]:
    out = [
        f"### {text(result.suite)} / {text(scenario_name(result))} on {text(database_id(result))}:"
        f" {_status(result.status)}",
        "",
    ]
    if result.description:
        out += [text(result.description), ""]
    facts = [f"database {code(result.database, cell=False)}"]
    if result.server_version:
        facts.append(text(result.server_version))
    facts.append(f"{result.threads} thread{'s' if result.threads != 1 else ''}")
    facts.append(f"{fmt.duration(result.seconds)}")
    out += [", ".join(facts) + ".", ""]
    if result.message:
        out += ["Why it did not pass:", "", code_block([result.message]), ""]
    if result.workload:
        out += [
            "Workload: "
            + ", ".join(code(f"{k}={v}", cell=False) for k, v in result.workload.items()),
            "",
        ]
    rows = views.metric_rows(result)
    if rows:
        out += _table(
            ("metric", "value", "tier", "note"),
            ((text(r.label), text(r.value), _tier(r.tier), text(r.note)) for r in rows),
        )
    else:
        out.append("No figures were measured.")
    out.append("")
    if result.checks:
        out += ["Checks:", ""]
        out += _table(
            ("check", "result", "detail"),
            (
                (text(c.name), "passed" if c.passed else "**FAILED**", text(c.detail))
                for c in result.checks
            ),
        )
        out.append("")
    if result.errors:
        out += ["Errors by kind:", ""]
        out += _table(
            ("kind", "count"),
            ((code(kind), fmt.count(n)) for kind, n in sorted(result.errors.items())),
        )
        out.append("")
    if result.scalability:
        out += ["Throughput by threads:", ""]
        out += _table(
            ("threads", "ops/s", "efficiency"),
            (
                (str(p.threads), fmt.number(p.ops_per_second), fmt.percent(p.efficiency, 0))
                for p in result.scalability
            ),
        )
        out.append("")
    scans = views.full_scans(result)
    if result.index_use:
        out += [
            f"Index use: {len(scans)} of {len(result.index_use)} statements read a table"
            " without an index" + (" (**full scans**):" if scans else "."),
            "",
        ]
        if scans:
            out += _table(
                ("query", "tables scanned", "statement"),
                (
                    (text(s.query), text(", ".join(s.full_scan_tables)), code(s.statement))
                    for s in scans
                ),
            )
            out.append("")
    if result.queries:
        out += ["Slowest statements (by total time):", ""]
        out += _table(
            ("statement", "count", "mean", "p95", "max", "total"),
            (
                (
                    code(fmt.shortened(q.statement, 160)),
                    fmt.count(q.count),
                    fmt.duration(q.mean_s),
                    fmt.duration(q.p95_s),
                    fmt.duration(q.max_s),
                    fmt.duration(q.total_s),
                )
                for q in result.queries[:5]
            ),
        )
        out.append("")
    return out


def _machines(report: Report) -> list[str]:
    if not report.machines:
        return []
    out = ["## State machines", ""]
    for run in report.machines:
        out += _machine(run)
    return out


def _machine(run: MachineRun) -> list[str]:
    details = text(views.machine_details(run))
    out = [
        f"### {text(run.machine)} machine on {text(run.backend)}{details}: {_status(run.status)}",
        "",
        f"Database {code(run.database, cell=False)}"
        + (f" ({text(run.server_version)})" if run.server_version else "")
        + f", profile {text(run.profile)}"
        + (f", seed {run.seed}" if run.seed is not None else "")
        + (
            ", target options "
            + ", ".join(code(f"{k}={v}", cell=False) for k, v in run.target_options.items())
            if run.target_options
            else ""
        )
        + ".",
        "",
    ]
    if run.error:
        out += ["The run could not complete:", "", code_block([run.error]), ""]
    if run.finding:
        out += [
            f"Finding: {text(run.finding.kind)}: {text(run.finding.message)} (see Findings).",
            "",
        ]
    for said in run.warnings:
        out += [f"**Warning**: {text(said)}", ""]
    out += _table(
        ("metric", "value", "tier", "note"),
        (
            (text(r.label), text(r.value), _tier(r.tier), text(r.note))
            for r in views.machine_rows(run)
        ),
    )
    out.append("")
    steps = views.machine_step_rows(run)
    if steps:
        out += ["Step times:", ""]
        out += _table(
            ("step", "count", "p50", "p95", "p99", "max"),
            (
                (
                    code(name),
                    fmt.count(d.count),
                    fmt.duration(d.p50),
                    fmt.duration(d.p95),
                    fmt.duration(d.p99),
                    fmt.duration(d.max),
                )
                for name, d in steps
            ),
        )
        out.append("")
    return out


def _durability(report: Report) -> list[str]:
    if not report.durability:
        return []
    out = ["## Durability", ""]
    for run in report.durability:
        out += _durability_run(run)
    return out


def _durability_run(run: DurabilityRun) -> list[str]:
    out = [
        f"### Durability on {text(run.backend)}: {_status(run.status)}",
        "",
        f"{fmt.counted(run.kills, 'SIGKILL')} ({fmt.count(run.kills_in_commit)} during a commit),"
        f" {fmt.counted(run.commits_acknowledged, 'acknowledged commit')},"
        f" {fmt.duration(run.seconds)};"
        f" database {code(run.database, cell=False)}"
        + (f"; seed {run.seed}" if run.seed is not None else "")
        + ".",
        "",
    ]
    if run.error:
        out += ["The run could not complete:", "", code_block([run.error]), ""]
    elif run.status == "passed":
        out += ["Every acknowledged commit survived; nothing unacknowledged was half there.", ""]
    for finding in run.findings:
        out.append(f"- {text(finding.kind)}: {text(finding.message)}")
    return out if not run.findings else [*out, ""]


def _isolation(report: Report) -> list[str]:
    tables = views.isolation_tables(report)
    if not tables:
        return []
    out = [
        "## Isolation anomalies",
        "",
        '"observed": the server produced a history showing the anomaly (steps below);'
        ' "—": not observed in the examples tried, which proves nothing about its absence.',
        "",
    ]
    for table in tables:
        out += [f"### {text(table.backend)} ({text(table.server_version)})", ""]
        out += _table(
            ("level", *(text(a) for a in table.anomalies)),
            (
                (
                    text(level),
                    *(
                        "observed" if (c := table.cell(level, a)) and c.observed else "—"
                        for a in table.anomalies
                    ),
                )
                for level in table.levels
            ),
        )
        out.append("")
        for cell in table.cells.values():
            if not (cell.observed and cell.reproducer):
                continue
            steps = views.isolation_steps(cell.reproducer)
            out += [
                f"{text(cell.anomaly)} at {text(cell.level)} (example {cell.examples},"
                f" {fmt.duration(cell.seconds)}):",
                "",
            ]
            out += _table(
                ("#", *(f"session {s}" for s in range(steps.sessions))),
                (
                    (str(i), *(code(c) if c else "" for c in row))
                    for i, row in enumerate(steps.rows, 1)
                ),
            )
            out.append("")
    return out
