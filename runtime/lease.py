"""A database lease: which process runs the once-per-cluster work.

The lifecycle supervisor (expiries, warnings, resets, retention) and webhook
delivery run on one process at a time: the one holding the ``supervisor``
lease. A lease is one row (name, holder, expiry) in the store, taken or renewed
with a single compare-and-set statement in one transaction: it succeeds when
the row is free, expired, or already this holder's. The holder renews it every
``renew_every`` seconds; if it dies, the row expires after ``ttl`` seconds and
the next process to try takes it, so fail-over takes at most ``ttl +
renew_every`` (plus one supervisor tick).

A holder stops treating itself as the holder a margin *before* its lease
expires in the store (by its own monotonic clock, measured from before the
renewal it relies on), so two holders overlap only when a process stalls for
longer than that margin between checking and acting (a pause, a swapped-out
machine). That is safe: every supervisor action is idempotent against the log
(an expiry decided twice is refused by the log the second time and finds the
session already expired on the retry) and webhook delivery is at least once.

Backends implement :class:`LeaseStore`; SQLite's is
:class:`runtime.sqlite_cluster.SQLiteLeaseStore`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from eventsourcing.persistence import PersistenceError

if TYPE_CHECKING:
    from runtime.clock import Clock

logger = logging.getLogger(__name__)

SUPERVISOR_LEASE = "supervisor"


class LeaseStore(Protocol):
    """Where leases are kept (one row per lease name)."""

    def try_acquire(self, name: str, holder: str, now_ms: int, ttl_ms: int) -> bool:
        """Take or renew ``name`` for ``holder`` until ``now_ms + ttl_ms``.

        One transaction, compare-and-set: succeeds (True) when no one holds the
        lease, its expiry is at or before ``now_ms``, or ``holder`` holds it
        already; otherwise changes nothing and returns False.
        """
        ...

    def release(self, name: str, holder: str) -> None:
        """Give the lease up now if ``holder`` holds it (a clean shutdown)."""
        ...

    def current(self, name: str) -> tuple[str, int] | None:
        """``(holder, expires_ms)`` of the lease, or ``None`` if never taken."""
        ...


def node_id() -> str:
    """A name for this process, unique across restarts: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseKeeper:
    """Keeps trying to hold one lease for this process, on a thread.

    :meth:`held` is what the guarded work asks before acting; it costs no I/O.
    """

    def __init__(
        self,
        store: LeaseStore,
        clock: Clock,
        *,
        holder: str,
        name: str = SUPERVISOR_LEASE,
        ttl: float = 5.0,
        renew_every: float = 1.0,
        on_acquired: Callable[[], None] | None = None,
    ) -> None:
        if renew_every >= ttl:
            msg = "the lease must be renewed more often than it expires"
            raise ValueError(msg)
        self._store = store
        self._clock = clock
        self.holder = holder
        self.name = name
        self.ttl = ttl
        self.renew_every = renew_every
        self._on_acquired = on_acquired
        # Stop acting this long before the store lets another process take over.
        self._margin = min(1.0, ttl / 4)
        self._valid_until = float("-inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.acquisitions = 0

    def held(self) -> bool:
        """Whether this process holds the lease now (with the safety margin)."""
        return self._clock.monotonic() < self._valid_until

    def renew_once(self) -> bool:
        """One attempt to take or renew the lease; returns whether it is held.

        A storage error counts as not held (the store decides who holds it).
        """
        with self._lock:
            started = self._clock.monotonic()
            now_ms = int(self._clock.now().timestamp() * 1000)
            was_held = self.held()
            try:
                got = self._store.try_acquire(
                    self.name, self.holder, now_ms, int(self.ttl * 1000)
                )
            except PersistenceError:
                logger.warning("lease renewal failed", extra={"lease": self.name})
                got = False
            if got:
                self._valid_until = started + self.ttl - self._margin
            elif was_held:
                self._valid_until = float("-inf")
        if got and not was_held:
            self.acquisitions += 1
            logger.info(
                "lease acquired", extra={"lease": self.name, "holder": self.holder}
            )
            if self._on_acquired is not None:
                self._on_acquired()
        elif was_held and not got:
            logger.warning(
                "lease lost", extra={"lease": self.name, "holder": self.holder}
            )
        return got

    def start(self) -> None:
        """Try at once, then every ``renew_every`` seconds until :meth:`stop`."""
        self._thread = threading.Thread(
            target=self._run, name=f"sessiond-lease-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and release the lease if held, so another process can
        take over at once instead of after ``ttl``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            was_held = self.held()
            self._valid_until = float("-inf")
        if was_held:
            try:
                self._store.release(self.name, self.holder)
            except PersistenceError:
                logger.warning("lease release failed", extra={"lease": self.name})

    def _run(self) -> None:
        while not self._stop.is_set():
            self.renew_once()
            self._stop.wait(self.renew_every)
