"""``EventBus``: fans a session's recorded events and live turn deltas out to
subscribers (SSE, WebSocket, webhooks) in process.

Events this process records are published by its recorder; events other
processes record reach it through the change feed (:mod:`runtime.feed`).

Recorded events are published only after the transaction holding them has
committed, in commit order. Delivery callbacks run on the publishing thread and
must not block (they hand the item to a queue).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

Deliver = Callable[[dict[str, Any]], None]


class EventBus:
    """Subscriptions per session id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, list[Deliver]] = {}
        self.on_first_subscriber: Callable[[], None] | None = None
        """Called (without the lock) when a subscription opens while there was
        none: the change feed uses it to start polling at once."""

    def subscribe(self, session_id: str, deliver: Deliver) -> Callable[[], None]:
        """Deliver the session's items to ``deliver``; returns the unsubscriber."""
        with self._lock:
            first = not self._subscribers
            self._subscribers.setdefault(session_id, []).append(deliver)
        if first and self.on_first_subscriber is not None:
            self.on_first_subscriber()

        def unsubscribe() -> None:
            with self._lock:
                found = self._subscribers.get(session_id, [])
                if deliver in found:
                    found.remove(deliver)
                if not found:
                    self._subscribers.pop(session_id, None)

        return unsubscribe

    def has_subscribers(self, session_id: str) -> bool:
        """Whether anyone listens to the session (a cheap check before work)."""
        return session_id in self._subscribers

    def has_any_subscribers(self) -> bool:
        """Whether anyone listens to any session."""
        return bool(self._subscribers)

    def publish(self, session_id: str, item: dict[str, Any]) -> None:
        """Hand ``item`` to every subscriber of the session."""
        with self._lock:
            targets = list(self._subscribers.get(session_id, ()))
        for deliver in targets:
            try:
                deliver(item)
            except Exception:  # a broken subscriber must not stop the others
                logger.exception(
                    "event subscriber failed", extra={"session_id": session_id}
                )

    def subscriber_count(self) -> int:
        """How many subscriptions are open (for metrics)."""
        with self._lock:
            return sum(len(found) for found in self._subscribers.values())
