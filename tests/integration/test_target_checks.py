"""A target that breaks the protocol is named with its mistake, before the run where it can
be told then and as an error of the run otherwise: never a finding against the system, never a
run that passes having tested nothing."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, Phase, settings
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from tests.integration.support import on_servers, postgres_only
from uowstress.errors import UowstressError
from uowstress.stateful.durability import run_durability
from uowstress.stateful.run import AcidResult, replay, run_acid, server_outage
from uowstress.target import TargetError, load_target

SPEC = "tests.integration.broken_targets:"


def _settings() -> settings:
    return settings(
        max_examples=10,
        stateful_step_count=10,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def _run(name: str, tmp_path: Path, *, machine: str = "acid", url: str = "sqlite://") -> AcidResult:
    """A short run of the broken target `name` on `url`, its reproducers written to
    `tmp_path`."""
    return run_acid(
        url,
        target_spec=SPEC + name,
        machine=machine,
        settings=_settings(),
        reproducers_dir=tmp_path,
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "CONNECT_RAISES",
            "target ledger: connect() failed: RuntimeError: misconfigured engine"
            " (broken_targets.py, line",
        ),
        ("NO_DISPOSE", "the System its connect() returned (_NoDispose) lacks dispose"),
        ("UOW_WITHOUT_HOOK", "System.unit_of_work() takes no fault_hook"),
        ("UOW_NOT_A_UOW", "System.unit_of_work() returned <object object"),
        ("MODEL_WITHOUT_STATE", "the Model its new_model() returned (_ModelWithoutState) lacks"),
    ],
)
def test_a_system_that_breaks_the_protocol_stops_the_run_before_it_starts(
    name: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(TargetError) as caught:
        _run(name, tmp_path)
    assert message in str(caught.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("OLD_CONNECT", "its connect() takes no isolation_level"),
        (
            "OPERATION_A_DICT",
            "operations[0] is {'name': 'open_account'}, not a uowstress.Operation",
        ),
        # Drawn by no machine: the operation would never run, in a run that passes.
        ("SCOPE_MISSPELT", "operation transfer_now (operations[4]) has scope 'txn'; use \"step\""),
    ],
)
def test_a_target_that_breaks_the_protocol_is_refused_when_loaded(name: str, message: str) -> None:
    with pytest.raises(TargetError) as caught:
        load_target(SPEC + name)
    assert message in str(caught.value)


def test_a_class_is_not_taken_for_a_target() -> None:
    with pytest.raises(TargetError, match=r"is a class, not a Target object: name an instance"):
        load_target("examples.ledger:LedgerTarget")


@pytest.mark.parametrize("machine", ["acid", "sessions"])
def test_a_reset_failing_after_an_example_is_a_finding_of_that_example(
    machine: str, tmp_path: Path
) -> None:
    # Hypothesis runs a failing example again to report it; the reset failing before that run
    # draws anything must not be taken for data generation that depends on outside state.
    result = _run("RESET_RAISES_LATER", tmp_path, machine=machine)
    assert result.error is None, result.error
    assert result.finding is not None
    assert (
        "the system could not be reset after an example: reset() raised RuntimeError: the pool"
        " is wedged" in result.finding.message
    ), result.finding.message
    assert "not shrunk: the system could not be reset" in result.finding.message
    assert result.reproducer is not None and result.reproducer.steps


def test_a_reset_failing_with_an_empty_message_is_still_a_finding(tmp_path: Path) -> None:
    # The reset's exception says nothing: the finding names its type, rather than the run
    # crashing while it words why the steps were not shrunk.
    result = _run("RESET_RAISES_LATER_SAYING_NOTHING", tmp_path)
    assert result.error is None, result.error
    assert result.finding is not None
    assert (
        "not shrunk: the system could not be reset to try smaller sequences, RuntimeError;"
        in result.finding.message
    ), result.finding.message


@pytest.mark.parametrize("machine", ["acid", "sessions"])
def test_a_dispose_that_fails_keeps_what_the_run_explored_and_is_an_error(
    tmp_path: Path, machine: str
) -> None:
    # The server went away before the end: the run is an error of its own (not a failed test
    # without a result, which would read as a finding), and what it explored is kept.
    result = _run("DISPOSE_RAISES", tmp_path, machine=machine)
    assert result.finding is None
    assert result.examples > 0
    assert result.error == (
        "the system could not be disposed of: RuntimeError: connection refused"
    ), result.error


@on_servers
def test_a_server_shutting_down_mid_run_is_an_error_of_the_run_not_a_finding(
    tmp_path: Path, server_url: str, backend: str
) -> None:
    result = _run("SERVER_SHUTS_DOWN", tmp_path, url=server_url)
    assert result.finding is None, result.finding
    assert result.error is not None
    assert result.error.startswith("the database server stopped answering during the run ("), (
        result.error
    )
    assert "run again once the server is back" in result.error
    # No reproducer for CI to replay: it would pass once the server is back.
    assert list(tmp_path.iterdir()) == []


def test_a_database_error_while_the_server_does_not_answer_is_an_outage() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gone = f"postgresql+psycopg://root@127.0.0.1:{port}/test"
    error = sa_exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
    said = server_outage(gone, error)
    assert said is not None and said.startswith("the database server stopped answering"), said
    # Not a database error, or no server to stop: the system's own failure.
    assert server_outage(gone, RuntimeError("a bug")) is None
    assert server_outage("sqlite:///x.db", error) is None
    # Hypothesis's word that an example ran differently the second time carries no database
    # error: with the server gone, that is the outage, not the system's whim.
    flaky = RuntimeError("Inconsistent results from replaying a test case!")
    said = server_outage(gone, flaky, database_error=True)
    assert said is not None and said.startswith("the database server stopped answering"), said


@postgres_only
def test_a_killed_connection_while_the_server_answers_is_not_an_outage(server_url: str) -> None:
    # pg_terminate_backend, as the injected kills use it, says "administrator command" too:
    # how the system copes with that is the machine's to judge.
    import psycopg

    killed = psycopg.errors.AdminShutdown("terminating connection due to administrator command")
    error = sa_exc.OperationalError("SELECT 1", {}, killed)
    assert server_outage(server_url, error) is None
    # A system whose answers change while its server answers is told so, as before.
    assert server_outage(server_url, RuntimeError("flaky"), database_error=True) is None


@pytest.mark.parametrize(
    ("name", "message"),
    [
        # A forgotten return would pass every state; a string would name each of its letters.
        ("INVARIANTS_NONE", "System.invariants() returned None; it must return a list of strings"),
        ("INVARIANTS_TEXT", "System.invariants() returned 'all good'; it must return a list"),
        ("STATE_A_LIST", "System.committed_state() returned list; it must return"),
        ("ARGUMENTS_INT", "the arguments strategy of open_account drew 0, not a dict"),
        ("ARGUMENTS_NOTHING", "the arguments strategy of open_account can draw nothing"),
        ("RESET_RAISES", "System.reset() failed before the first example: RuntimeError: cannot"),
        # The target's own code raising is named, not a finding against the system (nor, for
        # `enabled`, which a replay never calls, an example that "did not fail again").
        (
            "INVARIANTS_RAISE",
            "System.invariants() raised KeyError: 'no such field' (broken_targets.py, line",
        ),
        (
            "ENABLED_RAISES",
            "the `enabled` of operation deposit raised KeyError: 'no such field'"
            " (broken_targets.py, line",
        ),
        # The model and the system raise the same error: compared alone, every step passes.
        (
            "APPLY_FAILS_AS_CODE",
            "the model raised KeyError: 'amout', on arguments the target's own strategy drew",
        ),
    ],
)
def test_a_part_that_answers_wrongly_is_an_error_of_the_run(
    name: str, message: str, tmp_path: Path
) -> None:
    result = _run(name, tmp_path)
    assert result.finding is None, result.finding
    assert result.error is not None and message in result.error, result.error
    assert not list(tmp_path.iterdir())  # nothing to replay: the system was not at fault


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("INVARIANTS_RAISE", "System.invariants() raised KeyError: 'no such field'"),
        ("ENABLED_RAISES", "the `enabled` of operation deposit raised KeyError: 'no such field'"),
        # Nothing compares the concurrent machine's system with a model step by step: the
        # model is asked once the system has failed so.
        ("APPLY_FAILS_AS_CODE", "the model raised KeyError: 'amout', on arguments the target's"),
    ],
)
def test_target_code_that_raises_is_an_error_of_the_concurrent_machine_too(
    name: str, message: str, tmp_path: Path
) -> None:
    result = _run(name, tmp_path, machine="sessions")
    assert result.finding is None, result.finding
    assert result.error is not None and message in result.error, result.error
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        # Not "reading the committed state after the kill failed": the database is fine.
        ("INVARIANTS_RAISE", "System.invariants() raised KeyError: 'no such field'"),
        # A forgotten return would pass every kill.
        ("INVARIANTS_NONE", "System.invariants() returned None; it must return a list"),
        ("ENABLED_RAISES", "the `enabled` of operation deposit raised KeyError: 'no such field'"),
        ("APPLY_FAILS_AS_CODE", "the model raised KeyError: 'amout', on arguments the target's"),
    ],
)
def test_target_code_that_answers_wrongly_is_an_error_of_the_durability_check(
    name: str, message: str, tmp_path: Path
) -> None:
    try:
        result = run_durability(
            "sqlite://", target_spec=SPEC + name, kills=1, seed=1, reproducers_dir=tmp_path
        )
    except UowstressError as error:  # raised while drawing, before any kill: the run stops
        said = str(error)
    else:
        assert not [kill.finding for kill in result.kills if kill.finding is not None]
        said = result.error or ""
    assert message in said, said
    assert not list(tmp_path.iterdir())


_PASSWORD = "Pw@Target-7"  # its @ is percent-encoded in the URL


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres, id="postgresql")]
)
def test_a_password_the_target_quotes_reaches_no_message_reproducer_or_replay(
    server_url: str, tmp_path: Path
) -> None:
    url = make_url(server_url).set(password=_PASSWORD).render_as_string(hide_password=False)
    secrets = (_PASSWORD, quote(_PASSWORD, safe=""))
    result = _run("STATE_SAYS_PASSWORD", tmp_path, url=url)
    assert result.finding is not None, result.error
    assert "password ***" in result.finding.message, result.finding.message
    written = [path.read_text() for path in tmp_path.glob("*.json")]
    assert written
    replayed = replay(next(tmp_path.glob("*.json")), db_urls={"postgresql": url})
    assert replayed.verdict == "FAILED", replayed.detail
    for text in [result.finding.message, *written, replayed.detail]:
        assert not any(secret in text for secret in secrets), text
    for name, said in [
        ("OPTIONS_REFUSED_SAYING_PASSWORD", "refused its options"),
        ("CONNECT_RAISES_SAYING_PASSWORD", "connect() failed: RuntimeError: no engine"),
    ]:
        with pytest.raises(UowstressError) as refused:
            _run(name, tmp_path, url=url)
        assert said in str(refused.value)
        assert not any(secret in str(refused.value) for secret in secrets), str(refused.value)


@pytest.mark.parametrize("machine", ["acid", "sessions"])
def test_a_system_failing_as_code_fails_where_its_model_does_not_is_a_finding_that_replays(
    machine: str, tmp_path: Path
) -> None:
    # The concurrent machine took any error of the system's for a refusal, and passed.
    result = _run("SYSTEM_FAILS_AS_CODE", tmp_path, machine=machine)
    assert result.error is None, result.error
    assert result.finding is not None
    said = "the system raised AttributeError: 'SqlWork' object has no attribute 'balance_of'"
    assert said in result.finding.message, result.finding.message
    assert result.reproducer_path is not None
    replayed = replay(result.reproducer_path)
    assert replayed.verdict == "FAILED", replayed.detail
    assert "AttributeError" in replayed.detail


@pytest.mark.parametrize("machine", ["acid", "sessions"])
def test_a_committed_state_that_cannot_be_read_is_a_finding_that_replays(
    machine: str, tmp_path: Path
) -> None:
    # The concurrent machine reads the committed state as it starts: its failure there was
    # raised out of the shrinker (and out of a replay), a traceback instead of a finding.
    result = _run("STATE_RAISES", tmp_path, machine=machine)
    assert result.error is None, result.error
    assert result.finding is not None
    assert result.finding.message.startswith(
        "reading the committed state failed: RuntimeError: cannot truncate"
    ), result.finding.message
    if machine == "sessions":  # it reads the committed state as it starts, before any step
        assert "before its first step: no reproducer is written" in result.finding.message
        assert result.reproducer_path is None and not list(tmp_path.iterdir())
        # Every example started a scheduler: none of their session threads is left running.
        left = [t.name for t in threading.enumerate() if t.name.startswith("uowstress-session-")]
        assert not left, left
        return
    assert result.reproducer_path is not None
    replayed = replay(result.reproducer_path)
    assert replayed.verdict == "FAILED", replayed.detail
    assert "reading the committed state failed" in replayed.detail
