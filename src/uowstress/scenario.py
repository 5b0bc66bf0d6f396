"""One performance scenario on one database: what a suite's test works with (the `perf`
fixture), and everything it measures, checks and judges.

A scenario creates aggregates through the target's Workload, runs loads of transactions
(`uowstress.load`), and checks afterwards that nothing was lost or counted twice, that the
target's invariants hold and that no connection was left behind. Memory, CPU, descriptors,
statement times and pool events are measured over the whole test body; the figures are judged
against the tiers of performance_config.yaml when the body ends, and a critical one fails the
scenario.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text

from uowstress.config import BYTES_PER_MB, PerformanceConfig, Tier, verdict
from uowstress.database import PreparedDatabase
from uowstress.load import Job, LoadResult, error_key, run_load
from uowstress.metrics import (
    MemorySampler,
    OutcomeCounts,
    PoolMonitor,
    QueryTimer,
    ResourceSnapshot,
    explain_statement,
    scalability,
)
from uowstress.report.model import (
    Check,
    Distribution,
    IndexCheck,
    Judged,
    MemoryProfile,
    Outcomes,
    QueryStat,
    ScenarioResult,
    thin,
)
from uowstress.report.model import ScalabilityPoint as ScalabilityRow
from uowstress.target import JSON, Ids, Query, System, Target
from uowstress.workload import Workload, classify_error

__all__ = ["Scenario", "ScenarioSkipped"]

# Statements kept in a scenario's result: the slowest kinds by total time.
_QUERY_LIMIT = 15


class ScenarioSkipped(Exception):
    """The target cannot run this scenario (its workload lacks what the scenario needs)."""


class Scenario:
    """A scenario under measurement. Tests build loads from jobs and call `run`."""

    def __init__(
        self,
        *,
        node_id: str,
        suite: str,
        name: str,
        description: str,
        target_spec: str,
        target: Target,
        system: System,
        workload: Workload,
        database: PreparedDatabase,
        config: PerformanceConfig,
    ) -> None:
        self.target = target
        self.system = system
        self.workload = workload
        self.workloads = config.workloads
        self.thresholds = config.thresholds_for(database.backend)
        self.backend = database.backend
        self.result = ScenarioResult(
            id=node_id,
            suite=suite,
            scenario=name,
            description=description,
            backend=database.backend,
            database=database.display,
            server_version=database.server_version,
            target=target_spec,
        )
        # Counted changes each key should hold once the scenario is over.
        self.expected: Counter[str] = Counter()
        self._serial = itertools.count(1)
        self._key_serial = itertools.count(1)
        self._transactions = OutcomeCounts()
        self._attempts = OutcomeCounts()
        self._latencies: list[float] = []
        self._load_seconds = 0.0
        self._committed_in_loads = 0
        self._sampler = MemorySampler(interval_s=0.05)
        self._timer = QueryTimer()
        self._pool = PoolMonitor()
        self._before: ResourceSnapshot | None = None
        self._measuring = False
        self._connections_checked = False

    # ------------------------------------------------------------------ measurement

    def start(self) -> None:
        """Begin measuring (the plugin calls this right before the test body)."""
        engine = self.system.engine
        try:
            self._timer.attach(engine)
            self._pool.attach(engine)
            self._before = ResourceSnapshot.take()
            self._sampler.start()
        except BaseException:
            # Half started: nothing of the measurement may stay hooked into the engine.
            self._timer.detach()
            self._pool.detach()
            raise
        self._measuring = True

    def stop(self) -> None:
        """Stop measuring and fill in the result (the plugin calls this after the body)."""
        if not self._measuring:
            return
        self._measuring = False
        self._sampler.stop()
        after = ResourceSnapshot.take()
        self._timer.detach()
        self._pool.detach()
        result = self.result
        assert self._before is not None
        delta = after - self._before
        result.seconds = delta.wall_s
        result.cpu_seconds = delta.cpu_s
        result.cpu_utilisation = delta.cpu_utilisation
        result.open_fds_before = self._before.open_fds
        result.open_fds_after = after.open_fds
        result.memory = MemoryProfile(
            peak_mb=self._sampler.peak_rss / BYTES_PER_MB,
            growth_mb=self._sampler.growth / BYTES_PER_MB,
            timeline=[(round(t, 3), rss / BYTES_PER_MB) for t, rss in self._sampler.samples],
        )
        stats = sorted(self._timer.stats().items(), key=lambda item: item[1].mean * item[1].count)
        result.queries = [
            QueryStat(
                statement=statement,
                count=s.count,
                mean_s=s.mean,
                p95_s=s.p95,
                max_s=s.max,
                total_s=s.mean * s.count,
            )
            for statement, s in reversed(stats[-_QUERY_LIMIT:])
        ]
        result.pool = {key: float(value) for key, value in self._pool.as_dict().items()}
        acquire = self._pool.acquire_stats()
        if acquire is not None:
            result.pool["acquire_p95_s"] = acquire.p95
            result.pool["acquire_max_s"] = acquire.max
        result.transactions = Outcomes.of(self._transactions)
        result.attempts = Outcomes.of(self._attempts)
        result.latency = Distribution.of(self._latencies)
        result.latency_samples = thin(self._latencies)
        if self._load_seconds > 0:
            result.ops_per_second = self._committed_in_loads / self._load_seconds

    @property
    def transactions(self) -> OutcomeCounts:
        """Final outcomes of the counted transactions so far."""
        return self._transactions

    @property
    def attempts(self) -> OutcomeCounts:
        """Every attempt so far, retries included (a scalability sweep's too)."""
        return self._attempts

    # ------------------------------------------------------------------ building loads

    def serial(self) -> int:
        """A number unique in this scenario (for unique values and ids)."""
        return next(self._serial)

    def create(self, count: int, *, batch: int = 50) -> list[str]:
        """Create ``count`` new aggregates, ``batch`` per unit of work; their keys."""
        keys = [f"k{next(self._key_serial)}" for _ in range(count)]
        for start in range(0, len(keys), batch):
            chunk = keys[start : start + batch]
            uow = self.system.unit_of_work()
            with uow:
                for key in chunk:
                    self.workload.create(uow, key)
                uow.commit()
        return keys

    def create_job(self, keys: Sequence[str]) -> Job:
        """One transaction creating the aggregates ``keys`` (e.g. one batch of a bulk load)."""
        chosen = list(keys)

        def work(uow: Any) -> None:
            for key in chosen:
                self.workload.create(uow, key)

        return Job("create", work)

    def new_keys(self, count: int) -> list[str]:
        """Keys not used yet, for `create_job`."""
        return [f"k{next(self._key_serial)}" for _ in range(count)]

    def change(self, key: str) -> Job:
        n = self.serial()
        return Job("change", lambda uow: self.workload.change(uow, key, n), (key,))

    def change_many(self, keys: Sequence[str]) -> Job:
        """One transaction changing several aggregates, in the order given (lock order)."""
        numbered = [(key, self.serial()) for key in keys]

        def work(uow: Any) -> None:
            for key, n in numbered:
                self.workload.change(uow, key, n)

        return Job("change_many", work, tuple(key for key, _ in numbered))

    def read(self, key: str) -> Job:
        return Job("read", lambda uow: self.workload.read(uow, key))

    def cycle(self, key: str) -> Job:
        """One step of the target's business process on ``key`` (needs `Workload.cycle`)."""
        method = self._optional("cycle", "a multi-aggregate business process (cycle)")
        n = self.serial()
        return Job("cycle", lambda uow: method(uow, key, n), (key,))

    def store(self, key: str, document: JSON) -> Job:
        method = self._optional("store", "storing free-form JSON documents (store/load)")
        return Job("store", lambda uow: method(uow, key, document))

    def load_document(self, uow: Any, key: str) -> JSON:
        method = self._optional("load", "storing free-form JSON documents (store/load)")
        return method(uow, key)

    def _optional(self, name: str, what: str) -> Callable[..., Any]:
        method = getattr(self.workload, name, None)
        if method is None:
            raise ScenarioSkipped(
                f"the workload of target {self.target.name} offers no {name}() for {what}"
            )
        return method  # type: ignore[no-any-return]

    def run(
        self,
        jobs_per_thread: Sequence[Sequence[Job]],
        *,
        attempts: int | None = None,
        seed: int = 0,
        counted: bool = True,
    ) -> LoadResult:
        """Run a load; its outcomes, errors by kind and times add to the scenario's (unless
        not ``counted``: e.g. the runs of a scalability sweep, summarised on their own, or a
        load whose refusals are the point of the scenario, judged by the test itself)."""
        tries = attempts if attempts is not None else self.workloads.retry_attempts
        load = run_load(self.system, self.workload, jobs_per_thread, attempts=tries, seed=seed)
        self.expected.update(load.committed_by_key)
        for seconds in load.acquire:
            self._pool.record_wait(seconds)
        for _ in range(load.pool_timeouts):
            self._pool.record_timeout()
        if counted:
            self._add_outcomes(load)
            self._latencies.extend(load.latencies)
            self._load_seconds += load.seconds
            self._committed_in_loads += load.transactions.committed
            self.result.threads = max(self.result.threads, load.threads)
        return load

    def scalability(
        self, jobs_for: Callable[[int], Sequence[Sequence[Job]]], thread_counts: Sequence[int]
    ) -> list[ScalabilityRow]:
        """Throughput of the same amount of work at each thread count."""
        measured: dict[int, float] = {}
        for threads in thread_counts:
            load = self.run(jobs_for(threads), seed=threads, counted=False)
            measured[threads] = load.ops_per_second
            self._add_outcomes(load)
        rows = [
            ScalabilityRow(
                threads=p.threads, ops_per_second=p.ops_per_second, efficiency=p.efficiency
            )
            for p in scalability(measured)
        ]
        self.result.scalability = rows
        return rows

    def _add_outcomes(self, load: LoadResult) -> None:
        """Count a load's outcomes and its errors by kind, together: the errors by kind are
        always those of the attempts counted, never of a load left out."""
        self._transactions += load.transactions
        self._attempts += load.attempts
        self._add_errors(load.errors)

    def _add_errors(self, errors: Counter[str]) -> None:
        merged = Counter(self.result.errors)
        merged.update(errors)
        self.result.errors = dict(merged)

    def time_queries(self, *, repeats: int = 20, examples: int = 3) -> dict[str, float]:
        """Run each of the target's queries ``repeats`` times (on a few drawn arguments, the
        same in every run); the mean seconds of each. A refusal (e.g. not found) is timed
        like an answer: the database did the same work. Every error is counted in the errors
        by kind, and a query that answered none of its drawn arguments fails the check
        "every timed query answered"."""
        state = self.system.committed_state()
        means: dict[str, float] = {}
        runs: list[_QueryRuns] = []
        for query in self.target.queries:
            drawn = _draw(query.arguments(state, Ids()), examples) or [{}]
            fared = _QueryRuns(query.name, len(drawn))
            total = 0.0
            for i in range(repeats):
                started = time.perf_counter()
                self._run_query(query, drawn[i % len(drawn)], i % len(drawn), fared)
                total += time.perf_counter() - started
            means[query.name] = total / repeats
            runs.append(fared)
        self._check_queries("every timed query answered", runs)
        return means

    def _run_query(self, query: Query, args: Any, index: int, fared: _QueryRuns) -> None:
        """Run ``query`` once on its ``index``-th drawn argument; how it fared goes in
        ``fared`` and an error also in the errors by kind."""
        try:
            query.run(self.system.unit_of_work(), args)
        except Exception as error:
            key = error_key(classify_error(error, self.workload), error)
            self._add_errors(Counter({f"query {query.name}: {key}": 1}))
            fared.errors[key] += 1
        else:
            fared.answered.add(index)

    def _check_queries(self, name: str, runs: Sequence[_QueryRuns]) -> bool:
        """Each query answered at least one of its drawn arguments. Refusing some (e.g. an id
        drawn not to exist) is what queries do; refusing all of them means the query is
        broken (a bad statement, a missing column), and its timings and plans mean nothing."""
        broken = [r for r in runs if r.arguments and not r.answered]
        refusals = sum(sum(r.errors.values()) for r in runs)
        if not broken:
            return self.check(
                name,
                True,
                f"{len(runs)} queries each answered at least one of their drawn arguments"
                f" ({refusals} call(s) refused)",
            )
        shown = "; ".join(
            f"query {r.name} failed on all {r.arguments} drawn arguments:"
            f" {r.errors.most_common(1)[0][0]}"
            for r in broken
        )
        return self.check(name, False, shown)

    # ------------------------------------------------------------------ checks

    def check(self, name: str, passed: bool, detail: str) -> bool:
        self.result.checks.append(Check(name=name, passed=passed, detail=detail))
        return passed

    def check_contention(self) -> bool:
        """The load met contention: some attempt conflicted or deadlocked (a scenario meant to
        conflict that never does tests nothing)."""
        attempts = self._attempts
        return self.check(
            "conflicts or deadlocks happened",
            attempts.conflicts + attempts.deadlocks > 0,
            f"{attempts.conflicts} conflicts and {attempts.deadlocks} deadlocks in"
            f" {attempts.total} attempts",
        )

    def check_tally(self) -> bool:
        """Every committed change is there once, and nothing else: no lost or duplicated
        record, and no trace of a transaction that did not commit."""
        counted = self.workload.tally(self.system)
        wrong = {
            key: (self.expected.get(key, 0), counted.get(key, 0))
            for key in sorted(set(self.expected) | set(counted))
            if self.expected.get(key, 0) != counted.get(key, 0)
        }
        committed = sum(self.expected.values())
        if not wrong:
            return self.check(
                "no lost or duplicated record",
                True,
                f"{committed} committed changes, {sum(counted.values())} counted in the"
                f" database over {len(counted)} aggregates",
            )
        shown = "; ".join(
            f"{key}: {want} committed, {got} in the database"
            for key, (want, got) in list(wrong.items())[:5]
        )
        more = f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else ""
        return self.check(
            "no lost or duplicated record",
            False,
            f"{len(wrong)} aggregates disagree with what was committed: {shown}{more}",
        )

    def check_invariants(self) -> bool:
        problems = self.system.invariants(self.system.committed_state())
        detail = "every invariant holds" if not problems else "; ".join(problems[:5])
        return self.check("invariants of committed state", not problems, detail)

    def pool_peak_checked_out(self) -> int:
        """Most connections the pool had out at once so far."""
        return self._pool.peak_checked_out

    @property
    def connections_checked(self) -> bool:
        """Whether `check_connections` ran (the plugin runs it after the body otherwise)."""
        return self._connections_checked

    def check_connections(self) -> bool:
        self._connections_checked = True
        out = self._pool.checked_out
        return self.check(
            "no connection left checked out",
            out == 0,
            f"{out} connection(s) still checked out after the load" if out else "all returned",
        )

    def check_indexes(self, *, examples: int = 3) -> list[IndexCheck]:
        """EXPLAIN every statement the target's queries send; a full scan is reported."""
        statements = self._query_statements(examples)
        engine = self.system.engine
        checks: list[IndexCheck] = []
        with engine.connect() as conn:
            self._analyse(conn)
            for query, statement, parameters in statements:
                if self.backend == "postgresql":
                    # "Could an index serve it", not "is a scan cheaper on this small table".
                    conn.execute(text("SET LOCAL enable_seqscan = off"))
                use = explain_statement(conn, statement, parameters)
                checks.append(
                    IndexCheck(
                        query=query,
                        statement=_one_line(statement),
                        full_scan=use.full_scan,
                        full_scan_tables=list(use.full_scan_tables),
                        index_walk_tables=list(use.index_walk_tables),
                        plan=use.plan[:4000],
                    )
                )
            conn.rollback()
        self.result.index_use = checks
        return checks

    def _analyse(self, conn: Any) -> None:
        # Fresh statistics, so that planners judge the tables as they are after the load.
        if self.backend in ("sqlite", "postgresql"):
            conn.execute(text("ANALYZE"))
        else:
            for table in sorted(self.target.tables):
                conn.execute(text(f"ANALYZE TABLE `{table}`"))
        conn.commit()

    def _query_statements(self, examples: int) -> list[tuple[str, str, Any]]:
        """Run each query on a few drawn arguments; the distinct SELECTs each one sent that
        the database ran (a statement it refused could not be explained either). A refusal
        (e.g. not found) still sent its statements; errors are counted as in `time_queries`,
        and a query that answered none of its arguments fails "every explained query
        answered"."""
        state = self.system.committed_state()
        seen: dict[tuple[str, str], Any] = {}
        current = [""]

        def capture(
            conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
        ) -> None:
            if not many and _SELECT.match(statement):
                seen.setdefault((current[0], statement), parameters)

        engine = self.system.engine
        runs: list[_QueryRuns] = []
        event.listen(engine, "after_cursor_execute", capture)
        try:
            for query in self.target.queries:
                current[0] = query.name
                drawn = _draw(query.arguments(state, Ids()), examples)
                fared = _QueryRuns(query.name, len(drawn))
                for index, args in enumerate(drawn):
                    self._run_query(query, args, index, fared)
                runs.append(fared)
        finally:
            event.remove(engine, "after_cursor_execute", capture)
        self._check_queries("every explained query answered", runs)
        return [(query, statement, params) for (query, statement), params in seen.items()]

    # ------------------------------------------------------------------ judging

    def metric(self, name: str, value: float) -> None:
        """Record a scenario-specific figure."""
        self.result.metrics[name] = value

    def judge(self) -> list[Judged]:
        """Judge the measured figures against the tiers; the verdicts go in the result."""
        values: dict[str, float] = {}
        result = self.result
        if result.memory is not None:
            values["memory_mb"] = result.memory.peak_mb
        if result.latency is not None:
            values["avg_transaction_s"] = result.latency.mean
        if result.transactions.total:
            values["success_rate"] = result.transactions.success_rate
        if result.attempts.total:
            values["deadlock_rate"] = result.attempts.deadlock_rate
        result.verdicts = [
            Judged(
                metric=v.metric,
                value=v.value,
                tier=v.tier.value,
                threshold=v.threshold,
                message=v.message,
            )
            for v in (verdict(metric, value, self.thresholds) for metric, value in values.items())
        ]
        return result.verdicts

    def failures(self) -> list[str]:
        """Why the scenario fails: each critical figure and each failed check."""
        critical = [v.message for v in self.result.verdicts if v.tier == Tier.CRITICAL.value]
        checks = [f"{c.name}: {c.detail}" for c in self.result.checks if not c.passed]
        return critical + checks


@dataclass
class _QueryRuns:
    """How one query fared on its drawn arguments."""

    name: str
    arguments: int  # how many were drawn
    answered: set[int] = field(default_factory=set)  # which of them it answered at least once
    errors: Counter[str] = field(default_factory=Counter)  # error key -> times


_SELECT = re.compile(r"\s*(\(\s*)?(SELECT|WITH)\b", re.IGNORECASE)


def _one_line(statement: str) -> str:
    return " ".join(statement.split())[:500]


def _draw(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """A few values of ``strategy``, the same in every run."""
    drawn: list[Any] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn
