"""The JSON report, its committed schema, and reading reports back."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests import report_factory as rf
from uowstress.errors import ReportError
from uowstress.report.json_report import (
    REGENERATE,
    SCHEMA_PATH,
    load_report,
    report_json,
    schema_text,
)
from uowstress.report.output import analyse


def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_committed_schema_is_the_models() -> None:
    assert SCHEMA_PATH.read_text() == schema_text(), (
        f"{SCHEMA_PATH} differs from the report model; regenerate it with `{REGENERATE}`"
        " and commit it (bump SCHEMA_VERSION if a field was removed or changed meaning)"
    )


@pytest.mark.parametrize(
    "report",
    [
        pytest.param(analyse(rf.full_report()), id="real-sqlite-with-everything"),
        pytest.param(rf.hostile_report(), id="synthetic-hostile"),
        pytest.param(rf.report([]), id="empty"),
    ],
)
def test_reports_validate_against_the_schema(report: rf.Report) -> None:
    _validator().validate(json.loads(report_json(report)))


def test_the_schema_rejects_what_the_model_rejects() -> None:
    data = json.loads(report_json(rf.report()))
    data["scenarios"][0]["latency"]["p95"] = "slow"
    errors = list(_validator().iter_errors(data))
    assert [e.json_path for e in errors] == ["$.scenarios[0].latency"]
    del data["scenarios"][0]["latency"]
    data["summary"]["surprise"] = 1
    assert any("surprise" in e.message for e in _validator().iter_errors(data))


def test_a_report_round_trips(tmp_path: Path) -> None:
    report = analyse(rf.full_report())
    path = tmp_path / "r.json"
    path.write_text(report_json(report))
    assert load_report(path) == report
    # A folder stands for the report a run wrote into it.
    path.rename(tmp_path / "uowstress-report.json")
    assert load_report(tmp_path) == report


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file"),
        ('{"format": "uowstress.report", ', "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"format": "something else"}', "not a uowstress report"),
        ('{"format": "uowstress.report", "schema_version": 99}', "schema version 99"),
        ('{"format": "uowstress.report", "schema_version": 1}', "malformed report: created_at"),
        # Hostile files: more nesting than the parser recurses through, an integer longer
        # than Python reads.
        ("[" * 100_000 + "]" * 100_000, "not valid JSON (arrays or objects nested too deeply"),
        (
            '{"format": "uowstress.report", "schema_version": ' + "9" * 5000 + "}",
            "not valid JSON (a number of more than 4300 digits)",
        ),
    ],
)
def test_unreadable_reports_are_named_with_their_problem(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ReportError) as raised:
        load_report(path)
    assert str(path) in str(raised.value)
    assert problem in str(raised.value)


def test_a_count_beyond_any_float_is_refused_naming_the_field(tmp_path: Path) -> None:
    data = json.loads(report_json(rf.report()))
    data["scenarios"][0]["transactions"]["committed"] = int("9" * 4000)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ReportError) as raised:
        load_report(path)
    said = str(raised.value)
    assert "scenarios[0]" in said and "transactions.committed = 999" in said
    assert "is larger than any measurement" in said
    assert len(said) < 500  # the number is cut short, not printed whole


def test_a_report_too_deep_for_its_checks_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.json"
    path.write_text(report_json(rf.report()))

    def too_deep(data: object) -> rf.Report:
        raise RecursionError("maximum recursion depth exceeded")

    # Data the parser read within its limit, walked again deeper in the stack.
    monkeypatch.setattr(rf.Report, "model_validate", too_deep)
    with pytest.raises(ReportError, match="malformed report: nested too deeply to check"):
        load_report(path)
