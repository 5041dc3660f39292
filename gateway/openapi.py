"""The OpenAPI 3.1 document of the native API, served at ``/openapi.json``.

Built as data here (not generated from handlers) so it is the contract: a test
fails when it and the route table disagree in either direction.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from gateway.idempotency import MAX_KEY_LENGTH
from runtime import MAX_IDLE_MINUTES

VERSION = "0.1.0"
JSON = "application/json"
PROBLEM = "application/problem+json"
SSE = "text/event-stream"

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """``schema`` or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def obj(
    properties: dict[str, Schema],
    required: list[str] | None = None,
    *,
    closed: bool = False,
    description: str | None = None,
) -> Schema:
    """An object schema (``closed``: no other properties, as request bodies)."""
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


STRING: Schema = {"type": "string"}
TIME: Schema = {"type": "string", "format": "date-time"}
OFFSET: Schema = {"type": "integer", "minimum": 0, "maximum": 2**53 - 1}
ANY_OBJECT: Schema = {"type": "object", "additionalProperties": True}
USAGE = obj(
    {"input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}},
    ["input_tokens", "output_tokens"],
)
TIMEOUT_FIELDS: dict[str, Schema] = {
    "timeout_minutes": {"type": "integer"},
    "auto_renew": {"type": "boolean"},
    "max_duration_minutes": {"type": "integer"},
    "warning_threshold_minutes": {"type": "integer"},
}

SCHEMAS: dict[str, Schema] = {
    "Problem": obj(
        {
            "type": STRING,
            "title": STRING,
            "status": {"type": "integer"},
            "code": {
                "type": "string",
                "description": "Stable error code, e.g. not_found, conflict, "
                "invalid_json, payload_too_large.",
            },
            "detail": STRING,
            "current_offset": {**OFFSET, "description": "On conflicts."},
            "expires_at": {**TIME, "description": "On session_expired."},
        },
        ["type", "title", "status", "code", "detail"],
    ),
    "TimeoutPolicy": obj(TIMEOUT_FIELDS, list(TIMEOUT_FIELDS)),
    "Session": obj(
        {
            "id": STRING,
            "agent_id": STRING,
            "user_id": STRING,
            "channel_id": nullable(STRING),
            "peer_id": nullable(STRING),
            "scope_key": nullable(STRING),
            "name": nullable(STRING),
            "pinned_at": nullable(TIME),
            "metadata": ANY_OBJECT,
            "attributes": ANY_OBJECT,
            "status": {"enum": ["active", "expired", "ended"]},
            "offset": OFFSET,
            "head": OFFSET,
            "message_count": {"type": "integer"},
            "created_at": TIME,
            "updated_at": TIME,
            "last_activity_at": nullable(TIME),
            "expires_at": nullable(TIME),
            "renewal_count": {"type": "integer"},
            "timeout": ref("TimeoutPolicy"),
            "concurrency": {"enum": ["enqueue", "reject", "interrupt"]},
            "parent": nullable(
                obj({"session_id": STRING, "offset": OFFSET}, ["session_id", "offset"])
            ),
            "usage": USAGE,
            "time_remaining_ms": {"type": "integer"},
            "near_expiry": {"type": "boolean"},
            "reset_policy": obj(
                {
                    "daily_at": nullable(STRING),
                    "idle_minutes": nullable({"type": "integer"}),
                },
                ["daily_at", "idle_minutes"],
            ),
            "webhook": nullable(
                obj(
                    {
                        "url": STRING,
                        "events": nullable({"type": "array", "items": STRING}),
                        "headers": {"type": "object", "additionalProperties": STRING},
                    },
                    ["url", "headers"],
                )
            ),
        },
        [
            "id",
            "agent_id",
            "user_id",
            "status",
            "offset",
            "head",
            "message_count",
            "created_at",
            "updated_at",
            "timeout",
            "concurrency",
            "metadata",
            "attributes",
        ],
    ),
    "Message": obj(
        {
            "id": STRING,
            "session_id": STRING,
            "offset": OFFSET,
            "role": {"enum": ["user", "assistant", "system", "tool"]},
            "author_id": nullable(STRING),
            "content": STRING,
            "attachments": {"type": "array"},
            "metadata": ANY_OBJECT,
            "reply_to": nullable(OFFSET),
            "usage": nullable(USAGE),
            "created_at": TIME,
        },
        ["id", "session_id", "offset", "role", "content", "created_at"],
    ),
    "Event": obj(
        {"offset": OFFSET, "type": STRING, "at": TIME, "data": ANY_OBJECT},
        ["offset", "type", "at", "data"],
        description="One entry of the session's log (the audit view).",
    ),
    "Checkpoint": obj(
        {
            "id": STRING,
            "name": STRING,
            "description": nullable(STRING),
            "offset": OFFSET,
            "message_count": {"type": "integer"},
            "created_at": TIME,
        },
        ["id", "name", "offset", "message_count", "created_at"],
    ),
    "SessionList": obj(
        {
            "sessions": {"type": "array", "items": ref("Session")},
            "next_cursor": nullable(STRING),
            "total": {"type": "integer"},
        },
        ["sessions", "next_cursor", "total"],
    ),
    "History": obj(
        {
            "messages": {"type": "array", "items": ref("Message")},
            "has_more": {"type": "boolean"},
        },
        ["messages", "has_more"],
    ),
    "EventPage": obj(
        {
            "events": {"type": "array", "items": ref("Event")},
            "has_more": {"type": "boolean"},
        },
        ["events", "has_more"],
    ),
    "CheckpointList": obj(
        {"checkpoints": {"type": "array", "items": ref("Checkpoint")}}, ["checkpoints"]
    ),
    "ToolCallResult": obj(
        {
            "id": STRING,
            "name": STRING,
            "arguments": STRING,
            "result": STRING,
            "status": {"enum": ["ok", "error", "in_doubt"]},
            "duration_ms": {"type": "integer"},
        },
        ["id", "name", "arguments", "result", "status"],
    ),
    "SendResult": obj(
        {
            "user_message": ref("Message"),
            "reply": nullable(ref("Message")),
            "tool_calls": {"type": "array", "items": ref("ToolCallResult")},
            "usage": USAGE,
            "steps": {"type": "integer"},
            "status": {"enum": ["completed", "interrupted", "cancelled"]},
            "stop_reason": nullable(STRING),
            "session": ref("Session"),
        },
        ["user_message", "reply", "tool_calls", "usage", "steps", "session"],
    ),
    "TurnEvent": obj(
        {
            "type": {
                "enum": [
                    "message_start",
                    "content_block_start",
                    "text_delta",
                    "input_json_delta",
                    "content_block_stop",
                    "message_delta",
                    "message_stop",
                    "tool_result",
                    "ping",
                    "error",
                    "done",
                ]
            }
        },
        ["type"],
        description="One SSE event of a streamed turn; the SSE event name is its type. "
        "Per step: `content_block_start` (index 0 text; index 1.. "
        '`{"type": "tool_use", "id", "name"}`), `text_delta`, `input_json_delta` '
        "(index, id, name, partial_json), `content_block_stop`, `message_delta` "
        "(stop_reason, usage), `message_stop` (the recorded message); "
        "`tool_result` (id, name, status, content, message: the recorded tool "
        "message) after each tool ran. `done` carries the SendResult fields, "
        "`error` a Problem as `error` (a failed turn: `agent_error`, "
        "`provider_error`...).",
    ),
    "Branches": obj(
        {
            "session_id": STRING,
            "parent": nullable(obj({"session_id": STRING, "offset": OFFSET})),
            "restores": {
                "type": "array",
                "items": obj(
                    {
                        "offset": OFFSET,
                        "to_offset": OFFSET,
                        "checkpoint_id": nullable(STRING),
                        "message_count": {"type": "integer"},
                        "at": TIME,
                    }
                ),
            },
            "forks": {
                "type": "array",
                "items": obj(
                    {"session_id": STRING, "offset": OFFSET, "created_at": TIME}
                ),
            },
        },
        ["session_id", "parent", "restores", "forks"],
    ),
    "Export": obj(
        {
            "format": STRING,
            "exported_at": TIME,
            "session": ref("Session"),
            "checkpoints": {"type": "array", "items": ref("Checkpoint")},
            "messages": {"type": "array", "items": ref("Message")},
        },
        ["format", "session", "checkpoints", "messages"],
    ),
    "Health": obj(
        {
            "status": {"enum": ["ok", "unavailable"]},
            "store": {"enum": ["ok", "unreachable"]},
            "live_actors": {"type": "integer"},
            "sessions_active": {"type": "integer"},
            "node": STRING,
            "supervisor": {"enum": ["active", "standby", "manual"]},
            "version": STRING,
        },
        ["status", "store", "live_actors", "sessions_active", "version"],
    ),
    "CreateSession": obj(
        {
            "agent_id": {"type": "string", "maxLength": 256},
            "user_id": nullable(STRING),
            "channel_id": nullable(STRING),
            "peer_id": nullable(STRING),
            "scope": nullable({"enum": ["main", "per-peer", "per-channel-peer"]}),
            "group": nullable({"type": "boolean"}),
            "session_id": nullable(
                {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}
            ),
            "name": nullable(STRING),
            "metadata": nullable(ANY_OBJECT),
            "attributes": nullable(ANY_OBJECT),
            "timeout": nullable(obj(TIMEOUT_FIELDS, closed=True)),
            "concurrency": nullable({"enum": ["enqueue", "reject", "interrupt"]}),
        },
        ["agent_id"],
        closed=True,
    ),
    "UpdateSession": obj(
        {
            "name": nullable(STRING),
            "pinned": {"type": "boolean"},
            "attributes": {
                **ANY_OBJECT,
                "description": "Deep merge; null deletes a key.",
            },
            "metadata": ANY_OBJECT,
        },
        closed=True,
    ),
    "SendMessage": obj(
        {
            "content": STRING,
            "role": {"enum": ["user", "assistant", "system", "tool"]},
            "attachments": {"type": "array"},
            "metadata": ANY_OBJECT,
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "Seconds; the turn is cancelled when they pass.",
            },
            "concurrency": {
                "enum": ["enqueue", "reject", "interrupt"],
                "description": "This message's policy while a turn runs "
                "(default: the session's).",
            },
            "on_disconnect": {
                "enum": ["cancel", "continue"],
                "description": "What a caller that hangs up (stream or "
                "blocking call) does to its turn "
                "(default: the server's setting).",
            },
        },
        ["content"],
        closed=True,
    ),
    "SaveCheckpoint": obj(
        {"name": {"type": "string", "pattern": "\\S"}, "description": nullable(STRING)},
        ["name"],
        closed=True,
    ),
    "Rewind": obj({"offset": OFFSET}, ["offset"], closed=True),
    "Fork": obj(
        {
            "offset": nullable(OFFSET),
            "session_id": nullable(
                {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}
            ),
        },
        closed=True,
    ),
    "TimeoutChange": obj(
        {name: nullable(schema) for name, schema in TIMEOUT_FIELDS.items()}, closed=True
    ),
    "Empty": obj({}, closed=True),
    "Summarize": obj(
        {
            "to_offset": nullable(
                {**OFFSET, "description": "The last message to fold (default: all)."}
            )
        },
        closed=True,
    ),
    "SummaryRange": obj(
        {
            "offset": {**OFFSET, "description": "The summary's own offset."},
            "from_offset": OFFSET,
            "to_offset": OFFSET,
            "tokens": {"type": "integer"},
        },
        ["offset", "from_offset", "to_offset", "tokens"],
    ),
    "Summary": obj(
        {
            "offset": OFFSET,
            "from_offset": OFFSET,
            "to_offset": OFFSET,
            "text": STRING,
            "tokens": {"type": "integer"},
            "counter": STRING,
            "model": nullable(STRING),
            "usage": nullable(USAGE),
            "created_at": TIME,
        },
        ["offset", "from_offset", "to_offset", "text", "tokens", "counter"],
        description="A context summary standing for the visible messages "
        "from_offset..to_offset (they stay in the log).",
    ),
    "ContextWindow": obj(
        {
            "agent_id": STRING,
            "strategy": {"enum": ["recent", "smart", "summarize"]},
            "counter": STRING,
            "max_tokens": {"type": "integer"},
            "reserve_output_tokens": {"type": "integer"},
            "budget": {
                "type": "integer",
                "description": "Tokens the history may take (after the reserve "
                "for the reply and the system prompt).",
            },
            "tokens": {"type": "integer"},
            "messages": {
                "type": "array",
                "items": ref("Message"),
                "description": "What the agent is handed, oldest first; a summary "
                "is a system message with metadata.summary {from_offset, to_offset}.",
            },
            "dropped": {
                "type": "integer",
                "description": "Visible messages neither shown nor summarized.",
            },
            "summary": nullable(ref("SummaryRange")),
            "summaries": {"type": "array", "items": ref("SummaryRange")},
        },
        [
            "agent_id",
            "strategy",
            "counter",
            "max_tokens",
            "reserve_output_tokens",
            "budget",
            "tokens",
            "messages",
            "dropped",
            "summary",
            "summaries",
        ],
    ),
    "WebhookSet": obj(
        {
            "url": nullable({"type": "string", "format": "uri"}),
            "headers": nullable({"type": "object", "additionalProperties": STRING}),
            "events": nullable({"type": "array", "items": STRING}),
        },
        ["url"],
        closed=True,
    ),
    "ResetPolicyChange": obj(
        {
            "daily_at": nullable(
                {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"}
            ),
            "idle_minutes": nullable(
                {"type": "integer", "minimum": 1, "maximum": MAX_IDLE_MINUTES}
            ),
        },
        closed=True,
    ),
    "WebhookDeliveries": obj(
        {
            "deliveries": {
                "type": "array",
                "items": obj(
                    {
                        "id": {"type": "integer"},
                        "offset": OFFSET,
                        "url": STRING,
                        "status": {"enum": ["pending", "delivered", "failed"]},
                        "attempts": {
                            "type": "array",
                            "items": obj(
                                {
                                    "attempt": {"type": "integer"},
                                    "at": TIME,
                                    "status_code": nullable({"type": "integer"}),
                                    "error": nullable(STRING),
                                    "duration_ms": {"type": "integer"},
                                },
                                ["attempt", "at"],
                            ),
                        },
                        "next_attempt_at": nullable(TIME),
                        "last_status": nullable({"type": "integer"}),
                        "last_error": nullable(STRING),
                    },
                    ["id", "offset", "url", "status", "attempts"],
                ),
            }
        },
        ["deliveries"],
    ),
    "SocketClientMessage": obj(
        {
            "type": {"enum": ["message", "ping"]},
            "content": STRING,
            "role": STRING,
            "attachments": {"type": "array"},
            "metadata": ANY_OBJECT,
            "idempotency_key": STRING,
            "expected_offset": OFFSET,
        },
        ["type"],
        closed=True,
    ),
    "SocketServerMessage": obj(
        {
            "type": {"enum": ["event", "delta", "accepted", "error", "ping", "pong"]},
            "offset": OFFSET,
            "event": ANY_OBJECT,
            "message": ref("Message"),
            "error": ref("Problem"),
        },
        ["type"],
    ),
}

# --- parameters

PARAMETERS: dict[str, Schema] = {
    "id": {"name": "id", "in": "path", "required": True, "schema": STRING},
    "cid": {"name": "cid", "in": "path", "required": True, "schema": STRING},
    "offset": {"name": "offset", "in": "path", "required": True, "schema": OFFSET},
    "IfMatch": {
        "name": "If-Match",
        "in": "header",
        "schema": {"type": "string", "pattern": '^(W/)?("[0-9]{1,16}"|[0-9]{1,16})$'},
        "description": "The offset the session must be at (409 otherwise).",
    },
    "IdempotencyKey": {
        "name": "Idempotency-Key",
        "in": "header",
        "schema": {"type": "string", "pattern": f"^[!-~]{{1,{MAX_KEY_LENGTH}}}$"},
        "description": "A retry with the same key returns the first result, "
        "writes nothing.",
    },
}


def param(name: str) -> Schema:
    """A reference to a component parameter."""
    return {"$ref": f"#/components/parameters/{name}"}


def query_param(name: str, schema: Schema, description: str | None = None) -> Schema:
    """A query parameter."""
    found: Schema = {"name": name, "in": "query", "schema": schema}
    if description:
        found["description"] = description
    return found


def content(schema: Schema, media_type: str = JSON) -> Schema:
    """A content map."""
    return {media_type: {"schema": schema}}


def ok(schema_name: str, description: str = "OK") -> Schema:
    """A JSON response of a component."""
    return {"description": description, "content": content(ref(schema_name))}


ERRORS: Schema = {
    "default": {
        "description": "An error (problem+json).",
        "content": content(ref("Problem"), PROBLEM),
    }
}
LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000}


def operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Schema],
    *,
    parameters: list[Schema] | None = None,
    body: str | None = None,
    body_required: bool = True,
    write: bool = False,
) -> Schema:
    """One operation; every one may answer a problem."""
    found: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {**responses, **ERRORS},
    }
    params = list(parameters or [])
    if write:
        params += [param("IfMatch"), param("IdempotencyKey")]
    if params:
        found["parameters"] = params
    if body:
        found["requestBody"] = {
            "required": body_required,
            "content": content(ref(body)),
        }
    return found


SESSION_OK = ok("Session")


def paths() -> dict[str, Schema]:
    """Every path and operation."""
    sid = [param("id")]
    return {
        "/v1/sessions": {
            "post": operation(
                "createSession",
                "Create a session (get-or-create with a scope or a known session_id).",
                {
                    "201": ok("Session", "Created"),
                    "200": ok("Session", "Found (get-or-create)"),
                },
                body="CreateSession",
                write=True,
            ),
            "get": operation(
                "listSessions",
                "List the caller's sessions, newest first.",
                {"200": ok("SessionList")},
                parameters=[
                    query_param("user_id", STRING),
                    query_param("agent_id", STRING),
                    query_param("status", {"enum": ["active", "expired", "ended"]}),
                    query_param("pinned", {"type": "boolean"}),
                    query_param("q", STRING, "Matches the name."),
                    query_param("limit", LIMIT),
                    query_param("cursor", {"type": "string", "minLength": 1}),
                ],
            ),
        },
        "/v1/sessions/{id}": {
            "parameters": sid,
            "get": operation("getSession", "One session.", {"200": SESSION_OK}),
            "patch": operation(
                "updateSession",
                "Rename, pin, merge attributes, replace metadata.",
                {"200": SESSION_OK},
                body="UpdateSession",
                write=True,
            ),
            "delete": operation(
                "deleteSession",
                "End the session (purge=true also makes its content unrecoverable).",
                {"200": SESSION_OK},
                parameters=[query_param("purge", {"type": "boolean"})],
                write=True,
            ),
        },
        "/v1/sessions/{id}/messages": {
            "parameters": sid,
            "post": operation(
                "sendMessage",
                "Send a message: wait for the reply (JSON), stream the turn "
                "(Accept: text/event-stream), or accept it (wait=false, 202).",
                {
                    "200": {
                        "description": "The turn's result, or its SSE stream.",
                        "content": {
                            **content(ref("SendResult")),
                            **content(ref("TurnEvent"), SSE),
                        },
                    },
                    "202": ok(
                        "Message", "Recorded; the reply follows on the event stream."
                    ),
                },
                parameters=[query_param("wait", {"type": "boolean"})],
                body="SendMessage",
                write=True,
            ),
            "get": operation(
                "getHistory",
                "A page of the visible history.",
                {"200": ok("History")},
                parameters=[
                    query_param("limit", LIMIT),
                    query_param("before", OFFSET, "Exclusive offset."),
                    query_param("after", OFFSET, "Exclusive offset."),
                    query_param("order", {"enum": ["asc", "desc"]}),
                ],
            ),
        },
        "/v1/sessions/{id}/events": {
            "parameters": sid,
            "get": operation(
                "getEvents",
                "The session's log; with Accept: text/event-stream a live tail "
                "(SSE id = offset, resumable with Last-Event-ID).",
                {
                    "200": {
                        "description": "A page of the log, or its live SSE tail.",
                        "content": {
                            **content(ref("EventPage")),
                            **content(ref("Event"), SSE),
                        },
                    },
                    "204": {
                        "description": "The session is over and the client has it all."
                    },
                },
                parameters=[
                    query_param("after", OFFSET),
                    query_param("limit", LIMIT, "JSON only."),
                    {"name": "Last-Event-ID", "in": "header", "schema": STRING},
                ],
            ),
        },
        "/v1/sessions/{id}/state": {
            "parameters": sid,
            "get": operation(
                "getStateAt",
                "The session as it was at an offset (default: now).",
                {"200": SESSION_OK},
                parameters=[query_param("offset", OFFSET)],
            ),
        },
        "/v1/sessions/{id}/checkpoints": {
            "parameters": sid,
            "post": operation(
                "saveCheckpoint",
                "Save a checkpoint at the current offset.",
                {"201": ok("Checkpoint", "Created")},
                body="SaveCheckpoint",
                write=True,
            ),
            "get": operation(
                "listCheckpoints", "The checkpoints.", {"200": ok("CheckpointList")}
            ),
        },
        "/v1/sessions/{id}/checkpoints/{cid}/restore": {
            "parameters": [param("id"), param("cid")],
            "post": operation(
                "restoreCheckpoint",
                "Move the head back to the checkpoint (non-destructive).",
                {"200": SESSION_OK},
                body="Empty",
                body_required=False,
                write=True,
            ),
        },
        "/v1/sessions/{id}/checkpoints/{cid}": {
            "parameters": [param("id"), param("cid")],
            "delete": operation(
                "deleteCheckpoint",
                "Delete a checkpoint.",
                {"204": {"description": "Deleted."}},
                write=True,
            ),
        },
        "/v1/sessions/{id}/rewind": {
            "parameters": sid,
            "post": operation(
                "rewind",
                "Move the head back to an offset.",
                {"200": SESSION_OK},
                body="Rewind",
                write=True,
            ),
        },
        "/v1/sessions/{id}/fork": {
            "parameters": sid,
            "post": operation(
                "fork",
                "A new session: this one's history at the offset (default head).",
                {"201": ok("Session", "Created")},
                body="Fork",
                body_required=False,
                write=True,
            ),
        },
        "/v1/sessions/{id}/branches": {
            "parameters": sid,
            "get": operation(
                "getBranches", "Restores and forks.", {"200": ok("Branches")}
            ),
        },
        "/v1/sessions/{id}/clear": {
            "parameters": sid,
            "post": operation(
                "clear",
                "Empty the visible history, keep the session.",
                {"200": SESSION_OK},
                body="Empty",
                body_required=False,
                write=True,
            ),
        },
        "/v1/sessions/{id}/reset": {
            "parameters": sid,
            "post": operation(
                "reset",
                "End it and start a fresh session on the same scope key.",
                {"200": ok("Session", "The new session.")},
                body="Empty",
                body_required=False,
                write=True,
            ),
        },
        "/v1/sessions/{id}/export": {
            "parameters": sid,
            "get": operation(
                "export",
                "Export the session with its metadata.",
                {
                    "200": {
                        "description": "JSON, markdown or text.",
                        "content": {
                            **content(ref("Export")),
                            "text/markdown": {"schema": STRING},
                            "text/plain": {"schema": STRING},
                        },
                    }
                },
                parameters=[
                    query_param("format", {"enum": ["json", "markdown", "text"]})
                ],
            ),
        },
        "/v1/sessions/{id}/heartbeat": {
            "parameters": sid,
            "post": operation(
                "heartbeat",
                "Record activity (renews when auto_renew).",
                {"200": SESSION_OK},
                body="Empty",
                body_required=False,
                write=True,
            ),
        },
        "/v1/sessions/{id}/renew": {
            "parameters": sid,
            "post": operation(
                "renew",
                "Renew now; 422 renewal_refused past the maximum duration.",
                {"200": SESSION_OK},
                body="Empty",
                body_required=False,
                write=True,
            ),
        },
        "/v1/sessions/{id}/timeout": {
            "parameters": sid,
            "patch": operation(
                "updateTimeout",
                "Change only the named policy fields (400 when out of range).",
                {"200": SESSION_OK},
                body="TimeoutChange",
                write=True,
            ),
        },
        "/v1/sessions/{id}/webhook": {
            "parameters": sid,
            "put": operation(
                "setWebhook",
                "Deliver the session's events to a URL from the durable outbox "
                "(url null removes it); header values are never shown back.",
                {"200": SESSION_OK},
                body="WebhookSet",
                write=True,
            ),
        },
        "/v1/sessions/{id}/webhook/deliveries": {
            "parameters": sid,
            "get": operation(
                "webhookDeliveries",
                "The session's webhook deliveries, newest first, with every attempt.",
                {"200": ok("WebhookDeliveries")},
            ),
        },
        "/v1/sessions/{id}/reset-policy": {
            "parameters": sid,
            "patch": operation(
                "setResetPolicy",
                "Opt in to (or out of, with null) a daily reset at daily_at "
                "(HH:MM UTC) "
                "and an idle reset after idle_minutes.",
                {"200": SESSION_OK},
                body="ResetPolicyChange",
                write=True,
            ),
        },
        "/v1/sessions/{id}/context": {
            "parameters": sid,
            "get": operation(
                "getContext",
                "What the session's agent would be handed now (its context "
                "window), and the summaries in use.",
                {"200": ok("ContextWindow")},
            ),
        },
        "/v1/sessions/{id}/context/summaries": {
            "parameters": sid,
            "post": operation(
                "summarize",
                "Fold the visible history (up to to_offset) into a recorded "
                "summary; the messages stay in the log.",
                {"201": ok("Summary", "Created")},
                body="Summarize",
                body_required=False,
                write=True,
            ),
        },
        "/v1/sessions/{id}/context/summaries/{offset}": {
            "parameters": [param("id"), param("offset")],
            "delete": operation(
                "dropSummary",
                "Stop using a summary (its messages come back to the window).",
                {"204": {"description": "Dropped."}},
                write=True,
            ),
        },
        "/v1/sessions/{id}/ws": {
            "parameters": sid,
            "get": operation(
                "sessionSocket",
                "WebSocket: send SocketClientMessage, receive SocketServerMessage "
                "(the session's events and turn deltas).",
                {
                    "101": {
                        "description": "Switching protocols.",
                        "content": content(ref("SocketServerMessage")),
                    }
                },
                parameters=[query_param("after", OFFSET, "Replay from this offset.")],
            ),
        },
        "/v1/health": {
            "get": {
                "operationId": "health",
                "summary": "Health (no key needed).",
                "security": [],
                "responses": {
                    "200": ok("Health"),
                    "503": ok("Health", "The store is unreachable."),
                    **ERRORS,
                },
            }
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus metrics.",
                {
                    "200": {
                        "description": "Prometheus text.",
                        "content": {"text/plain": {"schema": STRING}},
                    }
                },
            )
        },
        "/openapi.json": {
            "get": operation(
                "openapi",
                "This document.",
                {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": content(ANY_OBJECT),
                    }
                },
            )
        },
    }


HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@cache
def document(agent_ids: tuple[str, ...] = ()) -> dict[str, Any]:
    """The whole OpenAPI document; with ``agent_ids`` (the server's configured
    agents), ``CreateSession.agent_id`` is one of them."""
    schemas = SCHEMAS
    if agent_ids:
        create = SCHEMAS["CreateSession"]
        agent_id = {
            "enum": list(agent_ids),
            "description": "One of the agents this server is configured with.",
        }
        properties = {**create["properties"], "agent_id": agent_id}
        schemas = {**SCHEMAS, "CreateSession": {**create, "properties": properties}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sessiond native API",
            "version": VERSION,
            "description": "Durable sessions for AI agents. Errors are "
            "application/problem+json with a stable code.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths(),
        "components": {
            "schemas": schemas,
            "parameters": PARAMETERS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from SESSIOND_API_KEYS (if set).",
                }
            },
        },
    }


def operations() -> set[tuple[str, str]]:
    """``(METHOD, path)`` of every operation in the document."""
    return {
        (method.upper(), path)
        for path, item in document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
