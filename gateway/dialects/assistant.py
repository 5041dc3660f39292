"""The kcosr/assistant sessions plugin: ``POST /api/plugins/sessions/operations/<op>``.

A thin mapping onto ``runtime.Runtime`` (see reference/dialects.md and the
README's "assistant plugin dialect" section for every deviation):

- arguments are the JSON body, then the query string for keys the body lacks,
  coerced by each operation's schema as the original does (``"30"`` → 30,
  ``"true"`` → true, ``"null"`` → null, a JSON string → object);
- success is ``{"ok": true, "result": …}`` (201 on ``create``), failure
  ``{"error": message, "code": code}`` with ``invalid_arguments`` → 400,
  ``*not_found`` → 404, ``session_busy`` → 409;
- ``events`` is the session's visible conversation (so ``clear`` and ``delete``
  empty it) as the plugin's chat events; the audit log stays in the native API;
- ``message`` runs the turn in the background (``async``) or waits for it
  (``sync``) with the ``reject`` concurrency policy (``busy`` while a turn
  runs, decided by the runtime); a sync timeout cancels the run (the runtime
  records it cancelled, closes the agent's generator and frees the session)
  before answering ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.codec import JSONResponse, read_body
from gateway.context import caller
from gateway.errors import STATUS_BY_CODE, GatewayError, log_unexpected
from runtime import (
    AgentNotFoundError,
    AsyncRuntime,
    DomainError,
    NameTakenError,
    Principal,
    RuntimeFault,
    SessionExistsError,
    TurnTimeoutError,
    WebhookEvent,
)

logger = logging.getLogger(__name__)

PREFIX = "/api/plugins/sessions/operations"
SESSION_ID_MAX = 128
SNIPPET_MAX = 120
SNIPPET_CUT = 117
RESPONSE_MAX_BYTES = 10_000
DEFAULT_TIMEOUT_SECONDS = 300
TIMEOUT_GRACE_SECONDS = 5
REJECT = "reject"
LIST_PAGE = 100
TURN_ENDED_EVENT = "turn_ended"
WEBHOOK_FORMAT = "assistant"
"""The payload format of the plugin's completion callback (see
:func:`webhook_payload`), registered with the runtime by the app."""
BUSY_MESSAGE = (
    "Agent is currently processing another message. "
    "Please wait or try a different session."
)
# Ask for the longest idle timeout and lifetime the server allows (clamped).
LONGEST_TIMEOUT = {"timeout_minutes": 10**9, "max_duration_minutes": 10**9}

# ------------------------------------------------------------------ errors


class PluginError(Exception):
    """An error answered in the plugin's envelope."""

    def __init__(self, message: str, code: str | None = "invalid_arguments") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def status_of(code: str | None) -> int:
    """The original's status mapping, with sessiond's own codes kept."""
    if code == "invalid_arguments":
        return 400
    if code == "session_busy":
        return 409
    if code is not None and (code == "not_found" or code.endswith("_not_found")):
        return 404
    return STATUS_BY_CODE.get(code or "", 500)


# sessiond codes → the plugin's codes
PLUGIN_CODES: Mapping[str, str] = {
    "invalid_request": "invalid_arguments",
    "invalid_json": "invalid_arguments",
    "json_too_deep": "invalid_arguments",
    "integer_out_of_range": "invalid_arguments",
    "agent_not_found": "invalid_arguments",
    "name_taken": "invalid_arguments",
    "conflict": "invalid_arguments",
    "metadata_too_large": "invalid_arguments",
    "not_found": "session_not_found",
    "session_ended": "session_not_found",
    "busy": "session_busy",
}


def envelope_error(
    message: str, code: str | None, status: int | None = None
) -> Response:
    """``{"error", "code"}`` (``code`` left out when there is none)."""
    body: dict[str, Any] = {"error": message}
    if code is not None:
        body["code"] = code
    return JSONResponse(body, status_code=status or status_of(code))


def error_of(error: BaseException) -> Response:
    """The envelope of a gateway or runtime error."""
    if isinstance(error, PluginError):
        # the transport's own errors (content type, JSON) carry no code: 400
        return envelope_error(
            error.message, error.code, 400 if error.code is None else None
        )
    code = str(getattr(error, "code", "internal_error"))
    detail = str(getattr(error, "detail", "") or code)
    plugin_code = PLUGIN_CODES.get(code, code)
    if plugin_code == "session_not_found":
        detail = "Session not found"
    return envelope_error(detail, plugin_code)


# ------------------------------------------------------------------ arguments

Schema = Mapping[str, tuple[str, bool]]  # name -> (type, required); "string|null" etc.

SCHEMAS: Mapping[str, Schema] = {
    "list": {},
    "create": {"agentId": ("string", True), "sessionId": ("string", False)},
    "update": {
        "sessionId": ("string", True),
        "name": ("string|null", False),
        "pinnedAt": ("string|null", False),
    },
    "update-attributes": {
        "sessionId": ("string", True),
        "patch": ("object", False),
        "attributes": ("object", False),
    },
    "events": {"sessionId": ("string", True), "after": ("string", False)},
    "message": {
        "sessionId": ("string", True),
        "content": ("string", True),
        "mode": ("string", False),
        "timeout": ("number", False),
        "webhook": ("object", False),
    },
    "clear": {"sessionId": ("string", True)},
    "delete": {"sessionId": ("string", True)},
}


def _coerce(value: Any, kinds: list[str]) -> Any:
    """The schema coercion of one value (unchanged when none applies)."""
    if not isinstance(value, str):
        if (
            "number" in kinds
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            return value
        return value
    text = value.strip()
    if "null" in kinds and text == "null":
        return None
    if "boolean" in kinds and text in ("true", "false"):
        return text == "true"
    if "number" in kinds:
        try:
            number = float(text)
        except ValueError:
            return value
        return int(number) if number.is_integer() else number
    if ("object" in kinds and text.startswith("{")) or (
        "array" in kinds and text.startswith("[")
    ):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return value
    if "array" in kinds:
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _has_type(value: Any, kinds: list[str]) -> bool:
    checks: dict[str, Callable[[Any], bool]] = {
        "string": lambda v: isinstance(v, str),
        "null": lambda v: v is None,
        "boolean": lambda v: isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }
    return any(checks[kind](value) for kind in kinds)


def coerce_arguments(raw: Mapping[str, Any], schema: Schema) -> dict[str, Any]:
    """Coerce ``raw`` by ``schema``, then check required keys and types (all
    errors at once, joined by ``"; "``)."""
    arguments = dict(raw)
    errors: list[str] = []
    for name, (kind, required) in schema.items():
        kinds = kind.split("|")
        if name not in arguments:
            if required:
                errors.append(f"{name} is required")
            continue
        value = _coerce(arguments[name], kinds)
        if value is None and "null" not in kinds:
            if required:
                errors.append(f"{name} is required")
            arguments.pop(name)
            continue
        if not _has_type(value, kinds):
            errors.append(f"{name} has invalid type")
        arguments[name] = value
    if errors:
        raise PluginError("; ".join(errors))
    return arguments


async def read_arguments(request: Request) -> dict[str, Any]:
    """The body (``{}`` when empty), then query parameters it lacks."""
    gateway, _, _ = caller(request)
    raw = await read_body(request, gateway.limits)
    body: Any = {}
    if raw.strip():
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise PluginError("Content-Type must be application/json", None)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise PluginError("Invalid JSON body", None) from None
        if not isinstance(body, dict):
            raise PluginError("Request body must be a JSON object")
    for key, value in request.query_params.items():
        body.setdefault(key, value)
    checked: dict[str, Any] = body
    return checked


# ------------------------------------------------------------------ documents


def _millis(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def snippet(text: str) -> str:
    """``lastSnippet``: the final assistant text, cut to 117 characters and
    ``…`` when longer than 120."""
    return text if len(text) <= SNIPPET_MAX else text[:SNIPPET_CUT] + "…"


def summary(
    document: Mapping[str, Any], last_snippet: str | None = None
) -> dict[str, Any]:
    """A ``SessionSummary`` of a native session document."""
    found: dict[str, Any] = {
        "sessionId": document["id"],
        "agentId": document["agent_id"],
        "createdAt": document["created_at"],
        "updatedAt": document["updated_at"],
    }
    if last_snippet:
        found["lastSnippet"] = last_snippet
    if document.get("pinned_at"):
        found["pinnedAt"] = document["pinned_at"]
    if document.get("name"):
        found["name"] = document["name"]
    if document.get("attributes"):
        found["attributes"] = document["attributes"]
    return found


async def summary_of(
    aruntime: AsyncRuntime, document: Mapping[str, Any], principal: Principal
) -> dict[str, Any]:
    """The summary with ``lastSnippet`` (the newest visible message, when the
    assistant wrote it)."""
    last: str | None = None
    if document.get("message_count"):
        try:
            page = await aruntime.history(document["id"], principal=principal, limit=1)
        except (DomainError, RuntimeFault):
            page = {"messages": []}
        newest = page["messages"][:1]
        if newest and newest[0]["role"] == "assistant":
            last = snippet(newest[0]["content"])
    return summary(document, last)


def chat_events(
    session_id: str, messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The visible conversation as the plugin's ``ChatEvent`` objects; a turn's
    id (``turnId`` and ``responseId``) is the id of the user message that opened
    it, as ``message`` answers it."""
    events: list[dict[str, Any]] = []
    turn: str | None = None
    for message in messages:
        role = message["role"]
        if role == "user":
            turn = message["id"]
        event: dict[str, Any] = {
            "id": message["id"],
            "timestamp": _millis(message["created_at"]),
            "sessionId": session_id,
            "turnId": turn or message["id"],
        }
        if role == "user":
            event.update(type="user_message", payload={"text": message["content"]})
        elif role == "assistant":
            event.update(
                responseId=turn or message["id"],
                type="assistant_done",
                payload={"text": message["content"]},
            )
        else:
            event.update(
                type="agent_message", payload={"text": message["content"], "role": role}
            )
        events.append(event)
    return events


def truncate_utf8(text: str, limit: int = RESPONSE_MAX_BYTES) -> tuple[str, bool]:
    """``text`` cut to ``limit`` UTF-8 bytes (never inside a character)."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text, False
    return encoded[:limit].decode(errors="ignore"), True


# ------------------------------------------------------------------ turns in flight


@dataclass
class Turns:
    """The background tasks that run the dialect's turns (whether a session is
    busy is the runtime's to say: the ``reject`` policy)."""

    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def start(self, coroutine: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``coroutine`` in the background, keeping a reference to it."""
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            logger.warning(
                "assistant dialect turn failed", extra={"error": type(error).__name__}
            )


def turns_of(request: Request) -> Turns:
    """The app's :class:`Turns`."""
    state = request.app.state
    found = getattr(state, "assistant_turns", None)
    if found is None:
        found = Turns()
        state.assistant_turns = found
    return found


# ------------------------------------------------------------------ operations


async def live_session(
    aruntime: AsyncRuntime, session_id: str, principal: Principal
) -> dict[str, Any]:
    """The session, which a deleted (ended) one is not."""
    document: dict[str, Any] = await aruntime.get(session_id, principal=principal)
    if document["status"] == "ended":
        raise PluginError("Session not found", "session_not_found")
    return document


async def op_list(request: Request, _arguments: dict[str, Any]) -> Any:
    """Every live session of the caller."""
    _, aruntime, principal = caller(request)
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
    return {"sessions": [await summary_of(aruntime, d, principal) for d in documents]}


async def op_create(request: Request, args: dict[str, Any]) -> Any:
    """Create (or, for the same id and agent, find) a session."""
    _, aruntime, principal = caller(request)
    agent_id = args["agentId"].strip()
    if not agent_id:
        raise PluginError("agentId is required")
    session_id = args.get("sessionId")
    if session_id is not None:
        session_id = session_id.strip()
        if not session_id or len(session_id) > SESSION_ID_MAX:
            raise PluginError(f"sessionId must be 1 to {SESSION_ID_MAX} characters")
        if not all(c.isascii() and (c.isalnum() or c in "_-") for c in session_id):
            raise PluginError("sessionId may contain only letters, digits, '_' and '-'")
    try:
        document, _ = await aruntime.open(
            agent_id,
            principal=principal,
            session_id=session_id,
            timeout=LONGEST_TIMEOUT,
            concurrency="reject",
        )
    except AgentNotFoundError:
        raise PluginError(f"Unknown agent: {agent_id}") from None
    except SessionExistsError:
        raise PluginError(await _taken(aruntime, session_id or "", principal)) from None
    if document["status"] != "active":
        raise PluginError(f'Session "{document["id"]}" was deleted or has expired')
    return await summary_of(aruntime, document, principal)


async def _taken(aruntime: AsyncRuntime, session_id: str, principal: Principal) -> str:
    try:
        other = await aruntime.get(session_id, principal=principal)
    except (DomainError, RuntimeFault):
        return f'Session "{session_id}" already exists'
    return f'Session "{session_id}" already belongs to agent "{other["agent_id"]}"'


async def op_update(request: Request, args: dict[str, Any]) -> Any:
    """Rename and/or pin."""
    _, aruntime, principal = caller(request)
    if "name" not in args and "pinnedAt" not in args:
        raise PluginError("Missing name or pinnedAt")
    changes: dict[str, Any] = {}
    if "name" in args:
        name = args["name"]
        if name is not None and not name.strip():
            raise PluginError("name must not be empty")
        changes["name"] = name
    if "pinnedAt" in args:
        changes["pinned"] = args["pinnedAt"] is not None
    await live_session(aruntime, args["sessionId"], principal)
    try:
        document = await aruntime.update(
            args["sessionId"], principal=principal, **changes
        )
    except NameTakenError:
        raise PluginError(
            f'Session name "{changes["name"].strip()}" is already in use'
        ) from None
    return await summary_of(aruntime, document, principal)


def check_core_attributes(patch: Mapping[str, Any]) -> None:
    """The original's checks on the ``core`` attributes."""
    core = patch.get("core")
    if core is None:
        return
    if not isinstance(core, dict):
        raise PluginError("core must be an object")
    working = core.get("workingDir")
    if working is not None and not (
        isinstance(working, str) and working.startswith("/")
    ):
        raise PluginError("core.workingDir must be an absolute path")
    for key in ("activeBranch", "lastActiveAt"):
        if core.get(key) is not None and not isinstance(core[key], str):
            raise PluginError(f"core.{key} must be a string")


async def op_update_attributes(request: Request, args: dict[str, Any]) -> Any:
    """Deep-merge a patch into the attributes (``null`` deletes a key)."""
    _, aruntime, principal = caller(request)
    patch = args.get("patch", args.get("attributes"))
    if not isinstance(patch, dict):
        raise PluginError("patch must be an object")
    check_core_attributes(patch)
    await live_session(aruntime, args["sessionId"], principal)
    document = await aruntime.patch_attributes(
        args["sessionId"], patch, principal=principal
    )
    return await summary_of(aruntime, document, principal)


async def op_events(request: Request, args: dict[str, Any]) -> Any:
    """The conversation since the last clear, after the event ``after``
    (exclusive; an unknown id returns every event)."""
    _, aruntime, principal = caller(request)
    session_id = args["sessionId"]
    await live_session(aruntime, session_id, principal)
    messages = await aruntime.messages(session_id, principal=principal)
    events = chat_events(session_id, messages)
    after = args.get("after")
    ids = [event["id"] for event in events]
    if after is not None and after in ids:
        events = events[ids.index(after) + 1 :]
    return {"sessionId": session_id, "events": events}


async def op_clear(request: Request, args: dict[str, Any]) -> Any:
    """Empty the conversation (the session and its audit log remain)."""
    _, aruntime, principal = caller(request)
    await live_session(aruntime, args["sessionId"], principal)
    document = await aruntime.clear(args["sessionId"], principal=principal)
    return {
        "sessionId": document["id"],
        "cleared": True,
        "updatedAt": document["updated_at"],
    }


async def op_delete(request: Request, args: dict[str, Any]) -> Any:
    """End the session (its audit log remains in the native API)."""
    _, aruntime, principal = caller(request)
    await live_session(aruntime, args["sessionId"], principal)
    document = await aruntime.delete(args["sessionId"], principal=principal)
    return {
        "sessionId": document["id"],
        "deleted": True,
        "updatedAt": document["updated_at"],
    }


@dataclass
class MessageRequest:
    """A checked ``message`` call."""

    session_id: str
    content: str
    mode: str
    timeout: int
    webhook: dict[str, Any] | None


def message_request(args: dict[str, Any]) -> MessageRequest:
    """Check the ``message`` arguments as the original does."""
    content = args["content"]
    if not content.strip():
        raise PluginError("content is required")
    mode = args.get("mode", "async")
    if mode not in ("sync", "async"):
        raise PluginError('mode must be "sync" or "async"')
    timeout = args.get("timeout", DEFAULT_TIMEOUT_SECONDS)
    if not math.isfinite(timeout) or timeout <= 0:
        raise PluginError("timeout must be a positive number of seconds")
    webhook = args.get("webhook")
    if webhook is not None:
        url = webhook.get("url")
        if not isinstance(url, str) or not url.strip():
            raise PluginError("webhook.url is required")
        headers = webhook.get("headers") or {}
        if not isinstance(headers, dict) or not all(
            isinstance(v, str) for v in headers.values()
        ):
            raise PluginError("webhook.headers values must be strings")
        webhook = {"url": url.strip(), "headers": headers}
    return MessageRequest(
        session_id=args["sessionId"],
        content=content,
        mode=mode,
        timeout=max(1, math.floor(timeout)),
        webhook=webhook,
    )


async def point_webhook(
    aruntime: AsyncRuntime,
    document: Mapping[str, Any],
    call: MessageRequest,
    principal: Principal,
) -> None:
    """Point the session's durable webhook at this message's (async) one, or
    remove the one an earlier message set."""
    wanted = call.webhook if call.mode == "async" else None
    if wanted is None:
        if document.get("webhook") is not None:
            await aruntime.set_webhook(call.session_id, None, principal=principal)
        return
    await aruntime.set_webhook(
        call.session_id,
        wanted["url"],
        principal=principal,
        headers=wanted["headers"],
        events=[TURN_ENDED_EVENT],
        format=WEBHOOK_FORMAT,
    )


async def op_message(request: Request, args: dict[str, Any]) -> Any:
    """Send a message: ``started`` (async), or ``complete`` / ``timeout`` /
    ``error`` (sync); ``busy`` while the session runs a turn."""
    _, aruntime, principal = caller(request)
    call = message_request(args)
    document = await live_session(aruntime, call.session_id, principal)
    common = {
        "sessionId": call.session_id,
        "sessionName": document.get("name") or call.session_id,
        "agentId": document.get("agent_id"),
        "created": False,
    }
    turns = turns_of(request)
    await point_webhook(aruntime, document, call, principal)
    if call.mode == "async":
        return {**common, **await start_async(aruntime, turns, call, principal)}
    return {**common, **await run_sync(aruntime, turns, call, principal)}


async def start_async(
    aruntime: AsyncRuntime, turns: Turns, call: MessageRequest, principal: Principal
) -> dict[str, Any]:
    """Start the turn in the background; answer once the message is recorded."""
    loop = asyncio.get_running_loop()
    recorded: asyncio.Future[str] = loop.create_future()

    async def run() -> None:
        try:
            async for event in aruntime.stream(
                call.session_id,
                call.content,
                principal=principal,
                concurrency=REJECT,
            ):
                if event["type"] == "message_start" and not recorded.done():
                    recorded.set_result(event["user_message"]["id"])
        except BaseException as error:
            if not recorded.done():
                recorded.set_exception(error)
                return
            raise

    turns.start(run())
    try:
        response_id = await recorded
    except (DomainError, RuntimeFault) as error:
        return _busy_or_error(error)
    return {"status": "started", "responseId": response_id}


def _busy_or_error(error: DomainError | RuntimeFault) -> dict[str, Any]:
    if getattr(error, "code", None) == "busy":
        return {"status": "busy", "code": "session_busy", "message": BUSY_MESSAGE}
    detail = str(getattr(error, "detail", "") or type(error).__name__)
    return {
        "status": "error",
        "responseId": uuid.uuid4().hex,
        "error": detail,
        "durationMs": 0,
    }


async def run_sync(
    aruntime: AsyncRuntime, turns: Turns, call: MessageRequest, principal: Principal
) -> dict[str, Any]:
    """Run the turn and wait for it up to ``timeout`` seconds. The runtime
    cancels the run when the time is up (at once while the agent works; after
    the running tool, which is never cut short) and records it; the answer
    follows. Should a tool hold the turn much longer, the answer goes out
    anyway ``TIMEOUT_GRACE_SECONDS`` later and the turn ends at that tool's end."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = turns.start(
        aruntime.send(
            call.session_id,
            call.content,
            principal=principal,
            timeout=call.timeout,
            concurrency=REJECT,
        )
    )
    try:
        done = await asyncio.wait_for(
            asyncio.shield(task), call.timeout + TIMEOUT_GRACE_SECONDS
        )
    except (TimeoutError, TurnTimeoutError):
        return {
            "status": "timeout",
            "timeoutSeconds": call.timeout,
            "message": f"Request timed out after {call.timeout} seconds",
        }
    except (DomainError, RuntimeFault) as error:
        return _busy_or_error(error)
    except Exception as error:
        return {
            "status": "error",
            "responseId": uuid.uuid4().hex,
            "error": type(error).__name__,
            "durationMs": 0,
        }
    reply = done.get("reply") or {}
    response, truncated = truncate_utf8(reply.get("content") or "")
    tool_calls = [
        {
            "name": str(tc.get("name", "")),
            "durationMs": int(tc.get("duration_ms", 0) or 0),
        }
        for tc in done.get("tool_calls") or []
    ]
    return {
        "status": "complete",
        "responseId": (done.get("user_message") or {}).get("id"),
        "response": response,
        "truncated": truncated,
        "durationMs": int((loop.time() - started) * 1000),
        "toolCallCount": len(tool_calls),
        "toolCalls": tool_calls,
    }


def webhook_payload(delivery: WebhookEvent) -> bytes | None:
    """The plugin's completion callback for a ``turn_ended`` event:
    ``{sessionId, sessionName, agentId, responseId, status, toolCallCount,
    toolCalls, response, truncated, error, durationMs}`` (``status`` is
    ``complete`` or ``error``; a turn interrupted or cancelled is an error)."""
    event = delivery.event
    if event["type"] != TURN_ENDED_EVENT:
        return None
    data = event["data"]
    turn_offset = int(data["turn_offset"])
    session = delivery.session
    reply_offset = data.get("reply_offset")
    # The turn's earlier events are committed; its reply is in this write.
    pending = [e for e in delivery.batch if e["offset"] >= turn_offset]
    first_pending = min((int(e["offset"]) for e in pending), default=turn_offset)
    turn = [*delivery.read(turn_offset - 1, first_pending - 1), *pending]
    opened = next((e for e in turn if e["offset"] == turn_offset), None)
    common = {
        "sessionId": session["id"],
        "sessionName": session.get("name") or session["id"],
        "agentId": session.get("agent_id"),
        "responseId": (opened or {}).get("data", {}).get("message_id"),
    }
    if data["status"] != "completed":
        return orjson.dumps(
            {
                **common,
                "status": "error",
                "toolCallCount": 0,
                "toolCalls": [],
                "response": "",
                "truncated": False,
                "error": data.get("error_code") or data["status"],
                "durationMs": 0,
            }
        )
    reply = next((e for e in turn if e["offset"] == reply_offset), None)
    response, truncated = truncate_utf8(
        str((reply or {}).get("data", {}).get("content") or "")
    )
    return orjson.dumps(
        {
            **common,
            "status": "complete",
            "toolCallCount": int(data.get("tool_calls") or 0),
            "toolCalls": _timed_tool_calls(turn),
            "response": response,
            "truncated": truncated,
            "error": None,
            "durationMs": _millis_between(opened, event),
        }
    )


def _timed_tool_calls(turn: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``[{name, durationMs}]`` of a turn's tool results: from the step that
    asked for each call to its recorded result."""
    asked = {e["offset"]: e for e in turn if e["type"] == "message_appended"}
    calls = []
    for e in turn:
        message = e["data"] if e["type"] == "message_appended" else None
        if message is None or message.get("role") != "tool":
            continue
        metadata = message.get("metadata") or {}
        calls.append(
            {
                "name": str(metadata.get("name", "")),
                "durationMs": _millis_between(asked.get(message.get("reply_to")), e),
            }
        )
    return calls


def _millis_between(earlier: Mapping[str, Any] | None, later: Mapping[str, Any]) -> int:
    if earlier is None:
        return 0
    start = datetime.fromisoformat(str(earlier["at"]).replace("Z", "+00:00"))
    end = datetime.fromisoformat(str(later["at"]).replace("Z", "+00:00"))
    return max(0, int((end - start).total_seconds() * 1000))


Operation = Callable[[Request, dict[str, Any]], Awaitable[Any]]

OPERATIONS: Mapping[str, Operation] = {
    "list": op_list,
    "create": op_create,
    "update": op_update,
    "update-attributes": op_update_attributes,
    "events": op_events,
    "message": op_message,
    "clear": op_clear,
    "delete": op_delete,
}


async def operation(request: Request) -> Response:
    """``POST /api/plugins/sessions/operations/<op>``."""
    name = str(request.path_params["op"])
    handler = OPERATIONS.get(name)
    if handler is None:
        return envelope_error(f"Unknown operation: {name}", "tool_not_found")
    try:
        arguments = coerce_arguments(await read_arguments(request), SCHEMAS[name])
        result = await handler(request, arguments)
    except (PluginError, GatewayError, DomainError, RuntimeFault) as error:
        return error_of(error)
    except Exception as error:
        log_unexpected(error, request.scope)
        return envelope_error("Internal error", "internal_error", 500)
    return JSONResponse(
        {"ok": True, "result": result}, status_code=201 if name == "create" else 200
    )


ROUTES: list[BaseRoute] = [Route(PREFIX + "/{op}", operation, methods=["POST"])]
