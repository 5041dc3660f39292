"""Errors as ``application/problem+json``: the one table from error to status.

Every error sessiond reports carries a stable ``code`` (runtime and domain errors
define it on their class, the gateway's own errors on the instance), so the table
maps codes to statuses; a code names one class of failure on every surface, and
the domain errors the facade re-raises without exporting (``RenewalRefusedError``)
need no import. The body is ``{type, title, status, code, detail}`` plus context
fields (``current_offset`` on conflicts, ``expires_at`` on expiry).

::

    GatewayError                 raised by the gateway itself (codec, auth, limits)
    DomainError / RuntimeFault   raised by the runtime (see runtime.errors)
    HTTPException                Starlette's routing (404 no route, 405 method)
    anything else                500 internal_error, nothing of it shown or logged
                                 beyond its type (messages may hold user content)
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime import DomainError, RuntimeFault

logger = logging.getLogger(__name__)

PROBLEM_TYPE = "urn:sessiond:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"

# code -> HTTP status. The one table; a test checks every exported error is in it.
STATUS_BY_CODE: Mapping[str, int] = {
    # the request
    "invalid_request": 400,
    "invalid_json": 400,
    "json_too_deep": 400,
    "integer_out_of_range": 400,
    "offset_out_of_range": 400,
    # an unknown agent id is a bad argument in the body, not a missing resource
    "agent_not_found": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "checkpoint_not_found": 404,
    "summary_not_found": 404,
    "method_not_allowed": 405,
    "not_acceptable": 406,
    # the state of the session
    "conflict": 409,
    "name_taken": 409,
    "session_ended": 409,
    "busy": 409,
    # the turn was cancelled before it started (its caller went away)
    "cancelled": 409,
    "session_expired": 410,
    "payload_too_large": 413,
    "metadata_too_large": 413,
    "unsupported_media_type": 415,
    "renewal_refused": 422,
    "idempotency_key_reused": 422,
    "idempotency_key_in_use": 409,
    "rate_limited": 429,
    # the server
    "internal_error": 500,
    "not_implemented": 501,
    # the agent or its model server failed (a gateway in front of it, in HTTP's
    # terms); inside a turn, the turn is recorded as failed
    "agent_error": 502,
    "provider_error": 502,
    "provider_rate_limited": 503,
    "provider_unavailable": 503,
    "provider_timeout": 504,
    "storage_unavailable": 503,
    # out of space: nothing of the write was recorded; retry once space is freed
    "storage_full": 507,
    "unavailable": 503,
    "timeout": 504,
}

# Details the gateway writes itself, so no request input is ever echoed back.
FIXED_DETAILS: Mapping[str, str] = {
    "not_found": "no such session",
    "internal_error": "the server failed to handle the request",
}

CONTEXT_FIELDS = ("current_offset", "expires_at", "retry_after")


class GatewayError(Exception):
    """An error the gateway raises itself, with its stable code."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        self.context = context

    @property
    def status(self) -> int:
        """The HTTP status of the code."""
        return STATUS_BY_CODE[self.code]


def _format(value: Any) -> Any:
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def problem(
    code: str, detail: str | None = None, *, status: int | None = None, **context: Any
) -> dict[str, Any]:
    """The problem document of ``code`` (``status`` for codes not in the table)."""
    status = STATUS_BY_CODE.get(code, status or 500)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
        "detail": FIXED_DETAILS.get(code) or detail or HTTPStatus(status).description,
    }
    body.update({k: _format(v) for k, v in context.items() if v is not None})
    return body


def problem_of(error: BaseException) -> dict[str, Any]:
    """The problem document of any exception (unknown ones are ``internal_error``)."""
    if isinstance(error, GatewayError):
        return problem(error.code, error.detail, **error.context)
    if isinstance(error, DomainError | RuntimeFault):
        # a code the table does not know yet: a refused command is the
        # caller's problem (400), a failed one the server's (500)
        fallback = 400 if isinstance(error, DomainError) else 500
        context = {name: getattr(error, name, None) for name in CONTEXT_FIELDS}
        return problem(error.code, error.detail, status=fallback, **context)
    if isinstance(error, HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(
            error.status_code, "invalid_request"
        )
        if code == "not_found":
            return problem(code) | {"detail": "no such resource"}
        return problem(code, HTTPStatus(error.status_code).description)
    return problem("internal_error")


def problem_response(
    body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    """A ``problem+json`` response of a problem document."""
    return Response(
        orjson.dumps(body),
        status_code=int(body["status"]),
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def error_response(error: BaseException) -> Response:
    """The response for ``error``."""
    body = problem_of(error)
    headers: dict[str, str] = {}
    if isinstance(error, HTTPException) and error.headers:
        headers.update(error.headers)
    if isinstance(error, GatewayError):
        headers.update(error.headers)
    return problem_response(body, headers)


async def handle_error(connection: HTTPConnection, error: Exception) -> Response:
    """Starlette exception handler for every known error class."""
    if isinstance(error, HTTPException) and error.status_code == 405:
        error.headers = {"Allow": ", ".join(allowed_methods(connection))}
    return error_response(error)


def allowed_methods(connection: HTTPConnection) -> list[str]:
    """Every method some route serves at this path: Starlette's own 405 names
    only the first route that matched the path, and a path is often served by
    a route per method."""
    methods: set[str] = set()
    for route in getattr(connection.app, "routes", ()):
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(connection.scope)[0] is not Match.NONE:
            methods.update(route_methods)
    return sorted(methods)


EXCEPTION_HANDLERS = {
    GatewayError: handle_error,
    DomainError: handle_error,
    RuntimeFault: handle_error,
    HTTPException: handle_error,
}


def log_unexpected(error: BaseException, scope: Scope) -> None:
    """Log an unexpected error by type and stack only: its message may hold
    request content, which logs never carry."""
    route = scope.get("route")
    stack = "".join(traceback.format_tb(error.__traceback__))
    logger.error(
        "unhandled %s on %s %s\n%s",
        type(error).__name__,
        scope.get("method", "WS"),
        getattr(route, "path", "?"),
        stack,
    )


class CatchAllMiddleware:
    """Answers any unexpected exception with a bare 500 problem (instead of
    Starlette's ServerErrorMiddleware, which re-raises it to the server's log
    with its message)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] in ("http.response.start", "websocket.accept"):
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            log_unexpected(error, scope)
            if started or scope["type"] != "http":
                return
            await problem_response(problem("internal_error"))(scope, receive, send)
