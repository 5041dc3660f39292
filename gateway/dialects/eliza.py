"""The ElizaOS messaging Sessions dialect, under ``/api/messaging/sessions``.

A thin mapping onto ``runtime.Runtime``: the ElizaOS ``sessionId`` is the
sessiond session id (a UUID chosen here), ``channelId`` the session's channel,
``userId`` its user, and the agent's reply the runtime's turn reply. Field names
are camelCase (``SessionInfo``, ``SimplifiedMessage``), errors are
``{"error":{"code","message","timestamp"}}`` with the original codes, and bodies
with ``success: true`` also carry their payload under ``data`` (the published
``@elizaos/api-client`` unwraps ``data``). Where the original is buggy the
documented behaviour is followed; the README's "ElizaOS dialect" section lists
each deviation.

History pages by epoch milliseconds (``before``/``after``, exclusive). The
runtime pages by offset and records timestamps that never decrease along the
log, so a millisecond maps onto an offset by bisection, and a page never ends
inside a millisecond: a message sharing its millisecond with a page's edge is
on that page or wholly on the next, so nothing is skipped or repeated.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway.codec import read_json
from gateway.context import caller
from gateway.errors import GatewayError
from gateway.streams import SSE_HEADERS
from runtime import AsyncRuntime, DomainError, Principal, RuntimeFault

BASE = "/api/messaging/sessions"
UUID_PATTERN = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE
)
LEADING_INTEGER = re.compile(r"^\s*([+-]?\d+)")
MESSAGE_SERVER_ID = "00000000-0000-0000-0000-000000000000"
MAX_CONTENT_LENGTH = 4000
MAX_METADATA_CHARS = 10_240
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
LIST_PAGE = 100
TRANSPORTS = frozenset({"http", "sse", "websocket"})
LEGACY_MODES = {"sync": "http", "stream": "sse", "websocket": "websocket"}
TIMEOUT_FIELDS = {
    "timeoutMinutes": "timeout_minutes",
    "autoRenew": "auto_renew",
    "maxDurationMinutes": "max_duration_minutes",
    "warningThresholdMinutes": "warning_threshold_minutes",
}
STARTED = time.monotonic()

# sessiond code -> (ElizaOS code, status); other codes keep their native status
CODES: dict[str, tuple[str, int]] = {
    "not_found": ("SESSION_NOT_FOUND", 404),
    "session_ended": ("SESSION_NOT_FOUND", 404),
    "session_expired": ("SESSION_EXPIRED", 410),
    "agent_not_found": ("AGENT_NOT_FOUND", 404),
    "renewal_refused": ("SESSION_RENEWAL_FAILED", 422),
    "invalid_request": ("VALIDATION_ERROR", 400),
    "invalid_json": ("VALIDATION_ERROR", 400),
    "json_too_deep": ("VALIDATION_ERROR", 400),
    "integer_out_of_range": ("VALIDATION_ERROR", 400),
    "offset_out_of_range": ("VALIDATION_ERROR", 400),
    "metadata_too_large": ("VALIDATION_ERROR", 400),
    "unsupported_media_type": ("VALIDATION_ERROR", 400),
}
STATUS_BY_NATIVE = {
    "conflict": 409,
    "busy": 409,
    "name_taken": 409,
    "payload_too_large": 413,
    "rate_limited": 429,
    "storage_unavailable": 503,
    "storage_full": 507,
    "unavailable": 503,
    "timeout": 504,
}


class ElizaError(Exception):
    """An error in the ElizaOS shape."""

    def __init__(self, code: str, message: str, status: int, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details


def validation(message: str) -> ElizaError:
    """A 400 ``VALIDATION_ERROR``."""
    return ElizaError("VALIDATION_ERROR", message, 400)


def _iso(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _now_iso() -> str:
    return _iso(datetime.now(UTC))


def _translate(error: BaseException, sid: str | None) -> ElizaError:
    code = str(getattr(error, "code", "internal_error"))
    if code == "session_expired":
        expires = getattr(error, "expires_at", None)
        when = _iso(expires) if isinstance(expires, datetime) else "an earlier time"
        details = {"expiresAt": when} if isinstance(expires, datetime) else {}
        return ElizaError(
            "SESSION_EXPIRED", f"Session '{sid}' expired at {when}", 410, **details
        )
    if code in ("not_found", "session_ended"):
        return ElizaError(
            "SESSION_NOT_FOUND", f"Session with ID '{sid}' not found", 404
        )
    if code in CODES:
        eliza_code, status = CODES[code]
        detail = getattr(error, "detail", None) or str(error)
        return ElizaError(eliza_code, detail, status)
    if isinstance(error, DomainError):
        return ElizaError(code.upper(), str(getattr(error, "detail", error)), 400)
    if isinstance(error, RuntimeFault | GatewayError):
        status = STATUS_BY_NATIVE.get(code, 500)
        return ElizaError(code.upper(), str(getattr(error, "detail", error)), status)
    return ElizaError("INTERNAL_SERVER_ERROR", "An unexpected error occurred", 500)


def error_body(error: ElizaError) -> dict[str, Any]:
    """``{"error":{"code","message","timestamp"[,"details"]}}``."""
    body: dict[str, Any] = {
        "code": error.code,
        "message": error.message,
        "timestamp": _now_iso(),
    }
    if error.details:
        body["details"] = error.details
    return {"error": body}


def reply(content: Any, status: int = 200) -> Response:
    """A JSON response; a ``success: true`` body also carries itself under ``data``."""
    if isinstance(content, dict) and content.get("success") is True:
        content = {**content, "data": dict(content)}
    return Response(
        orjson.dumps(content), status_code=status, media_type="application/json"
    )


Handler = Callable[[Request], Awaitable[Response]]


def endpoint(handler: Handler) -> Handler:
    """Answers every error of ``handler`` in the ElizaOS shape."""

    async def handle(request: Request) -> Response:
        try:
            return await handler(request)
        except ElizaError as error:
            failure = error
        except (DomainError, RuntimeFault, GatewayError) as error:
            failure = _translate(error, request.path_params.get("id"))
        return Response(
            orjson.dumps(error_body(failure)),
            status_code=failure.status,
            media_type="application/json",
        )

    handle.__name__ = handler.__name__
    handle.__doc__ = handler.__doc__
    return handle


# ---------------------------------------------------------------------- shapes


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def _uuid_text(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


def timeout_config(document: dict[str, Any]) -> dict[str, Any]:
    """The session's policy as ``timeoutConfig``."""
    policy = document["timeout"]
    return {camel: policy[snake] for camel, snake in TIMEOUT_FIELDS.items()}


def session_info(document: dict[str, Any]) -> dict[str, Any]:
    """A runtime session document as ElizaOS ``SessionInfo``."""
    return {
        "sessionId": document["id"],
        "channelId": document.get("channel_id"),
        "agentId": document["agent_id"],
        "userId": document.get("user_id"),
        "createdAt": document["created_at"],
        "lastActivity": document.get("last_activity_at") or document["created_at"],
        "metadata": document.get("metadata") or {},
        "expiresAt": document["expires_at"],
        "timeoutConfig": timeout_config(document),
        "renewalCount": document.get("renewal_count", 0),
        "timeRemaining": document.get("time_remaining_ms", 0),
        "isNearExpiration": bool(document.get("near_expiry")),
    }


def session_status(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The ``sessionStatus`` of a send."""
    return {
        "expiresAt": after["expires_at"],
        "renewalCount": after.get("renewal_count", 0),
        "wasRenewed": after.get("renewal_count", 0) > before.get("renewal_count", 0),
        "isNearExpiration": bool(after.get("near_expiry")),
    }


def author_of(message: dict[str, Any], document: dict[str, Any]) -> str | None:
    """User messages are the session user's, the others the agent's."""
    if message["role"] == "user":
        return cast("str | None", document.get("user_id"))
    return cast("str | None", document.get("agent_id"))


def simplified(message: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """A runtime ``Message`` as ElizaOS ``SimplifiedMessage``."""
    metadata = dict(message.get("metadata") or {})
    if message.get("attachments"):
        metadata["attachments"] = message["attachments"]
    return {
        "id": _uuid_text(message["id"]),
        "content": message["content"],
        "authorId": author_of(message, document),
        "isAgent": message["role"] != "user",
        "createdAt": message["created_at"],
        "metadata": metadata,
    }


def bus_message(message: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """The recorded user message as the original's (snake_case) ``userMessage``."""
    return {
        "id": _uuid_text(message["id"]),
        "channel_id": document.get("channel_id"),
        "message_server_id": MESSAGE_SERVER_ID,
        "author_id": author_of(message, document),
        "content": message["content"],
        "created_at": _ms(message["created_at"]),
        "source_type": "eliza_gui" if message["role"] == "user" else "agent_response",
        "raw_message": {"text": message["content"]},
        "metadata": {**(message.get("metadata") or {}), "sessionId": document["id"]},
        "in_reply_to_message_id": None,
    }


def agent_content(message: dict[str, Any] | None) -> dict[str, Any] | None:
    """The agent's reply as ElizaOS ``Content``."""
    if message is None:
        return None
    return {"text": message["content"], "messageId": _uuid_text(message["id"])}


# ---------------------------------------------------------------------- input


async def body_of(request: Request, *, required: bool = True) -> dict[str, Any]:
    """The JSON object of the request (``{}`` for an empty optional body)."""
    gateway, _, _ = caller(request)
    found = await read_json(request, gateway.limits, required=required)
    if found is None:
        return {}
    if not isinstance(found, dict):
        raise validation("The request body must be a JSON object")
    return found


def check_metadata(value: Any) -> dict[str, Any] | None:
    """``metadata``: an object of at most 10,240 characters as JSON."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise validation("Metadata must be an object")
    if len(orjson.dumps(value)) > MAX_METADATA_CHARS:
        raise validation(f"Metadata exceeds maximum size of {MAX_METADATA_CHARS} bytes")
    return value


def number_of(value: Any) -> int | None:
    """A timeout number given as a JSON number or numeric string (``None``: not one)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    candidate: float
    if isinstance(value, float):
        candidate = value
    elif isinstance(value, str):
        try:
            candidate = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    if candidate != candidate or candidate in (float("inf"), float("-inf")):
        return None
    return int(candidate)


def creation_timeout(value: Any) -> dict[str, Any]:
    """``timeoutConfig`` of a create as runtime timeout fields (numbers the
    runtime clamps; unusable values fall back to the defaults)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise validation("timeoutConfig must be an object")
    found: dict[str, Any] = {}
    for camel, snake in TIMEOUT_FIELDS.items():
        raw = value.get(camel)
        if camel == "autoRenew":
            if isinstance(raw, bool):
                found[snake] = raw
            continue
        number = number_of(raw)
        if number is not None:
            found[snake] = number
    return found


def js_int(raw: str | None) -> int | None:
    """``parseInt(raw, 10)``: the leading integer, ``None`` when there is none."""
    if raw is None:
        return None
    match = LEADING_INTEGER.match(raw)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------- handlers


async def live_document(
    aruntime: AsyncRuntime, sid: str, principal: Principal
) -> dict[str, Any]:
    """The session's document; a deleted (ended) session is not found."""
    document: dict[str, Any] = await aruntime.get(sid, principal=principal)
    if document["status"] == "ended":
        raise ElizaError("SESSION_NOT_FOUND", f"Session with ID '{sid}' not found", 404)
    return document


@endpoint
async def health(request: Request) -> Response:
    """``GET /api/messaging/sessions/health``."""
    _, aruntime, _ = caller(request)
    native = await aruntime.health()
    healthy = native.get("status") == "ok"
    return reply(
        {
            "status": "healthy" if healthy else "unhealthy",
            "activeSessions": native.get("sessions_active", 0),
            "timestamp": _now_iso(),
            "expiringSoon": native.get("sessions_expiring_soon", 0),
            "uptime": round(time.monotonic() - STARTED, 3),
        },
        200 if healthy else 503,
    )


@endpoint
async def create(request: Request) -> Response:
    """``POST /api/messaging/sessions``: 201 ``SessionInfo``."""
    _, aruntime, principal = caller(request)
    body = await body_of(request)
    agent_id, user_id = body.get("agentId"), body.get("userId")
    if not isinstance(agent_id, str) or not isinstance(user_id, str):
        raise validation("Missing required fields: agentId, userId")
    if not UUID_PATTERN.match(agent_id):
        raise validation("Invalid agentId format")
    if not UUID_PATTERN.match(user_id):
        raise validation("Invalid userId format")
    metadata = check_metadata(body.get("metadata"))
    timeout = creation_timeout(body.get("timeoutConfig"))
    try:
        document = await aruntime.create(
            agent_id,
            principal=principal,
            user_id=user_id,
            channel_id=str(uuid.uuid4()),
            session_id=str(uuid.uuid4()),
            metadata=metadata or {},
            timeout=timeout,
        )
    except RuntimeFault as error:
        if getattr(error, "code", None) == "agent_not_found":
            raise ElizaError(
                "AGENT_NOT_FOUND", f"Agent {agent_id} not found", 404
            ) from None
        raise
    return reply(session_info(document), 201)


@endpoint
async def get_session(request: Request) -> Response:
    """``GET /api/messaging/sessions/{id}``."""
    _, aruntime, principal = caller(request)
    sid = request.path_params["id"]
    return reply(session_info(await live_document(aruntime, sid, principal)))


def transport_of(body: dict[str, Any]) -> str:
    """``transport`` (or the legacy ``mode``); ``websocket`` by default."""
    if body.get("transport") is not None:
        transport = body["transport"]
        if not isinstance(transport, str) or transport not in TRANSPORTS:
            raise validation("Invalid transport. Must be one of: http, sse, websocket")
        return transport
    if body.get("mode") is not None:
        mode = body["mode"]
        if not isinstance(mode, str) or mode not in LEGACY_MODES:
            raise validation("Invalid mode. Must be one of: sync, stream, websocket")
        return LEGACY_MODES[mode]
    return "websocket"


@endpoint
async def send_message(request: Request) -> Response:
    """``POST /api/messaging/sessions/{id}/messages`` (201)."""
    _, aruntime, principal = caller(request)
    sid = request.path_params["id"]
    body = await body_of(request)
    transport = transport_of(body)
    content = body.get("content")
    if not isinstance(content, str):
        raise validation("Content must be a string")
    if not content.strip():
        raise validation("Content cannot be empty")
    if len(content) > MAX_CONTENT_LENGTH:
        raise validation(
            f"Content exceeds maximum length of {MAX_CONTENT_LENGTH} characters"
        )
    metadata = check_metadata(body.get("metadata"))
    attachments = body.get("attachments")
    if attachments is not None and not isinstance(attachments, list):
        raise validation("Attachments must be an array")
    before = await live_document(aruntime, sid, principal)
    arguments: dict[str, Any] = {
        "principal": principal,
        "attachments": attachments,
        "metadata": metadata,
    }
    if transport == "sse":
        return await stream_turn(aruntime, sid, content, before, arguments)
    if transport == "http":
        result = await aruntime.send(sid, content, **arguments)
        after = result["session"]
        return reply(
            {
                "success": True,
                "userMessage": bus_message(result["user_message"], after),
                "agentResponse": agent_content(result.get("reply")),
                "sessionStatus": session_status(before, after),
            },
            201,
        )
    message = await aruntime.submit(sid, content, **arguments)
    after = await aruntime.get(sid, principal=principal)
    return reply(
        {
            "success": True,
            "userMessage": bus_message(message, after),
            "sessionStatus": session_status(before, after),
        },
        201,
    )


def sse(event: str, data: Any) -> bytes:
    """One SSE frame."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def stream_turn(
    aruntime: AsyncRuntime,
    sid: str,
    content: str,
    document: dict[str, Any],
    arguments: dict[str, Any],
) -> Response:
    """``transport: sse``: ``user_message``, ``chunk``…, then ``done`` or ``error``."""
    turn = cast(
        "AsyncGenerator[dict[str, Any], None]",
        aruntime.stream(sid, content, **arguments),
    )
    try:
        first = await turn.__anext__()
    except BaseException:
        await turn.aclose()
        raise

    async def frames() -> AsyncIterator[bytes]:
        index = 0
        try:
            yield sse("user_message", bus_message(first["user_message"], document))
            message_id: str | None = None
            async for event in turn:
                kind = event["type"]
                if kind == "text_delta":
                    chunk = {
                        "messageId": message_id,
                        "chunk": event["text"],
                        "index": index,
                    }
                    index += 1
                    yield sse("chunk", chunk)
                elif kind == "message_stop":
                    message_id = _uuid_text(event["message"]["id"])
                elif kind == "done":
                    yield sse("done", agent_content(event.get("reply")) or {"text": ""})
                    return
        except (DomainError, RuntimeFault) as error:
            yield sse("error", {"error": _translate(error, sid).message})
        finally:
            await turn.aclose()

    return StreamingResponse(
        frames(), media_type="text/event-stream", headers=SSE_HEADERS
    )


class Pager:
    """Pages a session's history by epoch milliseconds over the runtime's
    offset pages (timestamps never decrease along the log)."""

    def __init__(self, aruntime: AsyncRuntime, sid: str, principal: Principal) -> None:
        self.aruntime = aruntime
        self.sid = sid
        self.principal = principal

    async def page(self, **bounds: Any) -> tuple[list[dict[str, Any]], bool]:
        """One native page."""
        found = await self.aruntime.history(
            self.sid, principal=self.principal, **bounds
        )
        return found["messages"], bool(found["has_more"])

    async def below(self, offset: int) -> dict[str, Any] | None:
        """The newest message before ``offset``."""
        messages, _ = await self.page(limit=1, before=offset)
        return messages[0] if messages else None

    async def boundary(self, stamp: int, head: int) -> int | None:
        """An offset before which every message is older than ``stamp`` ms and
        from which none is (``None``: every message is older)."""
        newest = await self.below(head + 1)
        if newest is None or _ms(newest["created_at"]) < stamp:
            return None
        low, high = 0, head + 1  # older-than holds at low, fails at high
        while high - low > 1:
            middle = (low + high) // 2
            found = await self.below(middle)
            if found is None or _ms(found["created_at"]) < stamp:
                low = middle
            else:
                high = middle
        return low

    async def window(
        self, limit: int, *, descending: bool, before: int | None, after: int | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """``limit`` messages from the ``before`` end (descending) or the
        ``after`` end, never ending inside a millisecond; and whether more
        messages lie beyond them in the window."""
        order = "desc" if descending else "asc"
        found, more = await self.page(
            limit=limit + 1, before=before, after=after, order=order
        )
        if len(found) <= limit:
            return found, False
        edge = _ms(found[limit - 1]["created_at"])
        if _ms(found[limit]["created_at"]) != edge:
            return found[:limit], True
        kept = [m for m in found[:limit] if _ms(m["created_at"]) != edge]
        if kept:
            return kept, True
        # the whole page is one millisecond: it takes all of it
        page = list(found[:limit])
        pending = found[limit:]
        while True:
            for message in pending:
                if _ms(message["created_at"]) != edge:
                    return page, True
                page.append(message)
            if not more:
                return page, False
            last = page[-1]["offset"]
            bounds = (
                {"before": last, "after": after}
                if descending
                else {
                    "before": before,
                    "after": last,
                }
            )
            pending, more = await self.page(limit=MAX_LIMIT, order=order, **bounds)


@endpoint
async def messages(request: Request) -> Response:
    """``GET /api/messaging/sessions/{id}/messages?limit&before&after``."""
    _, aruntime, principal = caller(request)
    sid = request.path_params["id"]
    params = request.query_params
    limit = js_int(params.get("limit"))
    limit = DEFAULT_LIMIT if limit is None else max(1, min(MAX_LIMIT, limit))
    stamps: dict[str, int | None] = {}
    for name in ("before", "after"):
        raw = params.get(name)
        stamps[name] = js_int(raw)
        if raw is not None and stamps[name] is None:
            raise validation(
                f"Invalid {name} parameter: must be a timestamp in milliseconds"
            )
    document = await live_document(aruntime, sid, principal)
    pager = Pager(aruntime, sid, principal)
    head = int(document["offset"])
    before_stamp, after_stamp = stamps["before"], stamps["after"]
    upper = None if before_stamp is None else await pager.boundary(before_stamp, head)
    if after_stamp is None:
        found, has_more = await pager.window(
            limit, descending=True, before=upper, after=None
        )
    else:
        start = await pager.boundary(after_stamp + 1, head)
        if start is None or (upper is not None and start >= upper):
            found, has_more = [], False
        else:
            found, has_more = await pager.window(
                limit,
                descending=False,
                before=upper,
                after=start - 1 if start else None,
            )
            found.reverse()
    body: dict[str, Any] = {
        "messages": [simplified(m, document) for m in found],
        "hasMore": has_more,
    }
    if found:
        body["cursors"] = {
            "before": _ms(found[-1]["created_at"]),
            "after": _ms(found[0]["created_at"]),
        }
    return reply(body)


@endpoint
async def renew(request: Request) -> Response:
    """``POST /api/messaging/sessions/{id}/renew``."""
    _, aruntime, principal = caller(request)
    sid = request.path_params["id"]
    await live_document(aruntime, sid, principal)
    return reply(session_info(await aruntime.renew(sid, principal=principal)))


@endpoint
async def heartbeat(request: Request) -> Response:
    """``POST /api/messaging/sessions/{id}/heartbeat``."""
    _, aruntime, principal = caller(request)
    sid = request.path_params["id"]
    await live_document(aruntime, sid, principal)
    return reply(session_info(await aruntime.heartbeat(sid, principal=principal)))


@endpoint
async def update_timeout(request: Request) -> Response:
    """``PATCH /api/messaging/sessions/{id}/timeout``: only the named fields change."""
    _, aruntime, principal = caller(request)
    sid = request.path_params["id"]
    body = await body_of(request)
    changes: dict[str, Any] = {}
    for camel, snake in TIMEOUT_FIELDS.items():
        raw = body.get(camel)
        if raw is None:
            continue
        if camel == "autoRenew":
            if not isinstance(raw, bool):
                raise validation("autoRenew must be a boolean")
            changes[snake] = raw
            continue
        number = number_of(raw)
        if number is None:
            raise validation(f"{camel} must be a number")
        changes[snake] = number
    await live_document(aruntime, sid, principal)
    document = await aruntime.update_timeout(sid, principal=principal, **changes)
    return reply(session_info(document))


@endpoint
async def delete(request: Request) -> Response:
    """``DELETE /api/messaging/sessions/{id}`` (also an expired session)."""
    _, aruntime, principal = caller(request)
    sid = request.path_params["id"]
    try:
        await live_document(aruntime, sid, principal)
    except DomainError as error:
        if getattr(error, "code", None) != "session_expired":
            raise
    await aruntime.delete(sid, principal=principal)
    return reply({"success": True, "message": f"Session {sid} deleted successfully"})


@endpoint
async def list_sessions(request: Request) -> Response:
    """``GET /api/messaging/sessions``: the caller's unexpired sessions, with stats."""
    _, aruntime, principal = caller(request)
    sessions: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await aruntime.list(
            principal=principal, status="active", limit=LIST_PAGE, cursor=cursor
        )
        sessions.extend(
            s for s in page["sessions"] if s.get("time_remaining_ms", 0) > 0
        )
        cursor = page.get("next_cursor")
        if not cursor:
            break
    counts = await aruntime.counts(principal=principal)
    expired = (
        int(counts.get("expired", 0)) + int(counts.get("active", 0)) - len(sessions)
    )
    return reply(
        {
            "sessions": [session_info(s) for s in sessions],
            "total": len(sessions),
            "stats": {
                "totalSessions": len(sessions) + expired,
                "activeSessions": len(sessions),
                "expiredSessions": expired,
            },
        }
    )


ROUTES: list[BaseRoute] = [
    Route(BASE + "/health", health, methods=["GET"]),
    Route(BASE, create, methods=["POST"]),
    Route(BASE, list_sessions, methods=["GET"]),
    Route(BASE + "/{id}", get_session, methods=["GET"]),
    Route(BASE + "/{id}", delete, methods=["DELETE"]),
    Route(BASE + "/{id}/messages", send_message, methods=["POST"]),
    Route(BASE + "/{id}/messages", messages, methods=["GET"]),
    Route(BASE + "/{id}/renew", renew, methods=["POST"]),
    Route(BASE + "/{id}/heartbeat", heartbeat, methods=["POST"]),
    Route(BASE + "/{id}/timeout", update_timeout, methods=["PATCH"]),
]
