"""The webhook outbox: deliveries written with the events they announce, and
every delivery attempt's outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from projections.documents import format_time
from projections.sql import Cursor, SQLDialect


def _at(epoch_ms: int) -> str:
    return str(format_time(datetime.fromtimestamp(epoch_ms / 1000, UTC)))


class WebhookOutbox(SQLDialect):
    """Outbox reads and writes, in any dialect."""

    def enqueue_webhooks(self, c: Cursor, rows: list[tuple[Any, ...]]) -> None:
        """Add deliveries ``(session_id, offset, url, headers, payload, now_ms)`` on
        ``c``'s transaction (the one recording their events)."""
        c.executemany(
            self.q(
                "INSERT INTO webhook_outbox (session_id, event_offset, url, headers, "
                "payload, status, attempts, next_attempt_ms, created_ms) "
                "VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)"
            ),
            [(*row, row[-1]) for row in rows],
        )

    def due_deliveries(self, now_ms: int, limit: int) -> list[dict[str, Any]]:
        """Pending deliveries whose time has come, oldest first, and only the
        oldest pending one of each session (deliveries of a session keep order)."""
        with self.reading() as c:
            c.execute(
                self.q(
                    "SELECT id, session_id, event_offset, url, headers, payload, "
                    "attempts FROM webhook_outbox AS o "
                    "WHERE status = 'pending' AND next_attempt_ms <= ? "
                    "AND NOT EXISTS (SELECT 1 FROM webhook_outbox AS p "
                    "WHERE p.session_id = o.session_id AND p.status = 'pending' "
                    "AND p.id < o.id) "
                    "ORDER BY next_attempt_ms, id LIMIT ?"
                ),
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
        with self.writing() as c:
            c.execute(
                self.q(
                    "INSERT INTO webhook_attempts VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (outbox_id, attempt) DO UPDATE SET "
                    "at_ms = excluded.at_ms, status_code = excluded.status_code, "
                    "error = excluded.error, duration_ms = excluded.duration_ms"
                ),
                (outbox_id, attempt, at_ms, status_code, error, duration_ms),
            )
            c.execute(
                self.q(
                    "UPDATE webhook_outbox SET status = ?, attempts = ?, "
                    "next_attempt_ms = ?, last_status = ?, last_error = ? "
                    "WHERE id = ?"
                ),
                (outcome, attempt, next_attempt_ms, status_code, error, outbox_id),
            )

    def pending_deliveries(self) -> int:
        """How many webhook deliveries wait to be delivered."""
        with self.reading() as c:
            c.execute("SELECT count(*) FROM webhook_outbox WHERE status = 'pending'")
            return int(c.fetchone()[0])

    def deliveries(self, session_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The session's webhook deliveries with every attempt, newest first."""
        with self.reading() as c:
            c.execute(
                self.q(
                    "SELECT id, event_offset, url, status, attempts, next_attempt_ms, "
                    "last_status, last_error FROM webhook_outbox "
                    "WHERE session_id = ? ORDER BY id DESC LIMIT ?"
                ),
                (session_id, limit),
            )
            rows = c.fetchall()
            found = []
            for row in rows:
                c.execute(
                    self.q(
                        "SELECT attempt, at_ms, status_code, error, duration_ms "
                        "FROM webhook_attempts WHERE outbox_id = ? ORDER BY attempt"
                    ),
                    (row[0],),
                )
                attempts = [
                    {
                        "attempt": a[0],
                        "at": _at(a[1]),
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
                        "next_attempt_at": _at(row[5]) if row[3] == "pending" else None,
                        "last_status": row[6],
                        "last_error": row[7],
                    }
                )
        return found
