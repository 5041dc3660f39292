"""What every handler needs, kept on ``app.state.gateway``, and small helpers
shared by the handler modules."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from gateway.auth import principal_of
from gateway.codec import JSONResponse, parse_offset_text, read_body
from gateway.errors import GatewayError
from gateway.idempotency import KEY_HEADER, IdempotentWrites, check_key, fingerprint
from gateway.limits import Limits, StreamSlots
from gateway.metrics import HttpMetrics
from runtime import AsyncRuntime, Principal, Runtime


@dataclass
class Gateway:
    """The runtime and the gateway's own shared state."""

    runtime: Runtime
    limits: Limits
    metrics: HttpMetrics
    streams: StreamSlots
    # set when the server begins to shut down: open streams end
    draining: asyncio.Event = field(default_factory=asyncio.Event)
    # the runtime's coroutine API (every call hops to a worker thread)
    aruntime: AsyncRuntime = field(init=False)
    # Idempotency-Key on writes other than messages (durable request keys)
    idempotency: IdempotentWrites = field(init=False)
    loop: asyncio.AbstractEventLoop | None = None

    def __post_init__(self) -> None:
        self.aruntime = AsyncRuntime(self.runtime)
        self.idempotency = IdempotentWrites(self.aruntime)

    def drain(self) -> None:
        """End open streams (callable from any thread, e.g. a signal handler)."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.begin_draining)

    def begin_draining(self) -> None:
        """End open streams (call on the loop)."""
        self.draining.set()
        self.aruntime.interrupt_tails()


def gateway_of(connection: HTTPConnection) -> Gateway:
    """The gateway state of the app serving ``connection``."""
    found: Gateway = connection.app.state.gateway
    return found


def caller(connection: HTTPConnection) -> tuple[Gateway, AsyncRuntime, Principal]:
    """The gateway, its async runtime and the calling principal."""
    gateway = gateway_of(connection)
    return gateway, gateway.aruntime, principal_of(connection)


def session_id(connection: HTTPConnection) -> str:
    """The ``{id}`` path parameter."""
    return str(connection.path_params["id"])


def if_match(request: Request) -> int | None:
    """``If-Match: <offset>`` (bare or quoted) as an expected offset."""
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    text = raw.strip()
    if text.startswith("W/"):
        text = text[2:]
    return parse_offset_text(text.strip('"'), "If-Match")


def etag(document: dict[str, Any]) -> dict[str, str]:
    """The ``ETag`` header of a session document: its offset."""
    return {"ETag": f'"{document["offset"]}"'}


@cache
def accepts_keyword(method_name: str, keyword: str) -> bool:
    """Whether a runtime call takes ``keyword`` (the runtime grows)."""
    return keyword in inspect.signature(getattr(Runtime, method_name)).parameters


async def checked_write(
    request: Request,
    method_name: str,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """Call a runtime write with the caller's principal and ``If-Match``.

    The expected offset goes into the runtime call where the runtime checks it
    atomically; for the writes that do not take one it is compared with the
    session's offset just before the write.
    """
    _, aruntime, principal = caller(request)
    expected = if_match(request)
    if expected is not None:
        if accepts_keyword(method_name, "expected_offset"):
            kwargs["expected_offset"] = expected
        else:
            current = await aruntime.get(session_id(request), principal=principal)
            if current["offset"] != expected:
                at = current["offset"]
                raise GatewayError(
                    "conflict",
                    f"expected offset {expected}, the session is at {at}",
                    current_offset=at,
                )
    return await getattr(aruntime, method_name)(*args, principal=principal, **kwargs)


async def idempotent(
    request: Request, call: Callable[[], Awaitable[Response]]
) -> Response:
    """Run a write once per ``Idempotency-Key`` (see :mod:`gateway.idempotency`)."""
    raw_key = request.headers.get(KEY_HEADER)
    if raw_key is None:
        return await call()
    key = check_key(raw_key)
    gateway, _, principal = caller(request)
    body = await read_body(request, gateway.limits)
    # the body is cached on the request, so the handler can read it again
    request._body = body
    print_ = fingerprint(
        request.method, request.url.path + "?" + request.url.query, body
    )
    return await gateway.idempotency.run(principal, key, print_, call)


def json(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON response."""
    return JSONResponse(content, status_code=status, headers=headers)
