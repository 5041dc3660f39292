"""``ChangeFeed``: events other processes recorded, published to this process's bus.

Every process publishes what *it* records to its own :class:`~runtime.bus.EventBus`
right after the commit. When several processes share a store, a client tailing
a session on process B must also see what process A recorded: the change feed
follows the store's notification log (the events in commit order, numbered by
notification id) and publishes each new event of a session someone here is
subscribed to, as the ``{"type": "event", "offset": n, "event": {...}}`` item
the recorder publishes.

The store side is a :class:`ChangeSource`. SQLite cannot signal a commit to
another process, so its source never wakes the feed early: the feed polls the
highest notification id (an O(1) read of the table's last rowid) every
``interval`` seconds while anyone here is subscribed and another process has
written in the last ``FOREIGN_WINDOW`` seconds, and every ``idle_interval``
seconds otherwise (only to keep its position near the head and to notice
other writers; no rows are read). So the first event another process records
after a quiet spell reaches a tail here within ``idle_interval``, the next ones
within ``interval``. PostgreSQL's source can wake it with LISTEN/NOTIFY.

No gap, no duplicate, for the tails: a tail subscribes before it reads its
backlog, and the feed's position is never past what was committed when a
subscription began (it is read before the feed checks for subscribers), so an
event is either in the backlog or published after; tails drop offsets they
have seen, and read a gap (an offset beyond the next one) from the log. Events
this process recorded and already published are skipped by notification id.
Live turn deltas stay on the process running the turn; the recorded messages
reach every process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from eventsourcing.persistence import PersistenceError

from projections.codec import decode_state
from projections.documents import event_document

FOREIGN_WINDOW = 30.0
"""Seconds after another process's last write during which the feed keeps its
fast pace for subscribers here."""

if TYPE_CHECKING:
    from runtime.bus import EventBus

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """One recorded event, as the notification log holds it."""

    notification_id: int
    session_id: str
    offset: int
    topic: str
    state: bytes


class ChangeSource(Protocol):
    """What a backend offers the change feed."""

    def last_notification_id(self) -> int:
        """The highest notification id committed (0 when the log is empty)."""
        ...

    def changes_after(self, notification_id: int, limit: int) -> Sequence[Change]:
        """Committed events with notification ids above ``notification_id``, in
        notification order, at most ``limit``."""
        ...

    def wait(self, timeout: float) -> None:
        """Block until the store signals new notifications, :meth:`interrupt`
        is called, or ``timeout`` seconds pass (a polling source just waits)."""
        ...

    def interrupt(self) -> None:
        """Make a :meth:`wait` in progress (or the next one) return now."""
        ...

    def close(self) -> None:
        """Release what the source holds (a listening connection)."""
        ...


class LocalPublications:
    """Notification ids this process has published itself, so the feed does not
    publish them a second time (thread-safe; bounded by the feed's position)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[int] = set()

    def add(self, ids: Sequence[int]) -> None:
        """Remember ids published by the recorder."""
        with self._lock:
            self._ids.update(ids)

    def discard(self, ids: Sequence[int]) -> None:
        """Forget ids of a write that did not commit."""
        with self._lock:
            self._ids.difference_update(ids)

    def take(self, notification_id: int) -> bool:
        """Whether ``notification_id`` was published here (forgetting it)."""
        with self._lock:
            if notification_id in self._ids:
                self._ids.discard(notification_id)
                return True
            return False

    def forget_upto(self, notification_id: int) -> None:
        """Drop ids at or below ``notification_id`` (the feed is past them)."""
        with self._lock:
            if self._ids:
                self._ids = {i for i in self._ids if i > notification_id}


class ChangeFeed:
    """Follows a :class:`ChangeSource` on a thread; see the module docstring."""

    def __init__(
        self,
        source: ChangeSource,
        bus: EventBus,
        local: LocalPublications,
        *,
        interval: float = 0.02,
        idle_interval: float = 1.0,
        batch: int = 500,
    ) -> None:
        self._source = source
        self._bus = bus
        self._local = local
        self.interval = interval
        self.idle_interval = idle_interval
        self._batch = batch
        self._stop = threading.Event()
        self._polling = threading.Lock()
        self._thread: threading.Thread | None = None
        self.position = 0
        self.last_foreign = float("-inf")
        """When a write by another process was last seen (monotonic)."""
        self.published = 0
        self.polls = 0

    def start(self) -> None:
        """Start following from the current end of the log."""
        self.position = self._source.last_notification_id()
        self._bus.on_first_subscriber = self._source.interrupt
        self._thread = threading.Thread(
            target=self._run, name="sessiond-change-feed", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop following."""
        self._stop.set()
        self._source.interrupt()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._source.close()

    def poll_once(self) -> int:
        """Publish what was committed since the last poll to this process's
        subscribers; returns how many events were published.

        Polls are serialised: one called from another thread while the feed's
        own runs (a LISTEN wake-up, a test) never publishes a change twice."""
        with self._polling:
            return self._poll()

    def _poll(self) -> int:
        self.polls += 1
        top = self._source.last_notification_id()
        if top < self.position:
            # Rows at the end of the log were deleted (a purge); ids may be
            # given out again from here.
            self.position = top
        # Read after ``top``: a subscription that begins after this check
        # reads everything up to ``top`` in its own backlog.
        if top == self.position or not self._bus.has_any_subscribers():
            self._local.forget_upto(top)
            self.position = top
            return 0
        published = 0
        while self.position < top:
            changes = self._source.changes_after(self.position, self._batch)
            if not changes:
                break
            for change in changes:
                published += self._publish(change)
            self.position = changes[-1].notification_id
        self.published += published
        return published

    def _publish(self, change: Change) -> int:
        if self._local.take(change.notification_id):
            return 0
        # Another process writes here. (On PostgreSQL a lone write commits with
        # its insert, before this process marks its ids: its own event may now
        # and then count as foreign, which only quickens the pace for a while.)
        self.last_foreign = time.monotonic()
        if not self._bus.has_subscribers(change.session_id):
            return 0
        document = event_document(
            change.offset, change.topic, decode_state(change.state)
        )
        self._bus.publish(
            change.session_id,
            {"type": "event", "offset": change.offset, "event": document},
        )
        return 1

    def pace(self) -> float:
        """Seconds until the next poll: ``interval`` only while someone here
        listens AND another process has written lately; a lone process (the
        embedded default) keeps the idle pace, so its open streams cost nothing
        between events."""
        foreign = time.monotonic() - self.last_foreign < FOREIGN_WINDOW
        if foreign and self._bus.has_any_subscribers():
            return self.interval
        return self.idle_interval

    def _run(self) -> None:
        while not self._stop.is_set():
            self._source.wait(self.pace())
            if self._stop.is_set():
                return
            try:
                self.poll_once()
            except PersistenceError:
                logger.warning("change feed poll failed; retrying")
            except Exception:  # the feed must outlive one bad event
                logger.exception("change feed poll failed")
