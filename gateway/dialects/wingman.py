"""The wingman dialect (see reference/dialects.md): wingman's session server,
``/sessions``, mapped field by field onto ``runtime.Runtime``.

::

    POST   /sessions                      create (201), body {"work_dir"?, "agent_id"?}
    GET    /sessions                      every live session, newest first, with history
    GET    /sessions/{id}                 one session
    PUT    /sessions/{id}                 {"work_dir"} (null or "" removes it)
    DELETE /sessions/{id}                 {"status": "deleted"}; purged for good
    POST   /sessions/{id}/message         {"agent_id", "message"} -> {"response",
                                          "tool_calls", "usage", "steps"}
    POST   /sessions/{id}/message/stream  the turn as SSE, ending with a ``done`` frame
    GET    /health                        {"status": "ok"}

``work_dir`` lives in the session's ``attributes``. A sessiond session has one
agent, chosen at creation (``agent_id`` on create, default ``echo``); a message's
``agent_id`` may be absent, empty or that agent's id, any other is 400. Errors are
wingman's ``{"error": "..."}`` with sessiond's statuses; an unknown session is 404
``{"error": "session not found: <id>"}``. Turns of one session run one at a time
in arrival order (the runtime's turn order), so concurrent messages lose nothing.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway.codec import JSONResponse, fields, invalid, query, read_json
from gateway.context import caller, gateway_of, session_id
from gateway.errors import GatewayError, log_unexpected, problem_of
from gateway.streams import SSE_HEADERS, frame, paced, start_turn
from runtime import DomainError, RuntimeFault

DEFAULT_AGENT_ID = "echo"
LIST_PAGE = 1000
CREATE_FIELDS = {"work_dir": "string?", "agent_id": "string?"}
UPDATE_FIELDS = {"work_dir": "string?"}
MESSAGE_FIELDS = {"agent_id": "string?", "message": "string?"}
INTERNAL_ERROR = "internal server error"

Handler = Callable[[Request], Awaitable[Response]]


# ---------------------------------------------------------------------- errors


def error_json(status: int, message: str) -> JSONResponse:
    """wingman's error body."""
    return JSONResponse({"error": message}, status_code=status)


FAILED_TURN_CODES = frozenset(
    {"agent_error", "provider_error", "provider_timeout", "provider_unavailable"}
)


def error_of(error: BaseException, sid: str | None) -> tuple[int, str, str]:
    """(status, wingman message, sessiond code) of an error."""
    document = problem_of(error)
    code = str(document["code"])
    if code == "not_found" and sid is not None:
        return 404, f"session not found: {sid}", code
    if code in FAILED_TURN_CODES:
        # wingman answers a failed run 500 "inference failed: ..."
        return 500, f"inference failed: {code}", code
    if code == "internal_error":
        return 500, INTERNAL_ERROR, code
    return int(document["status"]), str(document["detail"]), code


def wingman_errors(handler: Handler) -> Handler:
    """Answer the handler's errors as ``{"error": "..."}``."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        sid = request.path_params.get("id")
        try:
            return await handler(request)
        except (GatewayError, DomainError, RuntimeFault) as error:
            status, message, _ = error_of(error, sid)
            headers = error.headers if isinstance(error, GatewayError) else {}
            response = error_json(status, message)
            response.headers.update(headers)
            return response
        except Exception as error:
            log_unexpected(error, request.scope)
            return error_json(500, INTERNAL_ERROR)

    return wrapped


# ---------------------------------------------------------------------- documents


def history_item(message: Mapping[str, Any]) -> dict[str, Any]:
    """A sessiond message as a wingman history message: text, plus a
    ``tool_use`` block per call of a step; a tool result is a ``user`` message
    with a ``tool_result`` block, as wingman keeps them."""
    metadata = message.get("metadata") or {}
    if message["role"] == "tool":
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": metadata.get("tool_call_id"),
            "content": message["content"],
        }
        if metadata.get("status") != "ok":
            block["is_error"] = True
        return {"role": "user", "content": [block]}
    content: list[dict[str, Any]] = []
    if message["content"] or not metadata.get("tool_calls"):
        content.append({"type": "text", "text": message["content"]})
    for call in metadata.get("tool_calls") or []:
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": call.get("name"),
                "input": parsed(call.get("arguments")),
            }
        )
    return {"role": message["role"], "content": content}


def parsed(arguments: Any) -> Any:
    """A tool call's JSON arguments text as JSON (the text when it is not)."""
    if not isinstance(arguments, str):
        return arguments
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments


def session_json(
    document: Mapping[str, Any], messages: list[dict[str, Any]]
) -> dict[str, Any]:
    """A sessiond session and its visible history as wingman's session JSON."""
    shown: dict[str, Any] = {"id": document["id"]}
    work_dir = (document.get("attributes") or {}).get("work_dir")
    if work_dir:  # wingman's omitempty
        shown["work_dir"] = work_dir
    shown["agent_id"] = document["agent_id"]
    shown["history"] = [history_item(message) for message in messages]
    shown["created_at"] = document["created_at"]
    shown["updated_at"] = document["updated_at"]
    return shown


def tool_call_json(call: Mapping[str, Any]) -> dict[str, Any]:
    """A tool call of the turn with named fields (wingman's ``ToolCallResult``
    had no JSON tags): ``output`` is the result, ``error`` the result of a call
    that failed (``null`` when it did not)."""
    ok = call.get("status") == "ok"
    return {
        "name": call.get("name"),
        "input": parsed(call.get("arguments")),
        "output": call.get("result") if ok else None,
        "error": None if ok else call.get("result"),
    }


def result_json(result: Mapping[str, Any]) -> dict[str, Any]:
    """The runtime's turn result as wingman's message response."""
    reply = result.get("reply") or {}
    return {
        "response": reply.get("content") or "",
        "tool_calls": [tool_call_json(call) for call in result.get("tool_calls") or []],
        "usage": dict(result["usage"]),
        "steps": result["steps"],
    }


def event_json(event: Mapping[str, Any]) -> dict[str, Any]:
    """A turn event of the runtime as wingman's ``StreamEvent`` (``index`` kept
    when 0; the recorded messages stay out, as wingman sends none)."""
    kind = event["type"]
    shown: dict[str, Any] = {"type": kind}
    if kind == "input_json_delta":
        shown.update(
            index=event["index"],
            input_json=event["partial_json"],
            id=event["id"],
            name=event["name"],
        )
        return shown
    for name in ("index", "content_block", "text", "stop_reason", "usage"):
        if name in event:
            shown[name] = event[name]
    return shown


# ---------------------------------------------------------------------- sessions


async def create_session(request: Request) -> Response:
    """``POST /sessions``: 201 with the new session."""
    gateway, aruntime, principal = caller(request)
    query(request, {})
    body = fields(
        await read_json(request, gateway.limits, required=False), CREATE_FIELDS
    )
    work_dir = body.get("work_dir")
    document = await aruntime.create(
        body.get("agent_id") or DEFAULT_AGENT_ID,
        principal=principal,
        attributes={"work_dir": work_dir} if work_dir else None,
    )
    return JSONResponse(session_json(document, []), status_code=201)


async def list_sessions(request: Request) -> Response:
    """``GET /sessions``: every live session of the caller, newest first, each
    with its history."""
    _, aruntime, principal = caller(request)
    query(request, {})
    documents: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await aruntime.list(
            principal=principal, status="active", limit=LIST_PAGE, cursor=cursor
        )
        documents.extend(page["sessions"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    shown = [
        session_json(
            document, await aruntime.messages(document["id"], principal=principal)
        )
        for document in documents
    ]
    return JSONResponse(shown)


async def get_session(request: Request) -> Response:
    """``GET /sessions/{id}``."""
    _, aruntime, principal = caller(request)
    query(request, {})
    sid = session_id(request)
    document = await aruntime.get(sid, principal=principal)
    messages = await aruntime.messages(sid, principal=principal)
    return JSONResponse(session_json(document, messages))


async def update_session(request: Request) -> Response:
    """``PUT /sessions/{id}``: sets ``work_dir`` (null or "" removes it)."""
    gateway, aruntime, principal = caller(request)
    query(request, {})
    sid = session_id(request)
    await aruntime.get(sid, principal=principal)
    body = fields(await read_json(request, gateway.limits), UPDATE_FIELDS)
    if "work_dir" in body:
        document = await aruntime.update(
            sid, principal=principal, attributes={"work_dir": body["work_dir"] or None}
        )
    else:
        document = await aruntime.get(sid, principal=principal)
    messages = await aruntime.messages(sid, principal=principal)
    return JSONResponse(session_json(document, messages))


async def delete_session(request: Request) -> Response:
    """``DELETE /sessions/{id}``: ends and purges the session."""
    _, aruntime, principal = caller(request)
    query(request, {})
    await aruntime.delete(session_id(request), principal=principal, purge=True)
    return JSONResponse({"status": "deleted"})


# ---------------------------------------------------------------------- messages


async def message_arguments(request: Request) -> tuple[str, str]:
    """The checks of both message routes, in wingman's order: the session
    (404), the body, ``message``, then ``agent_id``. Returns (id, message)."""
    gateway, aruntime, principal = caller(request)
    query(request, {})
    sid = session_id(request)
    document = await aruntime.get(sid, principal=principal)
    body = fields(await read_json(request, gateway.limits), MESSAGE_FIELDS)
    message = body.get("message")
    if not message:
        raise invalid("message is required")
    agent_id, own = body.get("agent_id"), document["agent_id"]
    if agent_id and agent_id != own:
        raise invalid(f"agent_id is not this session's agent; the session runs {own}")
    return sid, message


async def send_message(request: Request) -> Response:
    """``POST /sessions/{id}/message``: runs the turn and answers its result."""
    _, aruntime, principal = caller(request)
    sid, message = await message_arguments(request)
    result = await aruntime.send(sid, message, principal=principal)
    return JSONResponse(result_json(result))


async def stream_message(request: Request) -> Response:
    """``POST /sessions/{id}/message/stream``: the turn as SSE. Errors before the
    user message is recorded are JSON responses; later ones an ``error`` frame."""
    gateway, aruntime, principal = caller(request)
    sid, message = await message_arguments(request)
    first, turn = await start_turn(aruntime, sid, message, principal=principal)

    async def body() -> AsyncIterator[bytes]:
        async with contextlib.aclosing(paced(gateway, request, first, turn)) as items:
            async for item in items:
                if isinstance(item, Exception):
                    _, text, code = error_of(item, sid)
                    failure = {"type": "error", "error": text, "code": code}
                    yield frame(failure, event="error")
                    return
                if item is None:
                    yield frame({"type": "ping"}, event="ping")
                    continue
                if item["type"] == "tool_result":
                    continue  # wingman streams no tool results
                if item["type"] == "done":
                    done = result_json(item)
                    yield frame(
                        {"usage": done["usage"], "steps": done["steps"]}, event="done"
                    )
                    return
                yield frame(event_json(item), event=item["type"])

    return StreamingResponse(
        body(), media_type="text/event-stream", headers=SSE_HEADERS
    )


# ---------------------------------------------------------------------- health


async def health(request: Request) -> Response:
    """``GET /health``: ``{"status": "ok"}``, 503 when the store is unreachable."""
    figures = await gateway_of(request).aruntime.health()
    status = str(figures.get("status", "unavailable"))
    return JSONResponse({"status": status}, status_code=200 if status == "ok" else 503)


ROUTES: list[BaseRoute] = [
    Route("/sessions", wingman_errors(create_session), methods=["POST"]),
    Route("/sessions", wingman_errors(list_sessions), methods=["GET"]),
    Route("/sessions/{id}", wingman_errors(get_session), methods=["GET"]),
    Route("/sessions/{id}", wingman_errors(update_session), methods=["PUT"]),
    Route("/sessions/{id}", wingman_errors(delete_session), methods=["DELETE"]),
    Route("/sessions/{id}/message", wingman_errors(send_message), methods=["POST"]),
    Route(
        "/sessions/{id}/message/stream",
        wingman_errors(stream_message),
        methods=["POST"],
    ),
    Route("/health", wingman_errors(health), methods=["GET"]),
]
