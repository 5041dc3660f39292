"""PostgreSQL implementations of the seams several processes on one store need:
the lease table (:class:`runtime.lease.LeaseStore`) and the change source
(:class:`runtime.feed.ChangeSource`), woken by LISTEN/NOTIFY.

Every write sends ``NOTIFY stored_events`` in its transaction (see
:mod:`runtime.postgres_store`), delivered to listeners when it commits, so a
feed on another node reads a new event about one round trip after its commit
instead of at its next poll. The payload names the writing process, whose own
feed ignores it: a process publishes its own writes itself, so only other
processes' writes wake it (not one query per own write). Notification ids are
issued in commit order (the writers' insert lock), so following them by number
never skips a later commit.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import tuple_row

from projections.sql import EVENTS_TABLE
from runtime.feed import Change
from runtime.sqlite_cluster import SQLiteLeaseStore

if TYPE_CHECKING:
    from eventsourcing.postgres import PostgresDatastore

logger = logging.getLogger(__name__)

LEASES_TABLE = (
    "CREATE TABLE IF NOT EXISTS leases ("
    "name text PRIMARY KEY, holder text NOT NULL, expires_ms bigint NOT NULL, "
    "token bigint NOT NULL)"
)


def _pyformat(statement: str) -> str:
    return statement.replace("?", "%s")


class PostgresLeaseStore:
    """Leases as rows of the ``leases`` table, taken by the compare-and-set
    upsert SQLite uses (see :class:`runtime.sqlite_cluster.SQLiteLeaseStore`).

    Time is the caller's ``now_ms`` (the :class:`runtime.lease.LeaseKeeper`'s
    clock), not the database's: both backends behave alike and tests can drive
    expiry with a fake clock. Nodes' clocks must therefore agree to well within
    the lease's margin (NTP does); a node whose clock runs ahead could take an
    unexpired lease early. Concurrent attempts are serialised by the row lock
    the upsert takes: the second re-checks the condition on the row the first
    wrote (READ COMMITTED), so one statement is the whole check-and-set.
    """

    ACQUIRE = _pyformat(SQLiteLeaseStore.ACQUIRE) + " RETURNING holder"

    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore

    def create_table(self) -> None:
        """Create the ``leases`` table if it is missing."""
        with self.datastore.transaction(commit=True) as c:
            c.execute(LEASES_TABLE)

    def try_acquire(self, name: str, holder: str, now_ms: int, ttl_ms: int) -> bool:
        """See :meth:`runtime.lease.LeaseStore.try_acquire`: the upsert returns
        a row exactly when it inserted or updated one."""
        with self.datastore.transaction(commit=True) as c:
            c.execute(self.ACQUIRE, (name, holder, now_ms + ttl_ms, now_ms))
            return c.fetchone() is not None

    def release(self, name: str, holder: str) -> None:
        """See :meth:`runtime.lease.LeaseStore.release`."""
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                "UPDATE leases SET expires_ms = 0 WHERE name = %s AND holder = %s",
                (name, holder),
            )

    def current(self, name: str) -> tuple[str, int] | None:
        """See :meth:`runtime.lease.LeaseStore.current`."""
        with self.datastore.get_connection() as connection:
            row = (
                connection.cursor(row_factory=tuple_row)
                .execute(
                    "SELECT holder, expires_ms FROM leases WHERE name = %s", (name,)
                )
                .fetchone()
            )
        return None if row is None else (str(row[0]), int(row[1]))


class PostgresChangeSource:
    """The notification log of a PostgreSQL store; :meth:`wait` blocks on LISTEN
    to ``channel``, the one every write notifies.

    The listening connection is a connection of its own (not one of the pool's,
    which it would hold for good), opened on the first wait and closed by
    :meth:`close`. It also listens on a channel private to this source, which
    :meth:`interrupt` notifies to end a wait early. If listening fails (the
    server restarted), the wait sleeps its timeout instead and the next one
    connects again: the feed keeps working by polling meanwhile.
    """

    def __init__(
        self, datastore: PostgresDatastore, channel: str, *, own_payload: str = ""
    ) -> None:
        self.datastore = datastore
        self.channel = channel
        # NOTIFYs carrying this payload come from this process's own writes,
        # which it publishes itself: they do not end a wait.
        self._own_payload = own_payload
        self.wake_channel = f"sessiond_wake_{uuid.uuid4().hex[:16]}"
        self._connection: psycopg.Connection[Any] | None = None
        self._interrupted = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        self.notifications = 0
        """Notifications received (for tests and diagnostics)."""

    def last_notification_id(self) -> int:
        """The log's highest notification id (its unique index's last entry)."""
        with self.datastore.get_connection() as connection:
            row = (
                connection.cursor(row_factory=tuple_row)
                .execute(f"SELECT max(notification_id) FROM {EVENTS_TABLE}")
                .fetchone()
            )
        return int(row[0] or 0) if row is not None else 0

    def changes_after(self, notification_id: int, limit: int) -> Sequence[Change]:
        """Events with notification ids above ``notification_id``, in order."""
        with self.datastore.get_connection() as connection:
            rows = (
                connection.cursor(row_factory=tuple_row)
                .execute(
                    "SELECT notification_id, originator_id, originator_version, "
                    f"topic, state FROM {EVENTS_TABLE} WHERE notification_id > %s "
                    "ORDER BY notification_id LIMIT %s",
                    (notification_id, limit),
                )
                .fetchall()
            )
        return [
            Change(int(row[0]), str(row[1]), int(row[2]), str(row[3]), bytes(row[4]))
            for row in rows
        ]

    def wait(self, timeout: float) -> None:
        """Block until a write anywhere commits, :meth:`interrupt` is called, or
        ``timeout`` seconds pass. Never raises (see the class docstring)."""
        if self._interrupted.is_set():
            self._interrupted.clear()
            return
        try:
            connection = self._listening()
            deadline = time.monotonic() + timeout
            woken = False
            while not woken and not self._interrupted.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for notify in connection.notifies(timeout=remaining, stop_after=1):
                    if self._own_payload and notify.payload == self._own_payload:
                        continue
                    self.notifications += 1
                    woken = True
        except psycopg.Error:
            logger.warning("change feed: LISTEN failed; polling until it reconnects")
            self._drop_connection()
            self._interrupted.wait(timeout)
        self._interrupted.clear()

    def interrupt(self) -> None:
        """End the current (or next) wait now: a flag for the next wait, and a
        NOTIFY on this source's private channel for the current one."""
        self._interrupted.set()
        if self._connection is None or self._closed:
            return
        try:
            with self.datastore.get_connection() as connection:
                connection.execute("SELECT pg_notify(%s, '')", (self.wake_channel,))
        except Exception:  # the wait then ends at its timeout
            logger.warning("change feed: could not interrupt the listener")

    def close(self) -> None:
        """Close the listening connection."""
        self._closed = True
        self._drop_connection()

    def _listening(self) -> psycopg.Connection[Any]:
        with self._lock:
            if self._closed:
                msg = "the change source is closed"
                raise psycopg.InterfaceError(msg)
            if self._connection is None or self._connection.closed:
                pool_kwargs = self.datastore.pool.kwargs
                assert isinstance(pool_kwargs, dict)
                kwargs = dict(pool_kwargs)
                kwargs.pop("row_factory", None)
                connection = psycopg.connect(**kwargs, autocommit=True)
                connection.execute(f"LISTEN {self.channel}")
                connection.execute(f"LISTEN {self.wake_channel}")
                self._connection = connection
            return self._connection

    def _drop_connection(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            with suppress(psycopg.Error):
                connection.close()
