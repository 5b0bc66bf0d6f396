"""Run history: every run's report JSON under ``<output-dir>/history/``, and trends across them.

Entries are named by the run's UTC time, so that their names sort in run order; the oldest go
when there are more than ``limit``. An entry keeps every figure of the run but not its raw
samples (transaction times, memory timelines): those make up most of a report's size, and a
trend needs only the figures. The report JSON itself, the baseline of the next comparison,
keeps them. A file that cannot be read is left in place and listed as
unreadable, never deleted: it may be a user's. A run written by another version of uowstress
is listed as unreadable too, but dropped in its turn with the oldest runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from uowstress.errors import ReportError
from uowstress.json_input import NotJson, parse_json
from uowstress.report.json_report import load_report, parse_report, write_json
from uowstress.report.model import REPORT_FORMAT, SCHEMA_VERSION, Report, ScenarioResult

__all__ = [
    "HISTORY_DIR",
    "HISTORY_LIMIT",
    "METRICS",
    "History",
    "load_history",
    "node_params",
    "record",
    "scenario_key",
    "scenario_name",
    "scenario_params",
    "trend",
]

HISTORY_DIR: Final = "history"
HISTORY_LIMIT: Final = 100
_NAME = re.compile(r"^\d{8}T\d{6}(\.\d+)?Z(-\d+)?\.json$")


def node_params(node_id: str, database_id: str) -> str:
    """The parameters of a pytest node id besides its database's: ``test_hot[sqlite-10]`` ->
    ``10``. ``database_id`` is the database's id in it (``sqlite``, ``sqlite1`` for a second
    SQLite database), or a backend name, which then matches either."""
    _, bracket, rest = node_id.partition("[")
    if not bracket or not rest.endswith("]"):
        return ""
    parts = rest[:-1].split("-")
    ours = re.compile(re.escape(database_id) + r"\d*")
    for index, part in enumerate(parts):
        if ours.fullmatch(part):
            # pytest joins the ids of each parametrization with "-": rejoining the others
            # keeps an id that holds a "-" itself whole.
            return "-".join(parts[:index] + parts[index + 1 :])
    return rest[:-1]


def scenario_params(result: ScenarioResult) -> str:
    """The scenario's own parameters (``ScenarioResult.params``; in a report of an earlier
    version, which lacks them, read from its node id)."""
    if result.params is not None:
        return result.params
    return node_params(result.id, result.backend)


def scenario_name(result: ScenarioResult) -> str:
    """The scenario with its parameters: ``hot_rows[10]``, or ``basic_transaction_performance``
    for one without."""
    params = scenario_params(result)
    return f"{result.scenario}[{params}]" if params else result.scenario


def database_id(result: ScenarioResult) -> str:
    """The scenario's database as its node id names it: the backend (``postgresql``), or for
    a second database of one backend in a run, the backend numbered (``postgresql1``)."""
    _, bracket, rest = result.id.partition("[")
    if bracket and rest.endswith("]"):
        ours = re.compile(re.escape(result.backend) + r"\d*")
        for part in rest[:-1].split("-"):
            if ours.fullmatch(part):
                return part
    return result.backend


def scenario_key(result: ScenarioResult) -> str:
    """What identifies a scenario across runs: suite, scenario, its parameters and database:
    ``suite::hot_rows[10][sqlite]``. Two databases of one backend in a run are told apart
    (``[postgresql]``, ``[postgresql1]``): a report compared with itself compares each with
    itself. A scenario without parameters on a run's first database of its backend keeps the
    key of earlier versions, ``suite::scenario[sqlite]``, so their reports still serve as
    baselines."""
    return f"{result.suite}::{scenario_name(result)}[{database_id(result)}]"


def _p(name: str) -> Callable[[ScenarioResult], float | None]:
    return lambda s: None if s.latency is None else float(getattr(s.latency, name))


#: The metrics a trend can follow, by name.
METRICS: Final[dict[str, Callable[[ScenarioResult], float | None]]] = {
    "p50_s": _p("p50"),
    "p95_s": _p("p95"),
    "p99_s": _p("p99"),
    "mean_s": _p("mean"),
    "ops_per_second": lambda s: s.ops_per_second,
    "memory_peak_mb": lambda s: None if s.memory is None else s.memory.peak_mb,
    "success_rate": lambda s: s.transactions.success_rate if s.transactions.total else None,
}


def _entry_name(report: Report) -> str:
    try:
        when = datetime.fromisoformat(report.created_at)
    except ValueError:
        raise ReportError(
            f"report created_at {report.created_at!r} is not an ISO 8601 time"
            " (e.g. 2026-11-30T05:27:00+00:00); the history names its entries by it"
        ) from None
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y%m%dT%H%M%S.%f") + "Z"


def record(report: Report, output_dir: Path, *, limit: int = HISTORY_LIMIT) -> Path:
    """Keep ``report`` in the history of ``output_dir``; drop the oldest beyond ``limit``."""
    if limit < 1:
        raise ReportError(f"history limit must be at least 1, got {limit}")
    folder = output_dir / HISTORY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stem = _entry_name(report)
    path = folder / f"{stem}.json"
    suffix = 1
    while path.exists():  # two runs in the same second
        path = folder / f"{stem}-{suffix}.json"
        suffix += 1
    # Written beside its place and then moved in: a disk that fills up midway leaves no
    # truncated entry, which would be said to be unreadable after every later run.
    temporary = folder / f".{path.name}.tmp"
    try:
        write_json(_figures_only(report), temporary)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    # Only runs are dropped: an entry that cannot be read is left in place (it may be a
    # user's, or one to look at), and does not count towards the limit. A run of another
    # version of uowstress is a run all the same, dropped in its turn (kept, it would stay
    # for good, said to be unreadable after every run).
    runs = [entry for entry in _entries(folder) if _a_run(entry)]
    for old in runs[: max(0, len(runs) - limit)]:
        old.unlink()
    return path


def _a_run(path: Path) -> bool:
    """Whether `path` holds a run's report: one this uowstress reads, or one of another
    version of it (its own format, another schema version)."""
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, NotJson):
        return False
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        return False
    if data.get("schema_version") != SCHEMA_VERSION:
        return True
    try:
        parse_report(data, str(path))
    except ReportError:
        return False
    return True


def _figures_only(report: Report) -> Report:
    scenarios = [
        s.model_copy(
            update={
                "latency_samples": [],
                "memory": None
                if s.memory is None
                else s.memory.model_copy(update={"timeline": []}),
            }
        )
        for s in report.scenarios
    ]
    return report.model_copy(update={"scenarios": scenarios})


def _entries(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _NAME.match(p.name)), key=_order)


def _order(path: Path) -> tuple[str, int]:
    """Oldest first: by time, then a second run of the same second (``...Z-1``) after the first
    (``...Z``), which sorting the names as text would put the other way round."""
    stem = path.name.removesuffix(".json")
    when, _, suffix = stem.partition("Z-")
    return (when.removesuffix("Z"), int(suffix) if suffix.isdigit() else 0)


@dataclass
class History:
    runs: list[Report] = field(default_factory=list)  # oldest first
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    def latest(self) -> Report | None:
        return self.runs[-1] if self.runs else None


def load_history(output_dir: Path) -> History:
    history = History()
    for path in _entries(output_dir / HISTORY_DIR):
        try:
            history.runs.append(load_report(path, _SKIPPED))
        except ReportError as error:
            history.unreadable.append((path, str(error)))
    return history


# What an entry of the history that cannot be read says to do.
_SKIPPED = (
    "it is left out of the trends and left in place: repair it, or delete it if it is not"
    " yours to keep"
)


def trend(runs: Sequence[Report], metric: str) -> dict[str, list[tuple[str, float]]]:
    """scenario key -> (run time, value) over ``runs``, for every scenario that has it."""
    if metric not in METRICS:
        raise ReportError(f"no trend for {metric!r}; choose one of {', '.join(METRICS)}")
    value_of = METRICS[metric]
    series: dict[str, list[tuple[str, float]]] = {}
    for run in runs:
        for result in run.scenarios:
            value = value_of(result)
            if value is not None:
                series.setdefault(scenario_key(result), []).append((run.created_at, value))
    return series
