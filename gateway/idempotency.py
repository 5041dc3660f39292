"""``Idempotency-Key`` for the writes the runtime does not deduplicate itself.

Messages carry the key into the runtime, which remembers it durably in the
session's log. Every other write (create, update, delete, checkpoints, rewind,
fork, clear, reset, heartbeat, renew, timeout) is replayed from this cache: the
first successful (2xx) response per ``(principal, key)`` is kept, in memory, for
the last ``Limits.idempotency_entries`` keys of each principal. A retry with the
same key and the same request gets that response again
(``Idempotent-Replayed: true``) and writes nothing; the same key with another
request is refused (422 ``idempotency_key_reused``). A request that fails is not
remembered, so its retry runs again. The cache does not survive a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.responses import Response

from gateway.errors import GatewayError

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


class IdempotencyCache:
    """Bounded per-principal memory of successful write responses.

    Lives on the event loop (no locks): a concurrent retry waits for the first
    request to finish and then gets its response.
    """

    def __init__(self, per_principal: int) -> None:
        self.per_principal = per_principal
        self._entries: dict[str, OrderedDict[str, _Entry]] = {}

    async def run(
        self,
        principal_id: str,
        key: str,
        request_fingerprint: bytes,
        call: Callable[[], Awaitable[Response]],
    ) -> Response:
        """The response of ``call``, or of the first call with this key."""
        entries = self._entries.setdefault(principal_id, OrderedDict())
        while (entry := entries.get(key)) is not None:
            if entry.fingerprint != request_fingerprint:
                raise GatewayError(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request",
                )
            stored = await asyncio.shield(entry.outcome)
            if stored is not None:
                entries.move_to_end(key)
                return stored.response()
            # the first attempt failed and was forgotten; this one runs
        outcome: asyncio.Future[_Stored | None] = (
            asyncio.get_running_loop().create_future()
        )
        entries[key] = _Entry(request_fingerprint, outcome)
        stored = None
        try:
            response = await call()
            if 200 <= response.status_code < 300:
                stored = _Stored(
                    response.status_code,
                    bytes(response.body),
                    {
                        name: value
                        for name, value in response.headers.items()
                        if name in KEPT_HEADERS
                    },
                )
            return response
        finally:
            outcome.set_result(stored)
            if stored is None:
                entries.pop(key, None)
            while len(entries) > self.per_principal:
                entries.popitem(last=False)
