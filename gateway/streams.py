"""Server-sent events: a turn as it happens, and the live tail of a session's log.

Tail frames carry ``id: <offset>``, so a client (``EventSource`` does this by
itself) resumes with ``Last-Event-ID`` after a disconnect or a server restart:
the backlog after that offset comes from the log, then live events, with no gap
and no duplicate. The SSE event name is the item's ``type``: the log entry's type
(``opened``, ``message_appended``, …) for recorded events, the delta's type
(``text_delta``, …) for live turn deltas, which have no id. Waiting costs no CPU;
every ``ping_seconds`` of silence the stream sends a ``ping``, which costs only the
frame (no read: 1,000 idle streams must cost next to nothing). A stream ends after
the session's terminal event (``ended``, ``expired``: both are recorded events, so
they reach every tail, also across a restart through the backlog), and when the
server shuts down. Who may see a session never changes while it lives.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.codec import dumps, parse_offset_text, query
from gateway.context import Gateway, caller, session_id
from gateway.errors import log_unexpected, problem_of
from runtime import DomainError, RuntimeFault, TailInterrupted

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RETRY_MILLISECONDS = 2000
PING = {"type": "ping"}
BURST_FRAMES = 256
"""At most this many tail items are written in one chunk."""
TERMINAL_EVENTS = frozenset({"ended", "expired"})
"""Event types after which nothing more is recorded for a session: a tail ends."""


def is_terminal(item: dict[str, Any]) -> bool:
    """Whether a tail item is the session's last recorded event."""
    return item["type"] == "event" and item["event"]["type"] in TERMINAL_EVENTS


def wants_event_stream(request: Request) -> bool:
    """Whether the client asked for ``text/event-stream``."""
    for part in request.headers.get("accept", "").split(","):
        media_type, *parameters = part.split(";")
        if media_type.strip().lower() != "text/event-stream":
            continue
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q" and value.strip() in (
                "0",
                "0.0",
                "0.00",
                "0.000",
            ):
                return False
        return True
    return False


class FrameCache:
    """The SSE frames of recent tail items, so that an item going out on 500
    streams is encoded once. Keyed by the item's identity (every tail of a
    session receives the same item object); each entry holds the item, so its id
    cannot be reused while cached."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._frames: dict[int, tuple[dict[str, Any], bytes]] = {}

    def frame(self, item: dict[str, Any]) -> bytes:
        """The item's frame: recorded events carry their offset as id."""
        found = self._frames.get(id(item))
        if found is not None and found[0] is item:
            return found[1]
        event = item["event"]
        if item["type"] == "event":
            encoded = frame(event, event=event["type"], offset=item["offset"])
        else:
            encoded = frame(event, event=event.get("type", "delta"))
        if len(self._frames) >= self._size:
            del self._frames[next(iter(self._frames))]  # the oldest
        self._frames[id(item)] = (item, encoded)
        return encoded


tail_frame = FrameCache().frame


def frame(item: Any, *, event: str | None = None, offset: int | None = None) -> bytes:
    """One SSE frame; the data is compact JSON on one line."""
    lines = b""
    if offset is not None:
        lines += b"id: %d\n" % offset
    if event is not None:
        lines += b"event: " + event.encode() + b"\n"
    return lines + b"data: " + dumps(item) + b"\n\n"


async def next_or_timeout(
    get: Callable[[], Awaitable[Any]],
    pending: asyncio.Future[Any] | None,
    timeout: float,
) -> tuple[Any, asyncio.Future[Any] | None]:
    """Wait up to ``timeout`` for the next item of ``get``.

    Returns ``(item, None)``, or ``(None, still_pending)`` on timeout (the wait
    goes on at the next call, so nothing is lost).
    """
    task = pending if pending is not None else asyncio.ensure_future(get())
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:
        task.cancel()
        raise
    if task in done:
        return task.result(), None
    return None, task


async def cancel(task: asyncio.Future[Any] | None) -> None:
    """Cancel a pending wait and let it unwind."""
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


# --- turns


async def start_turn(
    aruntime: Any, *args: Any, **kwargs: Any
) -> tuple[dict[str, Any], AsyncGenerator[dict[str, Any], None]]:
    """Start a turn and wait for its first event (``message_start``: the user
    message is recorded). An error before that is raised, for a plain error
    response; the turn is then closed."""
    # AsyncRuntime.stream is an async generator (it is declared an iterator)
    turn = cast(
        "AsyncGenerator[dict[str, Any], None]", aruntime.stream(*args, **kwargs)
    )
    try:
        first = await turn.__anext__()
    except BaseException:
        await turn.aclose()
        raise
    return first, turn


async def paced(
    gateway: Gateway,
    request: Request,
    first: dict[str, Any],
    turn: AsyncGenerator[dict[str, Any], None],
) -> AsyncGenerator[dict[str, Any] | Exception | None, None]:
    """A started turn's events from ``first`` on, ``None`` after every
    ``ping_seconds`` of silence, and last the error that ended it, if one did
    (logged when unexpected). Closes the turn and counts the open stream; use
    under ``contextlib.aclosing``."""
    gateway.metrics.stream_opened("sse")
    pending: asyncio.Future[Any] | None = None
    try:
        yield first
        while True:
            try:
                item, pending = await next_or_timeout(
                    turn.__anext__, pending, gateway.limits.ping_seconds
                )
            except StopAsyncIteration:
                return
            except Exception as error:
                if not isinstance(error, DomainError | RuntimeFault):
                    log_unexpected(error, request.scope)
                yield error
                return
            yield item
    finally:
        await cancel(pending)
        await turn.aclose()
        gateway.metrics.stream_closed("sse")


async def turn_stream(
    request: Request, sid: str, content: str, *, timeout: float | None, **arguments: Any
) -> Response:
    """Stream one turn (``message_start`` … ``done``). Errors before the user
    message is recorded are plain problem responses; later ones an ``error``
    event."""
    gateway, aruntime, _ = caller(request)
    first, turn = await start_turn(aruntime, sid, content, timeout=timeout, **arguments)

    async def body() -> AsyncIterator[bytes]:
        async with contextlib.aclosing(paced(gateway, request, first, turn)) as items:
            async for item in items:
                if isinstance(item, Exception):
                    error = {"type": "error", "error": problem_of(item)}
                    yield frame(error, event="error")
                    return
                if item is None:
                    yield frame(PING, event="ping")
                    continue
                yield frame(item, event=item["type"])
                if item["type"] == "done":
                    return

    return StreamingResponse(
        body(), media_type="text/event-stream", headers=SSE_HEADERS
    )


# --- the log


async def event_stream(request: Request) -> Response:
    """The live tail of the session's log from ``Last-Event-ID`` (or ``?after``)."""
    gateway, aruntime, principal = caller(request)
    params = query(request, {"after": "integer"})
    last_event_id = request.headers.get("last-event-id")
    after = (
        parse_offset_text(last_event_id, "Last-Event-ID")
        if last_event_id is not None
        else params.get("after", 0)
    )
    sid = session_id(request)
    slots = contextlib.ExitStack()
    slots.enter_context(gateway.streams.hold(principal.id))
    try:
        document = await aruntime.get(sid, principal=principal)
        if document["status"] != "active" and after >= document["offset"]:
            # nothing more will come: 204 tells EventSource not to reconnect
            slots.close()
            return Response(status_code=204)
        tail = await aruntime.tail(sid, principal=principal, after=after)
    except BaseException:
        slots.close()
        raise
    return StreamingResponse(
        _tail_frames(gateway, tail, slots),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def _tail_frames(
    gateway: Gateway, tail: Any, slots: contextlib.ExitStack
) -> AsyncIterator[bytes]:
    gateway.metrics.stream_opened("sse")
    try:
        yield b"retry: %d\n\n" % RETRY_MILLISECONDS
        while not gateway.draining.is_set():
            try:
                item = await tail.get(gateway.limits.ping_seconds)
            except TailInterrupted:
                return
            if item is None:
                yield frame(PING, event="ping")
                continue
            # Whatever else is already at hand goes out in the same write: one
            # chunk per burst, not one per item (a turn's deltas come in bursts).
            chunk = [tail_frame(item)]
            ended = is_terminal(item)
            while not ended and len(chunk) < BURST_FRAMES:
                more = tail.poll()
                if more is None:
                    break
                chunk.append(tail_frame(more))
                ended = is_terminal(more)
            yield b"".join(chunk)
            if ended:
                return
    finally:
        await tail.aclose()
        slots.close()
        gateway.metrics.stream_closed("sse")
