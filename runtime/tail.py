"""Tails of a session's log: the backlog after an offset from the log, then live
events and turn deltas from the bus, with no gap and no duplicate.

The subscription opens *before* the backlog is read, so an event committed while
the backlog is being read arrives both ways and is dropped the second time (by
offset). Items are ``{"type": "event", "offset": n, "event": {...}}`` for recorded
events and ``{"type": "delta", "event": {...}}`` for live turn deltas.
"""

from __future__ import annotations

import asyncio
import queue
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from projections.views import SessionViews
    from runtime.bus import EventBus

BACKLOG_PAGE = 500


class _Backlog:
    """The part of the tail read from the log, and the offset reached."""

    def __init__(self, views: SessionViews, session_id: str, after: int) -> None:
        self._views = views
        self._session_id = session_id
        self.last = after
        self._pending: deque[dict[str, Any]] = deque()
        self.caught_up = False

    def read_page(self) -> None:
        events, has_more = self._views.events(
            self._session_id, after=self.last, limit=BACKLOG_PAGE
        )
        self._pending.extend(
            {"type": "event", "offset": e["offset"], "event": e} for e in events
        )
        self.caught_up = not has_more

    def next_pending(self) -> dict[str, Any] | None:
        if self._pending:
            item = self._pending.popleft()
            self.last = item["offset"]
            return item
        return None

    def accept(self, item: dict[str, Any]) -> bool:
        """Whether a live item is new (events already seen are dropped)."""
        if item["type"] != "event":
            return True
        if item["offset"] <= self.last:
            return False
        self.last = item["offset"]
        return True


class SessionTail:
    """A blocking tail; use as a context manager or call :meth:`close`."""

    def __init__(
        self, views: SessionViews, bus: EventBus, session_id: str, after: int
    ) -> None:
        self._live: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._unsubscribe: Callable[[], None] | None = bus.subscribe(
            session_id, self._live.put
        )
        self._backlog = _Backlog(views, session_id, after)

    def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next item, or ``None`` when none arrived within ``timeout``."""
        while True:
            item = self._backlog.next_pending()
            if item is not None:
                return item
            if not self._backlog.caught_up:
                self._backlog.read_page()
                continue
            try:
                item = self._live.get(timeout=timeout)
            except queue.Empty:
                return None
            if self._backlog.accept(item):
                return item

    def close(self) -> None:
        """Stop receiving live items."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def __enter__(self) -> SessionTail:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncSessionTail:
    """The same tail for asyncio: waiting costs no CPU and never blocks the loop."""

    def __init__(
        self, views: SessionViews, bus: EventBus, session_id: str, after: int
    ) -> None:
        self._views = views
        self._bus = bus
        self._session_id = session_id
        self._backlog = _Backlog(views, session_id, after)
        self._live: asyncio.Queue[dict[str, Any]] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def _subscribe(self) -> None:
        loop = asyncio.get_running_loop()
        live: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._live = live

        def deliver(item: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(live.put_nowait, item)

        self._unsubscribe = self._bus.subscribe(self._session_id, deliver)

    async def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next item, or ``None`` when none arrived within ``timeout``."""
        if self._live is None:
            self._subscribe()
        assert self._live is not None
        while True:
            item = self._backlog.next_pending()
            if item is not None:
                return item
            if not self._backlog.caught_up:
                await anyio.to_thread.run_sync(self._backlog.read_page)
                continue
            try:
                item = await asyncio.wait_for(self._live.get(), timeout)
            except TimeoutError:
                return None
            if self._backlog.accept(item):
                return item

    def __aiter__(self) -> AsyncSessionTail:
        return self

    async def __anext__(self) -> dict[str, Any]:
        item = await self.get(None)
        assert item is not None
        return item

    async def aclose(self) -> None:
        """Stop receiving live items."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
