"""pytest plugin of uowstress: the shared options, the profiles, the performance fixtures, and
the results of a session gathered for the report.

Options are the ones the CLI takes (uowstress.options), spelled `--uowstress-<name>`; the
target can also be set once in the ini file (`uowstress_target = package.module:attribute`),
and so can the databases the suites run on (`uowstress_backends`: backend names, resolved
through UOWSTRESS_PG_URL / UOWSTRESS_MYSQL_URL, or URLs). Profiles: `pytest
--hypothesis-profile ci` selects uowstress's ci profile for its state machines (see
profiles.py); ordinary property tests keep the project's or Hypothesis's profile of that name.

A performance test takes the `perf` fixture (a `uowstress.scenario.Scenario` on a fresh
database, once per database): measurement runs over the test body, the figures are judged
against performance_config.yaml when it ends (a critical figure or a failed check fails the
test; connections left checked out are checked even when the test does not ask), and the
scenario's result is kept, with a failed teardown counted against it. A database URL that
cannot work is a usage error before anything connects. Results are gathered across
pytest-xdist workers (each test's travel with its report, so a worker that crashes loses only
the test it was running), and the breaches of the whole run are listed together at the end.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from uowstress.config import DEFAULT_CONFIG_FILE, PerformanceConfig, Tier, load_config
from uowstress.database import PreparedDatabase, default_url, objects_of, prepared_database
from uowstress.errors import ConfigError, FaultsNotInjected, NothingToReplay, UowstressError
from uowstress.explore import check_durability, explore, run_error
from uowstress.interrupts import (
    acknowledge,
    raise_if_lost,
    restore_sigterm,
    stop_cleanly_on_sigterm,
)
from uowstress.options import (
    OPTIONS,
    check_options,
    check_output_file,
    in_ci,
    option_values,
    parse_seed,
    parse_target_options,
    random_seed,
)
from uowstress.profiles import (
    PROFILES,
    REPRODUCERS_DIR,
    draws,
    get_profile,
    register_profiles,
)
from uowstress.report.history import node_params, scenario_name
from uowstress.report.model import DurabilityRun, Judged, MachineRun, ScenarioResult, shrunk_words
from uowstress.scenario import Scenario, ScenarioSkipped, scenario_result
from uowstress.scratch import (
    BACKEND_NAMES,
    backend_name,
    backend_of_name,
    check_url,
    reachable,
    redacted,
    repeated_database,
)
from uowstress.target import (
    DEFAULT_TARGET,
    Target,
    TargetError,
    check_target_options,
    connect_system,
    load_target,
)
from uowstress.workload import workload_of

__all__ = [
    "CONFIG_SOURCE",
    "RESULTS",
    "Explorer",
    "ResultStore",
    "exception_lines",
    "options_from",
    "reported_exception",
]


@dataclass
class ResultStore:
    """Everything the performance tests of one session measured."""

    scenarios: list[ScenarioResult] = field(default_factory=list)
    machines: list[MachineRun] = field(default_factory=list)
    durability: list[DurabilityRun] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "scenarios": [s.model_dump(mode="json") for s in self.scenarios],
                "machines": [m.model_dump(mode="json") for m in self.machines],
                "durability": [d.model_dump(mode="json") for d in self.durability],
            }
        )

    def counts(self) -> tuple[int, int, int]:
        return len(self.scenarios), len(self.machines), len(self.durability)

    def since(self, counts: tuple[int, int, int]) -> ResultStore:
        """The results added after the store held ``counts`` (see ``counts``)."""
        scenarios, machines, durability = counts
        return ResultStore(
            self.scenarios[scenarios:], self.machines[machines:], self.durability[durability:]
        )

    def absorb_json(self, text: str) -> None:
        data = json.loads(text)
        self.scenarios.extend(ScenarioResult.model_validate(s) for s in data["scenarios"])
        self.machines.extend(MachineRun.model_validate(m) for m in data["machines"])
        self.durability.extend(DurabilityRun.model_validate(d) for d in data["durability"])


RESULTS = pytest.StashKey[ResultStore]()
_HANDED_OVER = pytest.StashKey[tuple[int, int, int]]()
_CONFIG = pytest.StashKey[PerformanceConfig]()
_SEED = pytest.StashKey[int]()
# The performance_config.yaml the session loaded (None: the built-in defaults).
CONFIG_SOURCE = pytest.StashKey[str | None]()
_SCENARIO = pytest.StashKey[Scenario]()
# Set once the test body of a scenario ran: its result is kept when the test is torn down.
_RAN = pytest.StashKey[bool]()
_SIGTERM_SET = pytest.StashKey[bool]()
_WORKER_OUTPUT = "uowstress_results"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("uowstress", "uowstress: stress and property testing of Units of Work")
    for spec in OPTIONS:
        kwargs: dict[str, Any] = {"dest": f"uowstress_{spec.name}", "help": spec.help}
        if spec.flag:
            kwargs["action"] = "store_true"
        elif spec.multiple:
            kwargs["action"] = "append"
        else:
            kwargs["default"] = None
            if spec.choices:
                kwargs["choices"] = spec.choices
        group.addoption(spec.pytest_flag, **kwargs)
    parser.addini(
        "uowstress_target",
        "the system under test (package.module:attribute)",
        default=DEFAULT_TARGET,
    )
    parser.addini(
        "uowstress_backends",
        "databases the performance suites run on when no --uowstress-db-url is given:"
        " backend names (sqlite, postgresql, mysql, mariadb) or URLs",
        type="linelist",
        default=["sqlite"],
    )
    parser.addini("uowstress_config", "the performance_config.yaml to use", default="")
    group.addoption(
        "--uowstress-builtin-config",
        dest="uowstress_builtin_config",
        action="store_true",
        default=False,
        help="judge by the built-in thresholds, not a performance_config.yaml of pytest's"
        " rootdir (uowstress run passes it when the working directory has none)",
    )
    group.addoption(
        "--uowstress-shards",
        dest="uowstress_shards",
        type=int,
        default=1,
        metavar="N",
        help="split each state machine's exploration into N shards (for pytest-xdist workers)",
    )
    group.addoption(
        "--uowstress-results-json",
        dest="uowstress_results_json",
        default=None,
        metavar="PATH",
        help="write the measured results of the performance tests to PATH as JSON",
    )


def _config_file(config: pytest.Config) -> Path | None:
    given = config.getoption("uowstress_config")
    if given:
        return Path(given)
    if config.getoption("uowstress_builtin_config"):
        return None
    in_ini = str(config.getini("uowstress_config")).strip()
    if in_ini:
        # As pytest does for its own paths: relative to the ini file, not to wherever pytest
        # is started from (a run from a subfolder must find the same file).
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        return base / in_ini
    default = config.rootpath / DEFAULT_CONFIG_FILE
    # A folder or a broken link of that name is loaded, to be reported: skipping it would run
    # on the defaults while the user believes their file is used.
    return default if default.exists() or default.is_symlink() else None


def pytest_configure(config: pytest.Config) -> None:
    register_profiles()
    config.addinivalue_line(
        "markers", "uowstress: a test that uses uowstress's fixtures (added to each such test)"
    )
    source = _config_file(config)
    try:
        config.stash[_CONFIG] = load_config(source)
    except UowstressError as error:
        raise pytest.UsageError(str(error)) from None
    config.stash[CONFIG_SOURCE] = None if source is None else str(source)
    config.stash[RESULTS] = ResultStore()
    _check_database_urls(config)
    if not hasattr(config, "workerinput"):
        # The options as given (None when absent), not options_from's defaults: a session that
        # uses no uowstress option (any test suite, with uowstress installed) must not depend
        # on, or touch, the defaults' folders.
        given = {spec.name: config.getoption(f"uowstress_{spec.name}") for spec in OPTIONS}
        try:
            check_options(given, lambda spec: spec.pytest_flag)
            _check_named_target(config)
            _check_plugin_options(config)
        except UowstressError as error:
            raise pytest.UsageError(str(error)) from None
        config.pluginmanager.register(_WorkerResults(config.stash[RESULTS]), "uowstress-workers")
    config.stash[_SEED] = _session_seed(config)


def _session_seed(config: pytest.Config) -> int:
    """The seed of the session's state machines and durability checks: --uowstress-seed, else
    pytest's --hypothesis-seed when it is a whole number, else one chosen at random (reported
    with each result, for --uowstress-seed to draw the same again). pytest-xdist workers take
    their controller's."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "uowstress_seed" in workerinput:
        return int(workerinput["uowstress_seed"])
    for given in (config.getoption("uowstress_seed"), config.getoption("hypothesis_seed", None)):
        seed = None if given is None else parse_seed(given)
        if seed is not None:
            return seed
    return random_seed()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    # pytest-xdist's hook, on the controller for each worker it starts: one seed for all.
    node.workerinput["uowstress_seed"] = node.config.stash[_SEED]


def _check_named_target(config: pytest.Config) -> None:
    """A target named on the command line is imported, and the names of the options given to
    it checked, before any test runs: each test would otherwise fail of the same cause. The
    default target is not imported here (a session that uses nothing of uowstress must not pay
    for it) unless options are given to it."""
    named = config.getoption("uowstress_target")
    given_options = config.getoption("uowstress_target_option")
    if named in (None, "", DEFAULT_TARGET) and not given_options:
        # A target set in the ini file alone is imported by the tests that use it: a session
        # running none of them (unit tests, say) must not need it importable.
        return
    values = options_from(config)
    target = load_target(values["target"])
    check_target_options(target, values["target"], values["target_options"])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use uowstress's fixtures carry its marker: `-m "not uowstress"` leaves them out.
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        definitions = info.name2fixturedefs if info is not None else {}
        # The fixtures as resolved for this test: a project's own `perf` is not ours.
        if any(
            defs and getattr(defs[-1].func, "__module__", None) == __name__
            for defs in definitions.values()
        ):
            item.add_marker(pytest.mark.uowstress)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Between two tests: an interrupt Python dropped (see uowstress.interrupts) stops here.
    raise_if_lost()


def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    acknowledge()


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_SIGTERM_SET, False):
        restore_sigterm()


class _WorkerResults:
    """Takes in the results that the test reports of pytest-xdist workers carry (see
    ``_hand_over``); reports of this process carry none."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        text = getattr(report, _WORKER_OUTPUT, None)
        if text:
            self.store.absorb_json(text)


def _hand_over(config: pytest.Config, report: pytest.TestReport) -> None:
    """On a pytest-xdist worker: the results gathered since the last report travel with this
    one to the controller, so that a worker that crashes later does not take them along."""
    if not hasattr(config, "workerinput"):
        return
    store = config.stash[RESULTS]
    new = store.since(config.stash.get(_HANDED_OVER, (0, 0, 0)))
    if new.counts() != (0, 0, 0):
        # Extra attributes of a report survive its serialisation to the controller.
        setattr(report, _WORKER_OUTPUT, new.to_json())
        config.stash[_HANDED_OVER] = store.counts()


def _check_plugin_options(config: pytest.Config) -> None:
    """The plugin's own options, refused before any test runs rather than at the end, where
    the results would be lost."""
    shards = config.getoption("uowstress_shards")
    if shards is not None and shards < 1:
        raise ConfigError(
            f"--uowstress-shards {shards}: give 1 or more (the number of shards each state"
            " machine's exploration is split into)"
        )
    results = config.getoption("uowstress_results_json")
    if results:
        check_output_file("--uowstress-results-json", Path(results))


def _check_database_urls(config: pytest.Config) -> None:
    """A URL that cannot work is a usage error before anything connects (a test would
    otherwise be skipped as if its server were down)."""
    entries = _database_entries(config)
    for where, url in entries:
        try:
            check_url(url)
        except ValueError as error:
            # The message shows the URL with its password hidden, or not at all: the entry's
            # position tells which one it is.
            raise pytest.UsageError(f"{where}: {error}") from None
    repeated = repeated_database([url for _, url in entries])
    if repeated is not None:
        earlier, later = (entries[i][0] for i in repeated)
        raise pytest.UsageError(
            f"{earlier} and {later} name the same database"
            f" ({redacted(entries[repeated[1]][1])}); each database is run once: give it once"
        )


def options_from(config: pytest.Config) -> dict[str, Any]:
    raw = {spec.name: config.getoption(f"uowstress_{spec.name}") for spec in OPTIONS}
    if raw.get("target") is None:
        raw["target"] = config.getini("uowstress_target") or DEFAULT_TARGET
    if raw.get("reproducers_dir") is None:
        # The project's corpus, wherever pytest is started from (as pytest's own cache is in
        # its rootdir): a run from a subfolder writes its reproducers there too, and the
        # replay profile replays the committed ones instead of finding none and passing.
        raw["reproducers_dir"] = str(config.rootpath / REPRODUCERS_DIR)
    if raw.get("profile") is None:
        # `--hypothesis-profile ci` chooses uowstress's profile of that name too, and so does
        # the name it is registered under, `uowstress-ci` (the one to use where the project
        # or Hypothesis has a `ci` of its own).
        chosen = config.getoption("hypothesis_profile", None)
        if isinstance(chosen, str):
            chosen = chosen.removeprefix("uowstress-")
        if chosen in PROFILES:
            raw["profile"] = chosen
    values = option_values(raw)
    values["target_options"] = parse_target_options(values["target_option"])
    # The replay profile without --uowstress-kills draws nothing: no seed to report.
    drawing = draws(values["profile"], values.get("kills"))
    values["seed"] = config.stash.get(_SEED, None) if drawing else None
    return values


def database_urls(config: pytest.Config) -> list[str]:
    """The databases of this session: --uowstress-db-url, else the ini's backends (a backend
    name stands for its server's default URL). pytest.UsageError names an ini entry that is
    neither a backend name nor a URL."""
    return [url for _, url in _database_entries(config)]


def _database_entries(config: pytest.Config) -> list[tuple[str, str]]:
    """(where, url) of each database of the session; ``where`` names the entry in a message:
    the option, and which of several values it is (1-based)."""
    given = [str(url) for url in config.getoption("uowstress_db_url") or []]
    if given:
        return [
            (_where("--uowstress-db-url", "value", i, len(given)), url)
            for i, url in enumerate(given)
        ]
    entries = [str(entry).strip() for entry in config.getini("uowstress_backends")]
    found = []
    for i, entry in enumerate(entries):
        where = _where("ini option uowstress_backends", "entry", i, len(entries))
        found.append((where, _backend_url(entry, where)))
    return found


def _where(option: str, kind: str, index: int, count: int) -> str:
    return option if count == 1 else f"{option} ({kind} {index + 1} of {count})"


# What may be echoed of an ini entry that is not a URL: a would-be name, never a URL without
# its scheme (user:password@host/db).
_NAME_LIKE = re.compile(r"[A-Za-z0-9_.+-]{1,40}")


def _backend_url(entry: str, where: str) -> str:
    """The URL an ini entry stands for: itself when it is a URL, a backend's default URL
    (UOWSTRESS_PG_URL / UOWSTRESS_MYSQL_URL or the local server) when it names one."""
    if "://" in entry:
        return entry
    backend = backend_of_name(entry)
    if backend is not None:
        try:
            return default_url(backend)
        except ConfigError as error:
            raise pytest.UsageError(f"{where} {entry!r}: {error}") from None
    names = ", ".join(BACKEND_NAMES[:-1]) + f" or {BACKEND_NAMES[-1]}"
    if _NAME_LIKE.fullmatch(entry):
        shown = f"unknown backend {entry!r}"
    else:
        shown = "an entry that is neither a backend name nor a URL (it has no scheme://)"
    raise pytest.UsageError(
        f"{shown} in {where}; use {names}, or a URL such as sqlite:///path/to/file.db or"
        " postgresql://user@host/db"
    )


def _fail(message: str) -> NoReturn:
    """pytest.fail from inside an `except` block, without the error it handles: its message
    says all, and pytest would print both, joined by "During handling of the above
    exception"."""
    raise pytest.fail.Exception(message, pytrace=False) from None


def _ids(urls: list[str]) -> list[str]:
    ids: list[str] = []
    for url in urls:
        name: str
        try:
            name = backend_name(url)
        except ValueError:
            name = "database"
        ids.append(name if name not in ids else f"{name}{len(ids)}")
    return ids


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "uowstress_db_url" in metafunc.fixturenames:
        urls = database_urls(metafunc.config)
        metafunc.parametrize("uowstress_db_url", urls, ids=_ids(urls), indirect=True)
    shards = int(metafunc.config.getoption("uowstress_shards") or 1)
    if "uowstress_shard" in metafunc.fixturenames and shards > 1:
        metafunc.parametrize(
            "uowstress_shard", range(shards), ids=[f"shard{i}" for i in range(shards)]
        )


@pytest.fixture(scope="session")
def uowstress_options(pytestconfig: pytest.Config) -> dict[str, Any]:
    """The uowstress options of this test session, defaults filled in."""
    return options_from(pytestconfig)


@pytest.fixture(scope="session")
def uowstress_target(uowstress_options: dict[str, Any]) -> Target:
    """The Target under test (--uowstress-target or the uowstress_target ini value)."""
    return load_target(uowstress_options["target"])


@pytest.fixture(scope="session")
def uowstress_config(pytestconfig: pytest.Config) -> PerformanceConfig:
    """The performance configuration (thresholds and workload sizes) of this session."""
    return pytestconfig.stash[_CONFIG]


@pytest.fixture(scope="session")
def uowstress_results(pytestconfig: pytest.Config) -> ResultStore:
    """Where this session's results are kept for the report."""
    return pytestconfig.stash[RESULTS]


_reachability: dict[str, tuple[bool, str]] = {}


@pytest.fixture
def uowstress_db_url(request: pytest.FixtureRequest) -> str:
    """Each database of the session in turn (--uowstress-db-url, or the ini's backends). A
    server of the ini's backends that does not answer skips the test, or fails it under
    CI=true; one named by --uowstress-db-url fails it (it was asked for by name, as
    `uowstress run --db-url` refuses it)."""
    url = str(request.param)
    config = request.config
    if _SIGTERM_SET not in config.stash:
        # A session that sets up databases drops them on SIGTERM too, as on Ctrl-C. Workers as
        # well: a CI timeout or `timeout` signals the whole process group, and a worker that
        # died of it would leave its scratch databases behind.
        config.stash[_SIGTERM_SET] = stop_cleanly_on_sigterm()
    if url not in _reachability:
        try:
            _reachability[url] = reachable(url)
        except ValueError as error:
            raise pytest.UsageError(f"--uowstress-db-url: {error}") from None
    ok, reason = _reachability[url]
    if not ok:
        message = f"database {redacted(url)} unavailable: {reason}"
        given = [str(u) for u in config.getoption("uowstress_db_url") or []]
        if in_ci() or url in given:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return url


@pytest.fixture
def uowstress_database(
    uowstress_db_url: str, uowstress_options: dict[str, Any], uowstress_target: Target
) -> Iterator[PreparedDatabase]:
    """A fresh database on the server of `uowstress_db_url` (a scratch schema or file),
    dropped afterwards."""
    with prepared_database(
        uowstress_db_url,
        allow_existing_tables=uowstress_options["allow_existing_tables"],
        ours=lambda: objects_of(
            uowstress_target,
            uowstress_options["target_options"],
            uowstress_options["isolation_level"],
            uowstress_db_url,
        ),
    ) as database:
        yield database


def _params(item: pytest.Item, backend: str) -> str:
    """The test's own parameters in its node id, the database's left out (scenario_key)."""
    callspec = getattr(item, "callspec", None)
    url = None if callspec is None else callspec.params.get("uowstress_db_url")
    urls = database_urls(item.config)
    database_id = _ids(urls)[urls.index(url)] if url in urls else backend
    return node_params(item.nodeid, database_id)


def _names(item: pytest.Item) -> tuple[str, str, str]:
    module = Path(str(item.path)).stem
    suite = module.removeprefix("test_")
    function = getattr(item, "originalname", item.name)
    scenario = function.removeprefix("test_")
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    return suite, scenario, doc.strip().split("\n\n")[0].replace("\n", " ").strip()


@pytest.fixture
def perf(
    request: pytest.FixtureRequest,
    uowstress_database: PreparedDatabase,
    uowstress_target: Target,
    uowstress_options: dict[str, Any],
    uowstress_config: PerformanceConfig,
) -> Iterator[Scenario]:
    """A performance scenario on a fresh database: the target set up on it, measured."""
    suite, name, description = _names(request.node)
    workload = workload_of(uowstress_target)
    if workload is None:
        reason = (
            f"target {uowstress_target.name} offers no workload (uowstress.workload.Workload),"
            " so the performance suites cannot put it under load"
        )
        # Kept in the results, so that a run whose scenarios were all skipped says so.
        request.config.stash[RESULTS].scenarios.append(
            scenario_result(
                node_id=request.node.nodeid,
                suite=suite,
                name=name,
                params=_params(request.node, uowstress_database.backend),
                description=description,
                target_spec=uowstress_options["target"],
                database=uowstress_database,
                status="skipped",
                message=reason,
            )
        )
        pytest.skip(reason)
    try:
        system = connect_system(
            uowstress_target,
            uowstress_database.url,
            uowstress_options["target_options"],
            uowstress_options["isolation_level"],
        )
    except TargetError as error:
        _fail(str(error))
    except ValueError as error:
        _fail(f"target {uowstress_options['target']} refused its options: {error}")
    try:
        scenario = Scenario(
            node_id=request.node.nodeid,
            suite=suite,
            name=name,
            params=_params(request.node, uowstress_database.backend),
            description=description,
            target_spec=uowstress_options["target"],
            target=uowstress_target,
            system=system,
            workload=workload,
            database=uowstress_database,
            config=uowstress_config,
        )
        scenario.start()
    except BaseException:
        # The system holds pooled connections into the scratch database, which is dropped
        # next: close them first.
        system.dispose()
        raise
    request.node.stash[_SCENARIO] = scenario
    try:
        yield scenario
    finally:
        try:
            scenario.stop()
        finally:
            system.dispose()


def _as_typed(name: str, value: str) -> str:
    """An option with its value as either of its users typed it: the same fixtures serve
    `uowstress run` and a plain pytest session."""
    (spec,) = [spec for spec in OPTIONS if spec.name == name]
    return f"{spec.cli_flag} {value}; under pytest {spec.pytest_flag} {value}"


class Explorer:
    """Runs the state machines and the durability check for a test, records what they did,
    and fails the test on a finding, an error or a critical step budget."""

    def __init__(
        self,
        request: pytest.FixtureRequest,
        url: str,
        options: dict[str, Any],
        config: PerformanceConfig,
        results: ResultStore,
    ) -> None:
        self.request = request
        self.url = url
        self.options = options
        self.config = config
        self.results = results

    def machine(self, machine: str, *, shard: int = 0) -> MachineRun:
        chosen = self.options["machine"]
        if chosen not in ("both", machine):
            pytest.skip(f"only the {chosen} machine was asked for ({_as_typed('machine', chosen)})")
        try:
            run = explore(
                machine,
                self.url,
                node_id=self.request.node.nodeid,
                target_spec=self.options["target"],
                options=self.options["target_options"],
                profile=self.options["profile"],
                config=self.config,
                isolation_level=self.options["isolation_level"],
                sessions=int(self.options["sessions"]),
                reproducers_dir=Path(self.options["reproducers_dir"]),
                allow_existing_tables=self.options["allow_existing_tables"],
                shard=shard,
                shards=int(self.request.config.getoption("uowstress_shards") or 1),
                seed=self.options["seed"],
            )
        except NothingToReplay as nothing:
            pytest.skip(str(nothing))
        except Exception as error:
            # What stops a run before it starts (the target refused its options, a database
            # holding foreign tables, a server that hides its lock waits, a server gone between
            # two tests): an error of the run, not a finding, recorded as such; the message
            # says what to do, a traceback would not.
            self.results.machines.append(
                MachineRun(
                    id=self.request.node.nodeid,
                    machine="sessions" if machine == "sessions" else "acid",
                    backend=backend_name(self.url),
                    database=redacted(self.url),
                    target=self.options["target"],
                    target_options=dict(self.options["target_options"]),
                    profile=self.options["profile"],
                    status="error",
                    error=run_error(error),
                )
            )
            _fail(f"{machine} machine: {run_error(error)}")
        self.results.machines.append(run)
        head = f"{machine} machine on {run.backend}, {run.examples} examples"
        for said in run.warnings:
            # In pytest's warnings summary; `uowstress run` prints the run's own (its report
            # has them too).
            warnings.warn(f"{head}: {said}", FaultsNotInjected, stacklevel=2)
        if run.error:
            pytest.fail(f"{head}: could not run: {run.error}", pytrace=False)
        if run.finding is not None:
            finding = run.finding
            steps = sum(len(s) for s in finding.steps_by_session)
            pytest.fail(
                f"{head}: FINDING [{finding.kind}] {finding.message}\n"
                f"  {shrunk_words(steps, finding.shrunk_from)};"
                f" replay: {finding.replay_command}",
                pytrace=False,
            )
        critical = [v.message for v in run.verdicts if v.tier == Tier.CRITICAL.value]
        if critical:
            pytest.fail(f"{head}: " + "; ".join(critical), pytrace=False)
        return run

    def durability(self) -> DurabilityRun:
        kills = self.options["kills"]
        count = (
            int(kills)
            if kills is not None
            else get_profile(self.options["profile"]).durability_kills
        )
        replaying = kills is None and self.options["profile"] == "replay"
        if count <= 0 and not replaying:
            # Only a --kills 0 comes here: every profile but replay sends kills.
            pytest.skip(
                f"no kills were asked for ({_as_typed('kills', '0')}): durability not checked"
            )
        try:
            run = check_durability(
                self.url,
                node_id=self.request.node.nodeid,
                target_spec=self.options["target"],
                options=self.options["target_options"],
                kills=count,
                isolation_level=self.options["isolation_level"],
                allow_existing_tables=self.options["allow_existing_tables"],
                reproducers_dir=Path(self.options["reproducers_dir"]),
                replay_saved=replaying,
                seed=self.options["seed"],
            )
        except UowstressError as error:
            _fail(f"durability: {error}")
        if replaying and not run.kills and not run.error:
            pytest.skip(
                f"the replay profile replays saved failures only, and"
                f" {self.options['reproducers_dir']} holds no durability reproducer for this"
                f" target, its options and {run.backend}: durability not checked (give"
                " --kills N to check it)"
            )
        self.results.durability.append(run)
        if run.error:
            pytest.fail(f"durability on {run.backend}: could not run: {run.error}", pytrace=False)
        if run.findings:
            # As a machine's finding: what was found, then how far it was shrunk and its replay.
            found = []
            for finding in run.findings:
                said = f"FINDING [{finding.kind}] {finding.message}"
                if finding.replay_command:
                    steps = sum(len(s) for s in finding.steps_by_session)
                    said += (
                        f"\n  {shrunk_words(steps, finding.shrunk_from)};"
                        f" replay: {finding.replay_command}"
                    )
                found.append(said)
            pytest.fail(f"durability on {run.backend}: " + "\n".join(found), pytrace=False)
        return run


@pytest.fixture
def uowstress_explorer(
    request: pytest.FixtureRequest,
    uowstress_db_url: str,
    uowstress_options: dict[str, Any],
    uowstress_config: PerformanceConfig,
    uowstress_results: ResultStore,
) -> Explorer:
    """The state machines and the durability check on each database of the session."""
    return Explorer(
        request, uowstress_db_url, uowstress_options, uowstress_config, uowstress_results
    )


@pytest.fixture
def uowstress_shard() -> int:
    """Which shard of a split exploration this test runs (0 unless --uowstress-shards > 1)."""
    return 0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    scenario = item.stash.get(_SCENARIO, None)
    if scenario is None:
        return (yield)
    item.stash[_RAN] = True
    try:
        outcome = yield
    except ScenarioSkipped as reason:
        scenario.stop()
        scenario.result.status = "skipped"
        scenario.result.message = str(reason)
        pytest.skip(str(reason))
    except pytest.skip.Exception:
        # Skipped by the test itself: judged as before, but no check is added to it.
        scenario.stop()
        scenario.judge()
        raise
    except BaseException:
        _finish(scenario)
        raise
    _finish(scenario)
    problems = scenario.failures()
    if problems:
        pytest.fail(
            f"{scenario_name(scenario.result)} on {scenario.backend}: " + "; ".join(problems),
            pytrace=False,
        )
    return outcome


def _finish(scenario: Scenario) -> None:
    """End a scenario's measurement and judge it; connection leaks are checked whether or not
    the test asked for it."""
    if not scenario.connections_checked:
        scenario.check_connections()
    scenario.stop()
    scenario.judge()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    scenario = item.stash.get(_SCENARIO, None)
    if scenario is not None and item.stash.get(_RAN, False):
        _record_scenario(item, scenario.result, report, call)
    _hand_over(item.config, report)
    return report


def _record_scenario(
    item: pytest.Item,
    result: ScenarioResult,
    report: pytest.TestReport,
    call: pytest.CallInfo[None],
) -> None:
    if report.when == "call":
        if report.skipped:
            result.status = "skipped"
        elif report.failed:
            failed_check = call.excinfo is not None and call.excinfo.errisinstance(
                (AssertionError, pytest.fail.Exception)
            )
            result.status = "failed" if failed_check else "error"
            result.message = result.message or _failure(call, report)
        else:
            result.status = "passed"
    elif report.when == "teardown":
        if report.failed:
            # The scenario's system or scratch database was not cleaned up: not a pass.
            if result.status in ("passed", "skipped"):
                result.status = "error"
            error = (
                call.excinfo.exconly().strip().splitlines()[0]
                if call.excinfo is not None
                else "; ".join(reported_exception(report.longreprtext)) or "error"
            )
            teardown = f"teardown failed: {error}"
            result.message = f"{result.message}; {teardown}" if result.message else teardown
        # Kept only now, so that a failed teardown is part of the result.
        item.config.stash[RESULTS].scenarios.append(result)


# How many lines of an exception's message a result keeps.
_MESSAGE_LINES = 6


def exception_lines(text: str) -> list[str]:
    """What an exception says, as pytest's ``E`` lines show it, without their indentation: an
    assertion's message and its comparison (``AssertionError: expected 2 commits``, ``assert
    1 == 2``), without pytest's explanation of the comparison beneath it."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith("AssertionError: assert "):
        lines[0] = lines[0].removeprefix("AssertionError: ")  # a bare assert, as pytest says
    for index, line in enumerate(lines):
        if line.startswith("assert "):
            return lines[: index + 1][-_MESSAGE_LINES:]
    return lines[:_MESSAGE_LINES]


def reported_exception(longrepr: str) -> list[str]:
    """``exception_lines`` of a test report's text: its ``E`` lines, with the indented lines
    that continue them (--tb=line marks only the first), else its last line."""
    said: list[str] = []
    block: list[str] = []
    for line in longrepr.rstrip().splitlines():
        if line.startswith("E ") or line == "E":
            block.append(line[1:])
        elif block and line[:1].isspace():
            block.append(line)
        elif block:
            # The last block: a chained exception's cause is printed first, the exception
            # raised (what the test saw) last.
            said, block = block, []
    said = block or said
    if not said:
        last = longrepr.strip().splitlines()[-1:]
        return [line.strip() for line in last]
    return exception_lines("\n".join(said))


def _failure(call: pytest.CallInfo[None], report: pytest.TestReport) -> str:
    """Why a scenario's test failed: pytest.fail's message, or the exception's own lines (an
    assertion's message with its comparison), not the last line of pytest's report."""
    excinfo = call.excinfo
    if excinfo is None:
        lines = reported_exception(report.longreprtext)
    elif excinfo.errisinstance(pytest.fail.Exception):
        lines = [line.strip() for line in str(excinfo.value).splitlines() if line.strip()]
    else:
        lines = exception_lines(excinfo.exconly())
    return "\n".join(lines) or "failed"


def pytest_sessionfinish(session: pytest.Session) -> None:
    try:
        # An interrupt Python dropped after the last test's setup (in a garbage collector
        # callback, say; a pytest-xdist controller runs no test at all): the session was
        # interrupted all the same.
        raise_if_lost()
    except KeyboardInterrupt:
        session.exitstatus = pytest.ExitCode.INTERRUPTED
    store = session.config.stash[RESULTS]
    # On a pytest-xdist worker: hand what no test report carried to the controller (see
    # pytest_testnodedown).
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output[_WORKER_OUTPUT] = store.since(
            session.config.stash.get(_HANDED_OVER, (0, 0, 0))
        ).to_json()
        return
    path = session.config.getoption("uowstress_results_json")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(store.to_json() + "\n")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    text = getattr(node, "workeroutput", {}).get(_WORKER_OUTPUT)
    if text:
        node.config.stash[RESULTS].absorb_json(text)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The breaches of the whole run, together (a critical one also failed its test)."""
    store = config.stash.get(RESULTS, None)
    if store is None:
        return
    lines = []
    judged_runs: list[tuple[str, list[Judged]]] = [
        (result.id, result.verdicts) for result in store.scenarios
    ] + [(run.id, run.verdicts) for run in store.machines]
    for run_id, verdicts in judged_runs:
        for judged in verdicts:
            if judged.tier in (Tier.WARNING.value, Tier.CRITICAL.value):
                lines.append(f"{judged.tier.upper():8s} {run_id}: {judged.message}")
    for result in store.scenarios:
        for check in result.checks:
            if not check.passed:
                lines.append(f"FAILED   {result.id}: {check.name}: {check.detail}")
    if lines:
        terminalreporter.section("uowstress: performance budgets")
        for line in lines:
            terminalreporter.write_line(line)
