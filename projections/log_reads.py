"""Reads straight from the session log: visible history by spans, single
messages, and pages of a session's own events.

Message content is stored once, in the log; a page of history is one range query
per span on the log's primary key ``(originator_id, originator_version)``, one
span unless the session was rewound or forked, whatever the session's length.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from projections.codec import MESSAGE_TOPIC, TURN_ENDED_TOPIC, decode_state
from projections.documents import event_document, message_document
from projections.sql import EVENTS_TABLE, Cursor, SQLDialect

if TYPE_CHECKING:
    from aggregates.session import Span

OPEN_END = 2**62
"""Stands for "no upper bound" in an open span."""

_SPAN_RANGE = (
    f"SELECT originator_version, state FROM {EVENTS_TABLE} "
    "WHERE originator_id = ? AND originator_version > ? "
    "AND originator_version <= ? AND topic = ? "
)


class LogReads(SQLDialect):
    """Log reads, in any dialect."""

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
        with self.reading() as c:
            return self._history(c, spans, limit, before, after, descending)

    def _history(
        self,
        c: Cursor,
        spans: list[Span],
        limit: int,
        before: int | None,
        after: int | None,
        descending: bool,
    ) -> tuple[list[dict[str, Any]], bool]:
        lower = after if after is not None else -1
        upper = before - 1 if before is not None else OPEN_END
        order = "DESC" if descending else "ASC"
        statement = self.q(f"{_SPAN_RANGE}ORDER BY originator_version {order} LIMIT ?")
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
        statement = self.q(f"{_SPAN_RANGE}ORDER BY originator_version DESC LIMIT 1")
        with self.reading() as c:
            for session_id, span_after, span_upto in reversed(spans):
                high = OPEN_END if span_upto is None else span_upto
                c.execute(statement, (session_id, span_after, high, MESSAGE_TOPIC))
                row = c.fetchone()
                if row is not None:
                    return int(row[0]), int(orjson.loads(row[1])["position"])
        return 0, 0

    def message_at(self, session_id: str, offset: int) -> dict[str, Any] | None:
        """The message recorded at ``offset`` of ``session_id``'s log, if any."""
        with self.reading() as c:
            c.execute(
                self.q(
                    f"SELECT state FROM {EVENTS_TABLE} WHERE originator_id = ? "
                    "AND originator_version = ? AND topic = ?"
                ),
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
        with self.reading() as c:
            c.execute(
                self.q(f"{_SPAN_RANGE}ORDER BY originator_version"),
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
        with self.reading() as c:
            c.execute(
                self.q(
                    f"SELECT max(originator_version) FROM {EVENTS_TABLE} "
                    "WHERE originator_id = ?"
                ),
                (session_id,),
            )
            row = c.fetchone()
        return int(row[0] or 0)

    def turn_ended(self, session_id: str, turn_offset: int) -> dict[str, Any] | None:
        """The data of the ``turn_ended`` event of the turn opened at
        ``turn_offset``, if it ended (looked for in the log after it)."""
        with self.reading() as c:
            c.execute(
                self.q(
                    f"SELECT state FROM {EVENTS_TABLE} WHERE originator_id = ? "
                    "AND originator_version > ? AND topic = ? "
                    "ORDER BY originator_version"
                ),
                (session_id, turn_offset, TURN_ENDED_TOPIC),
            )
            rows = c.fetchall()
        for (data,) in rows:
            state = orjson.loads(data)
            if state.get("turn_offset") == turn_offset:
                return dict(state)
        return None

    def events(
        self, session_id: str, *, after: int = 0, limit: int = 100
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of the session's own log after ``after``, oldest first."""
        with self.reading() as c:
            c.execute(
                self.q(
                    f"SELECT originator_version, topic, state FROM {EVENTS_TABLE} "
                    "WHERE originator_id = ? AND originator_version > ? "
                    "ORDER BY originator_version LIMIT ?"
                ),
                (session_id, after, limit + 1),
            )
            rows = c.fetchall()
        events = [
            event_document(row[0], row[1], decode_state(row[2])) for row in rows[:limit]
        ]
        return events, len(rows) > limit

    def events_of_type(self, session_id: str, topic: str) -> list[dict[str, Any]]:
        """The session's own log entries of one stored topic, oldest first."""
        with self.reading() as c:
            c.execute(
                self.q(
                    f"SELECT originator_version, topic, state FROM {EVENTS_TABLE} "
                    "WHERE originator_id = ? AND topic = ? ORDER BY originator_version"
                ),
                (session_id, topic),
            )
            rows = c.fetchall()
        return [event_document(row[0], row[1], decode_state(row[2])) for row in rows]

    def session_ids(self) -> list[str]:
        """Every session id in the log (for a rebuild)."""
        with self.reading() as c:
            c.execute(f"SELECT DISTINCT originator_id FROM {EVENTS_TABLE}")
            return [str(row[0]) for row in c.fetchall()]
