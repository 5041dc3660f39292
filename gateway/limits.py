"""Bounds on what a request may cost: body size, JSON shape, streams.

The body limit is enforced twice: from ``Content-Length`` before a byte of the
body is read (413 at once), and while reading, for chunked bodies that carry no
length. Either way nothing reaches the runtime, so nothing changes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import GatewayError, problem, problem_response

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """The gateway's bounds (the defaults suit a public deployment)."""

    max_body_bytes: int = MIB
    max_json_depth: int = 32
    # metadata and attributes, JSON-encoded
    max_metadata_bytes: int = 16 * 1024
    # the WebSocket frame limit handed to uvicorn
    max_ws_message_bytes: int = MIB
    # SSE comment pings and the authorisation re-check of open streams
    ping_seconds: float = 15.0
    max_streams_per_principal: int = 64
    # failed authentications tolerated per client address and minute
    auth_failures_per_minute: int = 60
    # the longest a blocking message call may wait for its reply
    max_turn_seconds: float = 600.0


def too_large(limit: int) -> GatewayError:
    """The 413 of a body over ``limit`` bytes."""
    return GatewayError("payload_too_large", f"the body exceeds {limit} bytes")


class BodyLimitMiddleware:
    """Refuses bodies over the limit: by header before reading, by count while
    reading (chunked)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                body = problem("invalid_request", "Content-Length is not a number")
                await problem_response(body)(scope, receive, send)
                return
            if int(declared) > self.max_body_bytes:
                response = problem_response(
                    problem(
                        "payload_too_large",
                        f"the body exceeds {self.max_body_bytes} bytes",
                    ),
                    {"Connection": "close"},
                )
                await response(scope, receive, send)
                return
        received = 0
        limit = self.max_body_bytes

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, counting_receive, send)


class StreamSlots:
    """Counts open streams (SSE, WebSocket) per principal, with a cap (429)."""

    def __init__(self, per_principal: int) -> None:
        self.per_principal = per_principal
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}

    @contextmanager
    def hold(self, principal_id: str) -> Iterator[None]:
        """Hold one slot while the block runs (``rate_limited`` when full)."""
        with self._lock:
            count = self._open.get(principal_id, 0)
            if count >= self.per_principal:
                raise GatewayError(
                    "rate_limited",
                    f"at most {self.per_principal} streams may be open at once",
                    headers={"Retry-After": "1"},
                )
            self._open[principal_id] = count + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._open[principal_id] - 1
                if left:
                    self._open[principal_id] = left
                else:
                    del self._open[principal_id]

    def total(self) -> int:
        """How many streams are open."""
        with self._lock:
            return sum(self._open.values())
