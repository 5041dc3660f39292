"""Helpers of the gateway suite: keys, clients, SSE reading."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from starlette.exceptions import StarletteDeprecationWarning

from tests.support.server import ServerProcess

with warnings.catch_warnings():
    # starlette 1.10 nudges towards the httpx2 package; httpx works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

ALICE_KEY = "sk_alice_0123456789abcdef"
BOB_KEY = "sk_bob_fedcba9876543210"
ADMIN_KEY = "sk_admin_55aa55aa55aa55aa"
API_KEYS = f"alice:{ALICE_KEY},bob:{BOB_KEY},*:{ADMIN_KEY}"

__all__ = [
    "ADMIN_KEY",
    "ALICE_KEY",
    "API_KEYS",
    "BOB_KEY",
    "SSEEvent",
    "TestClient",
    "keyed_client",
    "new_session",
    "sse_events",
]


def keyed_client(
    server: ServerProcess, key: str | None = None, **options: Any
) -> httpx.Client:
    """A client of ``server`` sending ``key`` as its bearer token."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    options.setdefault("timeout", 20.0)
    return httpx.Client(base_url=server.url, headers=headers, **options)


def new_session(http: httpx.Client | TestClient, **fields: Any) -> dict[str, Any]:
    """Create an echo session; returns the ``Session``."""
    response = http.post("/v1/sessions", json={"agent_id": "echo", **fields})
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


@dataclass
class SSEEvent:
    """One server-sent event."""

    event: str | None = None
    id: str | None = None
    data_lines: list[str] = field(default_factory=list)
    retry: int | None = None

    @property
    def data(self) -> Any:
        """The data, parsed as JSON."""
        return orjson.loads("\n".join(self.data_lines))


def sse_events(response: httpx.Response) -> Iterator[SSEEvent]:
    """Parse an SSE response as it arrives (comments and retry-only frames are
    skipped)."""
    current = SSEEvent()
    for line in response.iter_lines():
        if line == "":
            if current.data_lines:
                yield current
            current = SSEEvent()
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                current.data_lines.append(value)
            elif name == "event":
                current.event = value
            elif name == "id":
                current.id = value
            elif name == "retry":
                current.retry = int(value)
