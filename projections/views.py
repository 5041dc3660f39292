"""Read models of sessions, written in the same transaction as the events.

Two views, in any SQL dialect (:mod:`projections.sqlite_views`,
:mod:`projections.postgres_views`):

- **Session index** (``session_index``): one row per session with the columns lists
  filter on and the session's JSON document. A row is a pure function of the
  session's state (:func:`projections.documents.session_document`), so writing it
  with the events that produced that state, or rebuilding it from the log, gives
  the same row. The lifecycle schedule (``session_schedule``: each live session's
  next deadline) is written with it.
- **Visible history**: the session's span list (in its index row) over the log's
  own primary key (see :mod:`projections.log_reads`).

Tracking: the ``tracking`` row for the application is advanced to the highest
notification id in the same transaction as every view update, so the views are
exactly as current as the log (read-your-writes) and survive any crash together
with it. Each dialect's class is also an eventsourcing ``TrackingRecorder``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from aggregates.session import Session
from aggregates.values import name_key
from projections.documents import session_document
from projections.log_reads import OPEN_END, LogReads
from projections.outbox import WebhookOutbox
from projections.request_keys import RequestKeys
from projections.sql import (
    APPLICATION_NAME,
    EVENTS_TABLE,
    SNAPSHOTS_TABLE,
    TRACKING_TABLE,
    Cursor,
)

__all__ = [
    "APPLICATION_NAME",
    "INDEX_COLUMNS",
    "OPEN_END",
    "SESSION_GONE",
    "SessionViews",
    "epoch_ms",
    "index_row",
    "schedule_rows",
]

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

SESSION_GONE = "session_index: session gone"
"""The text of the integrity error raised when a write would extend a session
whose log was purged meanwhile (by another process), whether or not another
session has taken its id since."""

# An upsert on the primary key only. ``INSERT OR REPLACE`` would resolve a clash on
# the name or scope-key unique indexes by deleting the *other* session's row; this
# way such a clash raises and the write is refused.
_UPSERT_INDEX = (
    f"INSERT INTO session_index ({','.join(INDEX_COLUMNS)}) "
    f"VALUES ({','.join('?' * len(INDEX_COLUMNS))}) "
    "ON CONFLICT (session_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in INDEX_COLUMNS[1:])
)
_INSERT_INDEX = (
    f"INSERT INTO session_index ({','.join(INDEX_COLUMNS)}) "
    f"VALUES ({','.join('?' * len(INDEX_COLUMNS))})"
)
"""A new session's row: refused when the id is taken, so that a session whose
log starts past offset 1 (a fork) can never be written into another's log, nor
another into its."""
# What a session's later events can change. An UPDATE that names an indexed
# column rewrites that index's entry even when the value is the same (SQLite: one
# more WAL page per write for the owner index alone), so the columns fixed when
# the session opens are left out.
_FIXED_COLUMNS = frozenset(
    {"session_id", "owner_id", "user_id", "agent_id", "created_at", "parent_id"}
    | {"scope_key"}  # (the status decides whether the scope index holds it)
)
_CHANGING_AT = tuple(i for i, c in enumerate(INDEX_COLUMNS) if c not in _FIXED_COLUMNS)
_INCARNATION = tuple(
    INDEX_COLUMNS.index(c) for c in ("session_id", "owner_id", "created_at")
)
_UPDATE_INDEX = (
    "UPDATE session_index SET "
    + ", ".join(f"{INDEX_COLUMNS[i]} = ?" for i in _CHANGING_AT)
    + " WHERE "
    + " AND ".join(f"{INDEX_COLUMNS[i]} = ?" for i in _INCARNATION)
)
"""A later write's row update: only of the row of the same incarnation of the
session (an id purged and taken again by another process is another session,
which a stale actor's state must not be written into)."""
_UPSERT_OPEN_TURN = (
    "INSERT INTO session_open_turns VALUES (?, ?) ON CONFLICT (session_id) "
    "DO UPDATE SET turn_offset = excluded.turn_offset"
)
_UPSERT_SCHEDULE = (
    "INSERT INTO session_schedule VALUES (?, ?, ?) ON CONFLICT (session_id) "
    "DO UPDATE SET due_ms = excluded.due_ms, due = excluded.due"
)
_ADVANCE = (
    f"INSERT INTO {TRACKING_TABLE} VALUES (?, ?) ON CONFLICT (application_name) "
    "DO UPDATE SET notification_id = excluded.notification_id "
    f"WHERE {TRACKING_TABLE}.notification_id < excluded.notification_id"
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


def schedule_rows(
    sessions: Iterable[Session],
) -> tuple[list[tuple[str, int, str]], list[str]]:
    """The schedule rows ``(session_id, due_ms, what)`` of the sessions with a
    next deadline, and the ids of those without one."""
    scheduled, unscheduled = [], []
    for session in sessions:
        found = session.next_deadline()
        if found is None:
            unscheduled.append(session.id)
        else:
            scheduled.append((session.id, epoch_ms(found[0]), found[1].value))
    return scheduled, unscheduled


class SessionViews(LogReads, WebhookOutbox, RequestKeys):
    """The session index, schedule, history and webhook outbox, in any dialect."""

    if TYPE_CHECKING:
        # Provided by the dialect's eventsourcing tracking recorder.
        def create_table(self) -> None: ...

    @abstractmethod
    def update_existing(
        self, c: Cursor, statement: str, rows: list[tuple[Any, ...]]
    ) -> None:
        """Run the ``UPDATE`` ``statement`` once per row; raise
        ``IntegrityError`` (:data:`SESSION_GONE`) unless every run changed a
        row, so that the write it belongs to is refused."""

    # --- writing

    def project(
        self,
        c: Cursor,
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
        (:data:`SESSION_GONE`) instead of coming back with half a log, and a
        session it opens must not have one (a fork's log starts past offset 1,
        so only its row can tell that its id is taken). Without
        it (a rebuild), rows are upserted.
        """
        sessions = list(sessions)
        if new_ids is None:
            c.executemany(self.q(_UPSERT_INDEX), [index_row(s) for s in sessions])
        else:
            inserted = [index_row(s) for s in sessions if s.id in new_ids]
            updated = [index_row(s) for s in sessions if s.id not in new_ids]
            # Existing rows first: a session ended by this write (a reset) frees
            # the name and scope key its successor, inserted next, takes.
            if updated:
                self.update_existing(
                    c,
                    self.q(_UPDATE_INDEX),
                    [
                        (*(r[i] for i in _CHANGING_AT), *(r[i] for i in _INCARNATION))
                        for r in updated
                    ],
                )
            if inserted:
                c.executemany(self.q(_INSERT_INDEX), inserted)
        scheduled, unscheduled = schedule_rows(sessions)
        if scheduled:
            c.executemany(self.q(_UPSERT_SCHEDULE), scheduled)
        if unscheduled:
            c.executemany(
                self.q("DELETE FROM session_schedule WHERE session_id = ?"),
                [(session_id,) for session_id in unscheduled],
            )
        open_turns, closed = [], []
        for session in sessions:
            turn = session.pending_turn()
            if turn is not None and session.status == "active":
                open_turns.append((session.id, turn))
            else:
                closed.append((session.id,))
        if open_turns:
            c.executemany(self.q(_UPSERT_OPEN_TURN), open_turns)
        if closed:
            c.executemany(
                self.q("DELETE FROM session_open_turns WHERE session_id = ?"), closed
            )
        if notification_id is not None:
            self.advance(c, notification_id)

    def advance(self, c: Cursor, notification_id: int) -> None:
        """Move the tracking position forward to ``notification_id``."""
        c.execute(self.q(_ADVANCE), (APPLICATION_NAME, notification_id))

    def drop(self) -> None:
        """Drop the views and their tracking position (for a rebuild)."""
        with self.writing() as c:
            c.execute("DROP TABLE IF EXISTS session_index")
            c.execute("DROP TABLE IF EXISTS session_schedule")
            c.execute("DROP TABLE IF EXISTS session_open_turns")
            c.execute(
                self.q(f"DELETE FROM {TRACKING_TABLE} WHERE application_name = ?"),
                (APPLICATION_NAME,),
            )

    def purge(self, session_id: str) -> None:
        """Remove a session's log, snapshots and view rows for good (retention)."""
        with self.writing() as c:
            for statement in (
                f"DELETE FROM {EVENTS_TABLE} WHERE originator_id = ?",
                f"DELETE FROM {SNAPSHOTS_TABLE} WHERE originator_id = ?",
                "DELETE FROM session_index WHERE session_id = ?",
                "DELETE FROM session_schedule WHERE session_id = ?",
                "DELETE FROM session_open_turns WHERE session_id = ?",
                "DELETE FROM webhook_attempts WHERE outbox_id IN "
                "(SELECT id FROM webhook_outbox WHERE session_id = ?)",
                "DELETE FROM webhook_outbox WHERE session_id = ?",
            ):
                c.execute(self.q(statement), (session_id,))

    # --- the session index

    def session_row(self, session_id: str) -> dict[str, Any] | None:
        """Owner, spans and document of one session, or ``None``; its ``token``
        is the row's stored bytes, which change with every event the session
        records (its document holds the session's offset)."""
        with self.reading() as c:
            return self._session_row(c, session_id)

    def _session_row(self, c: Cursor, session_id: str) -> dict[str, Any] | None:
        c.execute(
            self.q(
                "SELECT owner_id, spans, doc FROM session_index WHERE session_id = ?"
            ),
            (session_id,),
        )
        row = c.fetchone()
        if row is None:
            return None
        return {
            "owner_id": row[0],
            "spans": orjson.loads(row[1]),
            "doc": orjson.loads(row[2]),
            "token": bytes(row[1]) + bytes(row[2]),  # (spans end where "]" does)
        }

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
        of its visible history (see :meth:`history`), read together."""
        with self.snapshot() as c:
            row = self._session_row(c, session_id)
            if row is None:
                return None, [], False
            found, has_more = self._history(
                c, row["spans"], limit, before, after, descending
            )
        return row, found, has_more

    def find_by_scope(self, scope_key: str) -> str | None:
        """The live session with this scope key, if any."""
        with self.reading() as c:
            c.execute(
                self.q(
                    "SELECT session_id FROM session_index "
                    "WHERE scope_key = ? AND status = 'active'"
                ),
                (scope_key,),
            )
            row = c.fetchone()
        return None if row is None else str(row[0])

    def name_taken(
        self, owner_id: str, user_id: str, name: str, except_id: str
    ) -> bool:
        """Whether another live session of ``owner_id``'s user ``user_id`` has
        this name."""
        with self.reading() as c:
            c.execute(
                self.q(
                    "SELECT 1 FROM session_index WHERE owner_id = ? AND user_id = ? "
                    "AND name_key = ? AND status != 'ended' AND session_id != ?"
                ),
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
            where.append(self.contains("name_key"))
            params.append(q.casefold())
        condition = ("WHERE " + " AND ".join(where)) if where else ""
        with self.snapshot() as c:
            c.execute(self.q(f"SELECT count(*) FROM session_index {condition}"), params)
            total = int(c.fetchone()[0])
            page_where = list(where)
            page_params = list(params)
            if cursor is not None:
                page_where.append("(created_at, session_id) < (?, ?)")
                page_params.extend(cursor)
            page_condition = ("WHERE " + " AND ".join(page_where)) if page_where else ""
            c.execute(
                self.q(
                    "SELECT created_at, session_id, doc FROM session_index "
                    f"{page_condition} "
                    "ORDER BY created_at DESC, session_id DESC LIMIT ?"
                ),
                [*page_params, limit + 1],
            )
            rows = c.fetchall()
        docs = [orjson.loads(row[2]) for row in rows[:limit]]
        next_cursor = (
            (rows[limit - 1][0], rows[limit - 1][1]) if len(rows) > limit else None
        )
        return docs, next_cursor, total

    def forks_of(self, session_id: str) -> list[dict[str, Any]]:
        """Documents of the sessions forked from ``session_id``, oldest first."""
        with self.reading() as c:
            c.execute(
                self.q(
                    "SELECT doc FROM session_index WHERE parent_id = ? "
                    "ORDER BY created_at"
                ),
                (session_id,),
            )
            return [orjson.loads(row[0]) for row in c.fetchall()]

    def counts(self, owner_id: str | None) -> dict[str, int]:
        """How many sessions there are by status (for one owner, or all)."""
        condition, params = ("WHERE owner_id = ?", [owner_id]) if owner_id else ("", [])
        with self.reading() as c:
            c.execute(
                self.q(
                    f"SELECT status, count(*) FROM session_index {condition} "
                    "GROUP BY status"
                ),
                params,
            )
            return {str(row[0]): int(row[1]) for row in c.fetchall()}

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
        with self.reading() as c:
            # ``status != 'active'`` repeats the partial index's condition: SQLite
            # uses a partial index only when the query states its WHERE clause,
            # and without it every tick would scan the whole session index.
            c.execute(
                self.q(
                    "SELECT session_id FROM session_index WHERE status != 'active' "
                    "AND status IN ('ended', 'expired') "
                    f"AND updated_at < ?{condition} ORDER BY updated_at LIMIT ?"
                ),
                (*params, limit),
            )
            return [str(row[0]) for row in c.fetchall()]

    # --- the lifecycle schedule

    def due(self, now: datetime, limit: int) -> list[tuple[str, int, str]]:
        """Sessions whose next deadline has passed, earliest first:
        ``(session_id, due_ms, what)``."""
        with self.reading() as c:
            c.execute(
                self.q(
                    "SELECT session_id, due_ms, due FROM session_schedule "
                    "WHERE due_ms <= ? ORDER BY due_ms, session_id LIMIT ?"
                ),
                (epoch_ms(now), limit),
            )
            return [(str(row[0]), int(row[1]), str(row[2])) for row in c.fetchall()]

    def open_turns(self) -> list[tuple[str, int]]:
        """Live sessions with an agent turn that never ended (a crash or a failed
        write cut it short): ``(session_id, turn_offset)``."""
        with self.reading() as c:
            c.execute(
                "SELECT session_id, turn_offset FROM session_open_turns "
                "ORDER BY session_id"
            )
            return [(str(row[0]), int(row[1])) for row in c.fetchall()]

    def expiring_soon(self) -> int:
        """Live sessions already warned of their expiry (their next deadline is
        the expiry itself)."""
        with self.reading() as c:
            c.execute("SELECT count(*) FROM session_schedule WHERE due = 'expire'")
            return int(c.fetchone()[0])

    def next_due(self) -> datetime | None:
        """The earliest deadline in the schedule."""
        with self.reading() as c:
            c.execute("SELECT min(due_ms) FROM session_schedule")
            value = c.fetchone()[0]
        return None if value is None else datetime.fromtimestamp(value / 1000, UTC)

    # --- tracking

    def position(self) -> int:
        """The tracking position: the last notification the views reflect."""
        with self.reading() as c:
            c.execute(
                self.q(
                    f"SELECT notification_id FROM {TRACKING_TABLE} "
                    "WHERE application_name = ?"
                ),
                (APPLICATION_NAME,),
            )
            row = c.fetchone()
        return 0 if row is None or row[0] is None else int(row[0])
