"""What the reports show, independent of how: the rows of each table, already worded.

The Markdown and HTML renderers lay these out in their own syntax, so both always show the
same figures, tiers and notes. Values here are plain text; escaping is the renderer's job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from uowstress.report import formatting as fmt
from uowstress.report.compare import shown_value
from uowstress.report.history import database_id, scenario_name
from uowstress.report.model import (
    Distribution,
    IndexCheck,
    IsolationCell,
    IsolationMatrix,
    Judged,
    MachineRun,
    Report,
    ScenarioResult,
)

__all__ = [
    "IsolationTable",
    "MetricRow",
    "StepTable",
    "SuiteRow",
    "distribution_rows",
    "full_scans",
    "isolation_steps",
    "isolation_tables",
    "machine_details",
    "machine_label",
    "machine_rows",
    "machine_step_rows",
    "metric_rows",
    "scenario_label",
    "suite_rows",
    "tier_counts",
]

STATUSES = ("passed", "failed", "error", "skipped")


@dataclass(frozen=True)
class MetricRow:
    """One measured figure of a scenario, with its tier when the figure is judged."""

    label: str
    value: str
    tier: str | None = None
    note: str = ""  # the verdict's sentence, or what the figure means


@dataclass
class SuiteRow:
    suite: str
    backend: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def scenario_label(result: ScenarioResult) -> str:
    """``basic_transaction_performance on sqlite``; ``hot_rows[10] on sqlite`` with
    parameters; ``... on postgresql1`` on a run's second database of one backend."""
    return f"{scenario_name(result)} on {database_id(result)}"


def suite_rows(report: Report) -> list[SuiteRow]:
    """Scenario outcomes per suite and backend, in the order the run met them."""
    rows: dict[tuple[str, str], SuiteRow] = {}
    for result in report.scenarios:
        where = database_id(result)  # two databases of one backend: two rows
        row = rows.setdefault((result.suite, where), SuiteRow(result.suite, where))
        row.counts[result.status] = row.counts.get(result.status, 0) + 1
        row.seconds += result.seconds
    return list(rows.values())


def tier_counts(report: Report) -> dict[str, int]:
    """How many judged figures fell in each tier, over scenarios and machines."""
    counts = {"optimal": 0, "ok": 0, "warning": 0, "critical": 0}
    verdicts = [v for s in report.scenarios for v in s.verdicts]
    verdicts += [v for m in report.machines for v in m.verdicts]
    for judged in verdicts:
        counts[judged.tier] += 1
    return counts


_SEVERITY = {"optimal": 0, "ok": 1, "warning": 2, "critical": 3}


def _verdicts(verdicts: Iterable[Judged]) -> dict[str, Judged]:
    """The worst verdict of each metric (a machine has one step_p95_s per step): the figure a
    row of its own shows is judged by it."""
    worst: dict[str, Judged] = {}
    for judged in verdicts:
        held = worst.get(judged.metric)
        if held is None or _SEVERITY[judged.tier] > _SEVERITY[held.tier]:
            worst[judged.metric] = judged
    return worst


def _other_verdicts(verdicts: Sequence[Judged], shown: set[str]) -> list[MetricRow]:
    """A row for every verdict of a metric no row above shows, each one (the JSON's every
    verdict), the worst first."""
    rest = [v for v in verdicts if v.metric not in shown]
    rest.sort(key=lambda v: -_SEVERITY[v.tier])  # stable: equal tiers keep their order
    return [_judged_row(v.metric, shown_value(v.metric, v.value), v) for v in rest]


def _judged_row(label: str, value: str, judged: Judged | None, note: str = "") -> MetricRow:
    if judged is None:
        return MetricRow(label, value, None, note)
    return MetricRow(label, value, judged.tier, judged.message)


def distribution_rows(
    dist: Distribution, verdicts: Mapping[str, Judged] | None = None
) -> list[MetricRow]:
    verdicts = verdicts or {}
    return [
        MetricRow("transactions timed", fmt.count(dist.count)),
        _judged_row("avg", fmt.duration(dist.mean), verdicts.get("avg_transaction_s")),
        MetricRow("p50", fmt.duration(dist.p50)),
        MetricRow("p95", fmt.duration(dist.p95)),
        MetricRow("p99", fmt.duration(dist.p99)),
        MetricRow("max", fmt.duration(dist.max)),
        MetricRow("min / stdev", f"{fmt.duration(dist.min)} / {fmt.duration(dist.stdev)}"),
    ]


# Pool counters shown, with what they mean; the others stay in the JSON.
_POOL_ROWS: tuple[tuple[str, str, str], ...] = (
    ("efficiency", "pool efficiency", "checkouts per connection opened (reuse)"),
    ("waits", "pool waits", "checkouts that waited for a free connection"),
    ("timeouts", "pool timeouts", "checkouts that gave up waiting"),
    ("peak_checked_out", "connections out at once (peak)", ""),
    ("peak_overflow", "pool overflow (peak)", "connections beyond pool_size"),
    ("acquire_p95_s", "connection acquire p95", ""),
    ("acquire_max_s", "connection acquire max", ""),
)


def metric_rows(result: ScenarioResult) -> list[MetricRow]:
    """Every figure of a scenario, judged ones with their tier, in reading order."""
    verdicts = _verdicts(result.verdicts)
    shown: set[str] = set()
    rows: list[MetricRow] = []
    if result.transactions.total:
        t = result.transactions
        rows.append(
            MetricRow(
                "transactions",
                f"{fmt.count(t.total)} ({fmt.count(t.committed)} committed)",
            )
        )
    if result.latency is not None:
        rows += distribution_rows(result.latency, verdicts)
        shown.add("avg_transaction_s")
    if result.ops_per_second is not None:
        rows.append(MetricRow("throughput", f"{fmt.number(result.ops_per_second)} ops/s"))
    if result.transactions.total:
        t = result.transactions
        rows.append(
            _judged_row(
                "success rate",
                fmt.percent(t.success_rate),
                verdicts.get("success_rate"),
                "committed transactions / transactions",
            )
        )
        shown.add("success_rate")
        rows.append(MetricRow("error rate", fmt.percent(t.error_rate), None, "final outcome"))
    if result.attempts.total:
        a = result.attempts
        retries = a.total - result.transactions.total if result.transactions.total else None
        rows.append(
            MetricRow(
                "attempts",
                fmt.count(a.total)
                + (f" ({fmt.count(retries)} retries)" if retries is not None else ""),
            )
        )
        own = (
            f"; {fmt.count(a.system_conflicts)} of {fmt.count(a.conflicts)} raised by the system"
            " itself (no database error behind them)"
            if a.system_conflicts
            else ""
        )
        rows.append(
            MetricRow("conflict rate", fmt.percent(a.conflict_rate), None, f"of attempts{own}")
        )
        rows.append(
            _judged_row(
                "deadlock rate",
                fmt.percent(a.deadlock_rate),
                verdicts.get("deadlock_rate"),
                "of attempts",
            )
        )
        shown.add("deadlock_rate")
    if result.memory is not None:
        m = result.memory
        rows.append(
            _judged_row(
                "memory peak", fmt.megabytes(m.peak_mb), verdicts.get("memory_mb"), "resident"
            )
        )
        shown.add("memory_mb")
        rows.append(MetricRow("memory growth", fmt.megabytes(m.growth_mb), None, "last - first"))
        if m.python_peak_mb is not None:
            rows.append(MetricRow("Python heap peak", fmt.megabytes(m.python_peak_mb)))
    if result.cpu_seconds is not None:
        util = (
            f" ({fmt.percent(result.cpu_utilisation, 0)} of one core)"
            if result.cpu_utilisation is not None
            else ""
        )
        rows.append(MetricRow("CPU", fmt.duration(result.cpu_seconds) + util))
    if result.open_fds_before is not None and result.open_fds_after is not None:
        rows.append(
            MetricRow(
                "open file descriptors",
                f"{result.open_fds_before} → {result.open_fds_after}",
                None,
                "before → after",
            )
        )
    for key, label, note in _POOL_ROWS:
        if key in result.pool:
            value = result.pool[key]
            text = fmt.duration(value) if key.endswith("_s") else fmt.number(value)
            rows.append(MetricRow(label, text, None, note))
    if result.index_use:
        scans = full_scans(result)
        rows.append(
            MetricRow(
                "index use",
                f"{len(result.index_use)} statements explained, {len(scans)} full scans",
                "warning" if scans else None,
                "; ".join(f"{s.query}: {', '.join(s.full_scan_tables)}" for s in scans),
            )
        )
    if result.checks:
        passed = sum(c.passed for c in result.checks)
        rows.append(
            MetricRow(
                "checks",
                f"{passed} of {len(result.checks)} passed",
                None if passed == len(result.checks) else "critical",
            )
        )
    for name, value in result.metrics.items():
        text = fmt.duration(value) if name.endswith("_s") else fmt.number(value)
        rows.append(MetricRow(name, text, None, "scenario-specific"))
    # A judged metric this list does not know yet still shows, with its tier.
    rows += _other_verdicts(result.verdicts, shown)
    return rows


def full_scans(result: ScenarioResult) -> list[IndexCheck]:
    return [check for check in result.index_use if check.full_scan]


def machine_details(run: MachineRun) -> str:
    """``, 3 sessions, shard 2 of 2``: what tells a run from the others of its machine and
    backend (the shards of one exploration would otherwise read as duplicates)."""
    details = f", {run.sessions} sessions" if run.machine == "sessions" else ""
    if run.shard is not None and run.shards is not None:
        details += f", shard {run.shard + 1} of {run.shards}"
    return details


def machine_label(run: MachineRun) -> str:
    """``sessions machine, 3 sessions, shard 2 of 2``."""
    return f"{run.machine} machine{machine_details(run)}"


def machine_rows(run: MachineRun) -> list[MetricRow]:
    verdicts = _verdicts(run.verdicts)
    rows = [
        MetricRow("examples", fmt.count(run.examples)),
        MetricRow("time", fmt.duration(run.seconds)),
    ]
    if run.example_memory_mb:
        rows.append(
            _judged_row(
                "memory per example (max)",
                fmt.megabytes(max(run.example_memory_mb)),
                verdicts.get("example_memory_mb"),
            )
        )
    if run.fault_counts:
        rows.append(
            MetricRow(
                "faults injected",
                ", ".join(f"{k}: {v}" for k, v in sorted(run.fault_counts.items())),
            )
        )
    if run.anomaly_checks is not None:
        rows.append(
            MetricRow(
                "histories checked for anomalies",
                fmt.count(run.anomaly_checks),
                None,
                "histories of units of work the anomaly checker judged (none without the"
                " target's footprints)",
            )
        )
    if run.permitted_anomalies:
        rows.append(
            MetricRow(
                "anomalies the guarantee permits",
                ", ".join(f"{k}: {v}" for k, v in sorted(run.permitted_anomalies.items())),
            )
        )
    # Every step's budgets, each its own row: the worst alone would hide the other steps.
    rows += _other_verdicts(run.verdicts, {"example_memory_mb"})
    return rows


def machine_step_rows(run: MachineRun) -> list[tuple[str, Distribution]]:
    """Per-step timings, slowest p95 first."""
    return sorted(run.step_latency.items(), key=lambda item: -item[1].p95)


@dataclass(frozen=True)
class IsolationTable:
    backend: str
    server_version: str
    levels: list[str]
    anomalies: list[str]
    cells: dict[tuple[str, str], IsolationCell]

    def cell(self, level: str, anomaly: str) -> IsolationCell | None:
        return self.cells.get((level, anomaly))


def isolation_tables(report: Report) -> list[IsolationTable]:
    tables = []
    for matrix in report.isolation:
        tables.append(_isolation_table(matrix))
    return tables


def _isolation_table(matrix: IsolationMatrix) -> IsolationTable:
    levels = list(dict.fromkeys(c.level for c in matrix.results))
    anomalies = list(dict.fromkeys(c.anomaly for c in matrix.results))
    return IsolationTable(
        backend=matrix.backend,
        server_version=matrix.server_version,
        levels=levels,
        anomalies=anomalies,
        cells={(c.level, c.anomaly): c for c in matrix.results},
    )


@dataclass(frozen=True)
class StepTable:
    """Steps in the order they ran, one column per session: row i has one non-empty cell."""

    sessions: int
    rows: list[list[str]]


# More sessions than this in a reproducer is a malformed file, shown as JSON rather than as a
# table that wide.
_MAX_SESSIONS = 16


def _describe(step: Any) -> tuple[int, str]:
    """(session, words) of an isolation step; anything unexpected shown as its JSON."""
    session = step.get("session") if isinstance(step, Mapping) else None
    if isinstance(session, int) and 0 <= session < _MAX_SESSIONS:
        from uowstress.stateful.registers import describe_step

        return session, describe_step(step)
    return 0, json.dumps(step, sort_keys=True, default=str)


def isolation_steps(reproducer: Sequence[Any]) -> StepTable:
    described = [_describe(step) for step in reproducer]
    sessions = 1 + max((s for s, _ in described), default=0)
    rows = []
    for session, words in described:
        row = [""] * sessions
        row[session] = words
        rows.append(row)
    return StepTable(sessions, rows)
