"""``/v1/sessions/{id}/ws``: a WebSocket onto one session.

The handshake is checked before it is accepted (key, ``Origin`` — a browser page
of another origin is refused —, session visibility); a refusal is an HTTP
problem response when the server supports the denial extension, else close code
1008. Once open, the server sends every item of the session's tail as JSON text:
``{"type": "event", "offset": n, "event": {...}}`` for recorded events and
``{"type": "delta", "event": {...}}`` for live turn deltas, from ``?after=N``
(default: the session's offset when the socket opened, so only new activity).
The client sends ``{"type": "message", "content": "...", "role"?, "attachments"?,
"metadata"?, "idempotency_key"?, "expected_offset"?}``; the server answers
``{"type": "accepted", "message": {...}}`` once the message is durable (the
reply comes on the tail, which does not wait for this answer: a fast turn's
items may arrive first), or ``{"type": "error", "error": <problem>}``.
``{"type": "ping"}`` is answered with ``{"type": "pong"}``. When the socket
closes, the turns it started follow the server's disconnect policy
(``on_disconnect``): ``continue`` (default) or ``cancel``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit

from starlette.websockets import WebSocket, WebSocketState

from gateway.auth import refuse_websocket
from gateway.codec import check_metadata, decode, dumps, fields, query
from gateway.context import Gateway, caller, session_id
from gateway.errors import GatewayError, error_response, log_unexpected, problem_of
from gateway.streams import PING, cancel, is_terminal
from runtime import CancelToken, DomainError, Principal, RuntimeFault, TailInterrupted

DISCONNECTED = "disconnected"

CLIENT_MESSAGE_FIELDS = {
    "type": "string",
    "content": "string?",
    "role": "string?",
    "attachments": "array?",
    "metadata": "object?",
    "idempotency_key": "string?",
    "expected_offset": "integer?",
}
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009


def check_origin(websocket: WebSocket) -> None:
    """Refuse a browser connecting from a page of another origin (cross-site
    WebSocket hijacking); clients that send no ``Origin`` are not browsers."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return
    host = websocket.headers.get("host", "")
    if urlsplit(origin).netloc.lower() != host.lower():
        raise GatewayError("forbidden", "this origin may not open a WebSocket here")


async def session_socket(websocket: WebSocket) -> None:
    """The WebSocket endpoint."""
    gateway, aruntime, principal = caller(websocket)
    sid = session_id(websocket)
    slots = contextlib.ExitStack()
    try:
        check_origin(websocket)
        params = query(websocket, {"after": "integer"})
        slots.enter_context(gateway.streams.hold(principal.id))
        document = await aruntime.get(sid, principal=principal)
        tail = await aruntime.tail(
            sid, principal=principal, after=params.get("after", document["offset"])
        )
    except (GatewayError, DomainError, RuntimeFault) as error:
        slots.close()
        await refuse_websocket(
            websocket.scope, websocket.receive, websocket.send, error_response(error)
        )
        return
    gateway.metrics.stream_opened("websocket")
    try:
        await websocket.accept()
        await _converse(gateway, websocket, tail, sid, principal)
    finally:
        await tail.aclose()
        slots.close()
        gateway.metrics.stream_closed("websocket")


async def _converse(
    gateway: Gateway, websocket: WebSocket, tail: Any, sid: str, principal: Principal
) -> None:
    lock = asyncio.Lock()
    started: list[CancelToken] = []  # the turns this socket started

    async def send(item: Any) -> None:
        async with lock:
            await websocket.send_text(dumps(item).decode())

    async def close(code: int) -> None:
        async with lock:
            if websocket.application_state is WebSocketState.CONNECTED:
                await websocket.close(code)

    async def pump() -> None:
        while not gateway.draining.is_set():
            try:
                item = await tail.get(gateway.limits.ping_seconds)
            except TailInterrupted:
                break
            if item is None:
                await send(PING)
                continue
            await send(item)
            if is_terminal(item):
                await close(CLOSE_NORMAL)
                return
        await close(CLOSE_GOING_AWAY)

    async def listen() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("bytes") or (message.get("text") or "").encode()
            if len(raw) > gateway.limits.max_ws_message_bytes:
                await close(CLOSE_TOO_BIG)
                return
            try:
                token = CancelToken()
                reply = await _handle(gateway, raw, sid, principal, token)
                started.append(token)
            except (GatewayError, DomainError, RuntimeFault) as error:
                reply = {"type": "error", "error": problem_of(error)}
            except Exception as error:
                log_unexpected(error, websocket.scope)
                reply = {"type": "error", "error": problem_of(error)}
            await send(reply)

    tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(listen())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                error = task.exception()
                if not _is_disconnect(error):
                    assert error is not None
                    log_unexpected(error, websocket.scope)
    finally:
        for task in tasks:
            await cancel(task)
        if gateway.runtime.settings.on_disconnect == "cancel":
            for token in started:
                token.cancel(DISCONNECTED)
        with contextlib.suppress(Exception):
            await close(1000)


def _is_disconnect(error: BaseException | None) -> bool:
    return type(error).__name__ in (
        "WebSocketDisconnect",
        "ClientDisconnected",
        "OSError",
    )


async def _handle(
    gateway: Gateway, raw: bytes, sid: str, principal: Principal, token: CancelToken
) -> dict[str, Any]:
    value = decode(raw, gateway.limits)
    if not isinstance(value, dict):
        raise GatewayError("invalid_request", "send a JSON object")
    body = fields(value, CLIENT_MESSAGE_FIELDS, required=("type",))
    if body["type"] == "ping":
        return {"type": "pong"}
    if body["type"] != "message":
        raise GatewayError("invalid_request", "type must be message or ping")
    if body.get("content") is None:
        raise GatewayError("invalid_request", "content is required")
    check_metadata("metadata", body.get("metadata"), gateway.limits)
    check_metadata("attachments", body.get("attachments"), gateway.limits)
    message = await gateway.aruntime.submit(
        sid,
        body["content"],
        principal=principal,
        role=body.get("role") or "user",
        attachments=body.get("attachments"),
        metadata=body.get("metadata"),
        idempotency_key=body.get("idempotency_key"),
        expected_offset=body.get("expected_offset"),
        cancel=token,
    )
    return {"type": "accepted", "message": message}
