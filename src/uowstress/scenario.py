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
from typing import Any, cast

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument, Unsatisfiable
from sqlalchemy import event, text

from uowstress.config import BYTES_PER_MB, PerformanceConfig, Tier, Workloads, verdict
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
from uowstress.workload import Workload, classify_error, refused_cleanly

__all__ = ["Scenario", "ScenarioSkipped"]

# Statements kept in a scenario's result: the slowest kinds by total time.
_QUERY_LIMIT = 15


def scenario_result(
    *,
    node_id: str,
    suite: str,
    name: str,
    description: str,
    target_spec: str,
    database: PreparedDatabase,
    params: str = "",
    **outcome: Any,
) -> ScenarioResult:
    """The result of a scenario on ``database``, before any figure; ``outcome`` sets other
    fields (a scenario skipped before it starts: ``status`` and ``message``)."""
    return ScenarioResult(
        id=node_id,
        suite=suite,
        scenario=name,
        params=params,
        description=description,
        backend=database.backend,
        database=database.display,
        server_version=database.server_version,
        target=target_spec,
        **outcome,
    )


class _SizesRead:
    """The configuration's workload sizes, noting each one read into `read`."""

    def __init__(self, sizes: Workloads, read: dict[str, Any]) -> None:
        self._sizes = sizes
        self._read = read

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._sizes, name)
        if name in Workloads.model_fields:  # not a method or other attribute of the model
            self._read[name] = list(value) if isinstance(value, list) else value
        return value


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
        params: str = "",
    ) -> None:
        self.target = target
        self.system = system
        self.workload = workload
        self.thresholds = config.thresholds_for(database.backend)
        self.backend = database.backend
        self.result = scenario_result(
            node_id=node_id,
            suite=suite,
            name=name,
            description=description,
            target_spec=target_spec,
            database=database,
            params=params,
        )
        # The sizes the scenario reads are kept in its result: the report shows them, and a
        # comparison can tell runs of different sizes apart.
        self.workloads = cast(Workloads, _SizesRead(config.workloads, self.result.workload))
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
        if load.pool_timeouts:
            timeout = getattr(self.system.engine.pool, "_timeout", None)
            waited = f" ({timeout:g} s, the pool's timeout)" if timeout else ""
            self.check(
                "every unit of work got a connection",
                False,
                f"{load.pool_timeouts} unit(s) of work waited for a connection{waited} and"
                f" gave up, with {load.threads} threads on the pool; the load stopped there"
                f" ({load.not_run} of its transactions not run). A Unit of Work that asks for"
                " a second connection while it holds one, or does not give its connection"
                " back, empties the pool under load",
            )
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
        same in every run); the mean seconds of each, timing the query call alone.

        A refusal (e.g. not found for an id drawn not to exist, all an empty database offers)
        is timed like an answer: the database did the same work. Every error, refusals
        included, is counted in the errors by kind. The check "every timed query answered"
        fails for a query that answered none of its drawn arguments: each call raised an
        error that is not a clean refusal (see `uowstress.workload.refused_cleanly`: a
        database error such as a bad statement, or a bug such as a KeyError). A query whose
        arguments cannot be drawn in this state (its strategy is empty) is not run: the check
        names it as not checked, and it has no mean."""
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, not {repeats}")
        state = self.system.committed_state()
        means: dict[str, float] = {}
        runs: list[_QueryRuns] = []
        for query in self.target.queries:
            fared = _QueryRuns.drawn_for(query, state, examples)
            if fared.drawn:
                total = 0.0
                for i in range(repeats):
                    index = i % len(fared.drawn)
                    seconds, error = self._call_query(query, fared.drawn[index])
                    total += seconds
                    fared.record(index, error, self.workload)
                means[query.name] = total / repeats
            self._add_errors(fared.error_counts())
            runs.append(fared)
        self._check_queries("every timed query answered", runs)
        return means

    def _call_query(self, query: Query, args: Any) -> tuple[float, Exception | None]:
        """Run ``query`` once: the seconds its call took, and what it raised if anything."""
        uow = self.system.unit_of_work()
        started = time.perf_counter()
        try:
            query.run(uow, args)
        except Exception as error:
            return time.perf_counter() - started, error
        return time.perf_counter() - started, None

    def _check_queries(self, name: str, runs: Sequence[_QueryRuns]) -> bool:
        """Each query answered at least one of its drawn arguments: returned, or refused
        cleanly (an id drawn not to exist is refused; that is what queries do). A query that
        answered none is broken (a bad statement, a missing column), and its timings and plans
        mean nothing. A query with no drawable argument is named as not checked, not failed:
        nothing says it is broken."""
        checked = [r for r in runs if r.drawn]
        broken = [r for r in checked if not r.answered]
        unchecked = "".join(
            f"; query {r.name} not checked: no argument could be drawn in this state"
            f" ({r.undrawable})"
            for r in runs
            if not r.drawn
        )
        if not broken:
            refused = sum(sum(r.refused.values()) for r in checked)
            failed = sum(sum(r.errors.values()) for r in checked)
            return self.check(
                name,
                True,
                f"{len(checked)} queries each answered at least one of their drawn arguments"
                f" ({refused} call(s) refused, {failed} raised an unexpected error){unchecked}",
            )
        shown = "; ".join(
            f"query {r.name} failed on all {len(r.tried)} drawn arguments:"
            f" {r.errors.most_common(1)[0][0]}"
            for r in broken
        )
        return self.check(name, False, shown + unchecked)

    # ------------------------------------------------------------------ checks

    def check(self, name: str, passed: bool, detail: str) -> bool:
        self.result.checks.append(Check(name=name, passed=passed, detail=detail))
        return passed

    def check_contention(self) -> bool:
        """The load met contention: some attempt conflicted or deadlocked (a scenario meant to
        conflict that never does tests nothing)."""
        attempts = self._attempts
        met = attempts.conflicts + attempts.deadlocks > 0
        detail = (
            f"{attempts.conflicts} conflicts and {attempts.deadlocks} deadlocks in"
            f" {attempts.total} attempts"
        )
        if not met:
            # Not a defect of the system as such: say what to change for the scenario to test.
            sizes = ", ".join(f"{name} {value}" for name, value in self.result.workload.items())
            detail += (
                ": the load met no contention, so this scenario tested none. Its threads may"
                " never have overlapped at the sizes it read"
                + (f" ({sizes})" if sizes else "")
                + "; raise its thread and transaction counts in performance_config.yaml. A"
                " system that makes its writers wait for each other (a global lock) meets"
                " none at any size"
            )
        return self.check("conflicts or deadlocks happened", met, detail)

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

    def statement_limit(self) -> int | None:
        """The largest statement the server takes, in bytes, where it has such a limit
        (MariaDB's and MySQL's max_allowed_packet); None elsewhere."""
        if self.backend != "mysql":
            return None
        with self.system.engine.connect() as conn:
            return int(conn.execute(text("SELECT @@max_allowed_packet")).scalar_one())

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
        # Fresh statistics, so that planners judge the tables as they are after the load. The
        # target's tables only: a bare ANALYZE would also rewrite the statistics of whatever
        # else the database holds (the user's own tables, on a SQLite file or a server).
        quote = conn.dialect.identifier_preparer.quote
        for table in sorted(self.target.tables):
            if self.backend in ("sqlite", "postgresql"):
                conn.execute(text(f"ANALYZE {quote(table)}"))
            else:
                conn.execute(text(f"ANALYZE TABLE {quote(table)}"))
        conn.commit()

    def _query_statements(self, examples: int) -> list[tuple[str, str, Any]]:
        """Run each query on a few drawn arguments; the distinct SELECTs each one sent that
        the database ran (a statement it refused could not be explained either). A refusal
        (e.g. not found) still sent its statements. Errors are counted, and the check "every
        explained query answered" judged, as in `time_queries`."""
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
                fared = _QueryRuns.drawn_for(query, state, examples)
                for index, args in enumerate(fared.drawn):
                    _, error = self._call_query(query, args)
                    fared.record(index, error, self.workload)
                self._add_errors(fared.error_counts())
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
    drawn: list[Any]  # the arguments drawn; empty when none could be
    undrawable: str = ""  # why none could be drawn
    tried: set[int] = field(default_factory=set)  # which of them it ran
    answered: set[int] = field(default_factory=set)  # which it answered (or refused) once
    refused: Counter[str] = field(default_factory=Counter)  # clean refusal key -> times
    errors: Counter[str] = field(default_factory=Counter)  # other error key -> times

    @classmethod
    def drawn_for(cls, query: Query, state: Any, examples: int) -> _QueryRuns:
        try:
            return cls(query.name, _draw(query.arguments(state, Ids()), examples))
        except (Unsatisfiable, InvalidArgument) as error:
            # An empty strategy (nothing to sample from, every value filtered out): Hypothesis
            # says so through these. Anything else the target's strategy raises is its bug.
            lines = str(error).strip().splitlines()
            reason = f"{type(error).__name__}: {lines[0][:160]}" if lines else type(error).__name__
            return cls(query.name, [], reason)

    def record(self, index: int, error: Exception | None, workload: object) -> None:
        self.tried.add(index)
        if error is None:
            self.answered.add(index)
            return
        key = error_key(classify_error(error, workload), error)
        if refused_cleanly(error, workload):
            self.answered.add(index)
            self.refused[key] += 1
        else:
            self.errors[key] += 1

    def error_counts(self) -> Counter[str]:
        """Every error of the query's calls, refusals included, as the errors by kind name
        them."""
        return Counter(
            {f"query {self.name}: {key}": n for key, n in (self.refused + self.errors).items()}
        )


_SELECT = re.compile(r"\s*(\(\s*)?(SELECT|WITH)\b", re.IGNORECASE)


def _one_line(statement: str) -> str:
    return " ".join(statement.split())[:500]


def _draw(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """A few values of ``strategy``, the same in every run. An empty strategy raises
    Hypothesis's Unsatisfiable or InvalidArgument (sampled_from an empty list)."""
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
