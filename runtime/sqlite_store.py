"""The SQLite store: a pool that proves every connection is durable, the
snapshot table as a rowid table, and the sessions recorder on SQLite."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import (
    ConnectionPoolClosedError,
    ConnectionUnavailableError,
    IntegrityError,
    InterfaceError,
)
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteDatastore,
    SQLiteFactory,
)

from projections.sql import EVENTS_TABLE
from projections.sqlite_views import SQLiteSessionViews, persistence_error
from runtime.errors import StorageUnavailableError
from runtime.recording import SessionsRecorder
from runtime.sqlite_cluster import SQLiteChangeSource, SQLiteLeaseStore

if TYPE_CHECKING:
    from eventsourcing.persistence import StoredEvent

    from projections.sql import Cursor
    from runtime.bus import EventBus
    from runtime.clock import Clock

SYNCHRONOUS_FULL = 2
STATEMENT_CACHE_SIZE = 256
"""Prepared statements kept per connection (sessiond runs a few dozen)."""


class PreparedSQLiteConnection(SQLiteConnection):
    """Ends transactions with cached ``COMMIT``/``ROLLBACK`` statements
    (``sqlite3.Connection.commit()`` prepares its ``COMMIT`` anew every time)."""

    def commit(self) -> None:
        """Commit the open transaction, if any (as ``sqlite3``'s ``commit``)."""
        if self._sqlite_conn.in_transaction:
            self._sqlite_conn.execute("COMMIT")

    def rollback(self) -> None:
        """Roll the open transaction back, if any (an error may have already)."""
        if self._sqlite_conn.in_transaction:
            self._sqlite_conn.execute("ROLLBACK")


class DurableSQLiteConnectionPool(SQLiteConnectionPool):
    """Opens connections in WAL mode with ``synchronous=FULL`` and checks both,
    so that an acknowledged write has been fsynced; refuses to run otherwise.

    On a file, connections are handed out without eventsourcing's queueing: its
    pool passes every request through a fairness semaphore and a condition
    (and readers through a reader count), so under load each read costs lock
    hand-overs between threads, each a context switch under the GIL. A WAL file
    needs none of that: readers never wait for anyone, so a reader takes an idle
    connection (or opens one) without a lock; writers still take turns on one
    lock, so that two of this process's writers never meet in SQLite's busy
    handler. An in-memory database keeps eventsourcing's pool (its readers and
    writers must exclude each other).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._writer_turn = threading.Lock()

    def get_connection(
        self, timeout: float | None = None, *, is_writer: bool | None = None
    ) -> SQLiteConnection:
        """An idle connection (or a new one); a writer's waits for its turn."""
        if self.is_sqlite_memory_mode:
            return super().get_connection(timeout, is_writer=is_writer)
        if self._closed:
            raise ConnectionPoolClosedError
        wait = self.pool_timeout if timeout is None else timeout
        if is_writer and not self._writer_turn.acquire(timeout=wait):
            msg = "Timed out waiting for return of writer"
            raise ConnectionUnavailableError(msg)
        try:
            try:
                connection = self._pool.pop()  # atomic: no lock needed
            except IndexError:
                connection = self._create_connection()
        except BaseException:
            if is_writer:
                self._writer_turn.release()
            raise
        connection.is_writer = is_writer
        return connection

    def put_connection(self, conn: SQLiteConnection) -> None:
        """Give the connection back (closed instead once the pool is), never
        inside a transaction: a ``COMMIT`` that failed (a full disk, a deferred
        constraint) leaves its transaction open, and eventsourcing's
        transactions hand such a connection back as it is; the next user's
        ``BEGIN`` would then fail, and the open transaction hold SQLite's write
        lock against every other writer."""
        if not conn.closed:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()  # (does nothing outside a transaction)
        if self.is_sqlite_memory_mode:
            super().put_connection(conn)
            return
        is_writer, conn.is_writer = conn.is_writer, None
        if self._closed or conn.closed:
            conn.close()
        else:
            self._pool.append(conn)
            if self._closed:  # closed meanwhile: close() may have missed it
                conn.close()
        if is_writer:
            self._writer_turn.release()

    def _connect(self) -> SQLiteConnection:
        """A connection as eventsourcing's pool opens it, but with a statement
        cache that holds every statement sessiond runs: eventsourcing passes
        ``cached_statements=True``, which ``sqlite3`` takes as a cache of one
        statement, so each write re-parsed all of its ~8 statements (~14% of
        an append's CPU)."""
        try:
            raw = sqlite3.connect(
                database=self.db_name,
                uri=True,
                check_same_thread=False,
                isolation_level=None,  # autocommit: transactions are explicit
                cached_statements=STATEMENT_CACHE_SIZE,
                timeout=self.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT,
            )
        except (sqlite3.Error, TypeError) as error:
            raise InterfaceError(error) from error
        if not self.is_sqlite_memory_mode and not self.is_journal_mode_wal:
            mode = raw.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                raw.execute("PRAGMA journal_mode=WAL")
                self.journal_mode_was_changed_to_wal = True
            self.is_journal_mode_wal = True
        raw.row_factory = sqlite3.Row
        return PreparedSQLiteConnection(sqlite_conn=raw, max_age=self.max_age)

    def _create_connection(self) -> SQLiteConnection:
        connection = self._connect()
        raw = connection._sqlite_conn
        raw.execute("PRAGMA synchronous=FULL")
        raw.execute(f"PRAGMA busy_timeout={int((self.lock_timeout or 5) * 1000)}")
        check_durability(raw, in_memory=self.is_sqlite_memory_mode)
        return connection


def check_durability(connection: sqlite3.Connection, *, in_memory: bool) -> None:
    """Raise unless the connection is in WAL mode with ``synchronous=FULL``."""
    synchronous = connection.execute("PRAGMA synchronous").fetchone()[0]
    journal_mode = str(connection.execute("PRAGMA journal_mode").fetchone()[0])
    if synchronous != SYNCHRONOUS_FULL or (
        not in_memory and journal_mode.lower() != "wal"
    ):
        msg = (
            f"SQLite is not durable (journal_mode={journal_mode}, "
            f"synchronous={synchronous}); refusing to acknowledge writes"
        )
        raise StorageUnavailableError(msg)


class SnapshotRecorder(SQLiteAggregateRecorder):
    """eventsourcing's snapshot recorder with its table as a rowid table.

    eventsourcing declares the table ``WITHOUT ROWID``; such a b-tree keeps at
    most ~1,000 bytes of a row in its leaf page, so every session snapshot (about
    1 KiB, more with checkpoints and idempotency keys) spilled into an overflow
    page of its own: 4 KiB on disk per snapshot, ~40 bytes per message. In a rowid
    table a row keeps up to ~4,000 bytes in the leaf. Same columns, same primary
    key, same statements; a database created before keeps its table as it is.
    """

    def construct_create_table_statements(self) -> list[str]:
        """The ``CREATE TABLE`` statement, without ``WITHOUT ROWID``."""
        return [
            statement.removesuffix(" WITHOUT ROWID")
            for statement in super().construct_create_table_statements()
        ]


class SQLiteSessionsRecorder(SessionsRecorder, SQLiteApplicationRecorder):
    """The sessions recorder on SQLite (see :class:`SessionsRecorder`)."""

    def __init__(
        self,
        datastore: SQLiteDatastore,
        views: SQLiteSessionViews,
        bus: EventBus,
        *,
        clock: Clock,
        server_webhooks: tuple[Mapping[str, Any], ...] = (),
    ) -> None:
        SQLiteApplicationRecorder.__init__(self, datastore)
        self._init_sessions_recorder(
            views,
            bus,
            clock=clock,
            server_webhooks=server_webhooks,
            integrity_errors=(sqlite3.IntegrityError, IntegrityError),
        )

    def _insert_rows(
        self, cursor: Cursor, stored_events: Sequence[StoredEvent]
    ) -> Callable[[], Sequence[int]]:
        # SQLite runs each statement as it is given: the ids are known now.
        ids = self._insert_events(cursor, stored_events) or []  # type: ignore[arg-type]
        return lambda: ids

    def _translate(self, error: BaseException) -> BaseException:
        return persistence_error(error) if isinstance(error, sqlite3.Error) else error


class DurableSQLiteFactory(SQLiteFactory):
    """eventsourcing's SQLite factory with the durable pool (and the snapshot
    table as a rowid table, see :class:`SnapshotRecorder`)."""

    aggregate_recorder_class = SnapshotRecorder

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        old = self.datastore.pool
        self.datastore.pool = DurableSQLiteConnectionPool(
            db_name=old.db_name,
            lock_timeout=old.lock_timeout,
            # Readers come from HTTP worker threads as well as actors.
            pool_size=16,
            max_overflow=48,
            pool_timeout=30.0,
        )
        old.close()

    def session_store(
        self,
        bus: EventBus,
        *,
        clock: Clock,
        server_webhooks: tuple[Mapping[str, Any], ...],
    ) -> SQLiteSessionsRecorder:
        """The views and the sessions recorder, their tables created."""
        views = SQLiteSessionViews(self.datastore)
        views.create_table()
        recorder = SQLiteSessionsRecorder(
            self.datastore,
            views,
            bus,
            clock=clock,
            server_webhooks=server_webhooks,
        )
        recorder.create_table()
        return recorder

    def lease_store(self) -> SQLiteLeaseStore:
        """Leases in the ``leases`` table of the same file."""
        leases = SQLiteLeaseStore(self.datastore)
        leases.create_table()
        return leases

    def change_source(self) -> SQLiteChangeSource:
        """The log of the same file, polled."""
        return SQLiteChangeSource(self.datastore, EVENTS_TABLE)
