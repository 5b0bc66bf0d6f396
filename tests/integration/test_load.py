"""The load driver and the scenario checks on real databases, with the ledger example
(a target that shares no code with the reference system) and the reference system."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from examples import ledger
from hypothesis import strategies as st

from uowstress.config import PerformanceConfig, parse_config
from uowstress.database import PreparedDatabase, prepared_database
from uowstress.load import Job, run_load
from uowstress.scenario import Scenario
from uowstress.target import Query, Target, load_target
from uowstress.workload import workload_of


@pytest.fixture
def ledger_system(server_url: str) -> Iterator[ledger.LedgerSystem]:
    with prepared_database(server_url) as db:
        system = ledger.TARGET.connect(db.url, {})
        try:
            yield system
        finally:
            system.dispose()


def _open(system: ledger.LedgerSystem, *accounts: str) -> None:
    with system.unit_of_work() as uow:
        for account in accounts:
            uow.open(account)
        uow.commit()


def _deposit(key: str, n: int) -> Job:
    return Job("deposit", lambda uow: uow.post(f"d{n}", key, 1), (key,))


def test_contended_deposits_are_retried_and_every_commit_counted(
    ledger_system: ledger.LedgerSystem,
) -> None:
    _open(ledger_system, "hot")
    workload = ledger.TARGET.workload
    jobs = [[_deposit("hot", t * 100 + i) for i in range(15)] for t in range(6)]
    load = run_load(ledger_system, workload, jobs, attempts=8)
    # Six threads on one account: the optimistic check (or the database) refused some
    # attempts, and what committed is exactly what the ledger holds.
    assert load.attempts.conflicts + load.attempts.deadlocks > 0, load.errors
    assert load.transactions.total == 90
    assert load.committed_by_key["hot"] == load.transactions.committed
    assert workload.tally(ledger_system) == {"hot": load.transactions.committed}
    assert len(load.latencies) == 90 and all(t > 0 for t in load.latencies)
    assert load.ops_per_second > 0


def test_an_error_is_not_retried_and_leaves_nothing(ledger_system: ledger.LedgerSystem) -> None:
    _open(ledger_system, "a")

    def overdraw(uow: Any) -> None:
        uow.post("w1", "a", 1)
        raise ledger.InsufficientFunds("no money")

    load = run_load(ledger_system, None, [[Job("overdraw", overdraw, ("a",))]], attempts=5)
    assert (load.attempts.total, load.transactions.errors) == (1, 1)
    assert load.errors == {"error: InsufficientFunds: no money": 1}
    assert ledger.TARGET.workload.tally(ledger_system) == {"a": 0}


@contextmanager
def _small_pool(server_url: str) -> Iterator[tuple[ledger.LedgerSystem, PreparedDatabase]]:
    """The ledger on a pool of two connections that gives up waiting after 0.2 s, and its
    database."""
    with prepared_database(server_url) as db:
        engine = sa.create_engine(db.url, pool_size=2, max_overflow=0, pool_timeout=0.2)
        ledger.metadata.create_all(engine)
        system = ledger.LedgerSystem(engine, False)
        try:
            yield system, db
        finally:
            system.dispose()


def _greedy_jobs(system: ledger.LedgerSystem) -> list[list[Job]]:
    """Two threads of ten units of work, each asking for a second connection while it holds
    one: with as many threads as the pool has connections, they wait for each other until the
    pool's timeout."""
    _open(system, "a0", "a1")
    arrived = threading.Barrier(2, timeout=10)

    def greedy(t: int, n: int) -> Job:
        def work(uow: Any) -> None:
            if n == 0:
                arrived.wait()  # both threads hold their unit of work's connection
            with system.engine.connect():
                uow.post(f"d{t}-{n}", f"a{t}", 1)

        return Job("greedy", work, (f"a{t}",))

    return [[greedy(t, n) for n in range(10)] for t in range(2)]


def test_a_load_on_an_exhausted_pool_stops_at_the_first_timeout(server_url: str) -> None:
    # Every transaction left would wait as long: the load stops, and says what it did not run.
    with _small_pool(server_url) as (system, _):
        load = run_load(system, ledger.TARGET.workload, _greedy_jobs(system), attempts=3)
    assert load.pool_timeouts >= 1, load.errors
    assert load.not_run >= 9  # each thread stopped after the transaction it was in
    assert load.transactions.total + load.not_run == 20
    assert load.attempts.total == load.transactions.total  # a timeout is not tried again


def test_a_scenario_whose_load_exhausted_the_pool_fails_saying_why(server_url: str) -> None:
    with _small_pool(server_url) as (system, db):
        scenario = Scenario(
            node_id="test::scenario",
            suite="suite",
            name="scenario",
            description="",
            target_spec="spec",
            target=ledger.TARGET,
            system=system,
            workload=ledger.TARGET.workload,
            database=db,
            config=PerformanceConfig(),
        )
        scenario.run(_greedy_jobs(system))
    (check,) = [c for c in scenario.result.checks if not c.passed]
    assert check.name == "every unit of work got a connection"
    assert "waited for a connection (0.2 s, the pool's timeout) and gave up" in check.detail
    assert "asks for a second connection while it holds one" in check.detail


def test_a_crash_in_a_worker_is_raised_not_lost(ledger_system: ledger.LedgerSystem) -> None:
    class Crash(BaseException):
        pass

    def crash(uow: Any) -> None:
        raise Crash

    with pytest.raises(Crash):
        run_load(ledger_system, None, [[Job("crash", crash)], []])
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        run_load(ledger_system, None, [[]], attempts=0)


def test_an_interrupted_load_stops_its_workers_before_it_raises(
    ledger_system: ledger.LedgerSystem,
) -> None:
    _open(ledger_system, "a")
    started: list[str] = []
    interrupt = threading.Lock()  # one Ctrl-C, by whichever worker comes first

    def deposit(worker: int, n: int) -> Job:
        def work(uow: Any) -> None:
            started.append(f"w{worker}d{n}")
            if interrupt.acquire(blocking=False):
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, while the main thread waits
            time.sleep(0.01)
            uow.post(f"w{worker}d{n}", "a", 1)

        return Job("deposit", work, ("a",))

    with pytest.raises(KeyboardInterrupt):
        run_load(ledger_system, None, [[deposit(w, n) for n in range(500)] for w in range(2)])
    # Every worker has ended, after a few jobs rather than all 1,000: none starts another
    # (each job takes 10 ms), and none is left writing under the teardown.
    after = len(started)
    time.sleep(0.3)
    assert len(started) == after
    assert 0 < after < 100


@contextmanager
def _scenario_on(
    server_url: str,
    target: Target,
    config: PerformanceConfig | None = None,
    *,
    options: dict[str, Any] | None = None,
) -> Iterator[Scenario]:
    """A scenario of ``target`` on a fresh database of ``server_url``; the system is disposed
    of at the end."""
    workload = workload_of(target)
    assert workload is not None
    with prepared_database(server_url) as db:
        system = target.connect(db.url, options or {})
        try:
            yield Scenario(
                node_id="test::scenario",
                suite="suite",
                name="scenario",
                description="",
                target_spec="spec",
                target=target,
                system=system,
                workload=workload,
                database=db,
                config=config or PerformanceConfig(),
            )
        finally:
            system.dispose()


def test_the_tally_check_sees_a_commit_that_did_not_happen(server_url: str) -> None:
    # commit_swallows_errors: a failed commit looks committed to its caller.
    target = load_target("humanoid_training.target:TARGET")
    with _scenario_on(server_url, target, options={"weaken": "commit_swallows_errors"}) as scenario:
        (key,) = scenario.create(1)
        scenario.run([[scenario.change(key), scenario.change("never-created")]])
        assert scenario.transactions.committed == 2  # both look fine to the caller
        assert not scenario.check_tally()
        assert "never-created: 1 committed, 0 in the database" in scenario.result.checks[-1].detail
        assert scenario.check_connections()


def test_a_critical_figure_fails_and_a_warning_does_not(server_url: str) -> None:
    target = load_target("examples.ledger:TARGET")
    strict = parse_config(
        {
            "thresholds": {
                "critical": {"avg_transaction_s": 1e-9},
                "warning": {"avg_transaction_s": 1e-9},
                "optimal": {"avg_transaction_s": 1e-9},
            }
        }
    )
    with _scenario_on(server_url, target, strict) as scenario:
        scenario.start()
        keys = scenario.create(2)
        scenario.run([[scenario.change(k) for k in keys]])
        scenario.stop()
        verdicts = {v.metric: v for v in scenario.judge()}
        assert verdicts["avg_transaction_s"].tier == "critical"
        assert verdicts["success_rate"].tier == "optimal"
        (failure,) = scenario.failures()
        assert failure.startswith("avg_transaction_s = ")
        assert "exceeds the critical threshold 1e-09 s" in failure
        assert scenario.result.memory is not None and scenario.result.memory.peak_mb > 0
        assert scenario.result.latency is not None and scenario.result.latency.count == 2


def test_the_index_check_reports_a_full_read_and_not_a_lookup(server_url: str) -> None:
    target = load_target("examples.ledger:TARGET")
    with _scenario_on(server_url, target) as scenario:
        scenario.create(30)
        checks = scenario.check_indexes()
        by_query: dict[str, list[bool]] = {}
        for check in checks:
            reads_all = check.full_scan or bool(check.index_walk_tables)
            by_query.setdefault(check.query, []).append(reads_all)
        # "accounts" lists every account: a whole table (or whole index) is read.
        # "balance" finds one account by its key: a lookup.
        assert by_query["accounts"] == [True]
        assert not any(by_query["balance"])


def _existing_account(state: Any, ids: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"account": st.sampled_from(sorted(state["accounts"]))})


def _broken(uow: Any, args: Any) -> Any:
    # A column the table does not have: the database refuses the statement every time.
    with uow:
        return uow.conn.execute(
            sa.text("SELECT no_such_column FROM ledger_accounts WHERE id = :id"),
            {"id": args["account"]},
        ).all()


def _picky(uow: Any, args: Any) -> Any:
    with uow:
        if args["account"] == "nobody":
            raise ledger.UnknownAccount("no account 'nobody'")
        return uow.balance(args["account"])


class _LedgerWithBrokenQuery(ledger.LedgerTarget):
    queries = (
        *ledger.QUERIES,
        Query("broken", _existing_account, _broken),
        # Refuses one of its two arguments: what a query asked about a missing id does.
        Query(
            "picky",
            lambda s, ids: st.sampled_from([{"account": "nobody"}, {"account": "a"}]),
            _picky,
        ),
    )


def test_a_query_failing_on_every_argument_fails_its_checks_by_name(server_url: str) -> None:
    target: Target = _LedgerWithBrokenQuery()
    with _scenario_on(server_url, target) as scenario:
        _open(scenario.system, "a", "b")
        means = scenario.time_queries(repeats=4)
        assert set(means) == {"balance", "accounts", "broken", "picky"}
        broken = {k: n for k, n in scenario.result.errors.items() if "broken" in k}
        (key,) = broken
        assert key.startswith("query broken: error: ")
        assert broken[key] == 4  # every run counted, none swallowed
        picky = {k: n for k, n in scenario.result.errors.items() if "picky" in k}
        assert picky == {"query picky: error: UnknownAccount: no account 'nobody'": 2}
        (timed,) = scenario.result.checks
        assert (timed.name, timed.passed) == ("every timed query answered", False)
        assert timed.detail.startswith("query broken failed on all 2 drawn arguments: error: ")
        assert "picky" not in timed.detail and "balance" not in timed.detail

        checks = scenario.check_indexes()
        explained = {c.query for c in checks}
        assert "broken" not in explained  # refused by the database: nothing to explain
        assert {"balance", "accounts", "picky"} <= explained
        assert sum(n for k, n in scenario.result.errors.items() if "broken" in k) > 4
        explain = scenario.result.checks[-1]
        assert (explain.name, explain.passed) == ("every explained query answered", False)
        assert "query broken failed on all" in explain.detail

        scenario.judge()
        failures = scenario.failures()
        assert len(failures) == 2
        assert all("query broken failed on all" in f for f in failures)
        assert scenario.check_connections()


def test_queries_that_answer_pass_their_checks(server_url: str) -> None:
    target = load_target("examples.ledger:TARGET")
    with _scenario_on(server_url, target) as scenario:
        scenario.create(5)
        scenario.time_queries(repeats=3)
        scenario.check_indexes()
        assert [(c.name, c.passed) for c in scenario.result.checks] == [
            ("every timed query answered", True),
            ("every explained query answered", True),
        ]


def test_a_query_with_no_drawable_arguments_is_not_run_and_named_not_checked(
    server_url: str,
) -> None:
    calls: list[Any] = []

    def counted(uow: Any, args: Any) -> Any:
        calls.append(args)
        return _picky(uow, args)

    class _LedgerWithUndrawableQueries(ledger.LedgerTarget):
        queries = (
            *ledger.QUERIES,
            Query("impossible", lambda s, ids: st.nothing(), counted),
            # Sampled from the accounts there are: none on an empty database.
            Query("existing_only", _existing_account, counted),
        )

    target: Target = _LedgerWithUndrawableQueries()
    with _scenario_on(server_url, target) as scenario:
        means = scenario.time_queries(repeats=3)
        scenario.check_indexes()
        assert calls == []
        assert set(means) == {"balance", "accounts"}
        assert not [k for k in scenario.result.errors if "impossible" in k or "existing" in k]
        timed, explained = scenario.result.checks
        assert (timed.name, timed.passed) == ("every timed query answered", True)
        assert (explained.name, explained.passed) == ("every explained query answered", True)
        for check in (timed, explained):
            assert check.detail.startswith("2 queries each answered at least one"), check
            assert (
                "; query impossible not checked: no argument could be drawn in this state"
                " (Unsatisfiable: "
            ) in check.detail
            assert (
                "; query existing_only not checked: no argument could be drawn in this"
                " state (InvalidArgument: Cannot sample from a length-zero sequence.)"
            ) in check.detail


def test_correct_queries_on_an_empty_database_pass_their_checks(server_url: str) -> None:
    # On an empty database the reference system's queries draw only ids that do not exist:
    # get_robot refuses every call (NotFound), and that is an answer.
    target = load_target("humanoid_training.target:TARGET")
    with _scenario_on(server_url, target) as scenario:
        means = scenario.time_queries(repeats=2)
        scenario.check_indexes()
        assert set(means) == {q.name for q in target.queries}
        refusals = {k: n for k, n in scenario.result.errors.items() if "get_robot" in k}
        (key,) = refusals
        assert key.startswith("query get_robot: error: NotFound: ")
        assert refusals[key] > 2  # both timed runs and the explained ones, each counted
        timed, explained = scenario.result.checks
        assert (timed.name, timed.passed) == ("every timed query answered", True), timed
        assert (explained.name, explained.passed) == (
            "every explained query answered",
            True,
        ), explained
        assert "0 raised an unexpected error" in timed.detail


def _buggy(uow: Any, args: Any) -> Any:
    with uow:
        return uow.balance(args["account"])  # the strategy draws no "account": a KeyError


def test_broken_queries_fail_their_checks_on_an_empty_database(server_url: str) -> None:
    class _LedgerWithBrokenQueries(ledger.LedgerTarget):
        queries = (
            *ledger.QUERIES,
            Query("broken", lambda s, ids: st.just({"account": "nobody"}), _broken),
            Query("buggy", lambda s, ids: st.just({}), _buggy),
        )

    target: Target = _LedgerWithBrokenQueries()
    with _scenario_on(server_url, target) as scenario:
        scenario.time_queries(repeats=2)
        (timed,) = scenario.result.checks
        assert (timed.name, timed.passed) == ("every timed query answered", False)
        # "balance" draws only "nobody" here and is refused every time: an answer.
        assert "balance" not in timed.detail
        broken, buggy = timed.detail.split("; ")
        assert broken.startswith("query broken failed on all 1 drawn arguments: error: ")
        assert buggy == "query buggy failed on all 1 drawn arguments: error: KeyError: 'account'"


def _failing(key: str) -> Job:
    def work(uow: Any) -> None:
        uow.post(f"f-{key}", key, 1)
        raise ledger.LedgerError(f"refused on purpose for {key}")

    return Job("fail", work, (key,))


def test_errors_by_kind_are_those_of_the_counted_attempts_once(server_url: str) -> None:
    target = load_target("examples.ledger:TARGET")
    with _scenario_on(server_url, target) as scenario:
        key, *own = scenario.create(3)
        refusal = f"error: LedgerError: refused on purpose for {key}"

        # Left out of the counts, its errors are left out too.
        left_out = scenario.run([[_failing(key)] * 3], counted=False)
        assert left_out.errors == {refusal: 3}
        assert scenario.result.errors == {}
        assert scenario.attempts.total == 0

        scenario.run([[_failing(key)] * 2, [scenario.change(key)]])
        assert scenario.result.errors == {refusal: 2}

        # A sweep counts its attempts and their errors, each once.
        scenario.scalability(
            lambda threads: [[_failing(key), scenario.change(own[t])] for t in range(threads)],
            [1, 2],
        )
        assert scenario.result.errors == {refusal: 2 + 1 + 2}
        assert sum(scenario.result.errors.values()) == scenario.attempts.failed
