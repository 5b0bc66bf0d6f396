"""The Markdown report: every section, every figure with its tier, and hostile text inert."""

from __future__ import annotations

import re

from tests import report_factory as rf
from uowstress.report import formatting as fmt
from uowstress.report.html import render_html
from uowstress.report.markdown import code, code_block, render_markdown, text
from uowstress.report.model import Judged, Regression


def _outside_code(markdown: str) -> str:
    """The Markdown with fenced blocks and code spans removed: what a viewer renders as
    markup."""
    without_blocks = re.sub(r"(`{3,})[^\n]*\n.*?\n\1", "", markdown, flags=re.DOTALL)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", without_blocks)


def test_every_section_of_a_full_report_is_there() -> None:
    report = rf.full_report()
    markdown = render_markdown(report)
    for heading in (
        "# uowstress report: FAILED",
        "## System",
        "## Suites",
        "## Findings (1)",
        "## Scenario results",
        "## State machines",
        "## Durability",
        "## Isolation anomalies",
    ):
        assert heading in markdown, heading
    for value in ("3.40.1", "2.0.36", "6.118.0", "3.11.2", "x86\\_64", "7.8 GB"):
        assert value in markdown, value


def test_each_scenario_shows_its_figures_and_tiers() -> None:
    report = rf.report()
    markdown = render_markdown(report)
    for result in report.scenarios:
        section = markdown.split(f"/ {text(result.scenario)} on sqlite")[1].split("\n### ")[0]
        if result.latency is not None:
            for figure in ("avg", "p50", "p95", "p99", "max"):
                assert f"| {figure} |" in section
            assert fmt.duration(result.latency.p95) in section
        for judged in result.verdicts:
            tier = judged.tier.upper() if judged.tier == "critical" else judged.tier
            assert tier in section, (result.scenario, judged.metric)
        for name in result.metrics:
            assert text(name) in section
        for check in result.checks:
            assert text(check.name) in section
    # The real concurrent-stress run fell below the critical success rate.
    stress = markdown.split("concurrent\\_transaction\\_stress on sqlite")[1].split("\n### ")[0]
    assert re.search(r"\| success rate \| 48\.0 % \| \*\*CRITICAL\*\* \|", stress)


def test_findings_show_steps_per_session_and_the_replay_command() -> None:
    finding = rf.hostile_finding()
    markdown = render_markdown(rf.report([rf.scenario()], findings=[finding]))
    assert "Session 0:" in markdown and "Session 1:" in markdown
    assert "uv run uowstress replay 4433f13433e3" in markdown
    assert "shrunk from 37" in markdown
    for lines in finding.steps_by_session:
        for line in lines:
            assert line in markdown  # verbatim, inside a fenced block


def test_steps_are_labelled_with_their_sessions_and_numbered_once() -> None:
    # A shrunk sequence that kept sessions 0 and 2: the message names "session 2".
    finding = rf.hostile_finding().model_copy(
        update={
            "steps_by_session": [["1. begin", "3. commit"], ["2. begin", "4. commit"]],
            "sessions": [0, 2],
            "reproducer_path": "rep|orts/4433f13433e3.json",
        }
    )
    report = rf.report([rf.scenario()], findings=[finding])
    markdown = render_markdown(report)
    assert "Session 0:" in markdown and "Session 2:" in markdown
    assert "Session 1:" not in markdown
    assert "\n2. begin\n4. commit\n" in markdown  # the sequence's numbers, not 1., 2. again
    # Outside a table a pipe is not escaped: the backslash would stay in the copied path.
    assert "Reproducer: `rep|orts/4433f13433e3.json`" in markdown
    html = render_html(report)
    assert "<strong>session 2</strong>" in html and "<strong>session 1</strong>" not in html
    # A report written before sessions were recorded: its lists are sessions 0, 1, ...
    old = finding.model_copy(update={"sessions": []})
    assert "Session 1:" in render_markdown(rf.report([rf.scenario()], findings=[old]))


def test_a_change_too_small_for_one_decimal_keeps_its_sign() -> None:
    assert fmt.signed_percent(-0.00018) == "-0.02 %"
    assert fmt.signed_percent(0.00018) == "+0.02 %"
    assert fmt.signed_percent(0.0) == "+0.0 %"
    assert fmt.signed_percent(-0.25) == "-25.0 %"
    assert fmt.shortened("abcdef", 4) == "abc…" and fmt.shortened("abc", 4) == "abc"


def test_hostile_strings_never_reach_the_markup() -> None:
    markdown = render_markdown(rf.hostile_report())
    assert rf.HOSTILE_SCRIPT in markdown  # kept verbatim where fenced
    rendered = _outside_code(markdown)
    assert "<script" not in rendered
    assert "<img" not in rendered
    assert "&lt;script&gt;" in rendered  # shown as text


def test_a_table_cell_cannot_be_split_by_a_pipe() -> None:
    assert text("a | b") == "a \\| b"
    assert code("x | y") == "`x \\| y`"
    assert code("x | y", cell=False) == "`x | y`"
    assert code("a `tick`") == "`` a `tick` ``"
    assert text("# not a heading") == "\\# not a heading"
    assert text("1. not a list") == "1\\. not a list"
    assert code_block(["```", "inside"]).startswith("````text\n")


def test_isolation_matrix_and_its_reproducer() -> None:
    markdown = render_markdown(rf.report([rf.scenario()], isolation=[rf.isolation_matrix()]))
    assert "| level | P4 | G0 |" in markdown
    assert "| read committed | observed | — |" in markdown
    assert "| serializable | — | — |" in markdown
    assert "`write k0 = 1`" in markdown
    assert "| # | session 0 | session 1 |" in markdown


def test_regressions_are_listed_when_present() -> None:
    regression = Regression(
        scenario="suite::a[sqlite]",
        metric="latency_p50_s",
        baseline=0.01,
        current=0.013,
        change=0.3,
        p_value=0.0001,
        effect_size=0.4,
        regressed=True,
    )
    markdown = render_markdown(rf.report([rf.scenario()], regressions=[regression]))
    assert "## Against the baseline" in markdown
    assert "+30.0 %" in markdown and "**regressed**" in markdown
    assert "## Against the baseline" not in render_markdown(rf.report([rf.scenario()]))


def test_recommendations_show_their_triggering_figure() -> None:
    from uowstress.report.output import analyse

    report = analyse(rf.report())
    markdown = render_markdown(report)
    assert report.recommendations
    for rec in report.recommendations:
        assert f"{code(rec.metric)} = {fmt.number(rec.value)}" in markdown


def test_a_scenario_that_measured_nothing_says_so() -> None:
    from uowstress.report.model import ScenarioResult

    bare = ScenarioResult(
        id="x",
        suite="s",
        scenario="bare",
        backend="sqlite",
        database="sqlite://",
        status="error",
        message="boom",
    )
    markdown = render_markdown(rf.report([bare]))
    assert "### s / bare on sqlite: **ERROR**" in markdown
    assert "No figures were measured." in markdown
    assert "```text\nboom\n```" in markdown


def test_errors_of_the_run_come_right_after_the_verdict() -> None:
    report = rf.report([rf.scenario()])
    assert "## Errors" not in render_markdown(report)
    report.summary.status, report.summary.exit_status = "error", 2
    report.summary.errors = ["acid machine on sqlite: StepError: no unit_of_work open"]
    markdown = render_markdown(report)
    assert markdown.startswith("# uowstress report: ERROR")
    assert "exit status 2" in markdown
    head, rest = markdown.split("## Errors", 1)
    assert "## System" not in head and "## System" in rest
    assert "- acid machine on sqlite: StepError: no unit\\_of\\_work open" in rest


def _step_verdicts() -> list[Judged]:
    """Two budgets for each of seven steps: thirteen critical, the last step's p95 optimal."""
    verdicts = []
    for step in ("abort", "begin", "commit", "create", "fault", "query", "zap"):
        for metric in ("step_p95_s", "step_max_s"):
            tier = "optimal" if (step, metric) == ("zap", "step_p95_s") else "critical"
            verdicts.append(
                Judged(
                    metric=metric,
                    value=0.5,
                    tier=tier,
                    threshold=0.1,
                    message=f"step {step}: {metric} = 0.5 s ({tier})",
                )
            )
    return verdicts


def test_every_verdict_of_a_machine_is_shown() -> None:
    run = rf.machine_run(verdicts=_step_verdicts(), status="failed")
    report = rf.report([], machines=[run])
    markdown = render_markdown(report)
    machine = markdown.split("## State machines")[1]
    assert machine.count("**CRITICAL**") == 13  # as many as the JSON holds
    assert machine.count("| optimal |") == 1
    for step in ("abort", "begin", "commit", "create", "fault", "query", "zap"):
        assert f"step {step}: step\\_max\\_s" in machine, step
    # The worst first: no optimal row above a critical one.
    rows = [line for line in machine.splitlines() if "step\\_" in line and "|" in line]
    assert "optimal" in rows[-1]
    page = render_html(report)
    assert page.count('<span class="tier tier-critical">critical</span>') == 13


def test_the_histories_the_anomaly_checker_judged_are_shown() -> None:
    run = rf.machine_run(anomaly_checks=5238)
    acid = rf.machine_run(id="acid", machine="acid", sessions=1)
    report = rf.report([], machines=[run, acid])
    markdown = render_markdown(report)
    assert markdown.count("| histories checked for anomalies | 5,238 |") == 1
    assert "histories checked for anomalies" in render_html(report)
    assert report.model_dump()["machines"][0]["anomaly_checks"] == 5238


def test_counts_agree_with_their_nouns() -> None:
    assert fmt.counted(1, "SIGKILL") == "1 SIGKILL"
    assert fmt.counted(0, "acknowledged commit") == "0 acknowledged commits"
    assert fmt.counted(1200, "kill") == "1,200 kills"


def test_two_databases_of_one_backend_are_told_apart_in_titles_and_tables() -> None:
    first = rf.scenario("basic", backend="postgresql")
    second = rf.scenario(
        "basic",
        backend="postgresql",
        samples=[s * 2 for s in first.latency_samples],
        id="tests/performance/test_synthetic_suite.py::test_basic[postgresql1]",
    )
    run = rf.report([first, second])
    markdown = render_markdown(run)
    for where in ("postgresql", "postgresql1"):
        assert markdown.count(f"/ basic on {where}: ") == 1, where
        # One suites row each, not the two merged into one.
        assert re.search(rf"\| synthetic\\_suite \| {where} \| 1 \|", markdown), where
    html = render_html(run)
    assert html.count("/ basic on postgresql1: ") == 1
    assert html.count("/ basic on postgresql: ") == 1


def test_the_summary_counts_the_durability_checks_with_the_state_machines() -> None:
    from collections import Counter

    from uowstress.options import option_values
    from uowstress.pytest_plugin import ResultStore
    from uowstress.runner import RunRequest, build_report

    store = ResultStore(
        machines=[rf.machine_run(id="acid-sqlite", machine="acid", status="failed")],
        durability=[rf.durability_run(status="failed")],
    )
    request = RunRequest(options=option_values({}), path=".")
    report = build_report(request, store, [], None, 1.0, 1, Counter({"failed": 2}))
    assert report.summary.machines == {"failed": 1}
    assert report.summary.durability == {"failed": 1}
    assert report.model_dump(mode="json")["summary"]["durability"] == {"failed": 1}
    markdown = render_markdown(report)
    assert "- state-machine runs: 1 failed\n- durability checks: 1 failed\n" in markdown
    assert "durability checks: 1 failed;" in render_html(report)
    nothing = build_report(request, ResultStore(), [], None, 1.0, 0, Counter())
    assert "- durability checks: none\n" in render_markdown(nothing)
