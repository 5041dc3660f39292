"""``LifecycleSupervisor``: drives expiry warnings, expiry, scheduled and idle
resets, and retention from the durable schedule.

The schedule is a view written in the same transaction as the events
(``session_schedule``: each live session's next deadline), so it survives
restarts and a tick costs what is due, not what is stored. A tick asks each due
session's actor to act on its passed deadlines; the session decides with the same
pure functions that computed the schedule, records what it did as events, and the
new state reschedules it. After a restart, deadlines that passed while the
service was down are handled once each, in order.

The supervisor is a pykka actor, one per process; when several processes share
a store, only the one holding the supervisor lease ticks (see
:mod:`runtime.lease`). It never blocks on a session
actor: it sends the command without waiting, and does not send it again for the
same deadline unless ``retry_after`` seconds pass without the schedule moving on
(the command failed, e.g. the store was briefly unavailable).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pykka

from projections.documents import format_time

if TYPE_CHECKING:
    from projections.views import SessionViews
    from runtime.clock import Clock

logger = logging.getLogger(__name__)

Dispatch = Callable[[str], Any]
"""Sends a session the command to act on its deadlines, without waiting."""

Purge = Callable[[str], None]


class LifecycleSupervisor(pykka.ThreadingActor):
    """See the module docstring."""

    use_daemon_thread = True

    def __init__(
        self,
        views: SessionViews,
        clock: Clock,
        dispatch: Dispatch,
        purge: Purge,
        *,
        batch: int = 1000,
        retention: timedelta | None = None,
        keep_checkpoints: bool = False,
        retry_after: float = 30.0,
    ) -> None:
        super().__init__()
        self._views = views
        self._clock = clock
        self._dispatch = dispatch
        self._purge = purge
        self._batch = batch
        self._retention = retention
        self._keep_checkpoints = keep_checkpoints
        self._retry_after = retry_after
        # session id -> (the deadline it was asked about, when it was asked)
        self._in_flight: dict[str, tuple[int, float]] = {}
        self.dispatched = 0
        self.purged = 0

    def tick(self) -> list[str]:
        """Dispatch every session whose deadline passed, then apply retention.

        Runs on the supervisor's thread; returns the sessions it asked.
        """
        now = self._clock.now()
        moment = self._clock.monotonic()
        asked: list[str] = []
        due = self._views.due(now, self._batch + len(self._in_flight))
        still_due = {session_id for session_id, _, _ in due}
        for session_id in list(self._in_flight):
            if session_id not in still_due:
                del self._in_flight[session_id]  # handled: the schedule moved on
        for session_id, due_ms, _ in due:
            previous = self._in_flight.get(session_id)
            if (
                previous is not None
                and previous[0] == due_ms
                and moment - previous[1] < self._retry_after
            ):
                continue  # already asked about this deadline
            try:
                self._dispatch(session_id)
            except Exception:
                logger.exception(
                    "cannot dispatch lifecycle work", extra={"session_id": session_id}
                )
                continue
            self._in_flight[session_id] = (due_ms, moment)
            asked.append(session_id)
            if len(asked) >= self._batch:
                break
        self.dispatched += len(asked)
        if self._retention is not None:
            self.purged += self.apply_retention(
                now - self._retention, self._keep_checkpoints
            )
        return asked

    def apply_retention(self, cutoff: Any, keep_checkpoints: bool) -> int:
        """Purge ended or expired sessions last changed before ``cutoff``."""
        stamp = format_time(cutoff)
        assert stamp is not None
        purged = 0
        for session_id in self._views.retention_candidates(
            stamp, keep_checkpoints=keep_checkpoints, limit=self._batch, owner_id=None
        ):
            self._purge(session_id)
            purged += 1
        return purged

    def pending(self) -> int:
        """How many sessions were asked and have not moved their deadline yet."""
        return len(self._in_flight)


class Ticker:
    """Calls the supervisor's ``tick`` every ``interval`` seconds on a thread,
    when ``may_run()`` says so (this process holds the supervisor lease)."""

    def __init__(
        self,
        supervisor: Any,
        interval: float,
        may_run: Callable[[], bool] = lambda: True,
    ) -> None:
        self._supervisor = supervisor
        self._interval = interval
        self._may_run = may_run
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="sessiond-ticker", daemon=True
        )

    def start(self) -> None:
        """Start ticking."""
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking (the current tick finishes)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._may_run():
                continue
            try:
                self._supervisor.tick().get(timeout=60)
            except (pykka.ActorDeadError, pykka.Timeout):
                return
            except Exception:  # a failed tick is logged; the next one retries
                logger.exception("supervisor tick failed")
