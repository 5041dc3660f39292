"""Test databases on either backend: SQLite files, and PostgreSQL databases made
for one test run (uniquely named, dropped at its end) and emptied between tests.

``SESSIOND_TEST_POSTGRES`` names the server's maintenance database (default
``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ADMIN_DSN = os.environ.get(
    "SESSIOND_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TABLES = (
    "stored_events",
    "stored_snapshots",
    "session_index",
    "session_schedule",
    "session_open_turns",
    "leases",
    "webhook_outbox",
    "webhook_attempts",
    "request_keys",
)
SMALL_POOL = {"postgres_pool_size": 1, "postgres_max_overflow": 6}
"""Pool settings for test runtimes: many helpers share one server's
``max_connections``."""
SMALL_POOL_ENV = {
    "SESSIOND_POSTGRES_POOL_SIZE": "1",
    "SESSIOND_POSTGRES_MAX_OVERFLOW": "6",
}


def is_postgres(db: str) -> bool:
    """Whether ``db`` is a PostgreSQL DSN (else a SQLite file)."""
    return db.startswith(("postgresql://", "postgres://"))


def query(
    db: str, statement: str, params: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    """Run one statement (``?`` placeholders) on ``db`` directly; its rows."""
    if is_postgres(db):
        with psycopg.connect(db, autocommit=True) as connection:
            statement = statement.replace("%", "%%").replace("?", "%s")
            cursor = connection.execute(statement, params)  # type: ignore[arg-type]
            return list(cursor.fetchall()) if cursor.description else []
    with closing(sqlite3.connect(db)) as connection, connection:
        return list(connection.execute(statement, params).fetchall())


@contextmanager
def write_lock_held(db: str, wait: float = 30.0) -> Iterator[None]:
    """Another connection holds the write lock of ``db``'s log (SQLite's write
    lock; on PostgreSQL the lock every insert into ``stored_events`` takes):
    every write of a runtime fails once its lock timeout runs out."""
    if is_postgres(db):
        with psycopg.connect(db) as connection:
            connection.execute("LOCK TABLE stored_events IN EXCLUSIVE MODE")
            yield
            connection.rollback()
        return
    blocker = sqlite3.connect(db, isolation_level=None, timeout=wait)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        yield
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()


def postgres_unreachable() -> str | None:
    """Why the test PostgreSQL server cannot be used, or ``None`` if it can."""
    try:
        with psycopg.connect(ADMIN_DSN, connect_timeout=3, autocommit=True):
            return None
    except psycopg.Error as error:
        return f"PostgreSQL is not reachable at {ADMIN_DSN}: {type(error).__name__}"


class PostgresDatabases:
    """The databases this test run made on the server (see :meth:`drop_all`)."""

    def __init__(self) -> None:
        self.prefix = f"sessiond_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.made: list[str] = []

    def create(self) -> str:
        """A new empty database; its DSN."""
        name = f"{self.prefix}_{len(self.made)}"
        with psycopg.connect(ADMIN_DSN, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        self.made.append(name)
        params = conninfo_to_dict(ADMIN_DSN)
        params["dbname"] = name
        return "postgresql://" + _uri_tail(params)

    def drop_all(self) -> None:
        """Drop every database made (closing whatever still uses them)."""
        if not self.made:
            return
        with psycopg.connect(ADMIN_DSN, autocommit=True) as connection:
            for name in self.made:
                connection.execute(
                    f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'  # type: ignore[arg-type]
                )
        self.made.clear()


def empty(dsn: str) -> None:
    """Remove every row sessiond wrote and restart its sequences (the tables
    stay, so the next test does not pay for creating them). ``DELETE`` rather
    than ``TRUNCATE``: on a few rows it is several times faster."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        present = {
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        sequences = [
            row[0]
            for row in connection.execute(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
            )
        ]
        with connection.transaction():
            connection.execute("SET LOCAL lock_timeout = '20s'")
            for table in TABLES:
                if table in present:
                    connection.execute(f"DELETE FROM {table}")  # type: ignore[arg-type]
            if "tracking" in present:
                # eventsourcing's own row says the table is the single-row kind.
                connection.execute(
                    "DELETE FROM tracking WHERE application_name != '__migration__'"
                )
            for sequence in sequences:
                connection.execute("SELECT setval(%s, 1, false)", (sequence,))


def _uri_tail(params: dict[str, Any]) -> str:
    user = params.get("user") or ""
    password = params.get("password") or ""
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = params.get("host") or "127.0.0.1"
    port = params.get("port") or "5432"
    extra = {
        k: v
        for k, v in params.items()
        if k not in ("user", "password", "host", "port", "dbname")
    }
    tail = f"{auth}{host}:{port}/{params['dbname']}"
    return tail + ("?" + make_conninfo("", **extra).replace(" ", "&") if extra else "")
