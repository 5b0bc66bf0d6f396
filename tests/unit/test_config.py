"""Unit tests of uowstress.config: loading, validation messages, overrides and judging."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from uowstress.config import (
    METRICS,
    PerformanceConfig,
    Thresholds,
    Tier,
    TierThresholds,
    judge,
    judge_all,
    load_config,
    parse_config,
    verdict,
)
from uowstress.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
SEVERITY = [Tier.OPTIMAL, Tier.OK, Tier.WARNING, Tier.CRITICAL]


def write(tmp_path: Path, text: str, name: str = "perf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


# --------------------------------------------------------------------------- defaults


def test_shipped_file_equals_the_built_in_defaults() -> None:
    assert load_config(REPO_ROOT / "performance_config.yaml") == load_config(None)


def test_defaults_carry_the_original_suite_tiers() -> None:
    thresholds = load_config(None).thresholds
    rows = {
        tier: (t.memory_mb, t.avg_transaction_s, t.success_rate, t.deadlock_rate)
        for tier, t in (
            ("critical", thresholds.critical),
            ("warning", thresholds.warning),
            ("optimal", thresholds.optimal),
        )
    }
    assert rows == {
        "critical": (4096, 5.0, 0.50, 0.50),
        "warning": (1024, 1.0, 0.80, 0.20),
        "optimal": (500, 0.1, 0.95, 0.05),
    }
    assert load_config(None).workloads.scalability_threads == [1, 2, 4, 8]


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing but a comment\n")) == PerformanceConfig()


def test_partial_tier_takes_the_rest_from_that_tiers_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "thresholds:\n  warning:\n    memory_mb: 2048\n"))
    assert config.thresholds.warning.memory_mb == 2048
    assert config.thresholds.warning.avg_transaction_s == 1.0  # warning's default, not critical's
    assert config.thresholds.critical == PerformanceConfig().thresholds.critical


def test_partial_workloads(tmp_path: Path) -> None:
    text = "workloads:\n  writers: 3\n  scalability_threads: [4, 1, 2]\n"
    workloads = load_config(write(tmp_path, text)).workloads
    assert workloads.writers == 3
    assert workloads.scalability_threads == [1, 2, 4]
    assert workloads.bulk_records == 1200


# --------------------------------------------------------------------------- bad input


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    message = config_error(tmp_path, "thresholds:\n  warning:\n    memroy_mb: 100\n")
    assert "perf.yaml" in message
    assert "unknown key 'thresholds.warning.memroy_mb' (did you mean 'memory_mb'?)" in message


def test_unknown_key_without_a_close_match_lists_the_valid_ones(tmp_path: Path) -> None:
    message = config_error(tmp_path, "colour: blue\n")
    assert "unknown key 'colour' (valid keys here: thresholds, backends, workloads)" in message


def test_wrong_type_names_value_type_and_expectation(tmp_path: Path) -> None:
    message = config_error(tmp_path, "thresholds:\n  warning:\n    memory_mb: lots\n")
    assert "thresholds.warning.memory_mb: found 'lots' (str); expected a number > 0" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "workloads:\n  writers: 2.5\n",
            "workloads.writers: found 2.5 (float); expected an integer",
        ),
        (
            "workloads:\n  writers: '20'\n",
            "workloads.writers: found '20' (str); expected an integer",
        ),
        (
            "thresholds:\n  optimal:\n    success_rate: yes\n",
            "thresholds.optimal.success_rate: found True (bool); expected a fraction",
        ),
        (
            "thresholds:\n  warning: 3\n",
            "thresholds.warning: found 3 (int); expected a mapping with keys memory_mb,",
        ),
        (
            "workloads:\n  scalability_threads: 4\n",
            "workloads.scalability_threads: found 4 (int); expected a list of distinct",
        ),
    ],
)
def test_other_wrong_types(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in config_error(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "thresholds:\n  critical:\n    memory_mb: 4e3\n",
            "thresholds.critical.memory_mb: found '4e3' (str); expected a number > 0 (YAML "
            "reads 4e3 as text, not as a number: write 4000)",
        ),
        (
            "thresholds:\n  optimal:\n    step_p95_s: 1e-7\n",
            "(YAML reads 1e-7 as text, not as a number: write 0.0000001)",
        ),
        (
            "workloads:\n  bulk_records: 1.2e3\n",
            "(YAML reads 1.2e3 as text, not as a number: write 1200)",
        ),
        ("workloads:\n  writers: '20'\n", "(the quotes make it text: write 20 without them)"),
    ],
)
def test_a_number_yaml_reads_as_text_says_how_to_write_it(
    tmp_path: Path, text: str, expected: str
) -> None:
    # YAML 1.1 takes an exponent as part of a number only after a dot and with a sign.
    assert expected in config_error(tmp_path, text)


def test_text_that_is_no_number_gets_no_hint(tmp_path: Path) -> None:
    message = config_error(tmp_path, "thresholds:\n  warning:\n    memory_mb: lots\n")
    assert message.endswith("expected a number > 0")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "thresholds:\n  critical:\n    success_rate: 1.5\n",
            "thresholds.critical.success_rate: found 1.5 (float); expected a fraction between 0 "
            "and 1",
        ),
        (
            "thresholds:\n  critical:\n    memory_mb: -1\n",
            "thresholds.critical.memory_mb: found -1 (int); expected a number > 0",
        ),
        ("workloads:\n  bulk_records: 0\n", "workloads.bulk_records: found 0 (int); expected an "),
        (
            "workloads:\n  scalability_threads: [1, 0]\n",
            "workloads.scalability_threads[1]: found 0 (int); expected an integer from 1 to 1024",
        ),
        (
            "workloads:\n  deadlock_resources: 2\n",
            "workloads.deadlock_resources: found 2 (int); expected an integer from 3 (each",
        ),
        (
            # A contention scenario on one thread never conflicts: its check could only fail.
            "workloads:\n  concurrent_threads: 1\n",
            "workloads.concurrent_threads: found 1 (int); expected an integer from 2 (one",
        ),
        (
            "workloads:\n  deadlock_threads: 1\n",
            "workloads.deadlock_threads: found 1 (int); expected an integer from 2 (one thread",
        ),
        (
            # Past these a scenario never ends, or exhausts the machine: a typo, said at once.
            "workloads:\n  sequential_transactions: 99999999999999999999999\n",
            "workloads.sequential_transactions: found 99999999999999999999999 (int); expected an"
            " integer from 1 to 100,000,000",
        ),
        (
            "workloads:\n  payload_kb: [1, 5120000]\n",
            "workloads.payload_kb[1]: found 5120000 (int); expected an integer from 1 to 1,048,576",
        ),
        (
            "workloads:\n  scalability_threads: [1, 100000]\n",
            "workloads.scalability_threads[1]: found 100000 (int); expected an integer from 1 to"
            " 1024",
        ),
        (
            "thresholds:\n  critical:\n    avg_transaction_s: .inf\n",
            "thresholds.critical.avg_transaction_s: found inf (float)",
        ),
        (
            "thresholds:\n  critical:\n    deadlock_rate: .nan\n",
            "thresholds.critical.deadlock_rate: found nan (float)",
        ),
    ],
)
def test_out_of_range(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in config_error(tmp_path, text)


def test_every_problem_is_listed_in_one_message(tmp_path: Path) -> None:
    text = (
        "thresholds:\n"
        "  warning:\n"
        "    memroy_mb: 1\n"
        "    success_rate: 2\n"
        "workloads:\n"
        "  writers: -3\n"
        "  mixed_workers: many\n"
    )
    message = config_error(tmp_path, text)
    assert "(4 problems)" in message
    for line, key in (
        (3, "thresholds.warning.memroy_mb"),
        (4, "thresholds.warning.success_rate"),
        (6, "workloads.writers"),
        (7, "workloads.mixed_workers"),
    ):
        where = f"perf.yaml:{line}:"
        assert f"{where} {key}" in message or f"{where} unknown key '{key}'" in message
    # An out-of-range value is not reported again as a tier inconsistency.
    assert "at least as strict" not in message


def test_a_problem_names_the_line_of_its_key_where_the_file_has_it(tmp_path: Path) -> None:
    text = (
        "workloads:\n"
        "  payload_kb:\n"
        "    - 1\n"
        "    - 0\n"
        "backends:\n"
        "  sqlite:\n"
        "    thresholds:\n"
        "      warning: {deadlock_rate: 0.6}\n"
        "thresholds:\n"
        "  critical: {step_max_s: 1.0}\n"
    )
    message = config_error(tmp_path, text)
    assert "perf.yaml:4: workloads.payload_kb[1]: found 0 (int)" in message
    assert "perf.yaml:8: backends.sqlite.thresholds.warning.deadlock_rate: found 0.6" in message
    # critical.step_p95_s is not in the file (its default 2 exceeds the given step_max_s).
    assert "perf.yaml: thresholds.critical.step_p95_s: found 2 but" in message


def test_inconsistent_tiers(tmp_path: Path) -> None:
    text = (
        "thresholds:\n"
        "  warning:\n"
        "    memory_mb: 8192\n"  # looser than critical's 4096
        "    success_rate: 0.4\n"  # looser than critical's 0.5
    )
    message = config_error(tmp_path, text)
    assert "(2 problems)" in message
    assert (
        "thresholds.warning.memory_mb: found 8192 but thresholds.critical.memory_mb is 4096; "
        "expected warning <= critical"
    ) in message
    assert (
        "thresholds.warning.success_rate: found 0.4 but thresholds.critical.success_rate is "
        "0.5; expected warning >= critical"
    ) in message


def test_optimal_looser_than_warning(tmp_path: Path) -> None:
    message = config_error(tmp_path, "thresholds:\n  optimal:\n    deadlock_rate: 0.3\n")
    assert "thresholds.optimal.deadlock_rate: found 0.3 but thresholds.warning.deadlock_rate" in (
        message
    )


def test_step_p95_above_step_max(tmp_path: Path) -> None:
    message = config_error(tmp_path, "thresholds:\n  critical:\n    step_p95_s: 20\n")
    assert "thresholds.critical.step_p95_s: found 20 but thresholds.critical.step_max_s" in message


def test_backend_override_that_breaks_tier_order(tmp_path: Path) -> None:
    text = "backends:\n  sqlite:\n    thresholds:\n      warning:\n        deadlock_rate: 0.6\n"
    message = config_error(tmp_path, text)
    assert "(1 problem)" in message
    assert "backends.sqlite.thresholds.warning.deadlock_rate: found 0.6" in message
    assert "with the sqlite overrides merged in" in message


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    text = "thresholds:\n  warning:\n    memory_mb: [1, 2\n  optimal: {}\n"
    message = config_error(tmp_path, text)
    assert "perf.yaml:4:" in message
    assert "YAML syntax error" in message


def test_duplicate_key_names_both_lines(tmp_path: Path) -> None:
    text = "workloads:\n  writers: 2\n  writers: 3\n"
    message = config_error(tmp_path, text)
    assert "perf.yaml:3:" in message
    assert "the key 'writers' appears twice (first on line 2); keep one of them" in message


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"not found: .*nope\.yaml; check the path"):
        load_config(missing)


def test_text_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "perf.yaml"
    path.write_bytes(b"workloads:\n  writers: 10\n  # caf\xe9\n")
    with pytest.raises(ConfigError, match=r"perf\.yaml:3: not UTF-8 text .*save it as UTF-8"):
        load_config(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


@pytest.mark.parametrize(("text", "found"), [("- 1\n- 2\n", "list"), ("just text\n", "str")])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, found: str) -> None:
    message = config_error(tmp_path, text)
    assert "perf.yaml: the top level must be a mapping" in message
    assert f"found {found}" in message


def test_bad_backend_name(tmp_path: Path) -> None:
    message = config_error(tmp_path, "backends:\n  postgres: {}\n  oracle: {}\n  mariadb: {}\n")
    assert "unknown key 'backends.postgres' (did you mean 'postgresql'?)" in message
    assert "unknown key 'backends.oracle' (valid keys here: sqlite, postgresql, mysql)" in message
    assert "unknown key 'backends.mariadb' (MariaDB uses the 'mysql' key)" in message


def test_scalability_threads_need_the_baseline_and_no_duplicates(tmp_path: Path) -> None:
    message = config_error(tmp_path, "workloads:\n  scalability_threads: [2, 4]\n")
    assert "workloads.scalability_threads: found [2, 4] (list); must include 1" in message
    message = config_error(tmp_path, "workloads:\n  scalability_threads: [1, 2, 2]\n")
    assert "lists [2] more than once" in message


def test_programmatic_construction_checks_tier_order_too() -> None:
    loose = TierThresholds.model_validate(
        {**Thresholds().warning.model_dump(), "avg_transaction_s": 9.0}
    )
    with pytest.raises(ValidationError, match=r"thresholds\.warning\.avg_transaction_s"):
        PerformanceConfig(thresholds=Thresholds(warning=loose))


def test_parse_config_names_its_source() -> None:
    with pytest.raises(ConfigError, match="cli-overrides: unknown key 'workload'"):
        parse_config({"workload": {}}, source="cli-overrides")


# --------------------------------------------------------------------------- overrides


def test_thresholds_for_merges_backend_overrides(tmp_path: Path) -> None:
    text = (
        "backends:\n"
        "  sqlite:\n"
        "    thresholds:\n"
        "      warning: {deadlock_rate: 0.3}\n"
        "  mysql:\n"
        "    thresholds:\n"
        "      optimal: {avg_transaction_s: 0.05}\n"
    )
    config = load_config(write(tmp_path, text))
    sqlite = config.thresholds_for("sqlite")
    assert sqlite.warning.deadlock_rate == 0.3
    assert sqlite.warning.memory_mb == config.thresholds.warning.memory_mb
    assert sqlite.critical == config.thresholds.critical
    assert config.thresholds_for("postgresql") == config.thresholds
    assert config.thresholds_for("mariadb").optimal.avg_transaction_s == 0.05
    assert config.thresholds.warning.deadlock_rate == 0.2  # the base is left alone


def test_thresholds_for_unknown_backend() -> None:
    with pytest.raises(ConfigError, match="no thresholds for backend 'oracle'; use one of"):
        load_config(None).thresholds_for("oracle")


# --------------------------------------------------------------------------- judging

DEFAULTS = Thresholds()


@pytest.mark.parametrize(
    ("metric", "value", "tier"),
    [
        ("avg_transaction_s", 6.2, Tier.CRITICAL),
        ("avg_transaction_s", 5.0, Tier.WARNING),  # at the critical limit: not beyond it
        ("avg_transaction_s", 1.0, Tier.OK),
        ("avg_transaction_s", 0.5, Tier.OK),
        ("avg_transaction_s", 0.1, Tier.OPTIMAL),  # meeting the target counts
        ("avg_transaction_s", 0.01, Tier.OPTIMAL),
        ("success_rate", 0.42, Tier.CRITICAL),
        ("success_rate", 0.5, Tier.WARNING),
        ("success_rate", 0.8, Tier.OK),
        ("success_rate", 0.95, Tier.OPTIMAL),
        ("success_rate", 1.0, Tier.OPTIMAL),
        ("deadlock_rate", 0.51, Tier.CRITICAL),
        ("deadlock_rate", 0.21, Tier.WARNING),
        ("deadlock_rate", 0.0, Tier.OPTIMAL),
        ("memory_mb", 5000, Tier.CRITICAL),
        ("memory_mb", 2000, Tier.WARNING),
        ("memory_mb", 700, Tier.OK),
        ("example_memory_mb", 10, Tier.OPTIMAL),
    ],
)
def test_judge(metric: str, value: float, tier: Tier) -> None:
    assert judge(metric, value, DEFAULTS) is tier


def test_critical_verdict_message() -> None:
    result = verdict("avg_transaction_s", 6.2, DEFAULTS)
    assert result.tier is Tier.CRITICAL
    assert result.failed
    assert result.threshold == 5.0
    assert result.message == "avg_transaction_s = 6.2 s exceeds the critical threshold 5.0 s"


def test_verdict_messages_of_other_tiers() -> None:
    low = verdict("success_rate", 0.42, DEFAULTS)
    assert low.message == "success_rate = 42.0 % is below the critical threshold 50.0 %"
    warn = verdict("memory_mb", 2000, DEFAULTS)
    assert (warn.tier, warn.threshold) == (Tier.WARNING, 1024)
    assert warn.message == "memory_mb = 2000.0 MB exceeds the warning threshold 1024.0 MB"
    ok = verdict("avg_transaction_s", 0.5, DEFAULTS)
    assert not ok.failed
    assert ok.threshold == 0.1
    assert "misses the optimal target 0.1 s" in ok.message
    best = verdict("deadlock_rate", 0.01, DEFAULTS)
    assert best.message == "deadlock_rate = 1.0 % meets the optimal target 5.0 %"


def _tight(**limits: float) -> Thresholds:
    tiers = {
        tier: {**getattr(DEFAULTS, tier).model_dump(), **limits}
        for tier in ("critical", "warning", "optimal")
    }
    return Thresholds.model_validate(tiers)


def test_a_value_over_its_threshold_never_reads_as_equal_to_it() -> None:
    over = verdict("step_p95_s", 0.00200004, _tight(step_p95_s=0.002))
    assert over.tier is Tier.CRITICAL
    assert over.message == "step_p95_s = 0.00200004 s exceeds the critical threshold 0.002 s"
    tiny = verdict("step_p95_s", 0.0123, _tight(step_p95_s=1e-7))
    assert tiny.message == "step_p95_s = 0.0123 s exceeds the critical threshold 1e-07 s"
    rate = verdict("success_rate", 0.499999, DEFAULTS)
    assert rate.message == "success_rate = 49.9999 % is below the critical threshold 50 %"


def test_a_value_within_the_warning_threshold_never_reads_as_equal_to_it() -> None:
    tiers = Thresholds.model_validate(
        {
            "critical": {**DEFAULTS.critical.model_dump(), "step_max_s": 0.002},
            "warning": {**DEFAULTS.warning.model_dump(), "step_max_s": 0.001},
            "optimal": {**DEFAULTS.optimal.model_dump(), "step_max_s": 0.0005},
        }
    )
    ok = verdict("step_max_s", 0.000967, tiers)
    assert ok.tier is Tier.OK
    assert ok.message == (
        "step_max_s = 0.000967 s is within the warning threshold 0.001 s but misses the optimal"
        " target 0.0005 s"
    )


def test_judge_uses_the_thresholds_given(tmp_path: Path) -> None:
    text = "backends:\n  sqlite:\n    thresholds:\n      warning: {deadlock_rate: 0.3}\n"
    config = load_config(write(tmp_path, text))
    assert judge("deadlock_rate", 0.25, config.thresholds_for("postgresql")) is Tier.WARNING
    assert judge("deadlock_rate", 0.25, config.thresholds_for("sqlite")) is Tier.OK


def test_judge_all_keeps_order() -> None:
    verdicts = judge_all({"success_rate": 0.99, "memory_mb": 9000}, DEFAULTS)
    assert [(v.metric, v.tier) for v in verdicts] == [
        ("success_rate", Tier.OPTIMAL),
        ("memory_mb", Tier.CRITICAL),
    ]


def test_judge_unknown_metric_suggests() -> None:
    with pytest.raises(ValueError, match="'memory_mbs'; did you mean 'memory_mb'"):
        judge("memory_mbs", 1.0, DEFAULTS)


def test_judge_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        judge("memory_mb", float("nan"), DEFAULTS)


@given(
    metric=st.sampled_from(sorted(METRICS)),
    a=st.floats(min_value=0, max_value=10_000, allow_nan=False),
    b=st.floats(min_value=0, max_value=10_000, allow_nan=False),
)
def test_a_worse_value_never_gets_a_better_tier(metric: str, a: float, b: float) -> None:
    better, worse = sorted((a, b), reverse=METRICS[metric].higher_is_better)
    assert SEVERITY.index(judge(metric, better, DEFAULTS)) <= SEVERITY.index(
        judge(metric, worse, DEFAULTS)
    )


def test_a_list_entry_is_described_by_its_own_list(tmp_path: Path) -> None:
    message = config_error(tmp_path, "workloads:\n  payload_kb: [0]\n")
    assert (
        "workloads.payload_kb[0]: found 0 (int); expected an integer from 1 to 1,048,576;"
        " payload_kb is a list of document sizes in KB" in message
    )
    assert "thread counts" not in message


def test_a_scenario_records_the_sizes_it_reads_and_nothing_else() -> None:
    from uowstress.config import Workloads
    from uowstress.scenario import _SizesRead

    read: dict[str, object] = {}
    sizes = _SizesRead(Workloads(sequential_transactions=7), read)
    assert sizes.sequential_transactions == 7
    assert sizes.model_dump()["sequential_transactions"] == 7
    assert read == {"sequential_transactions": 7}
