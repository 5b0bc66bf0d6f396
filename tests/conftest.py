"""Fixtures shared by every test: backends, scratch databases, engines and schemas."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# Imported before any test runs pytest in-process: pytester's in-process runs drop the modules
# they imported first, and psycopg imported afresh raises errors (from its compiled part, which
# keeps the first import's classes) that SQLAlchemy no longer knows for the driver's, so a
# server that does not answer would crash a later test instead of being reported.
import psycopg  # noqa: F401
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.errors import InvalidArgument
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from humanoid_training.persistence.engine import make_engine
from uowstress import interrupts
from uowstress.options import in_ci
from uowstress.scratch import reachable, scratch_database

PG_URL = os.environ.get("UOWSTRESS_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("UOWSTRESS_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
BACKENDS = ["sqlite", "postgresql", "mysql"]

_SERVER_URLS = {"sqlite": "sqlite://", "postgresql": PG_URL, "mysql": MYSQL_URL}
_ENV_VARS = {"postgresql": "UOWSTRESS_PG_URL", "mysql": "UOWSTRESS_MYSQL_URL"}
_MARKS = {"postgresql": pytest.mark.postgres, "mysql": pytest.mark.mysql}

settings.register_profile(
    "tests",
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
    max_examples=25,
)
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE")
if _PROFILE is None:
    settings.load_profile("tests")
else:
    # Profiles not registered here belong to the uowstress plugin, which loads them itself.
    with contextlib.suppress(InvalidArgument):
        settings.load_profile(_PROFILE)

# One reachability check per backend and session: a dead server costs one timeout, not one
# per test.
_reachability: dict[str, tuple[bool, str]] = {}


@pytest.fixture(
    params=[pytest.param(name, marks=_MARKS.get(name, ()), id=name) for name in BACKENDS]
)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn; PostgreSQL and MariaDB tests carry their marker."""
    return str(request.param)


@pytest.fixture(autouse=True)
def _interrupts_independent() -> Iterator[None]:
    """Each test's signals are its own: one a test sent a moment ago is not taken for the
    same interrupt delivered twice (see uowstress.interrupts), nor one a test raised and
    caught for an interrupt lost before the next test."""
    interrupts._last_interrupt = None
    interrupts._pending = None
    yield
    interrupts._pending = None


@pytest.fixture
def server_url(backend: str) -> str:
    """The server URL of `backend`, skipped (failed on CI) when the server does not answer."""
    url = _SERVER_URLS[backend]
    if backend not in _reachability:
        _reachability[backend] = reachable(url)
    ok, reason = _reachability[backend]
    if not ok:
        message = f"{backend} server unavailable: {reason}"
        if backend in _ENV_VARS:
            message += f" (set {_ENV_VARS[backend]} to the URL of a reachable server)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def db_url(server_url: str) -> Iterator[URL]:
    """A fresh scratch database on the backend's server, removed after the test."""
    with scratch_database(server_url) as url:
        yield url


@pytest.fixture
def engine(db_url: URL) -> Iterator[Engine]:
    """The reference system's engine (default options) on the scratch database."""
    created = make_engine(db_url)
    try:
        yield created
    finally:
        created.dispose()


@pytest.fixture
def schema_engine(engine: Engine) -> Engine:
    """`engine` with the reference system's tables created."""
    # Imported here so that tests not needing the schema do not depend on its module.
    from humanoid_training.persistence.tables import metadata

    metadata.create_all(engine)
    return engine
