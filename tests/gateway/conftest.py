"""Fixtures of the gateway suite: real servers in subprocesses (the contract is
tested over real HTTP), and in-process apps for fast unit-level tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from tests.conftest import DatabaseFactory
from tests.gateway.helpers import API_KEYS
from tests.support.server import ServerProcess

ServerFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[ServerProcess]:
    """One server without authentication, shared by the contract tests (each
    test works on its own sessions)."""
    where = tmp_path_factory.mktemp("server")
    process = ServerProcess(database_factory(), log=where / "server.log")
    yield process.start()
    process.stop()


@pytest.fixture(scope="session")
def auth_server(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[ServerProcess]:
    """One server with API keys for alice, bob and an admin."""
    where = tmp_path_factory.mktemp("auth-server")
    process = ServerProcess(
        database_factory(),
        log=where / "server.log",
        env={"SESSIOND_API_KEYS": API_KEYS},
    )
    yield process.start()
    process.stop()


@pytest.fixture
def server_factory(tmp_path: Path, db: str) -> Iterator[ServerFactory]:
    """Starts servers of the test's own (killed, restarted) database."""
    made: list[ServerProcess] = []

    def make(
        env: Mapping[str, str] | None = None,
        factory: str | None = None,
        name: str = "a",
    ) -> ServerProcess:
        process = ServerProcess(
            db,
            log=tmp_path / f"server-{name}.log",
            env=env,
            factory=factory,
        )
        made.append(process)
        return process.start()

    yield make
    for process in made:
        process.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client of the shared server."""
    with httpx.Client(base_url=server.url, timeout=20.0) as http:
        yield http
