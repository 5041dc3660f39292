"""Checkpoints, rewinds, forks, the branch tree and the state at an offset."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.codec import fields, query, read_json
from gateway.context import caller, checked_write, idempotent, json, session_id
from gateway.sessions import bounded, session_response

CHECKPOINT_FIELDS = {"name": "string", "description": "string?"}
MAX_NAME_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 4096


def checkpoint_id(request: Request) -> str:
    """The ``{cid}`` path parameter."""
    return str(request.path_params["cid"])


async def save_checkpoint(request: Request) -> Response:
    """``POST /v1/sessions/{id}/checkpoints``: 201 ``Checkpoint``."""

    async def call() -> Response:
        gateway, _, _ = caller(request)
        query(request, {})
        body = fields(
            await read_json(request, gateway.limits),
            CHECKPOINT_FIELDS,
            required=("name",),
        )
        bounded(body, "name", limit=MAX_NAME_LENGTH)
        bounded(body, "description", limit=MAX_DESCRIPTION_LENGTH)
        checkpoint = await checked_write(
            request,
            "checkpoint_save",
            session_id(request),
            body["name"],
            description=body.get("description"),
        )
        return json(checkpoint, 201)

    return await idempotent(request, call)


async def list_checkpoints(request: Request) -> Response:
    """``GET /v1/sessions/{id}/checkpoints``: ``{checkpoints}``, oldest first."""
    _, aruntime, principal = caller(request)
    query(request, {})
    found = await aruntime.checkpoints(session_id(request), principal=principal)
    return json({"checkpoints": found})


async def restore_checkpoint(request: Request) -> Response:
    """``POST /v1/sessions/{id}/checkpoints/{cid}/restore``: the ``Session``."""

    async def call() -> Response:
        gateway, _, _ = caller(request)
        query(request, {})
        fields(await read_json(request, gateway.limits, required=False), {})
        document = await checked_write(
            request, "checkpoint_restore", session_id(request), checkpoint_id(request)
        )
        return session_response(document)

    return await idempotent(request, call)


async def delete_checkpoint(request: Request) -> Response:
    """``DELETE /v1/sessions/{id}/checkpoints/{cid}``: 204."""

    async def call() -> Response:
        query(request, {})
        await checked_write(
            request, "checkpoint_delete", session_id(request), checkpoint_id(request)
        )
        return Response(status_code=204)

    return await idempotent(request, call)


async def rewind(request: Request) -> Response:
    """``POST /v1/sessions/{id}/rewind`` ``{offset}``: the ``Session``."""

    async def call() -> Response:
        gateway, _, _ = caller(request)
        query(request, {})
        body = fields(
            await read_json(request, gateway.limits),
            {"offset": "integer"},
            required=("offset",),
        )
        document = await checked_write(
            request, "rewind", session_id(request), body["offset"]
        )
        return session_response(document)

    return await idempotent(request, call)


async def fork(request: Request) -> Response:
    """``POST /v1/sessions/{id}/fork`` ``{offset?, session_id?}``: 201 ``Session``."""

    async def call() -> Response:
        gateway, _, _ = caller(request)
        query(request, {})
        body = fields(
            await read_json(request, gateway.limits, required=False),
            {"offset": "integer?", "session_id": "string?"},
        )
        bounded(body, "session_id")
        document = await checked_write(
            request,
            "fork",
            session_id(request),
            offset=body.get("offset"),
            session_id_for_fork=body.get("session_id"),
        )
        return session_response(document, 201)

    return await idempotent(request, call)


async def branches(request: Request) -> Response:
    """``GET /v1/sessions/{id}/branches``: parent, restores, forks."""
    _, aruntime, principal = caller(request)
    query(request, {})
    return json(await aruntime.branches(session_id(request), principal=principal))


async def state_at(request: Request) -> Response:
    """``GET /v1/sessions/{id}/state?offset=N``: the session as it was."""
    _, aruntime, principal = caller(request)
    params = query(request, {"offset": "integer"})
    sid = session_id(request)
    if "offset" not in params:
        # the ownership check first, so the answer says nothing of others' sessions
        current = await aruntime.get(sid, principal=principal)
        params["offset"] = current["offset"]
    return json(await aruntime.state_at(sid, params["offset"], principal=principal))
