"""A session's webhook and opt-in resets: register or remove the webhook, read
its deliveries, set the daily and idle reset policy."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.codec import fields, invalid, read_json
from gateway.context import caller, checked_write, idempotent, json, session_id
from gateway.sessions import session_response

WEBHOOK_FIELDS = {"url": "string?", "headers": "object?", "events": "array?"}
RESET_POLICY_FIELDS = {"daily_at": "string?", "idle_minutes": "integer?"}


async def set_webhook(request: Request) -> Response:
    """``PUT /v1/sessions/{id}/webhook``: deliver the session's events to ``url``
    (``null`` removes the webhook)."""

    async def call() -> Response:
        gateway, _, _ = caller(request)
        body = fields(await read_json(request, gateway.limits), WEBHOOK_FIELDS)
        headers = body.get("headers")
        if headers is not None and not all(
            isinstance(v, str) for v in headers.values()
        ):
            raise invalid("webhook headers must map names to strings")
        document = await checked_write(
            request,
            "set_webhook",
            session_id(request),
            body.get("url"),
            headers=headers,
            events=body.get("events"),
        )
        return session_response(document)

    return await idempotent(request, call)


async def webhook_deliveries(request: Request) -> Response:
    """``GET /v1/sessions/{id}/webhook/deliveries``: newest first, with every
    attempt's outcome."""
    _, aruntime, principal = caller(request)
    found = await aruntime.webhook_deliveries(session_id(request), principal=principal)
    return json({"deliveries": found})


async def set_reset_policy(request: Request) -> Response:
    """``PATCH /v1/sessions/{id}/reset-policy``: change only the named fields
    (``null`` turns that reset off)."""

    async def call() -> Response:
        gateway, _, _ = caller(request)
        body = fields(await read_json(request, gateway.limits), RESET_POLICY_FIELDS)
        # Only the fields sent change; a field sent as null turns that reset off.
        changes = {name: body[name] for name in RESET_POLICY_FIELDS if name in body}
        document = await checked_write(
            request, "set_reset_policy", session_id(request), **changes
        )
        return session_response(document)

    return await idempotent(request, call)
