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
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
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
        """Whether a live item is the next one to give out: events already seen
        are dropped, and an event past the next offset (live events from two
        sources, this process's recorder and the change feed, may arrive out of
        order) sends the tail back to the log, which has the gap and this one."""
        if item["type"] != "event":
            return True
        offset = item["offset"]
        if offset <= self.last:
            return False
        if offset > self.last + 1:
            self.caught_up = False
            return False
        self.last = offset
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


class TailInterrupted(Exception):
    """The tail was interrupted (the server is shutting down)."""


class LoopFanout:
    """Hands a session's bus items to the asyncio tails of one event loop.

    One bus subscription per session and one thread hop per burst of items,
    whatever the number of tails: with 500 tails on one session, waking the loop
    once per tail per item (``call_soon_threadsafe`` writes to the loop's
    self-pipe each time) was the largest cost of fan-out.
    """

    def __init__(self, bus: EventBus, loop: asyncio.AbstractEventLoop) -> None:
        self._bus = bus
        self._loop = loop
        self._tails: dict[str, set[AsyncSessionTail]] = {}
        self._unsubscribers: dict[str, Callable[[], None]] = {}
        self._arrived: deque[tuple[str, dict[str, Any]]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def add(self, tail: AsyncSessionTail) -> None:
        """Deliver the tail's session's items to it (call on the loop)."""
        session_id = tail.session_id
        self._tails.setdefault(session_id, set()).add(tail)
        if session_id not in self._unsubscribers:
            self._unsubscribers[session_id] = self._bus.subscribe(
                session_id, partial(self._arrive, session_id)
            )

    def remove(self, tail: AsyncSessionTail) -> None:
        """Stop delivering to ``tail`` (call on the loop)."""
        session_id = tail.session_id
        tails = self._tails.get(session_id)
        if tails is None:
            return
        tails.discard(tail)
        if not tails:
            del self._tails[session_id]
            unsubscribe = self._unsubscribers.pop(session_id, None)
            if unsubscribe is not None:
                unsubscribe()

    def interrupt(self) -> None:
        """Wake every tail's waiting ``get`` with :class:`TailInterrupted` (call
        on the loop; tails created afterwards are not affected)."""
        for tails in list(self._tails.values()):
            for tail in list(tails):
                tail.interrupt()

    def _arrive(self, session_id: str, item: dict[str, Any]) -> None:
        # On the publishing thread: queue the item; wake the loop only if it is
        # not already due to drain.
        with self._lock:
            self._arrived.append((session_id, item))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            with self._lock:
                self._arrived.clear()
                self._scheduled = False

    def _drain(self) -> None:
        with self._lock:
            arrived, self._arrived = self._arrived, deque()
            self._scheduled = False
        for session_id, item in arrived:
            for tail in self._tails.get(session_id, ()):
                tail.push(item)


class AsyncSessionTail:
    """The same tail for asyncio: waiting costs no CPU and never blocks the loop.

    Waiting is one future and one timer per wait (no task, no ``asyncio.wait``):
    a server holding hundreds of streams on one busy session wakes each once per
    burst of items.
    """

    def __init__(
        self,
        views: SessionViews,
        fanout: LoopFanout,
        session_id: str,
        after: int,
    ) -> None:
        self.session_id = session_id
        self._views = views
        self._fanout = fanout
        self._backlog = _Backlog(views, session_id, after)
        self._live: deque[dict[str, Any]] = deque()
        self._subscribed = False
        self._waiter: asyncio.Future[None] | None = None
        self._interrupted = False

    def _subscribe(self) -> None:
        if not self._subscribed:
            self._subscribed = True
            self._fanout.add(self)

    def push(self, item: dict[str, Any]) -> None:
        """A live item arrived (called on the loop by the fanout)."""
        self._live.append(item)
        self._wake()

    def interrupt(self) -> None:
        """Make the waiting (and every later) ``get`` raise ``TailInterrupted``."""
        self._interrupted = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def poll(self) -> dict[str, Any] | None:
        """The next item if one is at hand (no waiting, no read), else ``None``:
        lets a stream write a burst of items at once."""
        self._subscribe()
        while True:
            item = self._backlog.next_pending()
            if item is not None:
                return item
            if not self._backlog.caught_up or not self._live:
                return None
            item = self._live.popleft()
            if self._backlog.accept(item):
                return item

    async def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next item, or ``None`` when none arrived within ``timeout``.

        Raises :class:`TailInterrupted` once :meth:`interrupt` was called.
        Cancelling a waiting ``get`` loses nothing (items stay queued).
        """
        self._subscribe()
        while True:
            if self._interrupted:
                raise TailInterrupted
            item = self.poll()
            if item is not None:
                return item
            if not self._backlog.caught_up:
                await anyio.to_thread.run_sync(self._backlog.read_page)
                continue
            if not await self._wait(timeout):
                return None

    async def _wait(self, timeout: float | None) -> bool:
        """Wait for a live item (or an interrupt); ``False`` on timeout."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer = None if timeout is None else loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return bool(self._live) or self._interrupted

    def __aiter__(self) -> AsyncSessionTail:
        return self

    async def __anext__(self) -> dict[str, Any]:
        item = await self.get(None)
        assert item is not None
        return item

    async def aclose(self) -> None:
        """Stop receiving live items."""
        if self._subscribed:
            self._fanout.remove(self)
            self._subscribed = False


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
