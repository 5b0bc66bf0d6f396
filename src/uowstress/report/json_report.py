"""The report as JSON, its JSON Schema, and reading a report back (baselines, history).

The schema is generated from the pydantic model and committed at
``src/uowstress/report/schema/report-v<SCHEMA_VERSION>.schema.json`` so that other tools can
validate reports without uowstress. After a change of the model, regenerate it with::

    uv run python -m uowstress.report.json_report
"""

from __future__ import annotations

import json
import math
import reprlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from uowstress.errors import ReportError
from uowstress.json_input import NotJson, parse_json
from uowstress.report.model import (
    REPORT_FORMAT,
    SCHEMA_VERSION,
    Distribution,
    Outcomes,
    Report,
    ScenarioResult,
)

__all__ = [
    "SCHEMA_ID",
    "SCHEMA_PATH",
    "load_report",
    "parse_report",
    "report_json",
    "report_schema",
    "write_json",
    "write_schema",
]

SCHEMA_PATH: Final = Path(__file__).parent / "schema" / f"report-v{SCHEMA_VERSION}.schema.json"
SCHEMA_ID: Final = f"urn:uowstress:report:v{SCHEMA_VERSION}"
REGENERATE: Final = "uv run python -m uowstress.report.json_report"


def report_json(report: Report) -> str:
    """The report as compact JSON: a nightly run holds hundreds of thousands of transaction
    times, which indentation would double in size (``jq .`` shows it indented).

    Transaction times are written to the nanosecond, the resolution they were measured at
    (perf_counter_ns): ``0.011283946`` rather than ``0.011283946000000001``.
    """
    data = report.model_dump(mode="json")
    for scenario in data["scenarios"]:
        scenario["latency_samples"] = [round(x, 9) for x in scenario["latency_samples"]]
    return json.dumps(data, separators=(",", ":")) + "\n"


def write_json(report: Report, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_json(report), encoding="utf-8")
    return path


def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a report of this SCHEMA_VERSION."""
    schema = Report.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": f"uowstress report, schema version {SCHEMA_VERSION}",
        "description": "What one `uowstress run` measured, judged and found. Times in"
        " seconds, memory in MB of 2**20 bytes, rates are fractions in [0, 1].",
    }


def schema_text() -> str:
    return json.dumps(report_schema(), indent=2, sort_keys=True) + "\n"


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema_text(), encoding="utf-8")
    return path


def _problems(error: ValidationError, limit: int = 5) -> str:
    items = error.errors()
    shown = [
        f"{'.'.join(str(p) for p in item['loc']) or '(top level)'}: {item['msg']}"
        for item in items[:limit]
    ]
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return "; ".join(shown) + more


# What to do about a file given as a report that is none.
GIVE_A_REPORT = "give the uowstress-report.json a run wrote"


def parse_report(data: object, source: str, advice: str = GIVE_A_REPORT) -> Report:
    """A Report from parsed JSON; ReportError names ``source`` and what is wrong, and says
    ``advice`` when it is not a report at all."""
    if not isinstance(data, dict):
        raise ReportError(
            f"{source}: not a uowstress report (expected a JSON object, got"
            f" {type(data).__name__}); {advice}"
        )
    if data.get("format") != REPORT_FORMAT:
        given = reprlib.repr(data.get("format"))
        raise ReportError(
            f'{source}: not a uowstress report (its "format" is {given}, not'
            f" {REPORT_FORMAT!r}); {advice}"
        )
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ReportError(
            f"{source}: report schema version {reprlib.repr(version)}, this uowstress reads version"
            f" {SCHEMA_VERSION}; compare reports written by the same version of uowstress"
        )
    try:
        report = Report.model_validate(data)
        _check_figures(report, source)
    except ValidationError as error:
        raise ReportError(
            f"{source}: malformed report: {_problems(error)}; it was edited or truncated,"
            " write it again with uowstress run"
        ) from None
    except RecursionError:
        # What the parser read may still be nested too deeply for the checks that walk it.
        raise ReportError(
            f"{source}: malformed report: nested too deeply to check; it was edited or"
            " damaged, write it again with uowstress run"
        ) from None
    return report


def _figures(result: ScenarioResult) -> Iterator[tuple[str, float | None, bool]]:
    """(field, value, may it be negative) of each measured figure a comparison, chart or
    trend reads."""
    yield "seconds", result.seconds, False
    for index, sample in enumerate(result.latency_samples):
        yield f"latency_samples[{index}]", sample, False
    if result.latency is not None:
        for name in Distribution.model_fields:
            yield f"latency.{name}", getattr(result.latency, name), False
    yield "ops_per_second", result.ops_per_second, False
    if result.memory is not None:
        yield "memory.peak_mb", result.memory.peak_mb, False
        yield "memory.growth_mb", result.memory.growth_mb, True  # memory can be given back
        yield "memory.python_peak_mb", result.memory.python_peak_mb, False
        for index, (when, mb) in enumerate(result.memory.timeline):
            yield f"memory.timeline[{index}][0]", when, False
            yield f"memory.timeline[{index}][1]", mb, False
    yield "cpu_seconds", result.cpu_seconds, False
    yield "cpu_utilisation", result.cpu_utilisation, False
    for outcome in ("transactions", "attempts"):
        counts = getattr(result, outcome)
        for name in Outcomes.model_fields:
            yield f"{outcome}.{name}", getattr(counts, name), False
    for index, point in enumerate(result.scalability):
        yield f"scalability[{index}].ops_per_second", point.ops_per_second, False
        yield f"scalability[{index}].efficiency", point.efficiency, False


def _figure_problem(value: float, signed: bool) -> str | None:
    """Why no run can have measured ``value``, or None when one can."""
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer beyond any float: no run counts that far
        return "is larger than any measurement"
    if not finite:
        return "is not a finite number"
    if value < 0 and not signed:
        return "is negative, which no measurement gives"
    return None


def _check_figures(report: Report, source: str) -> None:
    """ReportError for a figure no run can measure (negative, NaN, infinite, beyond a float):
    a comparison would judge it ("p nan ... REGRESSED") as if it had been measured."""
    for position, result in enumerate(report.scenarios):
        for name, value, signed in _figures(result):
            problem = None if value is None else _figure_problem(value, signed)
            if problem is None:
                continue
            raise ReportError(
                f"{source}: scenarios[{position}] ({result.id}): {name} ="
                f" {reprlib.repr(value)} {problem};"
                " the file was edited or damaged: write it again with uowstress run"
            )


def load_report(path: Path, advice: str = GIVE_A_REPORT) -> Report:
    """Read a report JSON file; ReportError names the file and the problem, and says `advice`
    when the file is no report."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(
            f"{path}: no such file; give the path of a uowstress-report.json"
        ) from None
    except IsADirectoryError:
        inner = path / "uowstress-report.json"
        if inner.is_file():
            return load_report(inner)
        raise ReportError(f"{path} is a folder without a uowstress-report.json") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ReportError(f"{path}: cannot be read: {error}") from None
    try:
        data = parse_json(raw)
    except NotJson as error:
        raise ReportError(
            f"{path}: not valid JSON ({error}); the file is truncated, damaged or not a"
            f" report: {advice}"
        ) from None
    return parse_report(data, str(path), advice)


def main() -> None:
    written = write_schema()
    sys.stdout.write(f"schema written to {written}\n")


if __name__ == "__main__":
    main()
