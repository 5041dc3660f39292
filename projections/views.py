"""Read models of sessions on SQLite, written in the same transaction as the events.

Two views:

- **Session index** (``session_index``): one row per session with the columns lists
  filter on and the session's JSON document. A row is a pure function of the
  session's state (:func:`projections.documents.session_document`), so writing it
  with the events that produced that state, or rebuilding it from the log, gives
  the same row.
- **Visible history**: the session's span list (in its index row) over the log's
  own primary key ``(originator_id, originator_version)``. Message content is
  stored once, in the log; a page of history is one indexed range query per span
  (one span unless the session was rewound or forked), whatever the session's
  length.

Tracking: the ``tracking`` row for the application is advanced to the highest
notification id in the same transaction as every view update, so the views are
exactly as current as the log (read-your-writes) and survive any crash together
with it. ``SQLiteSessionViews`` is an eventsourcing ``TrackingRecorder``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from eventsourcing.persistence import IntegrityError
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore, SQLiteTrackingRecorder

from aggregates.session import Session, Span
from aggregates.values import name_key
from projections.codec import MESSAGE_TOPIC, TURN_ENDED_TOPIC, decode_state
from projections.documents import (
    event_document,
    format_time,
    message_document,
    session_document,
)

APPLICATION_NAME = "Sessions"
SESSION_GONE = "session_index: session gone"
"""The text of the integrity error raised when a write would extend a session
whose log was purged meanwhile (by another process)."""
OPEN_END = 2**62
"""Stands for "no upper bound" in an open span."""

INDEX_COLUMNS = (
    "session_id",
    "owner_id",
    "user_id",
    "agent_id",
    "status",
    "name_key",
    "pinned",
    "scope_key",
    "created_at",
    "updated_at",
    "parent_id",
    "checkpoints",
    "spans",
    "doc",
)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch (the schedule's sortable key)."""
    return int(moment.timestamp() * 1000)


def index_row(session: Session) -> tuple[Any, ...]:
    """The session index row for a session's current state."""
    doc = session_document(session)
    return (
        session.id,
        session.owner_id,
        session.user_id,
        session.agent_id,
        session.status,
        name_key(session.name),
        1 if session.pinned_at is not None else 0,
        session.scope_key,
        doc["created_at"],
        doc["updated_at"],
        (session.parent or {}).get("session_id"),
        len(session.checkpoints),
        orjson.dumps(session.spans),
        orjson.dumps(doc),
    )


class SQLiteSessionViews(SQLiteTrackingRecorder):
    """The session index and visible-history views in the application's database."""

    def __init__(self, datastore: SQLiteDatastore, events_table: str = "stored_events"):
        super().__init__(datastore)
        self.events_table = events_table
        placeholders = ",".join("?" * len(INDEX_COLUMNS))
        # An upsert on the primary key only. ``INSERT OR REPLACE`` would resolve a
        # clash on the name or scope-key unique indexes by deleting the *other*
        # session's row; this way such a clash raises and the write is refused.
        updates = ", ".join(f"{c} = excluded.{c}" for c in INDEX_COLUMNS[1:])
        self._upsert = (
            f"INSERT INTO session_index ({','.join(INDEX_COLUMNS)}) "
            f"VALUES ({placeholders}) ON CONFLICT (session_id) DO UPDATE SET {updates}"
        )
        assignments = ", ".join(f"{c} = ?" for c in INDEX_COLUMNS[1:])
        self._update = f"UPDATE session_index SET {assignments} WHERE session_id = ?"

    def construct_create_table_statements(self) -> list[str]:
        """The tracking table plus the session index and its indexes."""
        return [
            *super().construct_create_table_statements(),
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
            # Live sessions whose agent turn has not ended: what to resume after
            # a crash, found without scanning every session.
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
            # Names are unique per user of an owner, case-insensitively, among
            # live sessions (user ids are the owner's: tenants never clash).
            "DROP INDEX IF EXISTS session_index_name",
            "CREATE UNIQUE INDEX IF NOT EXISTS session_index_user_name "
            "ON session_index (owner_id, user_id, name_key) "
            "WHERE name_key IS NOT NULL AND status != 'ended'",
            # One live session per scope key: get-or-create cannot make two.
            "CREATE UNIQUE INDEX IF NOT EXISTS session_index_scope "
            "ON session_index (scope_key) "
            "WHERE scope_key IS NOT NULL AND status = 'active'",
        ]

    # --- writing

    def project(
        self,
        c: SQLiteCursor,
        sessions: Iterable[Session],
        notification_id: int | None,
        *,
        new_ids: Collection[str] | None = None,
    ) -> None:
        """Write the sessions' index rows and advance tracking, on ``c``'s
        transaction (the one that records their events).

        With ``new_ids`` (the sessions this write opens), every other session
        must already have its row: a session purged meanwhile (by another
        process, whose actor held stale state) raises ``IntegrityError``
        (:data:`SESSION_GONE`) instead of coming back with half a log. Without
        it (a rebuild), rows are upserted.
        """
        sessions = list(sessions)
        if new_ids is None:
            c.executemany(self._upsert, [index_row(s) for s in sessions])
        else:
            inserted = [index_row(s) for s in sessions if s.id in new_ids]
            updated = [index_row(s) for s in sessions if s.id not in new_ids]
            # Existing rows first: a session ended by this write (a reset) frees
            # the name and scope key its successor, inserted next, takes.
            if updated:
                c.executemany(self._update, [(*r[1:], r[0]) for r in updated])
                if c.sqlite_cursor.rowcount != len(updated):
                    raise IntegrityError(SESSION_GONE)
            if inserted:
                c.executemany(self._upsert, inserted)
        scheduled, unscheduled = [], []
        for session in sessions:
            found = session.next_deadline()
            if found is None:
                unscheduled.append((session.id,))
            else:
                scheduled.append((session.id, epoch_ms(found[0]), found[1].value))
        if scheduled:
            c.executemany(
                "INSERT OR REPLACE INTO session_schedule VALUES (?, ?, ?)", scheduled
            )
        if unscheduled:
            c.executemany(
                "DELETE FROM session_schedule WHERE session_id = ?", unscheduled
            )
        open_turns, closed = [], []
        for session in sessions:
            turn = session.pending_turn()
            if turn is not None and session.status == "active":
                open_turns.append((session.id, turn))
            else:
                closed.append((session.id,))
        if open_turns:
            c.executemany(
                "INSERT OR REPLACE INTO session_open_turns VALUES (?, ?)", open_turns
            )
        if closed:
            c.executemany("DELETE FROM session_open_turns WHERE session_id = ?", closed)
        if notification_id is not None:
            self.advance(c, notification_id)

    def advance(self, c: SQLiteCursor, notification_id: int) -> None:
        """Move the tracking position forward to ``notification_id``."""
        c.execute(
            "INSERT INTO tracking VALUES (?, ?) ON CONFLICT (application_name) "
            "DO UPDATE SET notification_id = excluded.notification_id "
            "WHERE tracking.notification_id < excluded.notification_id",
            (APPLICATION_NAME, notification_id),
        )

    def drop(self) -> None:
        """Drop the views and their tracking position (for a rebuild)."""
        with self.datastore.transaction(commit=True) as c:
            c.execute("DROP TABLE IF EXISTS session_index")
            c.execute("DROP TABLE IF EXISTS session_schedule")
            c.execute("DROP TABLE IF EXISTS session_open_turns")
            c.execute(
                "DELETE FROM tracking WHERE application_name = ?", (APPLICATION_NAME,)
            )

    # --- reading

    def session_row(self, session_id: str) -> dict[str, Any] | None:
        """Owner, spans and document of one session, or ``None``."""
        with self.datastore.transaction(commit=False) as c:
            return self._session_row(c, session_id)

    def _session_row(self, c: SQLiteCursor, session_id: str) -> dict[str, Any] | None:
        c.execute(
            "SELECT owner_id, spans, doc FROM session_index WHERE session_id = ?",
            (session_id,),
        )
        row = c.fetchone()
        if row is None:
            return None
        return {
            "owner_id": row[0],
            "spans": orjson.loads(row[1]),
            "doc": orjson.loads(row[2]),
        }

    def find_by_scope(self, scope_key: str) -> str | None:
        """The live session with this scope key, if any."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT session_id FROM session_index "
                "WHERE scope_key = ? AND status = 'active'",
                (scope_key,),
            )
            row = c.fetchone()
        return None if row is None else str(row[0])

    def name_taken(
        self, owner_id: str, user_id: str, name: str, except_id: str
    ) -> bool:
        """Whether another live session of ``owner_id``'s user ``user_id`` has
        this name."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT 1 FROM session_index WHERE owner_id = ? AND user_id = ? "
                "AND name_key = ? AND status != 'ended' AND session_id != ?",
                (owner_id, user_id, name_key(name), except_id),
            )
            return c.fetchone() is not None

    def list_sessions(
        self,
        *,
        owner_id: str | None,
        user_id: str | None = None,
        agent_id: str | None = None,
        status: str | None = None,
        pinned: bool | None = None,
        q: str | None = None,
        limit: int = 50,
        cursor: tuple[str, str] | None = None,
    ) -> tuple[list[dict[str, Any]], tuple[str, str] | None, int]:
        """A page of session documents, newest first, the next cursor and the
        total that match. ``owner_id=None`` lists every owner's (admin)."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("owner_id", owner_id),
            ("user_id", user_id),
            ("agent_id", agent_id),
            ("status", status),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if status is None:
            where.append("status != 'ended'")
        if pinned is not None:
            where.append("pinned = ?")
            params.append(1 if pinned else 0)
        if q:
            where.append("instr(name_key, ?) > 0")
            params.append(q.casefold())
        condition = ("WHERE " + " AND ".join(where)) if where else ""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT count(*) FROM session_index {condition}", params)
            total = int(c.fetchone()[0])
            page_where = list(where)
            page_params = list(params)
            if cursor is not None:
                page_where.append("(created_at, session_id) < (?, ?)")
                page_params.extend(cursor)
            page_condition = ("WHERE " + " AND ".join(page_where)) if page_where else ""
            c.execute(
                "SELECT created_at, session_id, doc FROM session_index "
                f"{page_condition} "
                "ORDER BY created_at DESC, session_id DESC LIMIT ?",
                [*page_params, limit + 1],
            )
            rows = c.fetchall()
        docs = [orjson.loads(row[2]) for row in rows[:limit]]
        next_cursor = (
            (rows[limit - 1][0], rows[limit - 1][1]) if len(rows) > limit else None
        )
        return docs, next_cursor, total

    def history(
        self,
        spans: list[Span],
        *,
        limit: int,
        before: int | None = None,
        after: int | None = None,
        descending: bool = True,
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of visible messages and whether more lie beyond it.

        ``before`` and ``after`` are exclusive offsets. Rows come from the log by
        its primary key, one range query per span until the page is full.
        """
        with self.datastore.transaction(commit=False) as c:
            return self._history(c, spans, limit, before, after, descending)

    def session_history(
        self,
        session_id: str,
        *,
        limit: int,
        before: int | None = None,
        after: int | None = None,
        descending: bool = True,
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], bool]:
        """A session's index row (``None`` if there is no such session) and a page
        of its visible history (see :meth:`history`), read in one transaction."""
        with self.datastore.transaction(commit=False) as c:
            row = self._session_row(c, session_id)
            if row is None:
                return None, [], False
            found, has_more = self._history(
                c, row["spans"], limit, before, after, descending
            )
        return row, found, has_more

    def _history(
        self,
        c: SQLiteCursor,
        spans: list[Span],
        limit: int,
        before: int | None,
        after: int | None,
        descending: bool,
    ) -> tuple[list[dict[str, Any]], bool]:
        lower = after if after is not None else -1
        upper = before - 1 if before is not None else OPEN_END
        order = "DESC" if descending else "ASC"
        statement = (
            f"SELECT originator_version, state FROM {self.events_table} "
            "WHERE originator_id = ? AND originator_version > ? "
            "AND originator_version <= ? AND topic = ? "
            f"ORDER BY originator_version {order} LIMIT ?"
        )
        wanted = limit + 1
        found: list[dict[str, Any]] = []
        for session_id, span_after, span_upto in (
            reversed(spans) if descending else spans
        ):
            low = max(span_after, lower)
            high = min(OPEN_END if span_upto is None else span_upto, upper)
            if low >= high:
                continue
            c.execute(
                statement, (session_id, low, high, MESSAGE_TOPIC, wanted - len(found))
            )
            # The stored timestamp text goes into the document as it is (see
            # message_document): no datetime is parsed per message.
            found.extend(
                message_document(session_id, row[0], orjson.loads(row[1]))
                for row in c.fetchall()
            )
            if len(found) >= wanted:
                break
        return found[:limit], len(found) > limit

    def last_message(self, spans: list[Span]) -> tuple[int, int]:
        """Offset and position (visible count) of the last message in ``spans``,
        or ``(0, 0)`` when they hold none."""
        statement = (
            f"SELECT originator_version, state FROM {self.events_table} "
            "WHERE originator_id = ? AND originator_version > ? "
            "AND originator_version <= ? AND topic = ? "
            "ORDER BY originator_version DESC LIMIT 1"
        )
        with self.datastore.transaction(commit=False) as c:
            for session_id, span_after, span_upto in reversed(spans):
                high = OPEN_END if span_upto is None else span_upto
                c.execute(statement, (session_id, span_after, high, MESSAGE_TOPIC))
                row = c.fetchone()
                if row is not None:
                    return int(row[0]), int(orjson.loads(row[1])["position"])
        return 0, 0

    def message_at(self, session_id: str, offset: int) -> dict[str, Any] | None:
        """The message recorded at ``offset`` of ``session_id``'s log, if any."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT state FROM {self.events_table} WHERE originator_id = ? "
                "AND originator_version = ? AND topic = ?",
                (session_id, offset, MESSAGE_TOPIC),
            )
            row = c.fetchone()
        if row is None:
            return None
        return message_document(session_id, offset, orjson.loads(row[0]))

    def reply_to(
        self, session_id: str, offset: int, *, search: int = 64
    ) -> dict[str, Any] | None:
        """The first message recorded as a reply to the message at ``offset``
        (looked for among the next ``search`` events, where turns put it)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT originator_version, state FROM {self.events_table} "
                "WHERE originator_id = ? AND originator_version > ? "
                "AND originator_version <= ? AND topic = ? "
                "ORDER BY originator_version",
                (session_id, offset, offset + search, MESSAGE_TOPIC),
            )
            rows = c.fetchall()
        for version, data in rows:
            state = decode_state(data)
            if state.get("reply_to") == offset:
                return message_document(session_id, version, state)
        return None

    def stored_version(self, session_id: str) -> int:
        """The session's last offset in the log (0: no such session), read by
        the log's primary key: how an actor checks its cached state is current."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT max(originator_version) FROM {self.events_table} "
                "WHERE originator_id = ?",
                (session_id,),
            )
            row = c.fetchone()
        return int(row[0] or 0)

    def events(
        self, session_id: str, *, after: int = 0, limit: int = 100
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of the session's own log after ``after``, oldest first."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT originator_version, topic, state FROM {self.events_table} "
                "WHERE originator_id = ? AND originator_version > ? "
                "ORDER BY originator_version LIMIT ?",
                (session_id, after, limit + 1),
            )
            rows = c.fetchall()
        events = [
            event_document(row[0], row[1], decode_state(row[2])) for row in rows[:limit]
        ]
        return events, len(rows) > limit

    def forks_of(self, session_id: str) -> list[dict[str, Any]]:
        """Documents of the sessions forked from ``session_id``, oldest first."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT doc FROM session_index WHERE parent_id = ? ORDER BY created_at",
                (session_id,),
            )
            return [orjson.loads(row[0]) for row in c.fetchall()]

    def events_of_type(self, session_id: str, topic: str) -> list[dict[str, Any]]:
        """The session's own log entries of one stored topic, oldest first."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT originator_version, topic, state FROM {self.events_table} "
                "WHERE originator_id = ? AND topic = ? ORDER BY originator_version",
                (session_id, topic),
            )
            rows = c.fetchall()
        return [event_document(row[0], row[1], decode_state(row[2])) for row in rows]

    def due(self, now: datetime, limit: int) -> list[tuple[str, int, str]]:
        """Sessions whose next deadline has passed, earliest first:
        ``(session_id, due_ms, what)``."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT session_id, due_ms, due FROM session_schedule "
                "WHERE due_ms <= ? "
                "ORDER BY due_ms, session_id LIMIT ?",
                (epoch_ms(now), limit),
            )
            return [(str(row[0]), int(row[1]), str(row[2])) for row in c.fetchall()]

    def open_turns(self) -> list[tuple[str, int]]:
        """Live sessions with an agent turn that never ended (a crash or a failed
        write cut it short): ``(session_id, turn_offset)``."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT session_id, turn_offset FROM session_open_turns "
                "ORDER BY session_id"
            )
            return [(str(row[0]), int(row[1])) for row in c.fetchall()]

    def turn_ended(self, session_id: str, turn_offset: int) -> dict[str, Any] | None:
        """The data of the ``turn_ended`` event of the turn opened at
        ``turn_offset``, if it ended (looked for in the log after it)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT state FROM {self.events_table} WHERE originator_id = ? "
                "AND originator_version > ? AND topic = ? ORDER BY originator_version",
                (session_id, turn_offset, TURN_ENDED_TOPIC),
            )
            for (data,) in c.fetchall():
                state = orjson.loads(data)
                if state.get("turn_offset") == turn_offset:
                    return dict(state)
        return None

    def expiring_soon(self) -> int:
        """Live sessions already warned of their expiry (their next deadline is
        the expiry itself)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT count(*) FROM session_schedule WHERE due = 'expire'")
            return int(c.fetchone()[0])

    def next_due(self) -> datetime | None:
        """The earliest deadline in the schedule."""
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT min(due_ms) FROM session_schedule")
            value = c.fetchone()[0]
        return None if value is None else datetime.fromtimestamp(value / 1000, UTC)

    def retention_candidates(
        self, cutoff: str, *, keep_checkpoints: bool, limit: int, owner_id: str | None
    ) -> list[str]:
        """Ended or expired sessions last changed before ``cutoff`` (RFC 3339),
        oldest first; with ``keep_checkpoints``, those with checkpoints are kept;
        with ``owner_id``, only that owner's."""
        condition = " AND checkpoints = 0" if keep_checkpoints else ""
        params: list[Any] = [cutoff]
        if owner_id is not None:
            condition += " AND owner_id = ?"
            params.append(owner_id)
        with self.datastore.transaction(commit=False) as c:
            # ``status != 'active'`` repeats the partial index's condition: SQLite
            # uses a partial index only when the query states its WHERE clause,
            # and without it every tick would scan the whole session index.
            c.execute(
                "SELECT session_id FROM session_index WHERE status != 'active' "
                "AND status IN ('ended', 'expired') "
                f"AND updated_at < ?{condition} ORDER BY updated_at LIMIT ?",
                (*params, limit),
            )
            return [str(row[0]) for row in c.fetchall()]

    def purge(self, session_id: str, snapshots_table: str = "stored_snapshots") -> None:
        """Remove a session's log, snapshots and view rows for good (retention)."""
        with self.datastore.transaction(commit=True) as c:
            for statement in (
                f"DELETE FROM {self.events_table} WHERE originator_id = ?",
                f"DELETE FROM {snapshots_table} WHERE originator_id = ?",
                "DELETE FROM session_index WHERE session_id = ?",
                "DELETE FROM session_schedule WHERE session_id = ?",
                "DELETE FROM session_open_turns WHERE session_id = ?",
                "DELETE FROM webhook_attempts WHERE outbox_id IN "
                "(SELECT id FROM webhook_outbox WHERE session_id = ?)",
                "DELETE FROM webhook_outbox WHERE session_id = ?",
            ):
                c.execute(statement, (session_id,))

    # --- webhook outbox

    def enqueue_webhooks(self, c: SQLiteCursor, rows: list[tuple[Any, ...]]) -> None:
        """Add deliveries ``(session_id, offset, url, headers, payload, now_ms)`` on
        ``c``'s transaction (the one recording their events)."""
        c.executemany(
            "INSERT INTO webhook_outbox (session_id, event_offset, url, headers, "
            "payload, "
            "status, attempts, next_attempt_ms, created_ms) "
            "VALUES (?, ?, ?, ?, ?, 'pending', 0, ?6, ?6)",
            rows,
        )

    def due_deliveries(self, now_ms: int, limit: int) -> list[dict[str, Any]]:
        """Pending deliveries whose time has come, oldest first, and only the
        oldest pending one of each session (deliveries of a session keep order)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT id, session_id, event_offset, url, headers, payload, attempts "
                "FROM webhook_outbox AS o "
                "WHERE status = 'pending' AND next_attempt_ms <= ? "
                "AND NOT EXISTS (SELECT 1 FROM webhook_outbox AS p "
                "WHERE p.session_id = o.session_id AND p.status = 'pending' "
                "AND p.id < o.id) "
                "ORDER BY next_attempt_ms, id LIMIT ?",
                (now_ms, limit),
            )
            rows = c.fetchall()
        return [
            {
                "id": row[0],
                "session_id": row[1],
                "offset": row[2],
                "url": row[3],
                "headers": orjson.loads(row[4]),
                "payload": bytes(row[5]),
                "attempts": row[6],
            }
            for row in rows
        ]

    def record_attempt(
        self,
        outbox_id: int,
        *,
        attempt: int,
        at_ms: int,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
        outcome: str,
        next_attempt_ms: int,
    ) -> None:
        """Record one delivery attempt and what it means for the delivery
        (``outcome`` is ``delivered``, ``pending`` (retry) or ``failed``)."""
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                "INSERT OR REPLACE INTO webhook_attempts VALUES (?, ?, ?, ?, ?, ?)",
                (outbox_id, attempt, at_ms, status_code, error, duration_ms),
            )
            c.execute(
                "UPDATE webhook_outbox SET status = ?, attempts = ?, "
                "next_attempt_ms = ?, "
                "last_status = ?, last_error = ? WHERE id = ?",
                (outcome, attempt, next_attempt_ms, status_code, error, outbox_id),
            )

    def pending_deliveries(self) -> int:
        """How many webhook deliveries wait to be delivered."""
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT count(*) FROM webhook_outbox WHERE status = 'pending'")
            return int(c.fetchone()[0])

    def deliveries(self, session_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The session's webhook deliveries with every attempt, newest first."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT id, event_offset, url, status, attempts, next_attempt_ms, "
                "last_status, last_error FROM webhook_outbox WHERE session_id = ? "
                "ORDER BY id DESC LIMIT ?",
                (session_id, limit),
            )
            rows = c.fetchall()
            found = []
            for row in rows:
                c.execute(
                    "SELECT attempt, at_ms, status_code, error, duration_ms "
                    "FROM webhook_attempts WHERE outbox_id = ? ORDER BY attempt",
                    (row[0],),
                )
                attempts = [
                    {
                        "attempt": a[0],
                        "at": format_time(datetime.fromtimestamp(a[1] / 1000, UTC)),
                        "status_code": a[2],
                        "error": a[3],
                        "duration_ms": a[4],
                    }
                    for a in c.fetchall()
                ]
                found.append(
                    {
                        "id": row[0],
                        "offset": row[1],
                        "url": row[2],
                        "status": row[3],
                        "attempts": attempts,
                        "next_attempt_at": format_time(
                            datetime.fromtimestamp(row[5] / 1000, UTC)
                        )
                        if row[3] == "pending"
                        else None,
                        "last_status": row[6],
                        "last_error": row[7],
                    }
                )
        return found

    def counts(self, owner_id: str | None) -> dict[str, int]:
        """How many sessions there are by status (for one owner, or all)."""
        condition, params = ("WHERE owner_id = ?", [owner_id]) if owner_id else ("", [])
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT status, count(*) FROM session_index {condition} "
                "GROUP BY status",
                params,
            )
            return {str(row[0]): int(row[1]) for row in c.fetchall()}

    def session_ids(self) -> list[str]:
        """Every session id in the log (for a rebuild)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT DISTINCT originator_id FROM {self.events_table}")
            return [str(row[0]) for row in c.fetchall()]

    def position(self) -> int:
        """The tracking position: the last notification the views reflect."""
        return self.max_tracking_id(APPLICATION_NAME) or 0
