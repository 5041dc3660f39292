"""The session WebSocket on a real server."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosedOK, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.gateway.helpers import new_session
from tests.support.server import ServerProcess


def socket_of(server: ServerProcess, sid: str, query: str = "") -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{server.port}/v1/sessions/{sid}/ws{query}", open_timeout=10
    )


def receive(ws: ClientConnection) -> dict[str, Any]:
    item: dict[str, Any] = orjson.loads(ws.recv(timeout=10))
    return item


def test_a_message_sent_on_the_socket_is_accepted_and_its_turn_streams_back(
    server: ServerProcess, client: httpx.Client
) -> None:
    sid = new_session(client)["id"]
    with socket_of(server, sid) as ws:
        ws.send(
            orjson.dumps({"type": "message", "content": "over the socket"}).decode()
        )
        items: list[dict[str, Any]] = []
        # The answer and the turn's items travel apart: wait for both.
        while not (
            any(i["type"] == "accepted" for i in items)
            and any(
                i["type"] == "delta" and i["event"]["type"] == "done" for i in items
            )
        ):
            items.append(receive(ws))
    accepted = [i for i in items if i["type"] == "accepted"]
    assert len(accepted) == 1
    assert accepted[0]["message"]["content"] == "over the socket"
    events = [i for i in items if i["type"] == "event"]
    assert [e["offset"] for e in events] == [2, 3, 4]
    assert events[1]["event"]["data"]["content"] == "over the socket"
    assert events[2]["event"]["type"] == "turn_ended"
    deltas = "".join(
        i["event"]["text"]
        for i in items
        if i["type"] == "delta" and i["event"]["type"] == "text_delta"
    )
    assert deltas == "over the socket"


def test_the_socket_replays_from_after_and_answers_pings(
    server: ServerProcess, client: httpx.Client
) -> None:
    sid = new_session(client)["id"]
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "earlier"})
    with socket_of(server, sid, "?after=1") as ws:
        assert [receive(ws)["offset"] for _ in range(3)] == [2, 3, 4]
        ws.send('{"type": "ping"}')
        assert receive(ws) == {"type": "pong"}


def test_bad_socket_messages_get_an_error_and_the_socket_stays_open(
    server: ServerProcess, client: httpx.Client
) -> None:
    sid = new_session(client)["id"]
    with socket_of(server, sid) as ws:
        for raw, code in (
            ("{not json", "invalid_json"),
            ('{"type": "dance"}', "invalid_request"),
            ('{"type": "message"}', "invalid_request"),
            ('{"type": "message", "content": "x", "evil": 1}', "invalid_request"),
            ('{"type": "message", "content": "x", "expected_offset": 99}', "conflict"),
            ("[" * 2000 + "]" * 2000, "json_too_deep"),
        ):
            ws.send(raw)
            reply = receive(ws)
            assert reply["type"] == "error", raw
            assert reply["error"]["code"] == code
        ws.send('{"type": "ping"}')
        assert receive(ws) == {"type": "pong"}
    assert client.get(f"/v1/sessions/{sid}").json()["offset"] == 1


def test_a_socket_to_an_unknown_session_is_refused_with_404(
    server: ServerProcess,
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        socket_of(server, "no-such-session")
    assert refused.value.response.status_code == 404
    assert orjson.loads(refused.value.response.body or b"{}")["code"] == "not_found"


def test_the_socket_delivers_the_end_of_the_session_and_closes_normally(
    server: ServerProcess, client: httpx.Client
) -> None:
    sid = new_session(client)["id"]
    with socket_of(server, sid) as ws:
        client.delete(f"/v1/sessions/{sid}")
        item = receive(ws)
        assert item["type"] == "event"
        assert item["event"]["type"] == "ended"
        with pytest.raises(ConnectionClosedOK) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1000
