"""The PostgreSQL store: eventsourcing's ``postgres`` module (psycopg 3) with
the sessions recorder, the views and their schema, selected by a DSN.

Tables are named as on SQLite (``stored_events``, ``stored_snapshots``,
``tracking``), so the shared statements serve both. Schema creation at start-up
runs under an advisory lock, so nodes starting together do not race on it.

How other processes learn of a write: every insert transaction takes eventsourcing's
``EXCLUSIVE`` lock on ``stored_events`` (so notification ids are issued in commit
order and a reader tailing by notification id never skips one that commits
later) and sends ``NOTIFY stored_events``; eventsourcing's ``subscribe`` (LISTEN)
wakes on it. Integrity errors are reported in the words SQLite uses for the same
constraint, so callers tell a taken name, a taken scope key and a second writer
apart the same way on both backends.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
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
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from projections.postgres_views import PostgresSessionViews
from projections.sql import EVENTS_TABLE
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
            integrity_errors=(psycopg.IntegrityError,),
        )

    def _before_batch(self, cursor: Cursor) -> None:
        # Once per batch, not per write: the table lock that orders notification
        # ids by commit, and the notification that wakes LISTENers on commit.
        self._lock_table(cursor)  # type: ignore[arg-type]
        self._notify_channel(cursor)  # type: ignore[arg-type]

    def _insert_rows(
        self, cursor: Cursor, stored_events: Sequence[StoredEvent]
    ) -> Sequence[int]:
        # The plain insert (``RETURNING notification_id``): the lock is taken.
        PostgresAggregateRecorder._insert_stored_events(self, cursor, stored_events)  # type: ignore[arg-type]
        return [int(row[0]) for row in cursor.fetchall()]

    def _translate(self, error: BaseException) -> BaseException:
        if isinstance(error, psycopg.IntegrityError):
            name = error.diag.constraint_name or "unknown"
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
        extra = self.env.get(POSTGRES_EXTRA_CONNINFO) or ""
        if extra:
            kwargs = self.datastore.pool.kwargs
            assert isinstance(kwargs, dict)
            kwargs.update(conninfo_to_dict(extra))

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
        with self.schema_lock():
            recorder.create_table()
            views.create_table()
        return recorder
