"""Persistence wiring: eventsourcing's environment derived from ``Settings``, a
SQLite pool that proves every connection is durable, and the recorder that writes
events, view rows and tracking in one group-committed transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from eventsourcing.persistence import IntegrityError, PersistenceError, StoredEvent
from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteFactory,
)

from projections.codec import OPENED_TOPIC, decode_state
from projections.documents import event_document, event_type_name
from projections.views import SQLiteSessionViews
from runtime.bus import EventBus
from runtime.committer import GroupCommitter
from runtime.errors import StorageUnavailableError
from runtime.feed import LocalPublications

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aggregates.session import Session
    from runtime.clock import Clock
    from runtime.settings import Settings

PERSISTENCE_MODULE = "PERSISTENCE_MODULE"
SQLITE_DBNAME = "SQLITE_DBNAME"
SQLITE_LOCK_TIMEOUT = "SQLITE_LOCK_TIMEOUT"
ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"
IS_SNAPSHOTTING_ENABLED = "IS_SNAPSHOTTING_ENABLED"
POSTGRES_DSN_PREFIXES = ("postgresql://", "postgres://")

SYNCHRONOUS_FULL = 2


def is_postgres(db: str) -> bool:
    """Whether ``db`` names a PostgreSQL database rather than a SQLite file."""
    return db.startswith(POSTGRES_DSN_PREFIXES)


def eventsourcing_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing environment for ``settings`` (never the ambient one)."""
    if is_postgres(settings.db):
        # The PostgreSQL backend has its own issue; the door stays open here.
        msg = "the PostgreSQL backend is not available in this version"
        raise StorageUnavailableError(msg)
    return {
        PERSISTENCE_MODULE: f"{__name__}:DurableSQLiteFactory",
        SQLITE_DBNAME: settings.db,
        SQLITE_LOCK_TIMEOUT: str(settings.sqlite_lock_timeout),
        ORIGINATOR_ID_TYPE: "text",
        IS_SNAPSHOTTING_ENABLED: "y",
    }


class DurableSQLiteConnectionPool(SQLiteConnectionPool):
    """Opens connections in WAL mode with ``synchronous=FULL`` and checks both,
    so that an acknowledged write has been fsynced; refuses to run otherwise."""

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
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


class SessionsRecorder(SQLiteApplicationRecorder):
    """Records session events together with the view rows and tracking position
    they imply, through a :class:`GroupCommitter`."""

    def __init__(
        self,
        datastore: SQLiteDatastore,
        views: SQLiteSessionViews,
        bus: EventBus,
        *,
        clock: Clock,
        server_webhooks: tuple[Mapping[str, Any], ...] = (),
    ) -> None:
        super().__init__(datastore)
        self.views = views
        self.bus = bus
        self.clock = clock
        self.server_webhooks = server_webhooks
        self.on_outbox: Callable[[], None] | None = None
        self.local = LocalPublications()
        self._outbox_written = False
        self.events_recorded = 0
        self.committer = GroupCommitter(
            datastore,
            self._write,
            integrity_errors=(sqlite3.IntegrityError, IntegrityError),
            after_batch=views.advance,
            after_commit=self._published,
        )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Record events (and their sessions' view rows) durably."""
        sessions: Sequence[Session] = kwargs.get("sessions", ())
        try:
            return self.committer.write((stored_events, sessions))
        except sqlite3.IntegrityError as error:
            raise IntegrityError(error) from error
        except sqlite3.Error as error:
            raise PersistenceError(error) from error

    def _write(self, cursor: SQLiteCursor, payload: Any) -> Sequence[int]:
        stored_events, sessions = payload
        ids = self._insert_events(cursor, stored_events) or []
        # Sessions opened by this write get their index row; every other one
        # must still have its own (see SQLiteSessionViews.project).
        opened = {
            str(e.originator_id) for e in stored_events if e.topic == OPENED_TOPIC
        }
        self.views.project(cursor, sessions, None, new_ids=opened)
        self._enqueue_webhooks(cursor, stored_events, sessions)
        return ids

    def _enqueue_webhooks(
        self,
        cursor: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        sessions: Sequence[Session],
    ) -> None:
        # The outbox rows are written in the same transaction as the events they
        # announce: a delivery exists exactly when its event does.
        targets = {
            s.id: [*self.server_webhooks, *([s.webhook] if s.webhook else [])]
            for s in sessions
        }
        if not any(targets.values()):
            return
        now_ms = int(self.clock.now().timestamp() * 1000)
        rows = []
        for stored in stored_events:
            session_id = str(stored.originator_id)
            hooks = targets.get(session_id)
            if not hooks:
                continue
            kind = event_type_name(stored.topic)
            document = event_document(
                stored.originator_version, stored.topic, decode_state(stored.state)
            )
            payload = orjson.dumps({"session_id": session_id, "event": document})
            for hook in hooks:
                wanted = hook.get("events")
                if wanted and kind not in wanted:
                    continue
                rows.append(
                    (
                        session_id,
                        stored.originator_version,
                        hook["url"],
                        orjson.dumps(hook.get("headers") or {}),
                        payload,
                        now_ms,
                    )
                )
        if rows:
            self.views.enqueue_webhooks(cursor, rows)
            self._outbox_written = True

    def _published(self, written: list[tuple[Any, Sequence[int]]]) -> None:
        # Runs after the commit: subscribers only ever see durable events.
        if self._outbox_written and self.on_outbox is not None:
            self._outbox_written = False
            self.on_outbox()
        bus = self.bus
        for (stored_events, _), ids in written:
            self.events_recorded += len(stored_events)
            # Every event recorded here is this process's to publish (or not, if
            # nobody listens now): the change feed, which finds them in the log
            # too, must never hand them out again, e.g. to a subscriber that
            # arrived in between (its backlog covers them).
            self.local.add(ids)
            for stored in stored_events:
                session_id = str(stored.originator_id)
                if bus.has_subscribers(session_id):
                    offset = stored.originator_version
                    document = event_document(
                        offset, stored.topic, decode_state(stored.state)
                    )
                    bus.publish(
                        session_id,
                        {"type": "event", "offset": offset, "event": document},
                    )
