"""`uowstress compare`: the table, and exit 0 / 1 / 2."""

from __future__ import annotations

import json
import random
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tests import report_factory as rf
from uowstress.cli import main
from uowstress.report.compare import save_baseline
from uowstress.report.model import Report


def _run(scale: float, seed: int) -> Report:
    rng = random.Random(seed)
    samples = [scale * rng.lognormvariate(-4.5, 0.4) for _ in range(300)]
    return rf.report([rf.scenario("load", samples=samples, ops_per_second=100.0)])


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    return save_baseline(_run(1.0, 1), tmp_path / "baseline.json")


def test_a_regression_exits_1_and_is_named(tmp_path: Path, baseline: Path) -> None:
    slower = save_baseline(_run(1.4, 2), tmp_path / "new.json")
    code, out, _ = _invoke("compare", str(baseline), str(slower))
    assert code == 1, out
    assert "synthetic_suite::load[sqlite]" in out
    assert "latency_p50_s" in out and "REGRESSED" in out
    assert "1 regression in 3 comparisons" in out


def test_a_higher_threshold_lets_it_pass(tmp_path: Path, baseline: Path) -> None:
    slower = save_baseline(_run(1.4, 2), tmp_path / "new.json")
    code, out, _ = _invoke("compare", str(baseline), str(slower), "--fail-on-regression", "60")
    assert code == 0, out
    assert "0 regressions" in out


def test_reports_with_no_scenario_in_common_exit_2_without_a_traceback(
    tmp_path: Path, baseline: Path
) -> None:
    rng = random.Random(4)
    samples = [rng.lognormvariate(-4.5, 0.4) for _ in range(300)]
    elsewhere = rf.report([rf.scenario("load", samples=samples, backend="postgresql")])
    other = save_baseline(elsewhere, tmp_path / "other.json")
    code, out, _ = _invoke("compare", str(baseline), str(other))
    assert code == 2, out
    assert "nothing to compare" in out and "Traceback" not in out


def test_a_faster_run_is_worse_by_a_negative_change(tmp_path: Path, baseline: Path) -> None:
    faster = rf.report([rf.scenario("load", samples=[0.001] * 300, ops_per_second=250.0)])
    code, out, _ = _invoke(
        "compare", str(baseline), str(save_baseline(faster, tmp_path / "f.json"))
    )
    assert code == 0, out
    assert "worse by" in out
    (ops,) = [
        line
        for line in out.splitlines()
        if line.startswith("synthetic_suite::load") and "ops_per_second" in line
    ]
    assert "-150.0 %" in ops and "improved" in ops


def test_noise_exits_0(tmp_path: Path, baseline: Path) -> None:
    same = save_baseline(_run(1.0, 3), tmp_path / "new.json")
    code, out, _ = _invoke("compare", str(baseline), str(same), "--alpha", "0.05")
    assert code == 0, out
    assert "REGRESSED" not in out


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file"),
        ("{", "not valid JSON"),
        ('{"format": "uowstress.report", "schema_version": 1, "created_at": 5}', "malformed"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON (arrays or objects nested too deeply"),
        ('{"schema_version": ' + "9" * 5000 + "}", "not valid JSON (a number of more than"),
    ],
)
def test_an_unreadable_report_exits_2_naming_the_file(
    tmp_path: Path, baseline: Path, content: str | None, problem: str
) -> None:
    broken = tmp_path / "broken.json"
    if content is not None:
        broken.write_text(content)
    code, out, err = _invoke("compare", str(baseline), str(broken))
    assert code == 2, out
    assert str(broken) in err and problem in err


def test_bad_options_are_usage_errors(baseline: Path) -> None:
    code, _, err = _invoke("compare", str(baseline), str(baseline), "--alpha", "2")
    assert code == 2 and "--alpha" in err


def _float_options() -> list[tuple[str, str]]:
    return [
        (command.name, option.opts[0])
        for command in main.commands.values()
        for option in command.params
        if command.name and isinstance(option.type, click.types.FloatParamType)
    ]


def test_the_float_options_are_the_ones_checked_below() -> None:
    assert sorted(_float_options()) == sorted(
        [
            ("run", "--fail-on-regression"),
            ("run", "--isolation"),
            ("isolation", "--budget-seconds"),
            ("compare", "--fail-on-regression"),
            ("compare", "--alpha"),
            ("compare", "--min-effect"),
        ]
    )


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity"])
@pytest.mark.parametrize(("command", "option"), _float_options())
def test_a_number_option_refuses_nan_and_infinity_before_anything_runs(
    baseline: Path, command: str, option: str, value: str
) -> None:
    args = {"compare": [str(baseline), str(baseline)], "isolation": ["--db-url", "sqlite://"]}
    code, out, err = _invoke(command, *args.get(command, []), f"{option}={value}")
    assert code == 2, out + err
    assert f"Invalid value for '{option}'" in err, err
    assert "Traceback" not in out + err


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("ops_per_second", -5, "ops_per_second = -5.0 is negative"),
        ("latency_samples", "NaN", "latency_samples[3] = nan is not a finite number"),
        ("latency_samples", "Infinity", "latency_samples[3] = inf is not a finite number"),
    ],
)
def test_a_baseline_with_impossible_figures_is_refused_naming_the_field(
    tmp_path: Path, baseline: Path, field: str, value: object, said: str
) -> None:
    text = baseline.read_text()
    data = json.loads(text)
    if field == "latency_samples":
        data["scenarios"][0]["latency_samples"][3] = "@"
    else:
        data["scenarios"][0][field] = value
    # NaN and Infinity as Python's json writes them: not JSON, but what an edit leaves.
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text(json.dumps(data).replace('"@"', str(value)))
    code, out, err = _invoke("compare", str(corrupt), str(baseline))
    assert code == 2, out
    assert str(corrupt) in err and said in err and "scenarios[0]" in err, err
    assert "REGRESSED" not in out
