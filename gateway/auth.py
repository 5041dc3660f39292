"""API keys: ``Authorization: Bearer <key>`` to a :class:`runtime.Principal`.

Keys come from ``Settings.api_keys`` (``SESSIOND_API_KEYS="alice:K1,*:K2"``),
which holds only their SHA-256 digests; a presented key is hashed and compared
with ``hmac.compare_digest`` against every digest. ``*`` keys are admin keys
(they see every session). Without keys there is no authentication and every
caller is ``runtime.LOCAL_PRINCIPAL``. Every route but ``/v1/health`` needs a
key; a WebSocket is refused before it is accepted. Once a client address has
failed too often in a minute, its further failures are answered 429 instead of
401 (valid keys keep working). Keys are never
logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterable
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GatewayError, problem_of, problem_response
from runtime import LOCAL_PRINCIPAL, Principal

PRINCIPAL_SCOPE_KEY = "sessiond.principal"
# Health checks answer without a key (wingman's /health included), so load
# balancers can probe them; they show no session data.
OPEN_PATHS = frozenset({"/v1/health", "/health", "/api/messaging/sessions/health"})
ADMIN_MARKER = "*"
CHALLENGE = 'Bearer realm="sessiond"'


class Authenticator:
    """Maps bearer keys to principals by digest."""

    def __init__(self, keys: Iterable[Any]) -> None:
        # each key: .principal (name, "*" for admin) and .digest (SHA-256)
        self._keys: list[tuple[bytes, Principal]] = [
            (key.digest, Principal(key.principal, admin=key.principal == ADMIN_MARKER))
            for key in keys
        ]

    @property
    def enabled(self) -> bool:
        """Whether any key is configured."""
        return bool(self._keys)

    def principal_for(self, authorization: str | None) -> Principal | None:
        """The principal of an ``Authorization`` header value, or ``None``."""
        if not self.enabled:
            return LOCAL_PRINCIPAL
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: Principal | None = None
        for known, principal in self._keys:
            # every digest is compared, so the time taken says nothing
            if hmac.compare_digest(known, digest) and found is None:
                found = principal
        return found


class FailureLimiter:
    """Counts failed authentications per client address in one-minute windows."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._window = 0
        self._counts: dict[str, int] = {}

    def _current(self) -> None:
        window = int(time.monotonic() // 60)
        if window != self._window:
            self._window = window
            self._counts.clear()

    def blocked(self, client: str) -> bool:
        """Whether the address used up its failures this minute."""
        with self._lock:
            self._current()
            return self._counts.get(client, 0) >= self.per_minute

    def record(self, client: str) -> None:
        """Count one failure of the address."""
        with self._lock:
            self._current()
            self._counts[client] = self._counts.get(client, 0) + 1


def unauthorized(presented: bool) -> GatewayError:
    """The 401 (``invalid_token`` when a key was presented but is not known)."""
    challenge = CHALLENGE + (', error="invalid_token"' if presented else "")
    detail = "the API key is not valid" if presented else "an API key is required"
    return GatewayError("unauthorized", detail, headers={"WWW-Authenticate": challenge})


class AuthMiddleware:
    """Resolves the caller's principal into the scope, or refuses the request."""

    def __init__(
        self, app: ASGIApp, authenticator: Authenticator, failures: FailureLimiter
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.failures = failures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        authorization = connection.headers.get("authorization")
        api_key = connection.headers.get("x-api-key")
        if not authorization and api_key:
            # ElizaOS clients send the key as ``X-API-KEY: <key>``
            authorization = f"Bearer {api_key}"
        client = connection.client.host if connection.client else "unknown"
        principal = self.authenticator.principal_for(authorization)
        if principal is not None:
            scope[PRINCIPAL_SCOPE_KEY] = principal
            await self.app(scope, receive, send)
            return
        if self.failures.blocked(client):
            # only failures are refused: valid keys from the address still work
            error = GatewayError(
                "rate_limited",
                "too many failed authentications; try again later",
                headers={"Retry-After": "60"},
            )
        else:
            self.failures.record(client)
            error = unauthorized(presented=bool(authorization))
        response = problem_response(problem_of(error), error.headers)
        if scope["type"] == "websocket":
            await refuse_websocket(scope, receive, send, response)
            return
        await response(scope, receive, send)


async def refuse_websocket(
    scope: Scope, receive: Receive, send: Send, response: Any
) -> None:
    """Refuse a WebSocket handshake with an HTTP response when the server
    supports it (Starlette responses speak the denial extension), else close
    with 1008 (policy violation)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await response(scope, receive, send)
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.close", "code": 1008})


def principal_of(connection: HTTPConnection) -> Principal:
    """The caller's principal (set by :class:`AuthMiddleware`)."""
    principal = connection.scope.get(PRINCIPAL_SCOPE_KEY)
    return principal if isinstance(principal, Principal) else LOCAL_PRINCIPAL
