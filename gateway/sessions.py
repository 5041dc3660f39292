"""Sessions: create, list, read, update, end, and their lifecycle (heartbeat,
renew, timeout policy, clear, reset)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.codec import check_metadata, fields, invalid, query, read_json
from gateway.context import (
    accepts_keyword,
    caller,
    checked_write,
    etag,
    idempotent,
    json,
    session_id,
)
from gateway.errors import GatewayError

MAX_ID_LENGTH = 256
TIMEOUT_FIELDS = {
    "timeout_minutes": "integer?",
    "auto_renew": "boolean?",
    "max_duration_minutes": "integer?",
    "warning_threshold_minutes": "integer?",
}
CREATE_FIELDS = {
    "agent_id": "string",
    "user_id": "string?",
    "channel_id": "string?",
    "peer_id": "string?",
    "scope": "string?",
    "group": "boolean?",
    "session_id": "string?",
    "name": "string?",
    "metadata": "object?",
    "attributes": "object?",
    "timeout": "object?",
    "concurrency": "string?",
}
UPDATE_FIELDS = {
    "name": "string?",
    "pinned": "boolean?",
    "attributes": "object?",
    "metadata": "object?",
}
LIST_QUERY = {
    "user_id": "string",
    "agent_id": "string",
    "status": "string",
    "pinned": "boolean",
    "q": "string",
    "limit": "integer",
    "cursor": "string",
}


def bounded(values: dict[str, Any], *names: str, limit: int = MAX_ID_LENGTH) -> None:
    """Refuse over-long strings among ``names``."""
    for name in names:
        value = values.get(name)
        if isinstance(value, str) and len(value) > limit:
            raise invalid(f"{name} may be at most {limit} characters")


def session_response(document: dict[str, Any], status: int = 200) -> Response:
    """A ``Session`` with its ``ETag`` (the offset)."""
    headers = etag(document)
    if status == 201:
        headers["Location"] = f"/v1/sessions/{document['id']}"
    return json(document, status, headers)


async def create_session(request: Request) -> Response:
    """``POST /v1/sessions``: 201, or 200 when get-or-create found one."""

    async def call() -> Response:
        gateway, aruntime, principal = caller(request)
        body = fields(
            await read_json(request, gateway.limits),
            CREATE_FIELDS,
            required=("agent_id",),
        )
        bounded(
            body, "agent_id", "user_id", "channel_id", "peer_id", "scope", "session_id"
        )
        for name in ("metadata", "attributes"):
            check_metadata(name, body.get(name), gateway.limits)
        if body.get("timeout") is not None:
            body["timeout"] = fields(body["timeout"], TIMEOUT_FIELDS)
        agent_id = body.pop("agent_id")
        if body.get("concurrency") is None:
            body.pop("concurrency", None)
        body["group"] = bool(body.get("group"))
        document, created = await aruntime.open(agent_id, principal=principal, **body)
        return session_response(document, 201 if created else 200)

    return await idempotent(request, call)


async def list_sessions(request: Request) -> Response:
    """``GET /v1/sessions``: ``{sessions, next_cursor, total}``."""
    _, aruntime, principal = caller(request)
    params = query(request, LIST_QUERY)
    return json(await aruntime.list(principal=principal, **params))


async def get_session(request: Request) -> Response:
    """``GET /v1/sessions/{id}``."""
    _, aruntime, principal = caller(request)
    query(request, {})
    return session_response(
        await aruntime.get(session_id(request), principal=principal)
    )


async def update_session(request: Request) -> Response:
    """``PATCH /v1/sessions/{id}``: name, pinned, attributes, metadata."""

    async def call() -> Response:
        gateway, _, _ = caller(request)
        body = fields(await read_json(request, gateway.limits), UPDATE_FIELDS)
        for name in ("metadata", "attributes"):
            check_metadata(name, body.get(name), gateway.limits)
        if "metadata" in body and body["metadata"] is None:
            raise invalid("metadata must be an object")
        document = await checked_write(request, "update", session_id(request), **body)
        return session_response(document)

    return await idempotent(request, call)


async def delete_session(request: Request) -> Response:
    """``DELETE /v1/sessions/{id}``: end it (``?purge=true``: and shred it)."""

    async def call() -> Response:
        params = query(request, {"purge": "boolean"})
        kwargs: dict[str, Any] = {}
        if params.get("purge"):
            if not accepts_keyword("delete", "purge"):
                # ownership first: the answer must say nothing of others' sessions
                _, aruntime, principal = caller(request)
                await aruntime.get(session_id(request), principal=principal)
                raise GatewayError(
                    "not_implemented", "purge is not available on this server"
                )
            kwargs["purge"] = True
        document = await checked_write(request, "delete", session_id(request), **kwargs)
        return session_response(document)

    return await idempotent(request, call)


async def _lifecycle(request: Request, method_name: str) -> Response:
    async def call() -> Response:
        gateway, _, _ = caller(request)
        query(request, {})
        fields(await read_json(request, gateway.limits, required=False), {})
        document = await checked_write(request, method_name, session_id(request))
        return session_response(document)

    return await idempotent(request, call)


async def heartbeat(request: Request) -> Response:
    """``POST /v1/sessions/{id}/heartbeat``: record activity (renews when auto)."""
    return await _lifecycle(request, "heartbeat")


async def renew(request: Request) -> Response:
    """``POST /v1/sessions/{id}/renew``: 422 ``renewal_refused`` past the maximum."""
    return await _lifecycle(request, "renew")


async def clear(request: Request) -> Response:
    """``POST /v1/sessions/{id}/clear``: empty the visible history."""
    return await _lifecycle(request, "clear")


async def reset(request: Request) -> Response:
    """``POST /v1/sessions/{id}/reset``: end it and open a fresh one on its key."""
    return await _lifecycle(request, "reset")


async def update_timeout(request: Request) -> Response:
    """``PATCH /v1/sessions/{id}/timeout``: change only the named fields."""

    async def call() -> Response:
        gateway, _, _ = caller(request)
        body = fields(await read_json(request, gateway.limits), TIMEOUT_FIELDS)
        changes = {k: v for k, v in body.items() if v is not None}
        document = await checked_write(
            request, "update_timeout", session_id(request), **changes
        )
        return session_response(document)

    return await idempotent(request, call)
