"""Parametrized scenarios: each parameter is a scenario of its own in comparisons, baselines,
titles and charts; reports of earlier versions still match."""

from __future__ import annotations

import json
import random

from tests import report_factory as rf
from uowstress.report import charts, views
from uowstress.report.compare import compare, compare_all, render_comparison
from uowstress.report.history import node_params, scenario_key
from uowstress.report.insights import insights
from uowstress.report.json_report import parse_report, report_json
from uowstress.report.markdown import render_markdown
from uowstress.report.model import Report, ScenarioResult


def _draw(seed: int, scale: float) -> list[float]:
    rng = random.Random(seed)
    return [scale * rng.lognormvariate(-4.5, 0.3) for _ in range(300)]


def _hot(threads: int, seed: int, **fields: object) -> ScenarioResult:
    # Ten threads wait far longer than one: the two parameters measure different things.
    values: dict[str, object] = {
        "id": f"tests/performance/test_synthetic_suite.py::test_hot[sqlite-{threads}]",
        "params": str(threads),
        "threads": threads,
        "ops_per_second": 100.0 / threads,
        **fields,
    }
    return rf.scenario("hot", samples=_draw(seed, 10.0 if threads == 10 else 1.0), **values)


def _run(seed: int) -> Report:
    return rf.report([_hot(10, seed), _hot(1, seed + 1)])


def test_node_params_leave_the_database_out() -> None:
    assert node_params("t.py::test_hot[sqlite-10]", "sqlite") == "10"
    assert node_params("t.py::test_hot[10-postgresql]", "postgresql") == "10"
    assert node_params("t.py::test_hot[sqlite1-a-b-shard0]", "sqlite") == "a-b-shard0"
    assert node_params("t.py::test_basic[sqlite]", "sqlite") == ""
    assert node_params("t.py::test_basic", "sqlite") == ""


def test_each_parameter_is_its_own_scenario_and_nothing_regresses() -> None:
    old, new = _run(1), _run(10)
    assert [scenario_key(s) for s in new.scenarios] == [
        "synthetic_suite::hot[10][sqlite]",
        "synthetic_suite::hot[1][sqlite]",
    ]
    comparisons = compare_all(old, new)
    assert len(comparisons) == 6  # latency, throughput and memory of each parameter
    assert compare(old, new) == []
    assert "hot[10][sqlite]" in render_comparison(comparisons, old, new)


def test_a_baseline_of_an_earlier_version_still_matches() -> None:
    # Earlier reports had no "params": the parameters are read from the node id.
    data = json.loads(report_json(_run(1)))
    for scenario in data["scenarios"]:
        del scenario["params"]
    data["scenarios"].append(json.loads(rf.scenario("plain").model_dump_json(exclude={"params"})))
    old = parse_report(data, "old.json")
    assert [s.params for s in old.scenarios] == [None, None, None]
    new = rf.report([*_run(10).scenarios, rf.scenario("plain", params="")])
    assert [scenario_key(s) for s in old.scenarios] == [scenario_key(s) for s in new.scenarios]
    assert scenario_key(new.scenarios[2]) == "synthetic_suite::plain[sqlite]"
    assert len(compare_all(old, new)) == 9 and compare(old, new) == []


def test_titles_insights_and_chart_labels_tell_the_parameters_apart() -> None:
    report = _run(1)
    markdown = render_markdown(report)
    assert "### synthetic\\_suite / hot\\[10\\] on sqlite" in markdown
    assert "### synthetic\\_suite / hot\\[1\\] on sqlite" in markdown
    assert [views.scenario_label(s) for s in report.scenarios] == [
        "hot[10] on sqlite",
        "hot[1] on sqlite",
    ]
    labels = charts.scenario_labels(report.scenarios)
    assert sorted(labels.values()) == ["hot[10] [sqlite]", "hot[1] [sqlite]"]
    boxes = charts.latency_boxes(report.scenarios)
    assert boxes is not None
    boxed = [trace.name for trace in boxes.figure.data if trace.type == "box"]
    assert sorted(boxed) == sorted(labels.values())
    percentiles = charts.percentiles(report.scenarios)
    assert percentiles is not None
    assert list(percentiles.figure.data[0].y) == ["hot[10] [sqlite]", "hot[1] [sqlite]"]
    assert all("hot[" in i.text for i in insights(report) if i.scenario)


def test_the_same_label_twice_is_made_unique() -> None:
    twice = [_hot(1, 1), _hot(1, 2, id="t.py::test_hot[sqlite1-1]")]
    assert len(set(charts.scenario_labels(twice).values())) == 2
