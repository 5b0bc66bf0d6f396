"""The main job end to end, as a new user runs it: `uowstress run` in the repository, in a
process of its own, on embedded SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema

from uowstress.report.json_report import SCHEMA_PATH

ROOT = Path(__file__).resolve().parents[2]
UOWSTRESS = Path(sys.executable).with_name("uowstress")


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UOWSTRESS), "run", "--output-dir", str(tmp_path / "out"),
         "--reproducers-dir", str(tmp_path / "rep"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )  # fmt: skip


def test_the_main_job_passes_on_sqlite_and_writes_three_reports(tmp_path: Path) -> None:
    done = _run(tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = tmp_path / "out"
    report = json.loads((out / "uowstress-report.json").read_text())
    jsonschema.validate(report, json.loads(SCHEMA_PATH.read_text()))
    assert report["summary"]["status"] == "passed"
    suites = {s["suite"] for s in report["scenarios"]}
    assert suites == {
        "simple_uow_performance",
        "unit_of_work_performance",
        "training_scenarios",
        "bottleneck_scenarios",
    }
    assert all(s["status"] == "passed" and s["backend"] == "sqlite" for s in report["scenarios"])
    assert {m["machine"] for m in report["machines"]} == {"acid", "sessions"}
    assert report["durability"] and report["durability"][0]["status"] == "passed"
    markdown = (out / "uowstress-report.md").read_text()
    assert "# uowstress report: PASSED" in markdown
    html = (out / "uowstress-report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Plotly" in html
    assert list((out / "history").glob("*.json"))


def test_a_weakened_system_exits_1_and_its_report_shows_how_to_replay(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        "--pattern",
        "test_state_machines.py",
        "--machine",
        "acid",
        "--kills",
        "0",
        "--target-option",
        "weaken=commit_swallows_errors",
    )
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-4000:]
    (written,) = (tmp_path / "rep").glob("*.json")
    report = json.loads((tmp_path / "out" / "uowstress-report.json").read_text())
    (finding,) = report["findings"]
    assert finding["replay_command"] == f"uv run uowstress replay {written}"
    markdown = (tmp_path / "out" / "uowstress-report.md").read_text()
    assert finding["replay_command"] in markdown
    first_step = finding["steps_by_session"][0][0]
    assert first_step.split(". ", 1)[1] in markdown
    html = (tmp_path / "out" / "uowstress-report.html").read_text()
    assert f"uv run uowstress replay {written}" in html
