"""The PostgreSQL store: eventsourcing's ``postgres`` module (psycopg 3) with
the sessions recorder, the views and their schema, selected by a DSN.

Tables are named as on SQLite (``stored_events``, ``stored_snapshots``,
``tracking``), so the shared statements serve both. Schema creation at start-up
runs under an advisory lock, so nodes starting together do not race on it.

A write is one round trip: its statements (lock, notify, insert, tracking, view
rows, outbox rows) go to the server as one multi-statement query, which the
server runs as one transaction (see :class:`StatementBuffer`). Reads (snapshots,
event replay) are eventsourcing's.

How other processes learn of a write: every inserting transaction takes
eventsourcing's ``EXCLUSIVE`` lock on ``stored_events`` (so notification ids are
issued in commit order and a reader tailing by notification id never skips one
that commits later) and sends ``NOTIFY stored_events``, which wakes
eventsourcing's ``subscribe`` (LISTEN) on every node at the commit. Integrity
errors are reported in the words SQLite uses for the same constraint, so callers
tell a taken name, a taken scope key and a second writer apart the same way on
both backends.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import psycopg
from eventsourcing.persistence import (
    AggregateRecorder,
    IntegrityError,
    OperationalError,
    PersistenceError,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from psycopg import ClientCursor
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import tuple_row

from projections.postgres_views import SESSION_GONE_CONSTRAINT, PostgresSessionViews
from projections.sql import APPLICATION_NAME, EVENTS_TABLE, TRACKING_TABLE
from projections.views import SESSION_GONE
from runtime.postgres_cluster import PostgresChangeSource, PostgresLeaseStore
from runtime.recording import SessionsRecorder

if TYPE_CHECKING:
    from eventsourcing.persistence import StoredEvent

    from projections.sql import Cursor
    from runtime.bus import EventBus
    from runtime.clock import Clock
    from runtime.settings import Settings

POSTGRES_EXTRA_CONNINFO = "POSTGRES_EXTRA_CONNINFO"
"""eventsourcing-env key: DSN parameters beyond host, port, user, password and
database (``sslmode``, ``application_name``...), as a conninfo string."""

SCHEMA_LOCK_KEY = 0x5E5510D
"""The advisory lock held while creating the schema."""

ADVANCE_TO_LATEST = (
    f"INSERT INTO {TRACKING_TABLE} (application_name, notification_id) "
    f"SELECT %s, max(notification_id) FROM {EVENTS_TABLE} "
    "ON CONFLICT (application_name) DO UPDATE "
    "SET notification_id = excluded.notification_id "
    f"WHERE {TRACKING_TABLE}.notification_id < excluded.notification_id"
)
"""Tracking to the log's last notification id: under the insert lock that is
this transaction's last one, so the write needs no answer before sending it."""

CONSTRAINT_WORDS = {
    "session_index_user_name": (
        "session_index.owner_id, session_index.user_id, session_index.name_key"
    ),
    "session_index_scope": "session_index.scope_key",
    "session_index_pkey": "session_index.session_id",
    "stored_events_pkey": (
        "stored_events.originator_id, stored_events.originator_version"
    ),
}
"""PostgreSQL constraint names and what SQLite calls the same constraint."""

INSERT_EVENTS = (
    f"INSERT INTO {EVENTS_TABLE} "
    "(originator_id, originator_version, topic, state) VALUES "
)


class StatementBuffer:
    """The committer's cursor on PostgreSQL: it collects a write's statements
    and sends them as one multi-statement query (values bound client-side), so
    a write costs one round trip.

    The server runs a multi-statement query as one transaction, so a lone write
    needs no ``BEGIN``/``COMMIT``; the first ``SAVEPOINT`` (the committer sends
    one per write only when a batch holds several) opens an explicit
    transaction, committed when the batch ends.
    """

    def __init__(self, connection: Any) -> None:
        self._cursor = ClientCursor(connection, row_factory=tuple_row)
        self._parts: list[str] = []
        self.began = False

    def execute(self, query: Any, params: Any = None) -> None:
        """Add a statement (``%s`` placeholders) to the next query."""
        if not self.began and str(query).startswith("SAVEPOINT"):
            self._parts.append("BEGIN")
            self.began = True
        self._parts.append(self._cursor.mogrify(query, params))

    def executemany(self, query: Any, params_seq: Any) -> None:
        """Add the statement once per parameter set."""
        for params in params_seq:
            self.execute(query, params)

    def mark(self) -> int:
        """Where the next statement's result will be in the next query."""
        return len(self._parts)

    def flush(self, want: int | None = None) -> list[Any]:
        """Send what is collected (raising the first statement's error); the
        rows of statement number ``want``."""
        parts, self._parts = self._parts, []
        if not parts:
            return []
        self._cursor.execute(";".join(parts))
        rows: list[Any] = []
        for index in range(len(parts)):
            if index == want:
                rows = self._cursor.fetchall()
            if not self._cursor.nextset():
                break
        return rows

    def fetchone(self) -> Any:
        """Not available: results come back from :meth:`flush`."""
        raise NotImplementedError

    def fetchall(self) -> list[Any]:
        """Not available: results come back from :meth:`flush`."""
        raise NotImplementedError


def postgres_env(settings: Settings) -> dict[str, str]:
    """eventsourcing's environment for a ``postgresql://`` DSN in ``settings.db``."""
    try:
        params = conninfo_to_dict(settings.db)
    except psycopg.ProgrammingError:
        msg = "SESSIOND_DB is not a valid PostgreSQL DSN"
        raise ValueError(msg) from None
    dbname = params.pop("dbname", None)
    if not dbname:
        msg = "the PostgreSQL DSN names no database"
        raise ValueError(msg)
    if settings.postgres_pool_size < 1 or settings.postgres_max_overflow < 1:
        # Schema creation holds one connection while it uses another.
        msg = "postgres_pool_size and postgres_max_overflow must be at least 1"
        raise ValueError(msg)
    return {
        PostgresFactory.POSTGRES_DBNAME: str(dbname),
        PostgresFactory.POSTGRES_HOST: str(params.pop("host", "") or ""),
        PostgresFactory.POSTGRES_PORT: str(params.pop("port", "") or "5432"),
        PostgresFactory.POSTGRES_USER: str(params.pop("user", "") or ""),
        PostgresFactory.POSTGRES_PASSWORD: str(params.pop("password", "") or ""),
        PostgresFactory.POSTGRES_POOL_SIZE: str(settings.postgres_pool_size),
        PostgresFactory.POSTGRES_MAX_OVERFLOW: str(settings.postgres_max_overflow),
        PostgresFactory.POSTGRES_LOCK_TIMEOUT: str(settings.postgres_lock_timeout),
        PostgresFactory.POSTGRES_CONNECT_TIMEOUT: str(
            settings.postgres_connect_timeout
        ),
        POSTGRES_EXTRA_CONNINFO: make_conninfo("", **params),
    }


class PostgresSessionsRecorder(SessionsRecorder, PostgresApplicationRecorder):
    """The sessions recorder on PostgreSQL (see :class:`SessionsRecorder`)."""

    writer_token = ""
    """The payload of its NOTIFYs, naming the process (set by the factory)."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        views: PostgresSessionViews,
        bus: EventBus,
        *,
        clock: Clock,
        server_webhooks: tuple[Mapping[str, Any], ...] = (),
    ) -> None:
        PostgresApplicationRecorder.__init__(
            self, datastore, events_table_name=EVENTS_TABLE
        )
        self._init_sessions_recorder(
            views,
            bus,
            clock=clock,
            server_webhooks=server_webhooks,
            # The driver's inside a transaction; eventsourcing's once its
            # connection wrapper has translated it (a batch that failed whole).
            integrity_errors=(psycopg.IntegrityError, IntegrityError),
            # Tracking is advanced within each write (see _insert_rows).
            advance=None,
        )

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        with self.datastore.get_connection() as connection:
            buffer = StatementBuffer(connection)
            try:
                yield buffer
            except BaseException:
                if buffer.began:
                    with suppress(psycopg.Error):
                        connection.execute("ROLLBACK")
                raise
            if buffer.began:
                buffer.execute("COMMIT")
            buffer.flush()

    def _insert_rows(
        self, cursor: Cursor, stored_events: Sequence[StoredEvent]
    ) -> Callable[[], Sequence[int]]:
        assert isinstance(cursor, StatementBuffer)
        # eventsourcing's rule: one inserting transaction at a time (EXCLUSIVE
        # does not block readers), so notification ids are issued in commit
        # order and a reader following them never passes one that commits
        # later. NOTIFY wakes every LISTENer (other nodes) at the commit.
        cursor.execute(f"LOCK TABLE {EVENTS_TABLE} IN EXCLUSIVE MODE")
        # The payload names this process, whose own change feed skips it (it
        # publishes its writes itself): only other processes are woken.
        cursor.execute(f"NOTIFY {self.channel_name}, %s", (self.writer_token,))
        at = cursor.mark()
        cursor.execute(
            INSERT_EVENTS
            + ", ".join(["(%s, %s, %s, %s)"] * len(stored_events))
            + " RETURNING notification_id",
            [
                value
                for e in stored_events
                for value in (
                    str(e.originator_id),
                    e.originator_version,
                    e.topic,
                    e.state,
                )
            ],
        )
        cursor.execute(ADVANCE_TO_LATEST, (APPLICATION_NAME,))
        # The views' and outbox's statements join these; all go to the server
        # when the write asks for its ids.
        return lambda: [int(row[0]) for row in cursor.flush(want=at)]

    def _translate(self, error: BaseException) -> BaseException:
        # A lone write's error reaches here through eventsourcing's connection
        # wrapper (as its IntegrityError, with the driver's text, which quotes
        # the clashing values); a batched write's as the driver raised it.
        if isinstance(error.__cause__, psycopg.IntegrityError):
            error = error.__cause__
        if isinstance(error, psycopg.IntegrityError):
            name = error.diag.constraint_name or "unknown"
            if name == SESSION_GONE_CONSTRAINT:
                return IntegrityError(SESSION_GONE)
            words = CONSTRAINT_WORDS.get(name, name)
            return IntegrityError(f"UNIQUE constraint failed: {words}")
        if isinstance(error, psycopg.OperationalError):
            return OperationalError(type(error).__name__)
        if isinstance(error, psycopg.Error):
            return PersistenceError(type(error).__name__)
        return error


class PostgresSessionsFactory(PostgresFactory):
    """eventsourcing's PostgreSQL factory with sessiond's tables and recorder."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        self.writer_token = uuid.uuid4().hex
        """The payload of this process's NOTIFYs (see ``change_source``)."""
        kwargs = self.datastore.pool.kwargs
        assert isinstance(kwargs, dict)
        kwargs.update(conninfo_to_dict(self.env.get(POSTGRES_EXTRA_CONNINFO) or ""))
        # The lock timeout as a session setting, not a ``SET LOCAL`` statement
        # in every write transaction.
        options = f"-c lock_timeout={int(self.datastore.lock_timeout)}s"
        kwargs["options"] = f"{kwargs.get('options') or ''} {options}".strip()

    @contextmanager
    def schema_lock(self) -> Iterator[None]:
        """Hold the schema advisory lock (on a connection of its own)."""
        with self.datastore.get_connection() as connection:
            connection.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
            try:
                yield
            finally:
                connection.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        """The snapshot recorder (``stored_snapshots``, as on SQLite)."""
        recorder = PostgresAggregateRecorder(
            self.datastore, events_table_name=f"stored_{purpose}"
        )
        with self.schema_lock():
            recorder.create_table()
        return recorder

    def session_store(
        self,
        bus: EventBus,
        *,
        clock: Clock,
        server_webhooks: tuple[Mapping[str, Any], ...],
    ) -> PostgresSessionsRecorder:
        """The views and the sessions recorder, their tables created."""
        views = PostgresSessionViews(self.datastore)
        recorder = PostgresSessionsRecorder(
            self.datastore,
            views,
            bus,
            clock=clock,
            server_webhooks=server_webhooks,
        )
        recorder.writer_token = self.writer_token
        with self.schema_lock():
            recorder.create_table()
            views.create_table()
        return recorder

    def lease_store(self) -> PostgresLeaseStore:
        """Leases in the ``leases`` table of the same database."""
        leases = PostgresLeaseStore(self.datastore)
        with self.schema_lock():
            leases.create_table()
        return leases

    def change_source(self) -> PostgresChangeSource:
        """The log of the same database, woken by the NOTIFY of every other
        process's write."""
        return PostgresChangeSource(
            self.datastore, EVENTS_TABLE, own_payload=self.writer_token
        )
