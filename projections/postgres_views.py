"""The session views on PostgreSQL: DDL and connection handling.

The statements are the shared ones (:mod:`projections.views`), with ``?``
placeholders turned into psycopg's ``%s``. Rows are read through tuple cursors
(eventsourcing's pool hands out dict-row connections). Text columns that are
sorted or compared as ranges use the ``"C"`` collation, so their order is byte
order, as on SQLite, whatever the database's locale.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL

from projections.request_keys import POSTGRES_REQUEST_KEYS_DDL
from projections.sql import TRACKING_TABLE
from projections.views import SESSION_GONE, SessionViews

if TYPE_CHECKING:
    from projections.sql import Cursor


SESSION_GONE_CONSTRAINT = "session_index_gone"
"""The constraint name a write that finds its session gone fails with."""

POSTGRES_VIEWS_DDL = (
    "CREATE TABLE IF NOT EXISTS session_index ("
    'session_id text COLLATE "C" PRIMARY KEY, owner_id text NOT NULL, '
    "user_id text NOT NULL, agent_id text NOT NULL, status text NOT NULL, "
    "name_key text, pinned integer NOT NULL, scope_key text, "
    'created_at text COLLATE "C" NOT NULL, updated_at text COLLATE "C" NOT NULL, '
    "parent_id text, checkpoints integer NOT NULL, spans bytea NOT NULL, "
    "doc bytea NOT NULL)",
    # Sessions past their life, oldest first, for retention.
    "CREATE INDEX IF NOT EXISTS session_index_retention "
    "ON session_index (status, updated_at) WHERE status != 'active'",
    # The lifecycle schedule: each live session's next deadline.
    "CREATE TABLE IF NOT EXISTS session_schedule ("
    'session_id text COLLATE "C" PRIMARY KEY, due_ms bigint NOT NULL, '
    "due text NOT NULL)",
    "CREATE INDEX IF NOT EXISTS session_schedule_due "
    "ON session_schedule (due_ms, session_id)",
    # Live sessions whose agent turn has not ended: what to resume after a
    # crash, found without scanning every session.
    "CREATE TABLE IF NOT EXISTS session_open_turns ("
    'session_id text COLLATE "C" PRIMARY KEY, turn_offset bigint NOT NULL)',
    # Raised by a write that would update the index row of a session purged
    # meanwhile (see PostgresSessionViews.update_existing): an integrity error
    # the recorder reports as SESSION_GONE.
    "CREATE OR REPLACE FUNCTION sessiond_session_gone() RETURNS integer "
    "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION USING "
    "ERRCODE = 'integrity_constraint_violation', "
    f"CONSTRAINT = '{SESSION_GONE_CONSTRAINT}', "
    f"MESSAGE = '{SESSION_GONE}'; END $$",
    # The webhook outbox: written with the events it announces.
    "CREATE TABLE IF NOT EXISTS webhook_outbox ("
    "id bigserial PRIMARY KEY, session_id text NOT NULL, "
    "event_offset bigint NOT NULL, url text NOT NULL, headers bytea NOT NULL, "
    "payload bytea NOT NULL, status text NOT NULL, attempts integer NOT NULL, "
    "next_attempt_ms bigint NOT NULL, created_ms bigint NOT NULL, "
    "last_status integer, last_error text)",
    "CREATE INDEX IF NOT EXISTS webhook_outbox_due "
    "ON webhook_outbox (next_attempt_ms, id) WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS webhook_outbox_session "
    "ON webhook_outbox (session_id, status, id)",
    "CREATE TABLE IF NOT EXISTS webhook_attempts ("
    "outbox_id bigint NOT NULL, attempt integer NOT NULL, at_ms bigint NOT NULL, "
    "status_code integer, error text, duration_ms bigint NOT NULL, "
    "PRIMARY KEY (outbox_id, attempt))",
    "CREATE INDEX IF NOT EXISTS session_index_parent "
    "ON session_index (parent_id) WHERE parent_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS session_index_owner "
    "ON session_index (owner_id, created_at)",
    # Names are unique per user of an owner, case-insensitively, among live
    # sessions (user ids are the owner's: tenants never clash).
    "CREATE UNIQUE INDEX IF NOT EXISTS session_index_user_name "
    "ON session_index (owner_id, user_id, name_key) "
    "WHERE name_key IS NOT NULL AND status != 'ended'",
    # One live session per scope key: get-or-create cannot make two.
    "CREATE UNIQUE INDEX IF NOT EXISTS session_index_scope "
    "ON session_index (scope_key) "
    "WHERE scope_key IS NOT NULL AND status = 'active'",
)


@lru_cache(maxsize=512)
def pyformat(statement: str) -> str:
    """``statement`` with ``?`` placeholders as psycopg's ``%s`` (and any
    literal ``%`` escaped)."""
    return statement.replace("%", "%%").replace("?", "%s")


class PostgresSessionViews(SessionViews, PostgresTrackingRecorder):
    """The session views in the application's PostgreSQL database."""

    datastore: PostgresDatastore

    def __init__(self, datastore: PostgresDatastore) -> None:
        super().__init__(datastore, tracking_table_name=TRACKING_TABLE)
        self.sql_create_statements.extend(
            SQL(s).format() for s in (*POSTGRES_VIEWS_DDL, *POSTGRES_REQUEST_KEYS_DDL)
        )

    def q(self, statement: str) -> str:
        """The statement with psycopg placeholders."""
        return pyformat(statement)

    def update_existing(
        self, c: Cursor, statement: str, rows: list[tuple[Any, ...]]
    ) -> None:
        """Each ``UPDATE`` checks its own row count on the server: a write's
        statements go as one query (no row counts come back in between), so a
        run that changed no row raises there, failing the write's transaction."""
        checked = (
            f"WITH updated AS ({statement} RETURNING 1) "
            "SELECT sessiond_session_gone() "
            "WHERE NOT EXISTS (SELECT 1 FROM updated)"
        )
        c.executemany(checked, rows)

    def contains(self, column: str) -> str:
        """``strpos``: a substring test that needs no escaping of the text."""
        return f"strpos({column}, ?) > 0"

    @contextmanager
    def reading(self) -> Iterator[Cursor]:
        """A pooled connection in autocommit: each read sees what is committed
        when it runs."""
        with self.datastore.get_connection() as connection:
            yield _tuple_cursor(connection)

    @contextmanager
    def snapshot(self) -> Iterator[Cursor]:
        """A read-only repeatable-read transaction: one state for several reads."""
        with self.datastore.get_connection() as connection:
            cursor = _tuple_cursor(connection)
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield cursor
            finally:
                cursor.execute("ROLLBACK")

    @contextmanager
    def writing(self) -> Iterator[Cursor]:
        """A transaction, committed at the end of the block."""
        with self.datastore.get_connection() as connection, connection.transaction():
            yield _tuple_cursor(connection)


def _tuple_cursor(connection: Any) -> Cursor:
    cursor: Cursor = connection.cursor(row_factory=tuple_row)
    return cursor
