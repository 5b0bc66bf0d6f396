"""Reports for the report tests: real scenario results measured on SQLite
(tests/data/perf-results-sqlite.json, written by `pytest tests/performance -k sqlite
--uowstress-results-json`), and synthetic pieces (scenarios, findings, machine runs, isolation
matrices) built to the model, hostile strings included where a test asks for them."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from uowstress.report.model import (
    Check,
    DatabaseInfo,
    Distribution,
    DurabilityRun,
    Finding,
    IndexCheck,
    IsolationCell,
    IsolationMatrix,
    Judged,
    MachineRun,
    MemoryProfile,
    Outcomes,
    Report,
    RunOptions,
    ScalabilityPoint,
    ScenarioResult,
    Summary,
    SystemInfo,
)

DATA = Path(__file__).parent / "data"
REAL_RESULTS = DATA / "perf-results-sqlite.json"

#: Strings that would run script if a renderer wrote them as markup.
HOSTILE_SCRIPT = "<script>document.title='pwned-script'</script>"
HOSTILE_IMG = '"><img src=x id=pwned onerror="document.title=\'pwned-img\'">'


def real_scenarios() -> list[ScenarioResult]:
    data = json.loads(REAL_RESULTS.read_text())
    return [ScenarioResult.model_validate(s) for s in data["scenarios"]]


def system_info() -> SystemInfo:
    return SystemInfo(
        hostname="ci-runner",
        os="Linux 6.1 (Debian 12)",
        cpu="x86_64",
        cpu_count=2,
        memory_gb=7.8,
        python="3.11.2",
        sqlalchemy="2.0.36",
        hypothesis="6.118.0",
        uowstress="0.1.0",
        databases=[DatabaseInfo(backend="sqlite", database="sqlite://", server_version="3.40.1")],
    )


def report(
    scenarios: list[ScenarioResult] | None = None,
    *,
    created_at: str = "2026-11-30T05:27:00+00:00",
    **fields: Any,
) -> Report:
    """A report around ``scenarios`` (the real SQLite results by default)."""
    chosen = real_scenarios() if scenarios is None else scenarios
    counts: dict[str, int] = {}
    for s in chosen:
        counts[s.status] = counts.get(s.status, 0) + 1
    failed = any(s.status in ("failed", "error") for s in chosen)
    summary = Summary(
        status="failed" if failed else "passed",
        exit_status=1 if failed else 0,
        seconds=sum(s.seconds for s in chosen),
        scenarios=counts,
    )
    values: dict[str, Any] = {
        "created_at": created_at,
        "command": "uowstress run --profile ci",
        "system": system_info(),
        "options": RunOptions(profile="ci", target="humanoid_training.target:TARGET"),
        "summary": summary,
        "scenarios": chosen,
    }
    values.update(fields)
    return Report(**values)


def scenario(
    name: str = "synthetic",
    *,
    backend: str = "sqlite",
    suite: str = "synthetic_suite",
    samples: list[float] | None = None,
    **fields: Any,
) -> ScenarioResult:
    """A scenario whose latency figures are computed from ``samples``."""
    if samples is None:
        rng = random.Random(name)
        samples = [rng.lognormvariate(-5, 0.4) for _ in range(400)]
    values: dict[str, Any] = {
        "id": f"tests/performance/test_{suite}.py::test_{name}[{backend}]",
        "suite": suite,
        "scenario": name,
        "backend": backend,
        "database": f"{backend}://",
        "latency": Distribution.of(samples),
        "latency_samples": samples,
        "transactions": Outcomes(total=len(samples), committed=len(samples), success_rate=1.0),
        "attempts": Outcomes(total=len(samples), committed=len(samples), success_rate=1.0),
        "ops_per_second": len(samples) / max(sum(samples), 1e-9),
        "memory": MemoryProfile(
            peak_mb=120.0, growth_mb=1.0, timeline=[(0.0, 119.0), (1.0, 120.0)]
        ),
    }
    values.update(fields)
    return ScenarioResult(**values)


def outcomes(
    total: int,
    committed: int,
    conflicts: int = 0,
    deadlocks: int = 0,
    system_conflicts: int = 0,
) -> Outcomes:
    errors = total - committed - conflicts - deadlocks
    return Outcomes(
        total=total,
        committed=committed,
        conflicts=conflicts,
        deadlocks=deadlocks,
        errors=errors,
        system_conflicts=system_conflicts,
        success_rate=committed / total,
        conflict_rate=conflicts / total,
        deadlock_rate=deadlocks / total,
        error_rate=errors / total,
    )


def hostile_finding() -> Finding:
    return Finding(
        source="sessions machine on sqlite",
        kind="invariant",
        message=f"robot {HOSTILE_SCRIPT} has two open sessions",
        explanation=f"session 0 and session 1 both opened a session for {HOSTILE_IMG}",
        anomaly="G2-item",
        reproducer_id="4433f13433e3",
        reproducer_path=".hypothesis/reproducers/4433f13433e3.json",
        replay_command="uv run uowstress replay 4433f13433e3",
        steps_by_session=[
            [f"register_robot(name={HOSTILE_SCRIPT!r})", "open_session(robot='r1')", "commit"],
            [f"open_session(robot={HOSTILE_IMG!r})", "commit"],
        ],
        shrunk_from=37,
    )


def hostile_report() -> Report:
    """Every free-text field a run can carry holds a hostile string."""
    base = scenario(
        f"named_{HOSTILE_IMG}",
        status="failed",
        message=f"ValueError: {HOSTILE_SCRIPT}",
        workload={"robot": HOSTILE_SCRIPT},
        errors={HOSTILE_IMG: 3},
        checks=[Check(name="tally", passed=False, detail=HOSTILE_SCRIPT)],
        index_use=[
            IndexCheck(
                query=HOSTILE_IMG,
                statement=f"SELECT * FROM robots WHERE name = '{HOSTILE_SCRIPT}'",
                full_scan=True,
                full_scan_tables=["robots"],
            )
        ],
        scalability=[
            ScalabilityPoint(threads=1, ops_per_second=100.0, efficiency=1.0),
            ScalabilityPoint(threads=2, ops_per_second=150.0, efficiency=0.75),
        ],
    )
    finding = hostile_finding()
    built = report(
        [base],
        command=f"uowstress run --target-option robot={HOSTILE_IMG}",
        options=RunOptions(
            profile="ci",
            target="humanoid_training.target:TARGET",
            target_options={"weaken": HOSTILE_SCRIPT},
        ),
        findings=[finding],
        machines=[machine_run(finding=finding, error=HOSTILE_IMG)],
        isolation=[isolation_matrix()],
    )
    built.summary.errors = [f"acid machine on sqlite: {HOSTILE_SCRIPT}", HOSTILE_IMG]
    return built


def machine_run(**fields: Any) -> MachineRun:
    values: dict[str, Any] = {
        "id": "sessions-sqlite",
        "machine": "sessions",
        "backend": "sqlite",
        "database": "sqlite://",
        "server_version": "SQLite 3.40.1",
        "profile": "ci",
        "sessions": 2,
        "status": "failed",
        "examples": 42,
        "seconds": 12.5,
        "step_latency": {"commit": Distribution.of([0.001, 0.002, 0.004])},
        "example_memory_mb": [1.5, 2.5],
        "fault_counts": {"before_commit": 3},
        "verdicts": [
            Judged(
                metric="step_p95_s",
                value=0.004,
                tier="optimal",
                threshold=0.05,
                message="step_p95_s = 0.004 s is within the optimal threshold 0.05 s",
            )
        ],
    }
    values.update(fields)
    return MachineRun(**values)


def durability_run(**fields: Any) -> DurabilityRun:
    values: dict[str, Any] = {
        "id": "durability-sqlite",
        "backend": "sqlite",
        "database": "sqlite:///tmp/x.db",
        "kills": 20,
        "commits_acknowledged": 311,
        "kills_in_commit": 4,
        "seconds": 2.4,
    }
    values.update(fields)
    return DurabilityRun(**values)


def isolation_matrix() -> IsolationMatrix:
    return IsolationMatrix(
        backend="postgresql",
        server_version="PostgreSQL 15.20",
        results=[
            IsolationCell(
                level="read committed",
                anomaly="P4",
                observed=True,
                examples=3,
                seconds=1.2,
                reproducer=[
                    {"session": 0, "action": "read", "key": 0},
                    {"session": 1, "action": "read", "key": 0},
                    {"session": 0, "action": "write", "key": 0, "value": 1},
                    {"session": 0, "action": "commit"},
                    {"session": 1, "action": "write", "key": 0, "value": 2},
                    {"session": 1, "action": "commit"},
                    {"session": 1, "action": HOSTILE_SCRIPT},
                ],
            ),
            IsolationCell(
                level="read committed", anomaly="G0", observed=False, examples=100, seconds=5.0
            ),
            IsolationCell(
                level="serializable", anomaly="P4", observed=False, examples=100, seconds=6.0
            ),
            IsolationCell(
                level="serializable", anomaly="G0", observed=False, examples=100, seconds=6.0
            ),
        ],
    )


def full_report() -> Report:
    """The real SQLite scenarios with a machine run, durability, a finding and an isolation
    matrix: every section of the reports has something to show."""
    finding = hostile_finding()
    return report(
        machines=[
            machine_run(finding=finding),
            machine_run(id="acid", machine="acid", status="passed", sessions=1),
        ],
        durability=[durability_run()],
        findings=[finding],
        isolation=[isolation_matrix()],
    )
