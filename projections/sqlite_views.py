"""The session views on SQLite: DDL and connection handling."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from eventsourcing.persistence import (
    DatabaseError,
    IntegrityError,
    OperationalError,
    PersistenceError,
)
from eventsourcing.sqlite import SQLiteTrackingRecorder

from projections.request_keys import SQLITE_REQUEST_KEYS_DDL
from projections.views import SESSION_GONE, SessionViews

if TYPE_CHECKING:
    from eventsourcing.sqlite import (
        SQLiteConnectionPool,
        SQLiteCursor,
        SQLiteDatastore,
    )

    from projections.sql import Cursor

SQLITE_VIEWS_DDL = (
    "CREATE TABLE IF NOT EXISTS session_index ("
    "session_id TEXT PRIMARY KEY, owner_id TEXT NOT NULL, "
    "user_id TEXT NOT NULL, agent_id TEXT NOT NULL, status TEXT NOT NULL, "
    "name_key TEXT, pinned INTEGER NOT NULL, scope_key TEXT, "
    "created_at TEXT NOT NULL, updated_at TEXT NOT NULL, parent_id TEXT, "
    "checkpoints INTEGER NOT NULL, spans BLOB NOT NULL, doc BLOB NOT NULL) "
    "WITHOUT ROWID",
    # Sessions past their life, oldest first, for retention.
    "CREATE INDEX IF NOT EXISTS session_index_retention "
    "ON session_index (status, updated_at) WHERE status != 'active'",
    # The lifecycle schedule: each live session's next deadline.
    "CREATE TABLE IF NOT EXISTS session_schedule ("
    "session_id TEXT PRIMARY KEY, due_ms INTEGER NOT NULL, due TEXT NOT NULL) "
    "WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS session_schedule_due "
    "ON session_schedule (due_ms, session_id)",
    # Live sessions whose agent turn has not ended: what to resume after a
    # crash, found without scanning every session.
    "CREATE TABLE IF NOT EXISTS session_open_turns ("
    "session_id TEXT PRIMARY KEY, turn_offset INTEGER NOT NULL) "
    "WITHOUT ROWID",
    # The webhook outbox: written with the events it announces.
    "CREATE TABLE IF NOT EXISTS webhook_outbox ("
    "id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, "
    "event_offset INTEGER NOT NULL, url TEXT NOT NULL, headers BLOB NOT NULL, "
    "payload BLOB NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL, "
    "next_attempt_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL, "
    "last_status INTEGER, last_error TEXT)",
    "CREATE INDEX IF NOT EXISTS webhook_outbox_due "
    "ON webhook_outbox (next_attempt_ms, id) WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS webhook_outbox_session "
    "ON webhook_outbox (session_id, status, id)",
    "CREATE TABLE IF NOT EXISTS webhook_attempts ("
    "outbox_id INTEGER NOT NULL, attempt INTEGER NOT NULL, "
    "at_ms INTEGER NOT NULL, "
    "status_code INTEGER, error TEXT, duration_ms INTEGER NOT NULL, "
    "PRIMARY KEY (outbox_id, attempt)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS session_index_parent "
    "ON session_index (parent_id) WHERE parent_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS session_index_owner "
    "ON session_index (owner_id, created_at)",
    # Names are unique per user of an owner, case-insensitively, among live
    # sessions (user ids are the owner's: tenants never clash).
    "DROP INDEX IF EXISTS session_index_name",
    "CREATE UNIQUE INDEX IF NOT EXISTS session_index_user_name "
    "ON session_index (owner_id, user_id, name_key) "
    "WHERE name_key IS NOT NULL AND status != 'ended'",
    # One live session per scope key: get-or-create cannot make two.
    "CREATE UNIQUE INDEX IF NOT EXISTS session_index_scope "
    "ON session_index (scope_key) "
    "WHERE scope_key IS NOT NULL AND status = 'active'",
)


class SQLiteSessionViews(SessionViews, SQLiteTrackingRecorder):
    """The session views in the application's SQLite database."""

    datastore: SQLiteDatastore

    def construct_create_table_statements(self) -> list[str]:
        """The tracking table plus the views' tables and indexes."""
        return [
            *super().construct_create_table_statements(),
            *SQLITE_VIEWS_DDL,
            *SQLITE_REQUEST_KEYS_DDL,
        ]

    def q(self, statement: str) -> str:
        """SQLite speaks ``?`` placeholders as written."""
        return statement

    def update_existing(
        self, c: Cursor, statement: str, rows: list[tuple[Any, ...]]
    ) -> None:
        """``executemany``, then the rows it changed counted (SQLite runs each
        statement as it is given)."""
        c.executemany(statement, rows)
        if cast("SQLiteCursor", c).sqlite_cursor.rowcount != len(rows):
            raise IntegrityError(SESSION_GONE)

    def contains(self, column: str) -> str:
        """``instr``: a substring test that needs no escaping of the text."""
        return f"instr({column}, ?) > 0"

    @contextmanager
    def reading(self) -> Iterator[Cursor]:
        """A pooled connection in autocommit: each read sees what is committed
        when it runs (a SELECT is its own snapshot), without a BEGIN and a
        ROLLBACK around it (two statements, each a GIL hand-over under load)."""
        with self.datastore.get_connection(commit=False) as connection:
            cursor = connection.cursor()
            try:
                yield cursor
            except sqlite3.Error as error:
                raise persistence_error(error) from error
            finally:
                cursor.sqlite_cursor.close()  # ends the statement's read

    def snapshot(self) -> AbstractContextManager[Cursor]:
        """A read transaction: one state of the WAL for several reads."""
        return cast(
            "AbstractContextManager[Cursor]", self.datastore.transaction(commit=False)
        )

    def writing(self) -> AbstractContextManager[Cursor]:
        """A write transaction, committed at the end of the block."""
        return WriteTransaction(self.datastore.pool)


class WriteTransaction:
    """``BEGIN`` ... ``COMMIT`` on the pool's writer connection, rolled back if
    the block raises; driver errors become eventsourcing's, as its transactions
    raise them.

    What eventsourcing's ``datastore.transaction(commit=True)`` does, in one
    object instead of four nested context managers (two of them generators):
    every durable write goes through here, and those layers cost ~15 us of CPU
    per write, a twentieth of a durable append.
    """

    __slots__ = ("_connection", "_cursor", "_pool")

    def __init__(self, pool: SQLiteConnectionPool) -> None:
        self._pool = pool

    def __enter__(self) -> SQLiteCursor:
        connection = self._pool.get_connection(is_writer=True)
        try:
            cursor = connection.cursor()
            cursor.sqlite_cursor.execute("BEGIN")
        except BaseException as error:
            self._pool.put_connection(connection)
            if isinstance(error, sqlite3.Error):
                raise persistence_error(error) from error
            raise
        self._connection, self._cursor = connection, cursor
        return cursor

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection = self._connection
        try:
            if error is None:
                connection.commit()
            else:
                connection.rollback()
        except sqlite3.Error as failure:
            # (a failed COMMIT may leave the transaction open: the pool rolls
            # back any connection given back inside one)
            if error is None:
                raise persistence_error(failure) from failure
            # (the block's own error is the one to report)
        finally:
            self._cursor.sqlite_cursor.close()
            self._pool.put_connection(connection)
        if isinstance(error, sqlite3.Error):
            raise persistence_error(error) from error


def persistence_error(error: sqlite3.Error) -> PersistenceError:
    """eventsourcing's error for a driver error (as its transactions raise)."""
    if isinstance(error, sqlite3.IntegrityError):
        return IntegrityError(error)
    if isinstance(error, sqlite3.OperationalError):
        return OperationalError(error)
    if isinstance(error, sqlite3.DatabaseError):
        return DatabaseError(error)
    return PersistenceError(error)
