"""write_reports, analyse and the run history."""

from __future__ import annotations

import errno
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests import report_factory as rf
from uowstress.errors import ReportError
from uowstress.report import analyse, write_reports
from uowstress.report.history import HISTORY_DIR, load_history, record, trend
from uowstress.report.json_report import load_report, report_json
from uowstress.report.model import Report
from uowstress.report.output import hide_passwords, without_passwords


def _at(day: int, samples_scale: float = 1.0) -> Report:
    when = datetime(2026, 11, 1, 5, 0, tzinfo=UTC) + timedelta(days=day)
    samples = [0.01 * samples_scale] * 50
    return rf.report(
        [rf.scenario("load", samples=samples, ops_per_second=100.0 / samples_scale)],
        created_at=when.isoformat(),
    )


def test_write_reports_writes_each_format_and_the_history(tmp_path: Path) -> None:
    report = analyse(rf.full_report())
    paths = write_reports(report, tmp_path / "out", ["all"])
    assert set(paths) == {"markdown", "json", "html", "history"}
    assert paths["markdown"].name == "uowstress-report.md"
    assert paths["markdown"].read_text().startswith("# uowstress report:")
    assert load_report(paths["json"]) == report
    assert "<!DOCTYPE html>" in paths["html"].read_text()[:100]
    assert paths["history"].parent == tmp_path / "out" / HISTORY_DIR
    kept = load_report(paths["history"])
    # The history keeps the figures, not the raw samples.
    assert [s.latency for s in kept.scenarios] == [s.latency for s in report.scenarios]
    assert all(not s.latency_samples for s in kept.scenarios)
    assert kept.model_copy(update={"scenarios": report.scenarios}) == report


def test_write_reports_writes_only_what_is_asked(tmp_path: Path) -> None:
    paths = write_reports(rf.report(), tmp_path, ["json"], history=False)
    assert set(paths) == {"json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uowstress-report.json"]
    with pytest.raises(ReportError, match="unknown report format 'pdf'"):
        write_reports(rf.report(), tmp_path, ["pdf"])


def test_an_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ReportError, match=r"cannot write .*file/out: .*choose another"):
        write_reports(rf.report(), blocker / "out", ["markdown"])


@pytest.mark.parametrize("blocked", ["uowstress-report.html", "history"])
def test_a_report_file_that_cannot_be_written_leaves_the_earlier_runs_reports_whole(
    tmp_path: Path, blocked: str
) -> None:
    earlier = write_reports(rf.report(), tmp_path, ["all"], history=False)
    before = {name: path.read_text() for name, path in earlier.items()}
    # A folder where a report goes (a file could not be written there, even by root).
    if blocked == "history":
        (tmp_path / "history").write_text("not a folder")
    else:
        (tmp_path / blocked).unlink()
        (tmp_path / blocked).mkdir()
        del before["html"]
    changed = rf.report().model_copy(update={"command": "uowstress run --a-later-run"})
    with pytest.raises(ReportError, match=f"cannot write {tmp_path / blocked}"):
        write_reports(changed, tmp_path, ["all"])
    assert {name: earlier[name].read_text() for name in before} == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_disk_that_fills_up_while_the_history_is_written_leaves_no_truncated_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = write_reports(_at(0), tmp_path, ["all"])
    before = {name: path.read_text() for name, path in earlier.items()}
    real_write = Path.write_text

    def fills_up(self: Path, data: str, *args: object, **kwargs: object) -> int:
        if self.parent.name == HISTORY_DIR:
            real_write(self, data[: len(data) // 2], encoding="utf-8")
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, data, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", fills_up)
    with pytest.raises(ReportError, match="No space left on device"):
        write_reports(_at(1), tmp_path, ["all"])
    monkeypatch.undo()
    assert {name: path.read_text() for name, path in earlier.items()} == before
    assert sorted(p.name for p in (tmp_path / HISTORY_DIR).iterdir()) == [earlier["history"].name]
    history = load_history(tmp_path)
    assert history.unreadable == [] and len(history.runs) == 1


def test_analyse_fills_insights_recommendations_and_regressions() -> None:
    slow = _at(1, samples_scale=1.5)
    analysed = analyse(slow, baseline=_at(0))
    assert analysed.insights == [] and analysed.recommendations == []
    assert [(r.metric, r.regressed) for r in analysed.regressions] == [
        ("latency_p50_s", True),
        ("ops_per_second", True),
    ]
    assert analysed.summary.regressions == 2
    assert slow.regressions == []  # the report given is not changed
    real = analyse(rf.report())
    assert real.insights and real.recommendations


def test_history_keeps_the_newest_runs_in_order(tmp_path: Path) -> None:
    for day in range(7):
        record(_at(day), tmp_path, limit=5)
    history = load_history(tmp_path)
    assert [r.created_at[:10] for r in history.runs] == [f"2026-11-{d:02d}" for d in range(3, 8)]
    latest = history.latest()
    assert latest is not None and latest.created_at == _at(6).created_at


def test_two_runs_in_the_same_second_are_both_kept(tmp_path: Path) -> None:
    first = record(_at(0), tmp_path)
    second = record(_at(0), tmp_path)
    assert first != second
    assert len(load_history(tmp_path).runs) == 2


def test_runs_of_one_second_keep_their_order_and_the_oldest_goes_first(tmp_path: Path) -> None:
    for n in range(3):
        record(_at(0).model_copy(update={"command": f"run {n}"}), tmp_path, limit=2)
    history = load_history(tmp_path)
    # The third run of that second made the first go; the latest is the third.
    assert [r.command for r in history.runs] == ["run 1", "run 2"]
    latest = history.latest()
    assert latest is not None and latest.command == "run 2"


def test_an_unreadable_history_entry_is_listed_and_left_alone(tmp_path: Path) -> None:
    record(_at(0), tmp_path)
    broken = tmp_path / HISTORY_DIR / "20261102T050000.000000Z.json"
    broken.write_text("{ not json")
    history = load_history(tmp_path)
    assert len(history.runs) == 1
    assert [p for p, _ in history.unreadable] == [broken]
    assert broken.exists()
    # What to do about it is said of a history entry, not of a report given by hand.
    [(_, reason)] = history.unreadable
    assert "left out of the trends and left in place: repair it" in reason
    assert "a run wrote" not in reason


def test_keeping_the_newest_runs_never_deletes_an_entry_that_cannot_be_read(
    tmp_path: Path,
) -> None:
    broken = tmp_path / HISTORY_DIR / "20261001T050000.000000Z.json"  # older than every run
    broken.parent.mkdir()
    broken.write_text("{ not json")
    for day in range(4):
        record(_at(day), tmp_path, limit=2)
    history = load_history(tmp_path)
    assert broken.read_text() == "{ not json"
    assert [p for p, _ in history.unreadable] == [broken]
    # It does not take the place of a run either: the newest two runs are kept.
    assert [r.created_at[:10] for r in history.runs] == ["2026-11-03", "2026-11-04"]


def test_a_run_of_another_version_of_uowstress_is_dropped_in_its_turn(tmp_path: Path) -> None:
    # This version cannot read it, but it is a run, not a user's file: kept, it would stay
    # for good and be said to be unreadable after every run.
    older = tmp_path / HISTORY_DIR / "20261001T050000.000000Z.json"
    older.parent.mkdir()
    data = json.loads(report_json(_at(-30)))
    data["schema_version"] = 0
    older.write_text(json.dumps(data))
    record(_at(0), tmp_path, limit=2)
    assert older.exists()  # within the limit, with the run just kept
    record(_at(1), tmp_path, limit=2)
    assert not older.exists()
    history = load_history(tmp_path)
    assert history.unreadable == []
    assert [r.created_at[:10] for r in history.runs] == ["2026-11-01", "2026-11-02"]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("[" * 100_000 + "]" * 100_000, id="nested-too-deeply"),
        pytest.param('{"format": "uowstress.report", "schema_version": 1' + "0" * 5000 + "}",
                     id="huge-integer"),
    ],
)  # fmt: skip
def test_a_hostile_history_entry_is_listed_and_the_reports_are_still_written(
    tmp_path: Path, content: str
) -> None:
    record(_at(0), tmp_path)
    broken = tmp_path / HISTORY_DIR / "20261102T050000.000000Z.json"
    broken.write_text(content)
    history = load_history(tmp_path)
    assert len(history.runs) == 1
    [(path, why)] = history.unreadable
    assert path == broken and "not valid JSON" in why
    paths = write_reports(_at(2), tmp_path, ["all"])
    assert set(paths) == {"markdown", "json", "html", "history"}
    assert str(broken) in paths["html"].read_text()
    assert broken.read_text() == content


def test_trend_follows_a_metric_across_runs(tmp_path: Path) -> None:
    runs = [_at(0), _at(1, 2.0), _at(2, 4.0)]
    series = trend(runs, "p95_s")
    assert series == {
        "synthetic_suite::load[sqlite]": [
            (runs[0].created_at, pytest.approx(0.01)),
            (runs[1].created_at, pytest.approx(0.02)),
            (runs[2].created_at, pytest.approx(0.04)),
        ]
    }
    with pytest.raises(ReportError, match="choose one of"):
        trend(runs, "nope")


def test_the_html_page_plots_trends_once_there_is_history(tmp_path: Path) -> None:
    write_reports(_at(0), tmp_path, ["html"])
    first = (tmp_path / "uowstress-report.html").read_text()
    assert "chart-trend-p95_s" not in first
    write_reports(_at(1, 2.0), tmp_path, ["html"])
    second = (tmp_path / "uowstress-report.html").read_text()
    assert 'data-chart="chart-trend-p95_s"' in second
    assert 'data-chart="chart-trend-ops_per_second"' in second


def test_a_report_time_that_is_not_iso_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not an ISO 8601 time"):
        record(rf.report(created_at="yesterday"), tmp_path)


def test_the_json_written_is_the_models_dump(tmp_path: Path) -> None:
    report = rf.report()
    paths = write_reports(report, tmp_path, ["json"], history=False)
    assert json.loads(paths["json"].read_text()) == report.model_dump(mode="json")


def test_no_password_reaches_a_written_report(tmp_path: Path) -> None:
    secret = "s3cr3t-pw"
    leaky = rf.report(
        [rf.scenario("load", message=f"OperationalError at postgresql://app:{secret}@db/x")],
        command=f"uowstress run --db-url mysql+pymysql://root:{secret}@127.0.0.1/test",
    )
    paths = write_reports(leaky, tmp_path, ["all"])
    for path in paths.values():
        text = path.read_text()
        assert secret not in text, path
    assert "mysql+pymysql://root:***@127.0.0.1/test" in paths["markdown"].read_text()
    assert without_passwords(rf.report()) == rf.report()  # nothing to hide: unchanged


def test_the_errors_of_a_run_reach_every_format_without_their_passwords(tmp_path: Path) -> None:
    secret = "s3cr3t-pw"
    report = rf.report([rf.scenario()])
    report.summary.status, report.summary.exit_status = "error", 2
    report.summary.errors = [
        f"durability on postgresql: OperationalError: postgresql://app:{secret}@db/x is down",
        f"isolation search on mysql failed: mysql://root@db/x?password={secret}",
    ]
    paths = write_reports(report, tmp_path, ["all"], history=False)
    for path in paths.values():
        written = path.read_text()
        assert secret not in written, path
        assert "durability on postgresql: OperationalError: postgresql://app:***@db/x" in (
            written.replace("\\", "")  # Markdown escapes the asterisks
        ), path
    assert load_report(paths["json"]).summary.errors == [
        "durability on postgresql: OperationalError: postgresql://app:***@db/x is down",
        "isolation search on mysql failed: mysql://root@db/x?password=***",
    ]
    html = paths["html"].read_text()
    assert 'id="errors"' in html and 'href="#errors"' in html


def test_hide_passwords_hides_them_in_any_text() -> None:
    assert hide_passwords("at postgresql://u:pw@h/d and x://a@b?password=pw") == (
        "at postgresql://u:***@h/d and x://a@b?password=***"
    )
    assert hide_passwords("nothing secret") == "nothing secret"
