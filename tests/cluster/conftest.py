"""Clusters of real ``sessiond serve`` processes sharing one store.

``store`` is what the nodes share, on the run's ``backend`` (tests/conftest.py
runs every test once per backend): a SQLite file on this machine, or a fresh,
uniquely named PostgreSQL database whose DSN every node gets (``--db
postgresql://…``), each node with a small pool. The tests talk to the nodes over
HTTP only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.database import PostgresDatabases
from tests.support.server import ServerProcess

NODES = 3


@dataclass(frozen=True)
class Backend:
    """A store the nodes share: ``db`` is what ``--db`` gets."""

    name: str
    db: str


@pytest.fixture
def store(
    backend: str, tmp_path: Path, postgres_databases: PostgresDatabases
) -> Backend:
    """One fresh store for the test: a SQLite file in ``tmp_path``, or a
    PostgreSQL database of its own (dropped at the end of the run)."""
    if backend == "postgres":
        return Backend("postgres", postgres_databases.create())
    return Backend("sqlite", str(tmp_path / "cluster.db"))


class Node(ServerProcess):
    """One cluster member, with a client of its own."""

    def __init__(self, index: int, db: str, log: Path, env: Mapping[str, str]) -> None:
        super().__init__(db, log=log, env=env)
        self.index = index
        self.db_text = db
        self.http = httpx.Client(base_url=self.url, timeout=10.0)

    @property
    def alive(self) -> bool:
        """Whether the process is running."""
        return self.process is not None and self.process.poll() is None

    def health(self) -> dict[str, Any]:
        """``GET /v1/health``."""
        found: dict[str, Any] = self.http.get("/v1/health").json()
        return found

    def close(self) -> None:
        """Stop the process and the client."""
        self.http.close()
        self.stop()


class Cluster:
    """``NODES`` processes on one backend, started together."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def alive(self) -> list[Node]:
        """The nodes still running."""
        return [node for node in self.nodes if node.alive]

    def supervisor(self, timeout: float = 15.0) -> Node:
        """The one live node whose health says it runs the supervisor (waits,
        bounded, for the lease to be taken)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            active = [n for n in self.alive() if n.health()["supervisor"] == "active"]
            assert len(active) <= 1, "two nodes hold the supervisor lease"
            if active:
                return active[0]
            time.sleep(0.05)  # polling a readiness probe, bounded by the deadline
        msg = f"no node took the supervisor lease within {timeout} s"
        raise TimeoutError(msg)

    def events(self, session_id: str, via: Node | None = None) -> list[dict[str, Any]]:
        """The session's whole log, read through one live node."""
        node = via or self.alive()[0]
        found: list[dict[str, Any]] = []
        after = 0
        while True:
            page = node.http.get(
                f"/v1/sessions/{session_id}/events",
                params={"after": after, "limit": 1000},
            ).json()
            found.extend(page["events"])
            if not page["has_more"]:
                return found
            after = found[-1]["offset"]


ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def cluster_factory(store: Backend, tmp_path: Path) -> Iterator[ClusterFactory]:
    """Starts clusters on the test's backend (stopped at teardown).

    Keyword arguments are environment variables for every node.
    """
    made: list[Node] = []

    def make(nodes: int = NODES, **env: str) -> Cluster:
        members = [
            Node(i, store.db, tmp_path / f"node-{i}.log", env) for i in range(nodes)
        ]
        made.extend(members)
        # The first creates the schema; the others then start side by side.
        members[0].start()
        for member in members[1:]:
            member.launch()
        for member in members[1:]:
            member.wait_healthy()
        return Cluster(members)

    yield make
    for node in made:
        node.close()
