"""The pytest plugin end to end: a performance test with the `perf` fixture, judged against
performance_config.yaml, on a real database; results kept and written as JSON."""

from __future__ import annotations

import json
import sqlite3

import pytest
from sqlalchemy.engine import make_url

from tests.integration.test_scratch import scratch_exists
from uowstress.database import DEFAULT_URLS
from uowstress.stateful._durability_child import ACK_EARLY_ENV

pytest_plugins = ["pytester"]

TEST_FILE = '''
from uowstress.scenario import Scenario

def test_deposits(perf: Scenario) -> None:
    """A few deposits."""
    keys = perf.create(3)
    perf.run([[perf.change(k) for k in keys * 3]])
    perf.check_tally()
'''

THRESHOLDS = """
thresholds:
  critical: {{avg_transaction_s: {critical}}}
  warning: {{avg_transaction_s: {warning}}}
  optimal: {{avg_transaction_s: {optimal}}}
"""


def _run(
    pytester: pytest.Pytester,
    server_url: str,
    critical: str = "60.0",
    warning: str = "60.0",
    test_file: str = TEST_FILE,
) -> pytest.RunResult:
    pytester.makepyfile(test_perf=test_file)
    pytester.makefile(
        ".yaml",
        performance_config=THRESHOLDS.format(
            critical=critical, warning=warning, optimal="0.000001"
        ),
    )
    return pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "--uowstress-target",
        "examples.ledger:TARGET",
        "--uowstress-db-url",
        server_url,
        "--uowstress-results-json",
        "results.json",
    )


def test_a_critical_breach_fails_the_scenario_naming_metric_value_and_threshold(
    pytester: pytest.Pytester, server_url: str
) -> None:
    result = _run(pytester, server_url, critical="0.000001", warning="0.000001")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*deposits on *: avg_transaction_s = * s exceeds the critical threshold 1e-06 s*",
            "*uowstress: performance budgets*",
            "CRITICAL *test_deposits*avg_transaction_s*",
        ]
    )
    data = json.loads((pytester.path / "results.json").read_text())
    (scenario,) = data["scenarios"]
    assert scenario["status"] == "failed"
    assert scenario["transactions"]["committed"] == 9
    assert scenario["checks"][0]["passed"] is True


def test_a_warning_is_reported_and_does_not_fail(
    pytester: pytest.Pytester, server_url: str
) -> None:
    result = _run(pytester, server_url, critical="60.0", warning="0.000001")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["WARNING  *test_deposits*avg_transaction_s*warning threshold*"])
    (scenario,) = json.loads((pytester.path / "results.json").read_text())["scenarios"]
    assert scenario["status"] == "passed"
    tiers = {v["metric"]: v["tier"] for v in scenario["verdicts"]}
    assert tiers["avg_transaction_s"] == "warning"
    # The test did not ask for the connection check; the plugin ran it.
    checks = {c["name"]: c["passed"] for c in scenario["checks"]}
    assert checks == {"no lost or duplicated record": True, "no connection left checked out": True}


SIZED_TEST = """
from uowstress.scenario import Scenario

def test_deposits(perf: Scenario) -> None:
    keys = perf.create(2)
    perf.run([[perf.change(k) for k in keys * perf.workloads.sequential_transactions]])
"""


def test_the_workload_sizes_a_scenario_read_are_in_its_result(
    pytester: pytest.Pytester, server_url: str
) -> None:
    result = _run(pytester, server_url, test_file=SIZED_TEST)
    result.assert_outcomes(passed=1)
    (scenario,) = json.loads((pytester.path / "results.json").read_text())["scenarios"]
    assert scenario["workload"] == {"sequential_transactions": 100, "retry_attempts": 5}
    assert scenario["transactions"]["committed"] == 200


def test_an_invalid_config_is_a_usage_error_naming_the_key(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_perf=TEST_FILE)
    pytester.makefile(".yaml", performance_config="workloads:\n  writers: -3\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*workloads.writers: found -3 (int); expected an integer from 1 to 100,000,000*"]
    )


def test_the_ini_config_file_is_found_from_a_subfolder(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nuowstress_config = perf/sizes.yaml\n")
    (pytester.path / "perf").mkdir()
    (pytester.path / "perf" / "sizes.yaml").write_text("workloads:\n  sequential_transactions: 3\n")
    pytester.makepyfile(test_perf=SIZED_TEST)
    (pytester.path / "sub").mkdir()
    # Started from a subfolder, as pytest's own ini paths the file is the ini file's.
    monkeypatch.chdir(pytester.path / "sub")
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--uowstress-target", "examples.ledger:TARGET",
        "--uowstress-db-url", "sqlite://", "--uowstress-results-json", "results.json",
        str(pytester.path),
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    (scenario,) = json.loads((pytester.path / "sub" / "results.json").read_text())["scenarios"]
    assert scenario["workload"]["sequential_transactions"] == 3


def _refused_before_collection(result: pytest.RunResult, problem: str) -> str:
    """Assert ``result`` is a usage error naming ``problem``, raised before collection and
    without the password of any URL; return its message."""
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    message = result.stderr.str()
    assert problem in message
    assert "s3cret" not in message + result.stdout.str()
    assert "collected" not in result.stdout.str()
    return message


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("nonsense", "not a database URL"),
        ("oracle://scott:s3cret@db.example/orcl", "unsupported database URL scheme 'oracle'"),
        ("postgresql://", "the postgresql URL postgresql:// names no server host"),
        ("mysql://root:s3cret@/test", "the mysql URL mysql://root:***@/test names no server host"),
    ],
)
def test_a_malformed_database_url_is_a_usage_error_before_anything_runs(
    pytester: pytest.Pytester, url: str, problem: str
) -> None:
    pytester.makepyfile(test_perf=TEST_FILE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--uowstress-db-url", url)
    message = _refused_before_collection(result, f"--uowstress-db-url: {problem}")
    for accepted in ("sqlite:///path", "postgresql://user@host/db", "mysql://user@host/db"):
        assert accepted in message


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (
            ["--uowstress-kills", "abc"],
            "--uowstress-kills 'abc' is not a whole number of 0 or more",
        ),
        (["--uowstress-kills", "-3"], "--uowstress-kills '-3' is not a whole number of 0 or more"),
        (["--uowstress-seed", "x1"], "--uowstress-seed 'x1' is not a whole number of 0 or more"),
        (
            ["--uowstress-reproducers-dir", "afile"],
            "--uowstress-reproducers-dir afile: that is a file",
        ),
        (["--uowstress-shards", "0"], "--uowstress-shards 0: give 1 or more"),
        (["--uowstress-shards", "-3"], "--uowstress-shards -3: give 1 or more"),
        (
            ["--uowstress-results-json", "."],
            "--uowstress-results-json .: that is a folder; give the path of a file",
        ),
        (
            ["--uowstress-results-json", "afile/results.json"],
            "afile is a file, so no folder can be made there",
        ),
    ],
)
def test_an_option_value_that_cannot_work_is_a_usage_error_before_anything_runs(
    pytester: pytest.Pytester, args: list[str], problem: str
) -> None:
    pytester.makepyfile(test_perf=TEST_FILE)
    pytester.makefile("", afile="keep me")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
    _refused_before_collection(result, problem)
    assert (pytester.path / "afile").read_text() == "keep me"


@pytest.mark.parametrize(
    ("urls", "problem"),
    [
        (
            ["sqlite://", "mysql://root:s3cret@/test", "postgresql://root@127.0.0.1/test"],
            "--uowstress-db-url (value 2 of 3): the mysql URL mysql://root:***@/test names no"
            " server host",
        ),
        (
            [
                "postgresql://root:s3cret@127.0.0.1/test",
                "sqlite://",
                "postgresql://root:s3cret@127.0.0.1:5432/test",
            ],
            "--uowstress-db-url (value 1 of 3) and --uowstress-db-url (value 3 of 3) name the"
            " same database (postgresql+psycopg://root:***@127.0.0.1:5432/test); each database"
            " is run once: give it once",
        ),
    ],
)
def test_of_several_database_urls_the_bad_one_is_named_by_position_without_its_password(
    pytester: pytest.Pytester, urls: list[str], problem: str
) -> None:
    pytester.makepyfile(test_perf=TEST_FILE)
    given = [arg for url in urls for arg in ("--uowstress-db-url", url)]
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *given)
    _refused_before_collection(result, problem)


def _collected_ids(pytester: pytest.Pytester, backends: str) -> pytest.RunResult:
    pytester.makepyfile(test_perf=TEST_FILE)
    pytester.makeini(f"[pytest]\nuowstress_backends =\n    {backends}\n")
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "--collect-only", "-q")


@pytest.mark.parametrize(
    ("backends", "problem"),
    [
        (
            "pg",
            "unknown backend 'pg' in ini option uowstress_backends; use sqlite, postgresql,"
            " postgres, mysql or mariadb, or a URL",
        ),
        (
            "sqlite\n    oracle",
            "unknown backend 'oracle' in ini option uowstress_backends (entry 2 of 2); use",
        ),
        (
            # A URL that lost its scheme: not echoed, it holds a password.
            "root:s3cret@127.0.0.1/test",
            "an entry that is neither a backend name nor a URL (it has no scheme://) in ini"
            " option uowstress_backends; use sqlite,",
        ),
        (
            "sqlite\n    oracle://scott:s3cret@db.example/orcl",
            "ini option uowstress_backends (entry 2 of 2): unsupported database URL scheme"
            " 'oracle'",
        ),
    ],
)
def test_a_bad_ini_backend_is_a_usage_error_naming_the_entry(
    pytester: pytest.Pytester, backends: str, problem: str
) -> None:
    _refused_before_collection(_collected_ids(pytester, backends), problem)


def test_backend_names_and_their_aliases_in_the_ini_stand_for_their_servers(
    pytester: pytest.Pytester,
) -> None:
    # Collecting connects to nothing: the ids show which backend each name became.
    result = _collected_ids(pytester, "SQLite\n    postgres\n    mariadb")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    result.stdout.fnmatch_lines(
        [
            "test_perf.py::test_deposits[[]sqlite[]]",
            "test_perf.py::test_deposits[[]postgresql[]]",
            "test_perf.py::test_deposits[[]mysql[]]",
        ]
    )


def test_a_default_url_variable_naming_another_backend_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The mysql entry would otherwise stand for a second PostgreSQL database, MariaDB untested.
    monkeypatch.setitem(DEFAULT_URLS, "mysql", "postgresql://root:s3cret@127.0.0.1:5432/test")
    _refused_before_collection(
        _collected_ids(pytester, "sqlite\n    postgresql\n    mysql"),
        "ini option uowstress_backends (entry 3 of 3) 'mysql': UOWSTRESS_MYSQL_URL holds"
        " postgresql+psycopg://root:***@127.0.0.1:5432/test: a postgresql URL, not a mysql one;"
        " set it to a mysql URL",
    )


BROKEN_SCENARIO = """
import json
import sqlite3
from pathlib import Path

import pytest

from uowstress.metrics import MemorySampler
from uowstress.scenario import Scenario

SEEN = {}


@pytest.fixture(autouse=True)
def broken_scenario(monkeypatch):
    build = Scenario.__init__

    def init(self, **kwargs):
        SEEN.update(scenario=self, engine=kwargs["system"].engine, url=kwargs["database"].url)
        if "%(where)s" == "construction":
            raise RuntimeError("the scenario could not be built")
        build(self, **kwargs)

    def start(self):
        raise RuntimeError("the memory sampler could not start")

    monkeypatch.setattr(Scenario, "__init__", init)
    monkeypatch.setattr(MemorySampler, "start", start)


def pytest_sessionfinish(session):
    pool = SEEN["engine"].pool
    scenario = SEEN["scenario"]
    hooked = hasattr(scenario, "_pool") and (scenario._pool.attached or scenario._timer.attached)
    seen = {
        "url": SEEN["url"],
        "pooled": pool.checkedin() + pool.checkedout(),
        "hooked": hooked,
    }
    Path("seen.json").write_text(json.dumps(seen))
"""


@pytest.mark.parametrize("where", ["construction", "start"])
def test_a_scenario_that_cannot_start_leaves_no_connection_and_no_scratch_database(
    pytester: pytest.Pytester, server_url: str, backend: str, where: str
) -> None:
    pytester.makeconftest(BROKEN_SCENARIO % {"where": where})
    result = _run(pytester, server_url)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*RuntimeError: the * could not *"])
    seen = json.loads((pytester.path / "seen.json").read_text())
    # The system was disposed: its pool was emptied before the scratch database was dropped.
    assert seen["pooled"] == 0
    assert seen["hooked"] is False
    assert not scratch_exists(server_url, backend, make_url(seen["url"]))


FAILING_TEARDOWN = """
import pytest

from examples.ledger import LedgerSystem


@pytest.fixture(autouse=True)
def dispose_fails(monkeypatch):
    dispose = LedgerSystem.dispose

    def failing(self):
        dispose(self)
        raise RuntimeError("the ledger could not be disposed")

    monkeypatch.setattr(LedgerSystem, "dispose", failing)
"""


def test_a_failed_teardown_is_recorded_in_the_scenario(
    pytester: pytest.Pytester, server_url: str
) -> None:
    pytester.makeconftest(FAILING_TEARDOWN)
    result = _run(pytester, server_url)
    result.assert_outcomes(passed=1, errors=1)
    (scenario,) = json.loads((pytester.path / "results.json").read_text())["scenarios"]
    assert scenario["status"] == "error"
    assert scenario["message"].startswith("teardown failed: ")
    assert "the ledger could not be disposed" in scenario["message"]


LEAKING_TEST = '''
import pytest

from uowstress.scenario import Scenario


@pytest.fixture
def held(perf):
    connections = []
    yield connections
    for connection in connections:
        connection.close()


def test_leaks(perf: Scenario, held) -> None:
    """Keeps a connection out of the pool, and does not check for leaks itself."""
    keys = perf.create(2)
    perf.run([[perf.change(k) for k in keys]])
    held.append(perf.system.engine.connect())
'''


def test_a_leaked_connection_fails_the_scenario_without_an_explicit_check(
    pytester: pytest.Pytester, server_url: str
) -> None:
    result = _run(pytester, server_url, test_file=LEAKING_TEST)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*leaks on *: no connection left checked out: 1 connection(s) still checked out*"]
    )
    (scenario,) = json.loads((pytester.path / "results.json").read_text())["scenarios"]
    assert scenario["status"] == "failed"
    assert [(c["name"], c["passed"]) for c in scenario["checks"]] == [
        ("no connection left checked out", False)
    ]


def test_the_plugin_alone_never_takes_over_a_users_table_of_the_targets(
    pytester: pytest.Pytester,
) -> None:
    database = pytester.path / "theirs.db"
    with sqlite3.connect(database) as conn:
        conn.execute("create table ledger_accounts (id text, balance integer, version integer)")
        conn.execute("insert into ledger_accounts values ('precious', 100, 1)")
    pytester.makepyfile(test_perf=TEST_FILE)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--uowstress-target", "examples.ledger:TARGET",
        "--uowstress-db-url", f"sqlite:///{database}", "--uowstress-allow-existing-tables",
    )  # fmt: skip
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*already holds ledger_accounts, which the run creates*"])
    assert "--uowstress-db-url" in result.stdout.str()  # the option as pytest spells it
    with sqlite3.connect(database) as conn:
        rows = conn.execute("select * from ledger_accounts").fetchall()
    assert rows == [("precious", 100, 1)]


MACHINE_TEST = """
from uowstress.pytest_plugin import Explorer


def test_acid(uowstress_explorer: Explorer) -> None:
    uowstress_explorer.machine("acid")


def test_plain() -> None:
    pass
"""


SEED_PROBE = """
import os
from pathlib import Path

import pytest


@pytest.mark.parametrize("n", range(4))
def test_seed(uowstress_options, n):
    Path(f"seed-{n}-{os.getpid()}").write_text(str(uowstress_options["seed"]))
"""


@pytest.mark.parametrize(
    ("args", "expected"),
    [([], None), (["--uowstress-seed", "41"], 41), (["--hypothesis-seed", "7"], 7)],
)
def test_the_sessions_seed_is_one_for_all_its_workers(
    pytester: pytest.Pytester, args: list[str], expected: int | None
) -> None:
    pytester.makepyfile(test_seed=SEED_PROBE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", *args)
    result.assert_outcomes(passed=4)
    seeds = {path.name: int(path.read_text()) for path in pytester.path.glob("seed-*")}
    assert len(seeds) == 4
    assert len({name.split("-")[2] for name in seeds}) == 2, "both workers ran tests"
    assert len(set(seeds.values())) == 1, seeds
    if expected is not None:
        assert set(seeds.values()) == {expected}


def test_a_hypothesis_seed_too_large_for_uowstress_leaves_it_a_seed_of_its_own(
    pytester: pytest.Pytester,
) -> None:
    # Hypothesis takes any --hypothesis-seed (one it cannot convert, as text); uowstress's
    # seed is then chosen at random instead of stopping the session.
    pytester.makepyfile(test_seed=SEED_PROBE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--hypothesis-seed", "9" * 5000)
    result.assert_outcomes(passed=4)
    (seed,) = {int(path.read_text()) for path in pytester.path.glob("seed-*")}
    assert 0 <= seed < 2**32


def test_tests_using_uowstress_fixtures_carry_its_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_both=MACHINE_TEST)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--co", "-m", "not uowstress")
    result.stdout.fnmatch_lines(["*test_plain*", "*1/2 tests collected (1 deselected)*"])
    assert "test_acid" not in result.stdout.str()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--uowstress-target", "nope.mod:T"], "*cannot import target module 'nope.mod'*"),
        (
            ["--uowstress-target", "examples.ledger:TARGET", "--uowstress-target-option", "x=1"],
            "*target examples.ledger:TARGET has no option x; its options: *",
        ),
    ],
    ids=["unknown-target", "unknown-option"],
)
def test_a_target_that_cannot_work_stops_the_session_before_any_test(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile(test_both=MACHINE_TEST)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_an_ini_target_is_not_imported_by_a_session_that_does_not_use_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nuowstress_target = nope.mod:T\n")
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_projects_own_perf_fixture_does_not_carry_the_marker(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("import pytest\n\n@pytest.fixture\ndef perf():\n    return 1\n")
    pytester.makepyfile(test_own="def test_timing(perf):\n    assert perf == 1\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-m", "not uowstress")
    result.assert_outcomes(passed=1)


def test_a_refused_option_value_fails_the_machine_test_with_the_targets_message(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_both=MACHINE_TEST)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--uowstress-target-option", "weaken=bogus",
        "--uowstress-db-url", "sqlite://",
    )  # fmt: skip
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*acid machine: *refused its options*bogus*"])
    assert "Traceback" not in result.stdout.str()
    # Said once, not again as the error the failure was raised while handling.
    assert "During handling" not in result.stdout.str()


def test_faults_a_machine_could_not_inject_are_a_warning_of_the_session(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_both=MACHINE_TEST)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--uowstress-target", "tests.integration.hookless_ledger:TARGET",
        "--uowstress-db-url", "sqlite://",
    )  # fmt: skip
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*FaultsNotInjected: acid machine on sqlite, * examples: the Unit of Work never called"
            " fault_hook: * faults drawn at before_flush/after_flush/before_commit and kills were"
            " not injected*"
        ]
    )


def test_the_machines_budget_breaches_are_listed_at_the_end(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_both=MACHINE_TEST)
    pytester.makefile(
        ".yaml",
        tight="thresholds:\n  warning: {step_p95_s: 1.0e-7}\n  optimal: {step_p95_s: 1.0e-7}\n",
    )
    # In a process of its own: pytester's in-process runs drop the modules each imported, and
    # the reference system's enums imported afresh are not those an earlier run left behind.
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--uowstress-db-url", "sqlite://",
        "--uowstress-config", "tight.yaml",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*uowstress: performance budgets*",
            "WARNING  *acid*: step *: step_p95_s = * exceeds the warning threshold *",
        ]
    )


PROFILE_PROBE = """
from hypothesis import given, settings, strategies as st


@given(st.integers())
def test_fails(x):
    assert x < 0


def test_profile():
    s = settings.default
    print("PROFILE", s.max_examples, s.derandomize, s.database is None)
"""


def test_a_suite_that_does_not_use_uowstress_keeps_its_own_and_hypothesiss_profiles(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outside CI first: there Hypothesis's own ci profile is the parent of every profile.
    monkeypatch.delenv("CI", raising=False)
    pytester.makeconftest(
        "from hypothesis import settings\nsettings.register_profile('dev', max_examples=7)\n"
    )
    pytester.makepyfile(test_probe=PROFILE_PROBE)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", "-k", "profile", "--hypothesis-profile", "dev"
    )
    result.stdout.fnmatch_lines(["*PROFILE 7 False False"])
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", "-k", "profile", "--hypothesis-profile", "uowstress-ci"
    )
    result.stdout.fnmatch_lines(["*PROFILE 100 False False"])
    # Under CI, Hypothesis's own ci profile: derandomized, no example database written.
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    result.stdout.fnmatch_lines(["*PROFILE 100 True True"])
    result.assert_outcomes(failed=1, passed=1)
    assert not (pytester.path / ".hypothesis" / "examples").exists()


def test_a_durability_finding_fails_its_test_with_the_replay_command(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_kills="""
from uowstress.pytest_plugin import Explorer


def test_durability(uowstress_explorer: Explorer) -> None:
    uowstress_explorer.durability()
"""
    )
    # The worker acknowledges each commit before making it: kills after an acknowledgement
    # find it missing.
    monkeypatch.setenv(ACK_EARLY_ENV, "1")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--uowstress-db-url", "sqlite://", "--uowstress-kills", "8",
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    # Said as a machine's finding is: how far its steps were shrunk, then its replay command.
    result.stdout.fnmatch_lines(
        [
            "*durability on sqlite: FINDING [[]lost[]] commit *",
            "*  *shrunk * step*; replay: *uowstress replay *",
        ]
    )
    written = list((pytester.path / ".hypothesis" / "reproducers").glob("*.json"))
    assert written and all('"machine": "durability"' in p.read_text() for p in written)


@pytest.mark.parametrize("named_by", ["option", "ini"])
def test_a_database_that_does_not_answer_fails_when_named_on_the_command_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, named_by: str
) -> None:
    monkeypatch.delenv("CI", raising=False)  # outside CI: an ini backend may be skipped
    down = "postgresql://root:s3cret-pw@127.0.0.1:1/test"
    pytester.makepyfile(test_perf=TEST_FILE)
    args = ["-p", "no:cacheprovider", "-rs"]
    if named_by == "option":
        args += ["--uowstress-db-url", down]
    else:
        pytester.makeini(f"[pytest]\nuowstress_backends =\n    {down}\n")
    # In a process of its own: an in-process run drops the driver modules it imported first,
    # and the driver's errors imported afresh are not those SQLAlchemy knows.
    result = pytester.runpytest_subprocess(*args)
    # Asked for by name, a database that does not answer is a failure, as for `uowstress run`;
    # one of the project's backends is skipped on a machine without its server.
    if named_by == "option":
        result.assert_outcomes(errors=1)
    else:
        result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*database postgresql*://root:***@127.0.0.1:1/test unavailable*"])
    assert "s3cret-pw" not in result.stdout.str() + result.stderr.str()


def test_reproducers_are_the_rootdirs_when_pytest_starts_in_a_subfolder(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_both=MACHINE_TEST)
    weak = (
        "-p", "no:cacheprovider", "--uowstress-db-url", "sqlite://",
        "--uowstress-target-option", "weaken=commit_swallows_errors", "--uowstress-seed", "1",
    )  # fmt: skip
    sub = pytester.path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    result = pytester.runpytest_inprocess(*weak, str(pytester.path))
    result.assert_outcomes(failed=1, passed=1)
    # Written to the project's corpus, not to a .hypothesis of the folder pytest started in.
    (written,) = (pytester.path / ".hypothesis" / "reproducers").glob("*.json")
    assert not (sub / ".hypothesis" / "reproducers").exists()
    # A later replay from another subfolder (no example database there) replays it.
    other = pytester.path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    result = pytester.runpytest_inprocess(
        *weak, "--uowstress-profile", "replay", str(pytester.path)
    )
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*acid machine*FINDING*", f"*replay: *{written}"])


def test_an_isolation_level_the_database_refuses_fails_the_machine_test_naming_the_option(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_both=MACHINE_TEST)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--uowstress-isolation-level", "BOGUS",
        # The ledger hands the level to SQLAlchemy unchecked, as a target of one's own may.
        "--uowstress-target", "examples.ledger:TARGET", "--uowstress-db-url", "sqlite://",
    )  # fmt: skip
    result.assert_outcomes(failed=1, passed=1)
    said = "*acid machine: isolation level 'BOGUS' is not one*SERIALIZABLE*"
    result.stdout.fnmatch_lines([said + "--uowstress-isolation-level*"])
    assert "Traceback" not in result.stdout.str()
    assert "ArgumentError" not in result.stdout.str()
