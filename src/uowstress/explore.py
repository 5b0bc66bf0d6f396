"""The state machines and the durability check as report entries: run one, judge its step
budgets, and describe what it found as a `Finding` with the command that replays it."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uowstress.config import BYTES_PER_MB, PerformanceConfig, verdict
from uowstress.database import default_url
from uowstress.errors import ConfigError, UowstressError
from uowstress.profiles import REPRODUCERS_DIR, draws, get_profile
from uowstress.report.model import Distribution, DurabilityRun, Finding, Judged, MachineRun
from uowstress.reproducers import Reproducer, Step
from uowstress.scratch import backend_name, holds_secret, redacted, same_database
from uowstress.stateful.durability import KillResult, run_durability
from uowstress.stateful.run import AcidResult, run_acid
from uowstress.target import in_a_line

__all__ = ["check_durability", "describe_step", "explore", "finding_of", "replay_command"]


def describe_step(step: Step) -> str:
    """One step as a person reads it: `apply assess {"robot_id": "r1", ...}`."""
    words = ["commit with a fault at" if step.action == "fault" else step.action]
    name = step.op or step.query
    if name:
        words.append(name)
    if step.args:
        words.append(json.dumps(step.args, sort_keys=True, ensure_ascii=False))
    if step.fault:
        words.append(json.dumps(step.fault, sort_keys=True))
    return " ".join(words)


def replay_command(reproducer: Reproducer, path: Path | None, url: str) -> str:
    """The command that replays a reproducer: by id from the default folder (found from any
    folder below the project's), by absolute path from any other; with the database URL when
    it is not the backend's default. A password stays hidden, and a comment says to put it
    back."""
    default_dir = path is not None and path.parent.resolve() == REPRODUCERS_DIR.resolve()
    if default_dir or path is None:
        command = reproducer.replay_command(reproducer.id)
    else:
        command = reproducer.replay_command(shlex.quote(str(path.resolve())))
    try:
        default: str | None = default_url(reproducer.backend)
    except ConfigError:
        default = None  # no default server to replay on: the command names the database
    if backend_name(url) != "sqlite" and (default is None or not same_database(url, default)):
        command += f" --db-url {shlex.quote(redacted(url))}"
        if holds_secret(url):
            command += "  # the password is hidden: put it back in place of ***"
    return command


def finding_of(result: AcidResult, source: str, url: str) -> Finding | None:
    if result.finding is None:
        return None
    reproducer = result.reproducer
    steps: list[list[str]] = []
    command = None
    if reproducer is not None:
        by_session = reproducer.steps_by_session()
        steps = [
            [f"{index}. {describe_step(step)}" for index, step in by_session[session]]
            for session in sorted(by_session)
        ]
        if result.reproducer_path is not None:  # None: the file could not be written
            command = replay_command(reproducer, result.reproducer_path, url)
    return Finding(
        sessions=[] if reproducer is None else sorted(reproducer.steps_by_session()),
        source=source,
        kind=result.finding.kind,
        message=result.finding.message,
        anomaly=_anomaly_named(result.finding.kind, result.finding.message),
        reproducer_id=None if reproducer is None else reproducer.id,
        reproducer_path=None if result.reproducer_path is None else str(result.reproducer_path),
        replay_command=command,
        steps_by_session=steps,
        shrunk_from=None if reproducer is None else reproducer.shrunk_from,
    )


def _anomaly_named(kind: str, message: str) -> str | None:
    """The class an anomaly finding names: its message ends "..., which forbids G2"."""
    if kind != "anomaly":
        return None
    named = _FORBIDS.search(message)
    return named.group(1) if named else None


# The class's name alone: the message may go on ("... forbids P4. The committed state ...").
_FORBIDS = re.compile(r"which forbids ([A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)")


def _budgets(
    step_ns: Mapping[str, list[int]], growth: list[float], config: PerformanceConfig, backend: str
) -> list[Judged]:
    """Per rule the p95 and the slowest step; per example the memory growth (worst one)."""
    thresholds = config.thresholds_for(backend)
    judged: list[Judged] = []

    def add(metric: str, value: float, label: str) -> None:
        v = verdict(metric, value, thresholds)
        judged.append(
            Judged(
                metric=metric,
                value=value,
                tier=v.tier.value,
                threshold=v.threshold,
                message=f"{label}: {v.message}",
            )
        )

    for label, samples in sorted(step_ns.items()):
        if not samples:
            continue
        stats = Distribution.of([ns / 1e9 for ns in samples])
        assert stats is not None
        add("step_p95_s", stats.p95, f"step {label}")
        add("step_max_s", stats.max, f"step {label}")
    if growth:
        add("example_memory_mb", max(growth), "largest memory growth of one example")
    return judged


def run_error(error: Exception) -> str:
    """What stopped a machine or durability run, in a line: uowstress's own errors say what to
    do; any other (a database error of the target's connect, say) is named by its type and
    first line, passwords hidden."""
    if isinstance(error, UowstressError):
        return str(error)
    return in_a_line(error)


def explore(
    machine: str,
    url: str,
    *,
    node_id: str,
    target_spec: str,
    options: Mapping[str, str],
    profile: str,
    config: PerformanceConfig,
    isolation_level: str | None = None,
    sessions: int = 2,
    reproducers_dir: Path = REPRODUCERS_DIR,
    allow_existing_tables: bool = False,
    shard: int = 0,
    shards: int = 1,
    seed: int | None = None,
) -> MachineRun:
    """Run one machine on one database; a finding is shrunk and written as a reproducer.

    With several shards (parallel exploration across workers), each runs its share of the
    profile's examples; the example database is shared, so a failure one shard saves is tried
    first by every later run. `seed` fixes the examples drawn (None: Hypothesis chooses); each
    shard draws with the seed plus its index, so that shards do not draw the same examples."""
    share = None
    if shards > 1:
        share = max(1, -(-get_profile(profile).max_examples // shards))
    # The replay profile draws nothing: its machines report no seed.
    drawn_with = None if seed is None or not draws(profile) else seed + shard
    result = run_acid(
        url,
        target_spec=target_spec,
        options=options,
        profile=profile,
        max_examples=share,
        isolation_level=isolation_level,
        reproducers_dir=reproducers_dir,
        allow_existing_tables=allow_existing_tables,
        machine=machine,
        sessions=sessions,
        seed=drawn_with,
    )
    growth = [grown / BYTES_PER_MB for grown in result.memory_growth]
    source = f"{machine} machine on {result.backend}"
    run = MachineRun(
        id=node_id,
        machine="sessions" if machine == "sessions" else "acid",
        backend=result.backend,
        database=result.database,
        server_version=result.server_version,
        target=target_spec,
        target_options=dict(options),
        profile=profile,
        seed=drawn_with,
        sessions=sessions if machine == "sessions" else 1,
        shard=shard if shards > 1 else None,
        shards=shards if shards > 1 else None,
        examples=result.examples,
        seconds=result.seconds,
        error=result.error,
        finding=finding_of(result, source, url),
        step_latency={
            label: stats
            for label, samples in sorted(result.step_ns.items())
            if samples
            for stats in [Distribution.of([ns / 1e9 for ns in samples])]
            if stats is not None
        },
        example_memory_mb=growth,
        fault_counts=dict(result.fault_counts),
        warnings=list(result.warnings),
        permitted_anomalies={
            entry["anomaly"]: int(entry["examples"]) for entry in result.permitted_anomalies
        },
        anomaly_checks=result.anomaly_checks if machine == "sessions" else None,
        verdicts=_budgets(result.step_ns, growth, config, result.backend),
    )
    if run.error:
        run.status = "error"
    elif run.finding is not None or any(v.tier == "critical" for v in run.verdicts):
        run.status = "failed"
    return run


def check_durability(
    url: str,
    *,
    node_id: str,
    target_spec: str,
    options: Mapping[str, str],
    kills: int,
    isolation_level: str | None = None,
    allow_existing_tables: bool = False,
    reproducers_dir: Path = REPRODUCERS_DIR,
    replay_saved: bool = False,
    seed: int | None = None,
) -> DurabilityRun:
    try:
        result = run_durability(
            url,
            target_spec=target_spec,
            options=options,
            kills=kills,
            seed=seed,
            isolation_level=isolation_level,
            allow_existing_tables=allow_existing_tables,
            reproducers_dir=reproducers_dir,
            replay_saved=replay_saved,
        )
    except Exception as error:
        # Stopped before it began (a database it must not use, a target that refuses its
        # options, a server gone between two tests): an error of the run, reported with the
        # others, not a failed test that would read as a finding.
        return DurabilityRun(
            id=node_id,
            backend=backend_name(url),
            database=redacted(url),
            target=target_spec,
            status="error",
            error=run_error(error),
        )
    summary: dict[str, Any] = result.summary()
    run = DurabilityRun(
        id=node_id,
        backend=result.backend,
        database=result.database,
        target=target_spec,
        kills=len(result.kills),
        seed=None if result.replayed_saved else result.seed,
        commits_acknowledged=result.acknowledged,
        kills_in_commit=summary.get("kills_in_commit", 0),
        seconds=result.seconds,
        error=result.error,
        findings=[
            _kill_finding(
                kill, result.backend, result.reproducers.get(kill.index), url, result.replayed_saved
            )
            for kill in result.findings
        ],
    )
    if run.error:
        run.status = "error"
    elif run.findings:
        run.status = "failed"
    return run


def _kill_finding(
    kill: KillResult,
    backend: str,
    written: tuple[Reproducer, Path | None] | None,
    url: str,
    replayed_saved: bool,
) -> Finding:
    """A kill's finding: in the words of its written reproducer, whose workload was shrunk
    (its commits are numbered as its steps are); replaying a saved one, as the kill found it,
    saying how it differs from the recorded failure if it does."""
    assert kill.finding is not None
    kind, message = kill.finding.kind, kill.finding.message
    if written is not None and not replayed_saved:
        kind, message = written[0].failure.kind, written[0].failure.message
    elif written is not None and written[0].failure.kind != kind:
        recorded = written[0].failure
        message += f"; this differs from the recorded failure: [{recorded.kind}] {recorded.message}"
    steps: list[str] = []
    command = explanation = None
    reproducer, path = written if written is not None else (None, None)
    if reproducer is not None and reproducer.kill is not None:
        steps = [
            f"{index}. {describe_step(step)}" for index, step in enumerate(reproducer.steps, 1)
        ]
        point = reproducer.kill
        explanation = (
            f"The worker ran these steps and was killed with SIGKILL after"
            f" {point.after_acks} acknowledged commit(s), {point.extra_steps} step(s) into the"
            f" next transaction and {point.delay_us} µs later."
        )
        # A reproducer that could not be written has no file to replay.
        command = None if path is None else replay_command(reproducer, path, url)
    return Finding(
        source=f"durability on {backend}, kill {kill.index}",
        kind=kind,
        message=message,
        explanation=explanation,
        reproducer_id=None if reproducer is None else reproducer.id,
        reproducer_path=None if path is None else str(path),
        replay_command=command,
        steps_by_session=[steps] if steps else [],
        sessions=[0] if steps else [],
        shrunk_from=None if reproducer is None else reproducer.shrunk_from,
    )
