"""Webhook registration and deliveries, the reset policy, purge and atomic
If-Match on every write, over real HTTP."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.gateway.helpers import new_session


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]], threading.Event]]:
    received: list[dict[str, Any]] = []
    arrived = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(
                orjson.loads(self.rfile.read(int(self.headers["content-length"])))
            )
            self.send_response(204)
            self.end_headers()
            arrived.set()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received, arrived
    server.shutdown()
    server.server_close()


def test_a_webhook_set_over_http_receives_the_sessions_events(
    client: httpx.Client, receiver: tuple[str, list[dict[str, Any]], threading.Event]
) -> None:
    url, received, arrived = receiver
    sid = new_session(client)["id"]
    answer = client.put(
        f"/v1/sessions/{sid}/webhook",
        json={
            "url": url,
            "headers": {"authorization": "Bearer hook-secret"},
            "events": ["message_appended"],
        },
    )
    assert answer.status_code == 200
    assert answer.json()["webhook"]["headers"] == {"authorization": "***"}
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "ping"})
    assert arrived.wait(15)
    assert received[0]["session_id"] == sid
    assert received[0]["event"]["type"] == "message_appended"
    deliveries = client.get(f"/v1/sessions/{sid}/webhook/deliveries").json()[
        "deliveries"
    ]
    assert deliveries
    assert all(d["url"] == url for d in deliveries)
    assert b"hook-secret" not in client.get(f"/v1/sessions/{sid}/events").content


def test_an_invalid_webhook_is_refused_and_changes_nothing(
    client: httpx.Client,
) -> None:
    sid = new_session(client)["id"]
    before = client.get(f"/v1/sessions/{sid}").json()["offset"]
    refused = client.put(f"/v1/sessions/{sid}/webhook", json={"url": "ftp://x/y"})
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid_request"
    assert client.get(f"/v1/sessions/{sid}").json()["offset"] == before


def test_the_reset_policy_changes_only_the_fields_named(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    first = client.patch(f"/v1/sessions/{sid}/reset-policy", json={"idle_minutes": 30})
    assert first.json()["reset_policy"] == {"daily_at": None, "idle_minutes": 30}
    second = client.patch(
        f"/v1/sessions/{sid}/reset-policy", json={"daily_at": "04:00"}
    )
    assert second.json()["reset_policy"] == {"daily_at": "04:00", "idle_minutes": 30}
    off = client.patch(f"/v1/sessions/{sid}/reset-policy", json={"idle_minutes": None})
    assert off.json()["reset_policy"] == {"daily_at": "04:00", "idle_minutes": None}
    bad = client.patch(f"/v1/sessions/{sid}/reset-policy", json={"daily_at": "25:00"})
    assert bad.status_code == 400


def test_delete_with_purge_leaves_nothing_to_read(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "forget me"})
    purged = client.delete(f"/v1/sessions/{sid}", params={"purge": "true"})
    assert purged.status_code == 200
    for path in ("", "/messages", "/events", "/checkpoints", "/export"):
        assert client.get(f"/v1/sessions/{sid}{path}").status_code == 404


def test_if_match_is_checked_atomically_on_every_write(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    offset = client.get(f"/v1/sessions/{sid}").json()["offset"]
    renamed = client.patch(
        f"/v1/sessions/{sid}",
        json={"name": "matched"},
        headers={"If-Match": str(offset)},
    )
    assert renamed.status_code == 200
    stale = client.post(
        f"/v1/sessions/{sid}/checkpoints",
        json={"name": "late"},
        headers={"If-Match": str(offset)},
    )
    assert stale.status_code == 409
    assert stale.json()["current_offset"] == offset + 1
    assert client.get(f"/v1/sessions/{sid}/checkpoints").json()["checkpoints"] == []
