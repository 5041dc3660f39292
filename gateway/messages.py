"""Messages: send one (blocking JSON, streamed SSE, or accepted 202), the
visible history, the log as JSON, and exports."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.codec import check_metadata, fields, invalid, query, read_json
from gateway.context import caller, if_match, json, session_id
from gateway.idempotency import KEY_HEADER, check_key
from gateway.streams import event_stream, turn_stream, wants_event_stream
from runtime import AsyncRuntime, CancelToken

MESSAGE_FIELDS = {
    "content": "string",
    "role": "string?",
    "attachments": "array?",
    "metadata": "object?",
    "timeout": "number?",
    "concurrency": "string?",
    "on_disconnect": "string?",
}
CONCURRENCY = ("enqueue", "reject", "interrupt")
ON_DISCONNECT = ("cancel", "continue")
DISCONNECTED = "disconnected"
"""The recorded ``error_code`` of a turn whose caller went away."""
HISTORY_QUERY = {
    "limit": "integer",
    "before": "integer",
    "after": "integer",
    "order": "string",
}
EXPORT_MEDIA_TYPES = {"markdown": "text/markdown", "text": "text/plain"}


async def send_message(request: Request) -> Response:
    """``POST /v1/sessions/{id}/messages``.

    JSON: waits for the reply. ``on_disconnect`` (default: the server's
    setting) says what a caller that goes away does to the turn, whether it
    waits for JSON or reads the stream (``Accept: text/event-stream``). ``?wait=false``:
    202 with the recorded user message as soon as it is durable. ``concurrency``
    overrides the session's policy for this message.
    ``Idempotency-Key`` goes to the runtime, which deduplicates durably.
    """
    gateway, aruntime, principal = caller(request)
    params = query(request, {"wait": "boolean"})
    body = fields(
        await read_json(request, gateway.limits), MESSAGE_FIELDS, required=("content",)
    )
    check_metadata("metadata", body.get("metadata"), gateway.limits)
    check_metadata("attachments", body.get("attachments"), gateway.limits)
    timeout = body.pop("timeout", None)
    if timeout is not None and not 0 < timeout <= gateway.limits.max_turn_seconds:
        raise invalid(
            f"timeout must be within 0..{gateway.limits.max_turn_seconds:g} seconds"
        )
    concurrency = body.get("concurrency")
    if concurrency is not None and concurrency not in CONCURRENCY:
        raise invalid("concurrency must be enqueue, reject or interrupt")
    on_disconnect = body.get("on_disconnect")
    if on_disconnect is not None and on_disconnect not in ON_DISCONNECT:
        raise invalid("on_disconnect must be cancel or continue")
    raw_key = request.headers.get(KEY_HEADER)
    arguments: dict[str, Any] = {
        "principal": principal,
        "role": body.get("role") or "user",
        "attachments": body.get("attachments"),
        "metadata": body.get("metadata"),
        "idempotency_key": check_key(raw_key) if raw_key is not None else None,
        "expected_offset": if_match(request),
        "concurrency": concurrency,
    }
    sid = session_id(request)
    if params.get("wait") is False:
        message = await aruntime.submit(sid, body["content"], **arguments)
        return json(message, 202)
    if wants_event_stream(request):
        return await turn_stream(
            request,
            sid,
            body["content"],
            timeout=timeout,
            on_disconnect=on_disconnect,
            **arguments,
        )
    policy = on_disconnect or gateway.runtime.settings.on_disconnect
    if policy != "cancel":
        result = await aruntime.send(sid, body["content"], timeout=timeout, **arguments)
        return json(result)
    return json(
        await send_watching(request, aruntime, sid, body["content"], timeout, arguments)
    )


async def send_watching(
    request: Request,
    aruntime: AsyncRuntime,
    sid: str,
    content: str,
    timeout: float | None,
    arguments: dict[str, Any],
) -> dict[str, Any]:
    """Send and wait for the reply, cancelling the turn (``disconnected``) if
    the caller hangs up first. The body has been read, so the next ASGI message
    is ``http.disconnect``: the server sends it when the connection closes."""
    token = CancelToken()

    async def watch() -> None:
        if await hung_up(request):
            token.cancel(DISCONNECTED)

    # One watcher task; the send is awaited here (a second task and a wait on
    # both cost more than the rest of an echo request's loop work).
    watching = asyncio.ensure_future(watch())
    try:
        result: dict[str, Any] = await aruntime.send(
            sid, content, timeout=timeout, cancel=token, **arguments
        )
    finally:
        watching.cancel()
    return result


async def hung_up(request: Request) -> bool:
    """Wait until the client closes the connection (``True``)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return True


async def history(request: Request) -> Response:
    """``GET /v1/sessions/{id}/messages``: ``{messages, has_more}``."""
    _, aruntime, principal = caller(request)
    params = query(request, HISTORY_QUERY)
    return json(
        await aruntime.history(session_id(request), principal=principal, **params)
    )


async def events(request: Request) -> Response:
    """``GET /v1/sessions/{id}/events``: ``{events, has_more}``, or with
    ``Accept: text/event-stream`` a live tail resumable with ``Last-Event-ID``."""
    if wants_event_stream(request):
        return await event_stream(request)
    _, aruntime, principal = caller(request)
    params = query(request, {"after": "integer", "limit": "integer"})
    return json(
        await aruntime.events(session_id(request), principal=principal, **params)
    )


async def export(request: Request) -> Response:
    """``GET /v1/sessions/{id}/export?format=json|markdown|text``."""
    _, aruntime, principal = caller(request)
    params = query(request, {"format": "string"})
    fmt = params.get("format", "json")
    if fmt not in ("json", "markdown", "text"):
        raise invalid("format must be json, markdown or text")
    document = await aruntime.export(
        session_id(request), principal=principal, format=fmt
    )
    if isinstance(document, str):
        return Response(document, media_type=EXPORT_MEDIA_TYPES[fmt])
    return json(document)
