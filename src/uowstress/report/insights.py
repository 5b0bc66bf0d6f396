"""What the figures say: insights (observations, with their figures) and recommendations (what
to do, each tied to the one measured figure that triggered it).

Every rule reads a figure of the report and compares it with a trigger below; nothing is said
without a figure beyond its trigger. The triggers are deliberately plain numbers, named here,
so a reader can see why a sentence appeared.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import numpy as np

from uowstress.report import formatting as fmt
from uowstress.report.history import database_id, scenario_name
from uowstress.report.model import Insight, Outcomes, Recommendation, Report, ScenarioResult

__all__ = [
    "CONFLICT_RATE",
    "DEADLOCK_RATE",
    "ERROR_RATE",
    "FD_GROWTH",
    "LOW_EFFICIENCY",
    "MEMORY_GROWTH_MB",
    "MIN_OUTLIERS",
    "MIN_SAMPLES",
    "OUTLIER_SHARE",
    "POOL_WAIT_SHARE",
    "SKEW_RATIO",
    "SKEW_RECOMMEND",
    "SUCCESS_RATE",
    "insights",
    "outliers",
    "recommendations",
]

#: Fewer transaction times than this say nothing about a distribution's shape.
MIN_SAMPLES: Final = 20
#: p99 / p50 from which the tail is called long (insight) ...
SKEW_RATIO: Final = 5.0
#: ... and from which it is worth chasing (recommendation).
SKEW_RECOMMEND: Final = 10.0
#: Share of transactions beyond p75 + 3 IQR (far outliers) worth mentioning.
OUTLIER_SHARE: Final = 0.01
#: ... and at least this many of them (one slow transaction in a hundred is not a pattern).
MIN_OUTLIERS: Final = 3
#: Scalability efficiency at the most threads below which threads mostly wait.
LOW_EFFICIENCY: Final = 0.5
#: Resident memory growth over one scenario worth a look.
MEMORY_GROWTH_MB: Final = 50.0
#: Committed transactions / transactions below which the load mostly fails.
SUCCESS_RATE: Final = 0.80
#: Conflicting attempts / attempts worth acting on even when retries saved the work.
CONFLICT_RATE: Final = 0.10
#: Deadlocked attempts / attempts worth acting on.
DEADLOCK_RATE: Final = 0.01
#: Transactions ending in an error (neither conflict nor deadlock) / transactions.
ERROR_RATE: Final = 0.01
#: Checkouts that waited for a free connection / checkouts.
POOL_WAIT_SHARE: Final = 0.05
#: File descriptors still open after a scenario beyond those open before it and those of the
#: connections its pool holds.
FD_GROWTH: Final = 5
FDS_PER_CONNECTION: Final = 3

_EXCLUDED = ("skipped",)


def _measured(report: Report) -> Iterator[ScenarioResult]:
    return (s for s in report.scenarios if s.status not in _EXCLUDED)


def _name(result: ScenarioResult) -> str:
    return f"{scenario_name(result)} on {database_id(result)}"


def outliers(samples: list[float]) -> tuple[int, float]:
    """(count, limit): samples beyond ``p75 + 3 IQR``, Tukey's far-out fence."""
    values = np.asarray(samples, dtype=float)
    q1, q3 = np.percentile(values, [25, 75])
    limit = float(q3 + 3 * (q3 - q1))
    return int((values > limit).sum()), limit


def _under(result: ScenarioResult) -> str:
    """`` under 10 concurrent threads``, or nothing when the figure is not one thread count's."""
    n = result.threads
    return f" under {n} concurrent threads" if n > 1 else ""


# --------------------------------------------------------------------------- insights


def insights(report: Report) -> list[Insight]:
    """Observations about the run, each with the figures behind it."""
    found: list[Insight] = []
    for result in _measured(report):
        found += _distribution_insights(result)
        found += _scalability_insights(result)
        found += _contention_insights(result)
        found += _resource_insights(result)
    return found


def _distribution_insights(result: ScenarioResult) -> list[Insight]:
    out: list[Insight] = []
    dist = result.latency
    samples = result.latency_samples
    if dist is None or len(samples) < MIN_SAMPLES:
        return out
    if dist.p50 > 0 and dist.p99 / dist.p50 >= SKEW_RATIO:
        out.append(
            Insight(
                title="Long tail",
                text=f"{_name(result)}: p99 is {fmt.ratio(dist.p99 / dist.p50)} p50"
                f" (p50 {fmt.duration(dist.p50)}, p99 {fmt.duration(dist.p99)},"
                f" max {fmt.duration(dist.max)}).",
                scenario=result.id,
            )
        )
    far, limit = outliers(samples)
    if far >= MIN_OUTLIERS and far / len(samples) >= OUTLIER_SHARE:
        out.append(
            Insight(
                title="Outliers",
                text=f"{_name(result)}: {far} of {len(samples)} transactions"
                f" ({fmt.percent(far / len(samples))}) took longer than {fmt.duration(limit)}"
                " (p75 + 3 IQR).",
                scenario=result.id,
            )
        )
    return out


def _scalability_insights(result: ScenarioResult) -> list[Insight]:
    points = sorted(result.scalability, key=lambda p: p.threads)
    single = next((p for p in points if p.threads == 1), None)
    if single is None or len(points) < 2 or single.ops_per_second <= 0:
        return []
    most = points[-1]
    best = max(points, key=lambda p: p.ops_per_second)
    text = (
        f"{_name(result)}: {most.threads} threads give"
        f" {fmt.ratio(most.ops_per_second / single.ops_per_second)} the throughput of 1:"
        f" {fmt.percent(most.efficiency, 0)} efficiency"
        f" ({fmt.number(single.ops_per_second)} to {fmt.number(most.ops_per_second)} ops/s)."
    )
    if best.threads != most.threads:
        text += (
            f" Throughput peaks at {fmt.counted(best.threads, 'thread')}"
            f" ({fmt.number(best.ops_per_second)} ops/s)."
        )
    return [Insight(title="Scalability", text=text, scenario=result.id)]


def _by_whom(a: Outcomes) -> str:
    if a.system_conflicts == a.conflicts:
        return "the system raised each itself (no database error behind it)"
    if a.system_conflicts == 0:
        return "the database refused each"
    return (
        f"the system raised {a.system_conflicts} itself (no database error behind them),"
        f" the database refused {a.conflicts - a.system_conflicts}"
    )


def _contention_insights(result: ScenarioResult) -> list[Insight]:
    out: list[Insight] = []
    a = result.attempts
    if a.total and a.conflict_rate >= CONFLICT_RATE:
        out.append(
            Insight(
                title="Conflicts",
                text=f"{_name(result)}: {a.conflicts} of {a.total} attempts conflicted"
                f" ({fmt.percent(a.conflict_rate)}){_under(result)}; {_by_whom(a)}.",
                scenario=result.id,
            )
        )
    if a.total and a.deadlock_rate >= DEADLOCK_RATE:
        out.append(
            Insight(
                title="Deadlocks",
                text=f"{_name(result)}: {a.deadlocks} of {a.total} attempts deadlocked"
                f" ({fmt.percent(a.deadlock_rate)}).",
                scenario=result.id,
            )
        )
    t = result.transactions
    if t.total and t.error_rate >= ERROR_RATE:
        kinds = ", ".join(
            f"{k}: {n}" for k, n in sorted(result.errors.items(), key=lambda i: -i[1])
        )
        out.append(
            Insight(
                title="Errors",
                text=f"{_name(result)}: {t.errors} of {t.total} transactions ended in an error"
                f" ({fmt.percent(t.error_rate)})" + (f"; by kind: {kinds}." if kinds else "."),
                scenario=result.id,
            )
        )
    return out


def _resource_insights(result: ScenarioResult) -> list[Insight]:
    out: list[Insight] = []
    memory = result.memory
    if memory is not None and memory.growth_mb >= MEMORY_GROWTH_MB:
        out.append(
            Insight(
                title="Memory growth",
                text=f"{_name(result)}: resident memory grew by {fmt.megabytes(memory.growth_mb)}"
                f" (peak {fmt.megabytes(memory.peak_mb)}).",
                scenario=result.id,
            )
        )
    for check in result.index_use:
        if check.full_scan:
            out.append(
                Insight(
                    title="Full table scan",
                    text=f"{_name(result)}: query {check.query} reads"
                    f" {', '.join(check.full_scan_tables) or 'a table'} row by row.",
                    scenario=result.id,
                )
            )
    share = _pool_wait_share(result)
    if share is not None and share >= POOL_WAIT_SHARE:
        out.append(
            Insight(
                title="Pool waits",
                text=f"{_name(result)}: {int(result.pool['waits'])} of"
                f" {int(result.pool['checkouts'])} checkouts waited for a connection"
                f" ({fmt.percent(share)}); acquire max"
                f" {fmt.duration(result.pool.get('acquire_max_s'))}.",
                scenario=result.id,
            )
        )
    return out


def _fds_beyond_pool(result: ScenarioResult) -> int | None:
    """Descriptors gained over the scenario that the pool's open connections do not explain
    (each may hold up to FDS_PER_CONNECTION: socket, or SQLite's file, journal and WAL)."""
    if result.open_fds_before is None or result.open_fds_after is None:
        return None
    pooled = max(0, int(result.pool.get("connects", 0) - result.pool.get("closes", 0)))
    return result.open_fds_after - result.open_fds_before - FDS_PER_CONNECTION * pooled


def _pool_wait_share(result: ScenarioResult) -> float | None:
    checkouts = result.pool.get("checkouts", 0.0)
    if checkouts <= 0 or "waits" not in result.pool:
        return None
    return result.pool["waits"] / checkouts


# --------------------------------------------------------------------------- recommendations


def recommendations(report: Report) -> list[Recommendation]:
    """What to do, each with the measured figure (metric, value, scenario) that triggered it."""
    out: list[Recommendation] = []
    for result in _measured(report):
        out += _contention_advice(result)
        out += _tail_advice(result)
        out += _scalability_advice(result)
        out += _resource_advice(result)
    return out


def _advice(result: ScenarioResult, metric: str, value: float, text: str) -> Recommendation:
    return Recommendation(text=text, metric=metric, value=value, scenario=result.id)


# What to do about conflicts the system raised itself (see OutcomeCounts.system_conflicts):
# no database refused anything, the writers did not queue for the aggregate they changed.
_SYSTEM_CONFLICTS_REMEDY = (
    "most were raised by the system itself, with no database error behind them (optimistic"
    " version checks: a unit of work loaded an aggregate that another committed first), so the"
    " work was redone: make writers of one aggregate queue for it instead (load it with a row"
    " lock, SELECT ... FOR UPDATE, or on SQLite begin IMMEDIATE before reading it), or spread"
    " the changes over more aggregates"
)


def _mostly_system_conflicts(result: ScenarioResult) -> bool:
    a = result.attempts
    return a.conflicts > 0 and 2 * a.system_conflicts >= a.conflicts + a.deadlocks


def _contention_advice(result: ScenarioResult) -> list[Recommendation]:
    out: list[Recommendation] = []
    t, a = result.transactions, result.attempts
    lock_trouble = a.conflicts + a.deadlocks > 0
    if t.total and t.success_rate < SUCCESS_RATE and lock_trouble:
        head = f"{_name(result)}: success rate {fmt.percent(t.success_rate)}{_under(result)}"
        if _mostly_system_conflicts(result):
            why = (
                f"{a.system_conflicts} of {a.conflicts} conflicts {_SYSTEM_CONFLICTS_REMEDY};"
                " or retry with more attempts."
            )
        elif result.backend == "sqlite":
            why = (
                "writers conflict on SQLite's single write lock; begin write transactions"
                " IMMEDIATE (they then queue on the busy timeout instead of failing on"
                " upgrade) or lower the writer count."
            )
        else:
            why = (
                "transactions conflict on shared rows; keep write transactions short, retry"
                " conflicts with backoff and more attempts, or split hot aggregates so that"
                " fewer writers touch the same rows."
            )
        out.append(_advice(result, "success_rate", t.success_rate, f"{head}: {why}"))
    elif a.total and a.conflict_rate >= CONFLICT_RATE:
        if _mostly_system_conflicts(result):
            remedy = _SYSTEM_CONFLICTS_REMEDY
        elif result.backend == "sqlite":
            remedy = (
                "the database refused them: begin write transactions IMMEDIATE so that writers"
                " queue for SQLite's write lock instead of failing and retrying"
            )
        else:
            remedy = (
                "the database refused them: shorten the transactions that write the shared"
                " aggregates, or serialise writers to them"
            )
        out.append(
            _advice(
                result,
                "conflict_rate",
                a.conflict_rate,
                f"{_name(result)}: {fmt.percent(a.conflict_rate)} of attempts conflicted;"
                f" retries saved the work but cost time: {remedy}.",
            )
        )
    if a.total and a.deadlock_rate >= DEADLOCK_RATE:
        out.append(
            _advice(
                result,
                "deadlock_rate",
                a.deadlock_rate,
                f"{_name(result)}: {fmt.percent(a.deadlock_rate)} of attempts deadlocked: take"
                " row locks in one order (sort the aggregates a transaction changes by key) and"
                " keep transactions that lock several rows short.",
            )
        )
    if t.total and t.error_rate >= ERROR_RATE:
        top = max(result.errors.items(), key=lambda i: i[1])[0] if result.errors else None
        kind = f" (most often {top})" if top else ""
        out.append(
            _advice(
                result,
                "error_rate",
                t.error_rate,
                f"{_name(result)}: {fmt.percent(t.error_rate)} of transactions ended in an"
                f" error{kind} that is neither a conflict nor a deadlock: read the scenario's"
                " errors by kind; these are failures of the system, not of contention.",
            )
        )
    return out


def _tail_advice(result: ScenarioResult) -> list[Recommendation]:
    dist = result.latency
    if dist is None or len(result.latency_samples) < MIN_SAMPLES or dist.p50 <= 0:
        return []
    skew = dist.p99 / dist.p50
    if skew < SKEW_RECOMMEND:
        return []
    slowest = max(result.queries, key=lambda q: q.max_s, default=None)
    where = (
        f"; the slowest statement took {fmt.duration(slowest.max_s)} at worst:"
        f" {fmt.shortened(slowest.statement, 120)}"
        if slowest is not None
        else ""
    )
    return [
        _advice(
            result,
            "p99/p50",
            skew,
            f"{_name(result)}: p99 is {fmt.ratio(skew)} p50 ({fmt.duration(dist.p99)} against"
            f" {fmt.duration(dist.p50)}): a few transactions wait far longer than the rest,"
            f" usually on locks, retries with backoff or the pool{where}. Look at those before"
            " tuning the average.",
        )
    ]


def _scalability_advice(result: ScenarioResult) -> list[Recommendation]:
    points = sorted(result.scalability, key=lambda p: p.threads)
    if len(points) < 2 or points[0].threads != 1:
        return []
    most = points[-1]
    if most.efficiency >= LOW_EFFICIENCY:
        return []
    best = max(points, key=lambda p: p.ops_per_second)
    limit = (
        "SQLite admits one writer at a time"
        if result.backend == "sqlite"
        else "threads wait on shared rows, the connection pool or the server"
    )
    return [
        _advice(
            result,
            "scalability_efficiency",
            most.efficiency,
            f"{_name(result)}: {most.threads} threads reach {fmt.percent(most.efficiency, 0)}"
            f" efficiency ({limit}); throughput is best at {fmt.counted(best.threads, 'thread')}"
            f" ({fmt.number(best.ops_per_second)} ops/s):"
            " size the workers to that, not to the core count.",
        )
    ]


def _resource_advice(result: ScenarioResult) -> list[Recommendation]:
    out: list[Recommendation] = []
    memory = result.memory
    if memory is not None and memory.growth_mb >= MEMORY_GROWTH_MB:
        out.append(
            _advice(
                result,
                "memory_growth_mb",
                memory.growth_mb,
                f"{_name(result)}: memory grew by {fmt.megabytes(memory.growth_mb)} during the"
                " scenario: look for objects kept across units of work (an identity map or"
                " cache that is never cleared, sessions not closed, event listeners piling"
                " up).",
            )
        )
    for check in result.index_use:
        if check.full_scan:
            tables = ", ".join(check.full_scan_tables) or "a table"
            out.append(
                _advice(
                    result,
                    f"full_scan:{check.query}",
                    float(len(check.full_scan_tables) or 1),
                    f"{_name(result)}: query {check.query} reads {tables} without an index:"
                    " add an index on the columns its WHERE clause filters by.",
                )
            )
    share = _pool_wait_share(result)
    timeouts = result.pool.get("timeouts", 0.0)
    if timeouts >= 1:
        out.append(
            _advice(
                result,
                "pool.timeouts",
                timeouts,
                f"{_name(result)}: {int(timeouts)} checkouts gave up waiting for a connection:"
                f" make pool_size + max_overflow at least the peak concurrency"
                f" ({int(result.pool.get('peak_checked_out', result.threads))}) or lower it.",
            )
        )
    elif share is not None and share >= POOL_WAIT_SHARE:
        out.append(
            _advice(
                result,
                "pool.wait_share",
                share,
                f"{_name(result)}: {fmt.percent(share)} of checkouts waited for a free"
                " connection: raise pool_size to the number of threads that work at once, or"
                " hold connections for less time.",
            )
        )
    leaked = _fds_beyond_pool(result)
    if leaked is not None and leaked >= FD_GROWTH:
        out.append(
            _advice(
                result,
                "open_fds_growth",
                float(leaked),
                f"{_name(result)}: {leaked} more file descriptors open after the scenario than"
                " before, beyond those of the connections its pool still holds: connections or"
                " files are not closed (dispose engines and close sessions when done).",
            )
        )
    return out
