"""SQLite implementations of the seams several processes on one store need: the
lease table (:class:`runtime.lease.LeaseStore`) and the polled change source
(:class:`runtime.feed.ChangeSource`).

Several ``sessiond`` processes may share one SQLite file on one machine: SQLite
serialises their write transactions (WAL mode, a busy timeout), and the log's
primary key refuses a second writer's offset.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from runtime.feed import Change

if TYPE_CHECKING:
    from eventsourcing.sqlite import SQLiteDatastore

LEASES_TABLE = (
    "CREATE TABLE IF NOT EXISTS leases ("
    "name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_ms INTEGER NOT NULL, "
    "token INTEGER NOT NULL) WITHOUT ROWID"
)


class SQLiteLeaseStore:
    """Leases as rows of the ``leases`` table, taken by one upsert whose update
    only applies when the lease is free, expired or already the caller's.

    ``token`` counts changes of holder (a fencing number, for diagnostics).
    """

    # The same statement runs on PostgreSQL (ON CONFLICT ... DO UPDATE ... WHERE).
    ACQUIRE = (
        "INSERT INTO leases (name, holder, expires_ms, token) VALUES (?, ?, ?, 1) "
        "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
        "expires_ms = excluded.expires_ms, "
        "token = CASE WHEN leases.holder = excluded.holder THEN leases.token "
        "ELSE leases.token + 1 END "
        "WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?"
    )

    def __init__(self, datastore: SQLiteDatastore) -> None:
        self.datastore = datastore

    def create_table(self) -> None:
        """Create the ``leases`` table if it is missing."""
        with self.datastore.transaction(commit=True) as c:
            c.execute(LEASES_TABLE)

    def try_acquire(self, name: str, holder: str, now_ms: int, ttl_ms: int) -> bool:
        """See :meth:`runtime.lease.LeaseStore.try_acquire`."""
        expires = now_ms + ttl_ms
        with self.datastore.transaction(commit=True) as c:
            # A write first: the transaction takes the write lock (waiting on
            # the busy timeout) before it reads, so the check and the set are
            # one step for every process.
            c.execute(self.ACQUIRE, (name, holder, expires, now_ms))
            c.execute("SELECT holder, expires_ms FROM leases WHERE name = ?", (name,))
            row = c.fetchone()
        return row is not None and row[0] == holder and int(row[1]) == expires

    def release(self, name: str, holder: str) -> None:
        """See :meth:`runtime.lease.LeaseStore.release`."""
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                "UPDATE leases SET expires_ms = 0 WHERE name = ? AND holder = ?",
                (name, holder),
            )

    def current(self, name: str) -> tuple[str, int] | None:
        """See :meth:`runtime.lease.LeaseStore.current`."""
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT holder, expires_ms FROM leases WHERE name = ?", (name,))
            row = c.fetchone()
        return None if row is None else (str(row[0]), int(row[1]))


class SQLiteChangeSource:
    """The notification log of a SQLite store, polled (SQLite cannot signal a
    commit to another process)."""

    def __init__(self, datastore: SQLiteDatastore, events_table: str) -> None:
        self.datastore = datastore
        self.events_table = events_table
        self._wake = threading.Event()

    def last_notification_id(self) -> int:
        """The table's highest rowid: one step down the b-tree's right edge."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT max(rowid) FROM {self.events_table}")
            row = c.fetchone()
        return int(row[0] or 0)

    def changes_after(self, notification_id: int, limit: int) -> Sequence[Change]:
        """Events with rowids above ``notification_id``, in rowid order."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT rowid, originator_id, originator_version, topic, state "
                f"FROM {self.events_table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (notification_id, limit),
            )
            rows = c.fetchall()
        return [
            Change(int(row[0]), str(row[1]), int(row[2]), str(row[3]), bytes(row[4]))
            for row in rows
        ]

    def wait(self, timeout: float) -> None:
        """Sleep ``timeout`` seconds, or until interrupted."""
        self._wake.wait(timeout)
        self._wake.clear()

    def interrupt(self) -> None:
        """End the current (or next) wait now."""
        self._wake.set()

    def close(self) -> None:
        """Nothing to release."""
