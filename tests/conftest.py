"""Shared fixtures: runtimes on a real database of the backend under test.

Every test that uses a database through these fixtures (``db``, ``runtime``,
``runtime_factory``, ``database_factory`` and the server fixtures built on them)
runs once per backend: ``[sqlite]`` on a file in the test's temporary directory,
``[postgres]`` on a PostgreSQL database created for this test run (uniquely named,
emptied after each test, dropped at the end). Tests marked ``sqlite_only`` run on
SQLite alone (``postgres_only``: on PostgreSQL alone).
``SESSIOND_TEST_BACKENDS=sqlite`` (or ``postgres``) picks one.

PostgreSQL tests are skipped, with the reason, when the server is unreachable;
with ``CI=true`` they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from hypothesis import settings as hypothesis_settings

from runtime import FakeClock, Runtime, Settings
from tests.support.database import (
    SMALL_POOL,
    PostgresDatabases,
    empty,
    is_postgres,
    postgres_unreachable,
)
from tests.support.openai_server import OpenAIServer

hypothesis_settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True
)
hypothesis_settings.register_profile("dev", max_examples=30, deadline=None)
hypothesis_settings.load_profile("ci")

RuntimeFactory = Callable[..., Runtime]
DatabaseFactory = Callable[[], str]
BACKENDS = tuple(
    name.strip()
    for name in os.environ.get("SESSIOND_TEST_BACKENDS", "sqlite,postgres").split(",")
    if name.strip()
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that uses a database once per backend."""
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker
        backends = [
            b
            for b in BACKENDS
            if not (b == "postgres" and marker("sqlite_only"))
            and not (b == "sqlite" and marker("postgres_only"))
        ]
        # Session scope: pytest runs all of one backend's tests together, so
        # session- and module-scoped servers start once per backend.
        metafunc.parametrize("backend", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test: ``sqlite`` or ``postgres``."""
    name = str(request.param)
    if name == "postgres":
        reason = postgres_unreachable()
        if reason is not None:
            if os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)
    return name


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    """The PostgreSQL databases this run creates, all dropped at its end."""
    databases = PostgresDatabases()
    yield databases
    databases.drop_all()


@pytest.fixture(scope="session")
def database_factory(
    backend: str,
    postgres_databases: PostgresDatabases,
    tmp_path_factory: pytest.TempPathFactory,
) -> DatabaseFactory:
    """Makes a fresh database of the backend under test (for a server that
    outlives one test): a SQLite file path or a PostgreSQL DSN."""

    def make() -> str:
        if backend == "postgres":
            return postgres_databases.create()
        return str(tmp_path_factory.mktemp("db") / "sessiond.db")

    return make


@pytest.fixture(scope="session")
def shared_postgres(postgres_databases: PostgresDatabases) -> str:
    """The run's PostgreSQL database for function-scoped tests (see ``db``)."""
    return postgres_databases.create()


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """A fresh SQLite file path."""
    return str(tmp_path / "sessiond.db")


@pytest.fixture
def db(backend: str, db_path: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The test's database: its SQLite file (``db_path``), or the run's
    PostgreSQL database, emptied after the test."""
    if backend == "sqlite":
        yield db_path
        return
    dsn = str(request.getfixturevalue("shared_postgres"))
    yield dsn
    empty(dsn)


def settings_for(db: str, **changes: Any) -> Settings:
    """``Settings`` on ``db`` (with a small pool on PostgreSQL)."""
    if is_postgres(db):
        for name, value in SMALL_POOL.items():
            changes.setdefault(name, value)
    return Settings(db=db, **changes)


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when told to."""
    return FakeClock()


@pytest.fixture
def runtime_factory(db: str, clock: FakeClock) -> Iterator[RuntimeFactory]:
    """Builds runtimes on the test's database (all closed at teardown).

    Keyword arguments are ``Settings`` fields (``db`` defaults to the test's
    database, ``clock`` to the test's fake clock).
    """
    made: list[Runtime] = []

    def make(**changes: Any) -> Runtime:
        changes.setdefault("clock", clock)
        runtime = Runtime(settings_for(changes.pop("db", db), **changes))
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()


@pytest.fixture
def runtime(runtime_factory: RuntimeFactory) -> Runtime:
    """A runtime on the test's database."""
    return runtime_factory()


@pytest.fixture(autouse=True)
def _stop_all_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A scripted OpenAI-compatible chat-completions server on loopback (see
    :mod:`tests.support.openai_server`)."""
    with OpenAIServer() as running:
        yield running
