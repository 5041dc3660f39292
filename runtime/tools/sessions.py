"""The ``sessions_*`` tools: the assistant sessions plugin's operations as tools
an agent may call, over the runtime and as the principal that owns the calling
session (so an agent never reaches another principal's sessions).

``sessions_message`` runs a turn in another session: ``async`` (default)
records the message and returns at once; ``sync`` waits up to ``timeout``
seconds for the reply (the other turn is cancelled when the time is up). An
agent may not message its own session, whose turn it is running.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime.errors import DomainError, RuntimeFault
from runtime.tools.registry import ToolContext, ToolError, ToolRegistry

SYNC_TIMEOUT_DEFAULT = 60
SYNC_TIMEOUT_MAX = 600
LIST_LIMIT = 100

SESSION_ID = {"type": "string", "minLength": 1, "maxLength": 128}


def _summary(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "session_id": document["id"],
        "agent_id": document["agent_id"],
        "name": document.get("name"),
        "pinned": document.get("pinned_at") is not None,
        "attributes": document.get("attributes") or {},
        "message_count": document.get("message_count", 0),
        "created_at": document["created_at"],
        "updated_at": document["updated_at"],
    }


def _runtime_errors(function: Callable[[dict[str, Any], ToolContext], Any]) -> Any:
    def run(arguments: dict[str, Any], context: ToolContext) -> Any:
        try:
            return function(arguments, context)
        except (DomainError, RuntimeFault) as error:
            raise ToolError(f"{error.code}: {error.detail}") from None

    run.__doc__ = function.__doc__
    return run


def sessions_list(arguments: dict[str, Any], context: ToolContext) -> Any:
    """The caller's live sessions, newest first."""
    page = context.runtime.list(
        principal=context.principal, status="active", limit=LIST_LIMIT
    )
    return {"sessions": [_summary(d) for d in page["sessions"]]}


def sessions_create(arguments: dict[str, Any], context: ToolContext) -> Any:
    """Create a session for an agent."""
    document = context.runtime.create(
        arguments["agent_id"], principal=context.principal, name=arguments.get("name")
    )
    return _summary(document)


def sessions_update(arguments: dict[str, Any], context: ToolContext) -> Any:
    """Rename and/or pin a session."""
    changes: dict[str, Any] = {}
    if "name" in arguments:
        changes["name"] = arguments["name"]
    if "pinned" in arguments:
        changes["pinned"] = arguments["pinned"]
    if not changes:
        msg = "give name and/or pinned"
        raise ToolError(msg)
    document = context.runtime.update(
        arguments["session_id"], principal=context.principal, **changes
    )
    return _summary(document)


def sessions_update_attributes(arguments: dict[str, Any], context: ToolContext) -> Any:
    """Deep-merge a patch into a session's attributes (null deletes a key)."""
    document = context.runtime.patch_attributes(
        arguments["session_id"], arguments["patch"], principal=context.principal
    )
    return _summary(document)


def sessions_events(arguments: dict[str, Any], context: ToolContext) -> Any:
    """A session's latest visible messages, oldest first."""
    page = context.runtime.history(
        arguments["session_id"],
        principal=context.principal,
        limit=arguments.get("limit", 20),
    )
    return {
        "session_id": arguments["session_id"],
        "messages": [
            {"offset": m["offset"], "role": m["role"], "content": m["content"]}
            for m in reversed(page["messages"])
        ],
        "has_more": page["has_more"],
    }


def sessions_message(arguments: dict[str, Any], context: ToolContext) -> Any:
    """Send a message to another session (``async``, or ``sync`` for its reply)."""
    target = arguments["session_id"]
    if target == context.session_id:
        msg = "a session cannot message itself from its own turn"
        raise ToolError(msg)
    if arguments.get("mode", "async") == "async":
        message = context.runtime.submit(
            target, arguments["content"], principal=context.principal
        )
        return {"status": "started", "session_id": target, "offset": message["offset"]}
    result = context.runtime.send(
        target,
        arguments["content"],
        principal=context.principal,
        timeout=float(arguments.get("timeout", SYNC_TIMEOUT_DEFAULT)),
    )
    reply = result.get("reply") or {}
    return {
        "status": result.get("status", "completed"),
        "session_id": target,
        "response": reply.get("content", ""),
        "tool_calls": len(result.get("tool_calls") or []),
        "usage": result.get("usage"),
    }


def sessions_clear(arguments: dict[str, Any], context: ToolContext) -> Any:
    """Empty a session's visible history (its log keeps everything)."""
    document = context.runtime.clear(
        arguments["session_id"], principal=context.principal
    )
    return {"session_id": document["id"], "cleared": True}


def sessions_delete(arguments: dict[str, Any], context: ToolContext) -> Any:
    """End a session (not the calling one)."""
    if arguments["session_id"] == context.session_id:
        msg = "a session cannot delete itself from its own turn"
        raise ToolError(msg)
    document = context.runtime.delete(
        arguments["session_id"], principal=context.principal
    )
    return {"session_id": document["id"], "deleted": True}


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


TOOLS: list[tuple[str, Any, str, dict[str, Any]]] = [
    ("sessions_list", sessions_list, "List your live sessions.", _object({}, [])),
    (
        "sessions_create",
        sessions_create,
        "Create a session with an agent.",
        _object(
            {
                "agent_id": {"type": "string", "minLength": 1},
                "name": {"type": ["string", "null"], "maxLength": 200},
            },
            ["agent_id"],
        ),
    ),
    (
        "sessions_update",
        sessions_update,
        "Rename (null clears the name) and/or pin or unpin a session.",
        _object(
            {
                "session_id": SESSION_ID,
                "name": {"type": ["string", "null"], "maxLength": 200},
                "pinned": {"type": "boolean"},
            },
            ["session_id"],
        ),
    ),
    (
        "sessions_update_attributes",
        sessions_update_attributes,
        "Deep-merge a patch into a session's attributes (null deletes a key).",
        _object(
            {"session_id": SESSION_ID, "patch": {"type": "object"}},
            ["session_id", "patch"],
        ),
    ),
    (
        "sessions_events",
        sessions_events,
        "Read a session's latest messages.",
        _object(
            {
                "session_id": SESSION_ID,
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            },
            ["session_id"],
        ),
    ),
    (
        "sessions_message",
        sessions_message,
        "Send a message to another session; sync mode waits for its reply.",
        _object(
            {
                "session_id": SESSION_ID,
                "content": {"type": "string", "minLength": 1},
                "mode": {"enum": ["sync", "async"]},
                "timeout": {
                    "type": "number",
                    "minimum": 1,
                    "maximum": SYNC_TIMEOUT_MAX,
                },
            },
            ["session_id", "content"],
        ),
    ),
    (
        "sessions_clear",
        sessions_clear,
        "Empty a session's visible history.",
        _object({"session_id": SESSION_ID}, ["session_id"]),
    ),
    (
        "sessions_delete",
        sessions_delete,
        "Delete (end) a session.",
        _object({"session_id": SESSION_ID}, ["session_id"]),
    ),
]


def register_session_tools(registry: ToolRegistry) -> None:
    """Add every ``sessions_*`` tool."""
    for name, function, description, parameters in TOOLS:
        registry.register(
            name,
            _runtime_errors(function),
            description=description,
            parameters=parameters,
        )
