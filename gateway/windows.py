"""Context windows: what a session's agent sees, and its summaries."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.codec import fields, parse_offset_text, query, read_json
from gateway.context import caller, checked_write, idempotent, json, session_id


async def context(request: Request) -> Response:
    """``GET /v1/sessions/{id}/context``: the ``ContextWindow`` the agent would
    be handed now (reads only: no summary is made)."""
    _, aruntime, principal = caller(request)
    query(request, {})
    return json(await aruntime.context(session_id(request), principal=principal))


async def summarize(request: Request) -> Response:
    """``POST /v1/sessions/{id}/context/summaries``: 201 ``Summary`` folding the
    visible history up to ``to_offset`` (default: all of it)."""

    async def call() -> Response:
        gateway, _, _ = caller(request)
        query(request, {})
        body = fields(
            await read_json(request, gateway.limits, required=False),
            {"to_offset": "integer?"},
        )
        summary = await checked_write(
            request, "summarize", session_id(request), to_offset=body.get("to_offset")
        )
        return json(summary, 201)

    return await idempotent(request, call)


async def drop_summary(request: Request) -> Response:
    """``DELETE /v1/sessions/{id}/context/summaries/{offset}``: 204."""

    async def call() -> Response:
        _, aruntime, principal = caller(request)
        query(request, {})
        sid = session_id(request)
        raw = str(request.path_params["offset"])
        if not raw.isascii() or not raw.isdigit():
            # the ownership check first: the answer says nothing of others' sessions
            await aruntime.get(sid, principal=principal)
        offset = parse_offset_text(raw, "offset")
        await checked_write(request, "drop_summary", sid, offset)
        return Response(status_code=204)

    return await idempotent(request, call)
