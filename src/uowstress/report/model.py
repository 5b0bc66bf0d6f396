"""The report of one `uowstress run`: what was measured, judged and found.

These models are the single source of the JSON report and of its JSON Schema (versioned by
``SCHEMA_VERSION``); the Markdown and HTML renderers read the same objects. Times are in
seconds, memory in MB of 2**20 bytes, rates are fractions in [0, 1].
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from uowstress.metrics import LatencyStats, OutcomeCounts

__all__ = [
    "REPORT_FORMAT",
    "SAMPLE_LIMIT",
    "SCHEMA_VERSION",
    "Check",
    "DatabaseInfo",
    "Distribution",
    "DurabilityRun",
    "Finding",
    "IndexCheck",
    "Insight",
    "IsolationCell",
    "IsolationMatrix",
    "Judged",
    "MachineRun",
    "MemoryProfile",
    "Outcomes",
    "QueryStat",
    "Recommendation",
    "Regression",
    "Report",
    "RunOptions",
    "ScalabilityPoint",
    "ScenarioResult",
    "Summary",
    "SystemInfo",
    "thin",
]

REPORT_FORMAT: Final = "uowstress.report"
# Bump when a field is removed or changes meaning; adding an optional field keeps the version.
SCHEMA_VERSION: Final = 1
# Most transaction times kept per scenario: enough for percentiles, charts and a rank test.
SAMPLE_LIMIT = 5000

Status = Literal["passed", "failed", "error", "skipped"]
TierName = Literal["optimal", "ok", "warning", "critical"]


def thin(samples: list[float], limit: int = SAMPLE_LIMIT) -> list[float]:
    """At most ``limit`` of ``samples``, evenly spaced in the order given (the run's order)."""
    if len(samples) <= limit:
        return list(samples)
    step = len(samples) / limit
    return [samples[int(i * step)] for i in range(limit)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distribution(_Model):
    """Summary statistics of durations in seconds (see ``uowstress.metrics.LatencyStats``)."""

    count: int
    mean: float
    min: float
    p50: float
    p95: float
    p99: float
    max: float
    stdev: float

    @classmethod
    def of(cls, samples: list[float]) -> Distribution | None:
        if not samples:
            return None
        stats = LatencyStats.from_samples(samples)
        return cls(**{name: getattr(stats, name) for name in cls.model_fields})


class Outcomes(_Model):
    """How operations ended; the four counts are exclusive, rates are fractions of total."""

    total: int = 0
    committed: int = 0
    conflicts: int = 0
    deadlocks: int = 0
    errors: int = 0
    # Of the conflicts, those the system raised itself, no database error behind them.
    system_conflicts: int = 0
    success_rate: float = 0.0
    conflict_rate: float = 0.0
    deadlock_rate: float = 0.0
    error_rate: float = 0.0

    @classmethod
    def of(cls, counts: OutcomeCounts) -> Outcomes:
        return cls(
            total=counts.total,
            committed=counts.committed,
            conflicts=counts.conflicts,
            deadlocks=counts.deadlocks,
            errors=counts.errors,
            system_conflicts=counts.system_conflicts,
            success_rate=counts.success_rate,
            conflict_rate=counts.conflict_rate,
            deadlock_rate=counts.deadlock_rate,
            error_rate=counts.error_rate,
        )


class Judged(_Model):
    """One metric judged against the tiers of performance_config.yaml."""

    metric: str
    value: float
    tier: TierName
    threshold: float
    message: str


class MemoryProfile(_Model):
    peak_mb: float  # highest resident set size sampled
    growth_mb: float  # last sample minus first
    python_peak_mb: float | None = None  # tracemalloc's peak, when traced
    # (seconds since the scenario started, resident MB), sampled every few tens of ms.
    timeline: list[tuple[float, float]] = Field(default_factory=list)


class QueryStat(_Model):
    """Time the database took for one kind of statement (cursor execute to result)."""

    statement: str  # normalised: first line, whitespace collapsed
    count: int
    mean_s: float
    p95_s: float
    max_s: float
    total_s: float


class IndexCheck(_Model):
    """What the planner does for one statement a repository query sent."""

    query: str  # the target's query name
    statement: str
    full_scan: bool
    full_scan_tables: list[str] = Field(default_factory=list)
    index_walk_tables: list[str] = Field(default_factory=list)
    plan: str = ""


class ScalabilityPoint(_Model):
    threads: int
    ops_per_second: float
    efficiency: float  # throughput / (threads x single-thread throughput)


class Check(_Model):
    """A correctness check a scenario made after its load (e.g. records counted)."""

    name: str
    passed: bool
    detail: str


class ScenarioResult(_Model):
    """One performance scenario on one database."""

    id: str  # pytest node id
    suite: str  # e.g. "simple_uow_performance"
    scenario: str  # e.g. "basic_transaction_performance"
    # The test's own parameters as pytest names them in the node id, the database's left out
    # ("10" for test_hot[sqlite-10]); "" when it has none. None in reports of versions before
    # this field: history.scenario_params reads them from ``id`` then.
    params: str | None = None
    description: str = ""
    backend: str
    database: str  # URL with the password hidden
    server_version: str = ""
    target: str = ""
    status: Status = "passed"
    message: str | None = None  # why it failed or errored
    seconds: float = 0.0
    workload: dict[str, Any] = Field(default_factory=dict)  # sizes and parameters used
    threads: int = 1
    transactions: Outcomes = Field(default_factory=Outcomes)  # final outcome of each
    attempts: Outcomes = Field(default_factory=Outcomes)  # every attempt, retries included
    latency: Distribution | None = None  # per transaction, retries included
    # Transaction times in run order, thinned to at most SAMPLE_LIMIT, for charts and tests.
    latency_samples: list[float] = Field(default_factory=list)
    ops_per_second: float | None = None
    memory: MemoryProfile | None = None
    cpu_seconds: float | None = None
    cpu_utilisation: float | None = None  # CPU seconds per wall second (2.0 = two cores)
    open_fds_before: int | None = None
    open_fds_after: int | None = None
    queries: list[QueryStat] = Field(default_factory=list)
    pool: dict[str, float] = Field(default_factory=dict)
    index_use: list[IndexCheck] = Field(default_factory=list)
    scalability: list[ScalabilityPoint] = Field(default_factory=list)
    errors: dict[str, int] = Field(default_factory=dict)  # error kind -> count
    checks: list[Check] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)  # scenario-specific figures
    verdicts: list[Judged] = Field(default_factory=list)


def shrunk_words(steps: int, shrunk_from: int | None) -> str:
    """ "shrunk to 3 steps", or "not shrunk (16 steps)" when shrinking removed nothing."""
    counted = f"{steps} step{'' if steps == 1 else 's'}"
    if shrunk_from is not None and shrunk_from <= steps:
        return f"not shrunk ({counted})"
    return f"shrunk to {counted}"


class Finding(_Model):
    """A failure uowstress observed, shrunk, with the command that replays it."""

    def session_labels(self) -> list[int]:
        """The session of each list of steps_by_session."""
        if len(self.sessions) == len(self.steps_by_session):
            return list(self.sessions)
        return list(range(len(self.steps_by_session)))

    source: str  # "acid machine on sqlite", "durability on postgresql", ...
    kind: str
    message: str
    explanation: str | None = None
    anomaly: str | None = None  # the named anomaly class, when one was classified
    reproducer_id: str | None = None
    reproducer_path: str | None = None
    replay_command: str | None = None
    # The shrunk steps, one list of readable lines per session, in session order; each line
    # begins with the step's number in the whole sequence (the one the message names).
    steps_by_session: list[list[str]] = Field(default_factory=list)
    # The session of each list of steps_by_session (a shrunk sequence may keep sessions 0 and
    # 2 only); empty in reports that predate it, whose lists are sessions 0, 1, ...
    sessions: list[int] = Field(default_factory=list)
    shrunk_from: int | None = None  # steps before shrinking


class MachineRun(_Model):
    """One exploration by a state machine on one database."""

    id: str
    machine: Literal["acid", "sessions"]
    backend: str
    database: str
    server_version: str = ""
    target: str = ""
    target_options: dict[str, str] = Field(default_factory=dict)
    profile: str = "dev"
    # The seed its examples were drawn with (a shard's: the run's seed plus the shard's
    # index); None when Hypothesis chose.
    seed: int | None = None
    sessions: int = 1
    # Which part of an exploration split across --workers this run is (0-based) and of how
    # many; None when it was not split.
    shard: int | None = None
    shards: int | None = None
    status: Status = "passed"
    examples: int = 0
    seconds: float = 0.0
    error: str | None = None
    finding: Finding | None = None
    step_latency: dict[str, Distribution] = Field(default_factory=dict)  # per rule / action
    example_memory_mb: list[float] = Field(default_factory=list)  # per example
    fault_counts: dict[str, int] = Field(default_factory=dict)
    # What the run must say though it may have passed, in plain words: faults it drew that it
    # could not inject (the Unit of Work never called the fault hook at their points).
    warnings: list[str] = Field(default_factory=list)
    # Anomalies observed that the declared guarantee permits: class -> count.
    permitted_anomalies: dict[str, int] = Field(default_factory=dict)
    # Histories of units of work the anomaly checker judged (the sessions machine, for a
    # target reporting footprints); None for the ACID machine and in reports of earlier
    # versions.
    anomaly_checks: int | None = None
    verdicts: list[Judged] = Field(default_factory=list)


class DurabilityRun(_Model):
    id: str
    backend: str
    database: str
    target: str = ""
    status: Status = "passed"
    kills: int = 0
    seed: int | None = None  # of the workloads and kill points; None in earlier reports
    commits_acknowledged: int = 0
    kills_in_commit: int = 0
    seconds: float = 0.0
    error: str | None = None
    findings: list[Finding] = Field(default_factory=list)


class IsolationCell(_Model):
    level: str
    anomaly: str
    observed: bool
    examples: int
    seconds: float
    reproducer: list[Any] | None = None


class IsolationMatrix(_Model):
    backend: str
    server_version: str
    results: list[IsolationCell]
    # The seed the search drew its examples with (absent in reports of earlier versions).
    seed: int | None = None


class Insight(_Model):
    title: str
    text: str
    scenario: str | None = None  # ScenarioResult.id it is about, if one


class Recommendation(_Model):
    text: str
    # The measured figure that triggered it.
    metric: str
    value: float
    scenario: str | None = None


class Regression(_Model):
    """A metric that changed significantly against the baseline."""

    scenario: str
    metric: str
    baseline: float
    current: float
    change: float  # relative: +0.25 is 25 % worse
    p_value: float | None = None
    effect_size: float | None = None
    regressed: bool  # worse beyond --fail-on-regression


class DatabaseInfo(_Model):
    backend: str
    database: str  # password hidden
    server_version: str


class SystemInfo(_Model):
    hostname: str
    os: str
    cpu: str
    cpu_count: int
    memory_gb: float
    python: str
    sqlalchemy: str
    hypothesis: str
    uowstress: str
    databases: list[DatabaseInfo] = Field(default_factory=list)


class RunOptions(_Model):
    profile: str
    target: str
    target_options: dict[str, str] = Field(default_factory=dict)
    pattern: str = "test_*.py"
    path: str = ""
    config: str | None = None  # performance_config.yaml used (None: built-in defaults)
    workers: int = 1
    # The seed of the run's random choices (`--seed`); None in reports of earlier versions.
    seed: int | None = None
    baseline: str | None = None
    fail_on_regression: float | None = None


class Summary(_Model):
    # "error" when something could not run (see ``errors``): exit status 2, even with findings.
    status: Literal["passed", "failed", "error"]
    exit_status: int
    seconds: float
    scenarios: dict[str, int] = Field(default_factory=dict)  # status -> count
    machines: dict[str, int] = Field(default_factory=dict)  # state-machine runs: status -> count
    durability: dict[str, int] = Field(default_factory=dict)  # durability checks: status -> count
    findings: int = 0
    critical: int = 0
    warnings: int = 0
    regressions: int = 0
    # Figures compared with the baseline: None without one, 0 when it shares no scenario with
    # the run (nothing was judged).
    compared: int | None = None
    # What kept part of the run from running to its end, one entry each, passwords hidden: a
    # state machine, durability check, scenario or isolation search that could not run to its
    # end, a test that could not be set up or torn down, a crashed worker, collected tests
    # that did not run.
    errors: list[str] = Field(default_factory=list)
    # What the run changed and could not put back as it was, each with what to run to do it
    # by hand (e.g. a SQLite file another program held open, left in WAL mode).
    left_undone: list[str] = Field(default_factory=list)
    # Tests of the suites that failed with no scenario, machine or durability result to say so
    # (a plain test in a --path folder): its node id and what its failure said.
    failed_tests: list[str] = Field(default_factory=list)


class Report(_Model):
    format: Literal["uowstress.report"] = REPORT_FORMAT
    schema_version: Literal[1] = SCHEMA_VERSION
    created_at: str  # ISO 8601, UTC
    command: str  # as typed, passwords hidden
    system: SystemInfo
    options: RunOptions
    summary: Summary
    scenarios: list[ScenarioResult] = Field(default_factory=list)
    machines: list[MachineRun] = Field(default_factory=list)
    durability: list[DurabilityRun] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    isolation: list[IsolationMatrix] = Field(default_factory=list)
    insights: list[Insight] = Field(default_factory=list)
    recommendations: list[Recommendation] = Field(default_factory=list)
    regressions: list[Regression] = Field(default_factory=list)
