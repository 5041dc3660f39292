"""``Idempotency-Key`` for the writes the runtime does not deduplicate itself.

Messages carry the key into the runtime, which remembers it durably in the
session's log. Every other write (create, update, delete, checkpoints, rewind,
fork, clear, reset, heartbeat, renew, timeout) is replayed from the request keys
the runtime keeps in the database (:mod:`runtime.calls_requests`), so a retry is
recognised by every process on the database and after a restart.

The key is claimed before the write runs. The first successful (2xx) response
per ``(principal, key)`` is kept with it for ``request_key_hours``; a retry with
the same key and the same request gets that response again
(``Idempotent-Replayed: true``) and writes nothing; the same key with another
request is refused (422 ``idempotency_key_reused``). A request that fails is not
remembered, so its retry runs again. A retry that arrives while the first request
still runs in this process waits for it; one that arrives while it runs in
another process is refused (409 ``idempotency_key_in_use``). A claim whose
process died before it completed lapses after ``request_claim_seconds``; the
retry then runs the write again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from starlette.responses import Response

from gateway.errors import GatewayError
from runtime import StorageUnavailableError

if TYPE_CHECKING:
    from runtime import AsyncRuntime, Principal

logger = logging.getLogger(__name__)

KEY_HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
KEPT_HEADERS = ("content-type", "etag", "location")


def check_key(key: str) -> str:
    """Refuse keys that are empty, too long or not printable ASCII."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(33 <= ord(c) <= 126 for c in key):
        raise GatewayError(
            "invalid_request",
            f"Idempotency-Key must be 1..{MAX_KEY_LENGTH} printable ASCII characters",
        )
    return key


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    """What makes two requests "the same request"."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


@dataclass
class _Stored:
    status: int
    body: bytes
    headers: dict[str, str]

    def response(self) -> Response:
        response = Response(self.body, status_code=self.status, headers=self.headers)
        response.headers[REPLAYED_HEADER] = "true"
        return response


@dataclass
class _Entry:
    fingerprint: bytes
    outcome: asyncio.Future[_Stored | None]


class IdempotentWrites:
    """Runs each keyed write once, by the runtime's durable request keys.

    Lives on the event loop (no locks). Requests with the same key in this
    process are put in line here: a concurrent retry waits for the first
    request to finish and then gets its response.
    """

    def __init__(self, aruntime: AsyncRuntime) -> None:
        self.aruntime = aruntime
        self._running: dict[tuple[str, str], _Entry] = {}

    async def run(
        self,
        principal: Principal,
        key: str,
        request_fingerprint: bytes,
        call: Callable[[], Awaitable[Response]],
    ) -> Response:
        """The response of ``call``, or of the first call with this key."""
        slot = (principal.id, key)
        while (entry := self._running.get(slot)) is not None:
            if entry.fingerprint != request_fingerprint:
                raise _reused()
            stored = await asyncio.shield(entry.outcome)
            if stored is not None:
                return stored.response()
            # the first attempt failed and was forgotten; this one runs
        outcome: asyncio.Future[_Stored | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._running[slot] = _Entry(request_fingerprint, outcome)
        stored = None
        try:
            stored, response = await self._run_claimed(
                principal, key, request_fingerprint, call
            )
            return response
        finally:
            del self._running[slot]
            outcome.set_result(stored)

    async def _run_claimed(
        self,
        principal: Principal,
        key: str,
        request_fingerprint: bytes,
        call: Callable[[], Awaitable[Response]],
    ) -> tuple[_Stored | None, Response]:
        claim = await self.aruntime.claim_request(
            key, request_fingerprint, principal=principal
        )
        if claim.outcome == "replay":
            assert claim.status is not None
            assert claim.body is not None
            stored = _Stored(
                claim.status, claim.body, orjson.loads(claim.headers or b"{}")
            )
            return stored, stored.response()
        if claim.outcome == "reused":
            raise _reused()
        if claim.outcome == "busy":
            raise GatewayError(
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still running",
            )
        try:
            response = await call()
        except BaseException:
            await self._release(key, principal)
            raise
        if not 200 <= response.status_code < 300:
            await self._release(key, principal)
            return None, response
        stored = _Stored(
            response.status_code,
            bytes(response.body),
            {
                name: value
                for name, value in response.headers.items()
                if name in KEPT_HEADERS
            },
        )
        try:
            await self.aruntime.complete_request(
                key,
                stored.status,
                orjson.dumps(stored.headers),
                stored.body,
                principal=principal,
            )
        except StorageUnavailableError:
            # The write is done; a retry finds the key claimed (busy) until the
            # claim lapses, and then runs the write again.
            logger.warning("could not keep the response of a keyed request")
        return stored, response

    async def _release(self, key: str, principal: Principal) -> None:
        try:
            await asyncio.shield(
                self.aruntime.release_request(key, principal=principal)
            )
        except StorageUnavailableError:
            # The claim lapses after request_claim_seconds instead.
            logger.warning("could not release the key of a failed request")


def _reused() -> GatewayError:
    return GatewayError(
        "idempotency_key_reused",
        "this Idempotency-Key was used for a different request",
    )
