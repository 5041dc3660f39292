"""The group committer on a real SQLite file: a batch is written together, and a
write that breaks a constraint fails alone while the rest of its batch commits."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime, Settings
from runtime.committer import GroupCommitter

WAIT = 10.0


class KeyStore:
    """A table with a unique key, written through a GroupCommitter."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False
        )
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("CREATE TABLE keys (key TEXT UNIQUE)")
        self.calls: list[int] = []  # payloads per call of write
        self.first_entered = threading.Event()
        self.release_first = threading.Event()
        self.committer = GroupCommitter(
            self.transaction, self.write, integrity_errors=(sqlite3.IntegrityError,)
        )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        cursor = self.connection.cursor()
        cursor.execute("BEGIN")
        try:
            yield cursor
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")

    def write(self, cursor: sqlite3.Cursor, keys: Sequence[str]) -> list[Sequence[int]]:
        self.calls.append(len(keys))
        if keys == ["first"]:
            self.first_entered.set()
            assert self.release_first.wait(WAIT)
        results = []
        for key in keys:
            cursor.execute("INSERT INTO keys VALUES (?)", (key,))
            results.append([int(cursor.lastrowid or 0)])
        return results

    def stored(self) -> list[str]:
        return [r[0] for r in self.connection.execute("SELECT key FROM keys")]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    found = KeyStore(tmp_path / "keys.db")
    yield found
    found.connection.close()


def test_writes_queued_behind_a_commit_are_written_together(store: KeyStore) -> None:
    with ThreadPoolExecutor(9) as pool:
        first = pool.submit(store.committer.write, "first")
        assert store.first_entered.wait(WAIT)
        queued = [pool.submit(store.committer.write, f"k{n}") for n in range(8)]
        while len(store.committer._pending) < 8:  # all eight queued
            threading.Event().wait(0.01)
        store.release_first.set()
        first.result(WAIT)
        for future in queued:
            future.result(WAIT)

    assert store.calls == [1, 8]  # one call of write for the eight
    assert sorted(store.stored()) == sorted(["first", *(f"k{n}" for n in range(8))])


def test_a_write_that_breaks_a_constraint_fails_alone(store: KeyStore) -> None:
    with ThreadPoolExecutor(9) as pool:
        first = pool.submit(store.committer.write, "first")
        assert store.first_entered.wait(WAIT)
        keys = ["a", "b", "dup", "c", "dup", "d"]
        queued = [pool.submit(store.committer.write, key) for key in keys]
        while len(store.committer._pending) < len(keys):
            threading.Event().wait(0.01)
        store.release_first.set()
        first.result(WAIT)
        outcomes: list[Any] = []
        for future in queued:
            try:
                outcomes.append(future.result(WAIT))
            except sqlite3.IntegrityError:
                outcomes.append("refused")

    assert outcomes.count("refused") == 1
    assert sorted(store.stored()) == ["a", "b", "c", "d", "dup", "first"]
    # together first (refused by the clash), then each in its own savepoint
    assert store.calls == [1, 6, 1, 1, 1, 1, 1, 1]


def test_sqlite_connections_keep_every_statement_prepared(tmp_path: Path) -> None:
    """eventsourcing opens connections with ``cached_statements=True`` (a cache
    of one); sessiond's pool keeps them all, so a write does not re-parse its
    statements. SQLite calls a connection's authorizer only while it prepares
    a statement, so the authorizer counts preparations."""
    runtime = Runtime(Settings(db=str(tmp_path / "cache.db")))
    try:
        sid = runtime.create()["id"]
        runtime.append(sid, "warm")
        pool = runtime.app.recorder.datastore.pool  # type: ignore[attr-defined]
        connections = [c._sqlite_conn for c in pool._pool]
        assert connections
        prepared: list[tuple[Any, ...]] = []

        def authorize(*action: Any) -> int:
            prepared.append(action)
            return sqlite3.SQLITE_OK

        for raw in connections:
            raw.set_authorizer(authorize)  # (expires the statements once)
        runtime.append(sid, "prepares again")
        assert prepared  # the counter works
        prepared.clear()

        for _ in range(3):
            runtime.append(sid, "again")

        assert prepared == []
    finally:
        runtime.close()
