"""A ``sessiond serve`` process whose ``openai`` agent (from a config file)
talks to the scripted loopback chat-completions server: a tool loop on the
native SSE stream, and clients that go away under ``on_disconnect=cancel``
(the model server sees its request closed, the turn is recorded cancelled)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import ServerFactory
from tests.gateway.helpers import sse_events
from tests.support.openai_server import (
    OpenAIServer,
    text_reply,
    tool_call,
    tool_reply,
)
from tests.support.server import ServerProcess

WAIT = 10.0


@pytest.fixture
def sessiond(
    server_factory: ServerFactory, openai_server: OpenAIServer, tmp_path: Path
) -> ServerProcess:
    config = tmp_path / "sessiond.toml"
    config.write_text(
        f"""
[agents.model]
provider = "openai"
model = "test-model"
base_url = "{openai_server.base_url}"
tools = ["read_file"]
max_attempts = 1
"""
    )
    return server_factory(env={"SESSIOND_CONFIG": str(config)})


def new_model_session(http: httpx.Client, **fields: Any) -> str:
    response = http.post("/v1/sessions", json={"agent_id": "model", **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def turn_ended(http: httpx.Client, sid: str) -> dict[str, Any]:
    """The first ``turn_ended`` of the session, waiting for it on the log's tail."""
    with http.stream(
        "GET",
        f"/v1/sessions/{sid}/events",
        headers={"Accept": "text/event-stream"},
    ) as response:
        for event in sse_events(response):
            if event.event == "turn_ended":
                data: dict[str, Any] = event.data["data"]
                return data
    msg = "the tail ended without turn_ended"
    raise AssertionError(msg)


def test_a_tool_loop_streams_in_order_over_real_http(
    sessiond: ServerProcess, openai_server: OpenAIServer, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.txt").write_text("alpha")
    (work / "b.txt").write_text("beta")
    openai_server.script(
        tool_reply(
            tool_call("call_a", "read_file", '{"path": "a.txt"}', pieces=3),
            tool_call("call_b", "read_file", '{"path": "b.txt"}', pieces=2),
            usage=(20, 8),
        ),
        text_reply(["alpha ", "and ", "beta"], usage=(40, 3)),
    )
    with httpx.Client(base_url=sessiond.url, timeout=20.0) as http:
        sid = new_model_session(http, attributes={"work_dir": str(work)})
        with http.stream(
            "POST",
            f"/v1/sessions/{sid}/messages",
            json={"content": "Read a and b."},
            headers={"Accept": "text/event-stream"},
        ) as response:
            assert response.status_code == 200
            events = [(e.event or "", e.data) for e in sse_events(response)]
        history = http.get(f"/v1/sessions/{sid}/messages?order=asc").json()

    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_start",
        *["input_json_delta"] * 3,
        "content_block_stop",
        "content_block_start",
        *["input_json_delta"] * 2,
        "content_block_stop",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "tool_result",
        "tool_result",
        "content_block_start",
        *["text_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
        "done",
    ]
    blocks = [data for name, data in events if name == "content_block_start"]
    assert [b["content_block"] for b in blocks[1:3]] == [
        {"type": "tool_use", "id": "call_a", "name": "read_file"},
        {"type": "tool_use", "id": "call_b", "name": "read_file"},
    ]
    results = [data for name, data in events if name == "tool_result"]
    assert [(r["id"], r["status"]) for r in results] == [
        ("call_a", "ok"),
        ("call_b", "ok"),
    ]
    done = events[-1][1]
    assert done["steps"] == 2
    assert [c["name"] for c in done["tool_calls"]] == ["read_file", "read_file"]
    assert done["usage"] == {"input_tokens": 60, "output_tokens": 11}
    assert done["reply"]["content"] == "alpha and beta"
    roles = [m["role"] for m in history["messages"]]
    assert roles == ["user", "assistant", "tool", "tool", "assistant"]
    sent = openai_server.wait_for_requests(2)[1].body["messages"]
    assert [(m["role"], m.get("tool_call_id")) for m in sent] == [
        ("user", None),
        ("assistant", None),
        ("tool", "call_a"),
        ("tool", "call_b"),
    ]
    assert json.loads(sent[2]["content"])["content"] == "alpha"
    assert json.loads(sent[3]["content"])["content"] == "beta"


def test_an_sse_client_that_goes_away_cancels_the_turn_and_its_request(
    sessiond: ServerProcess, openai_server: OpenAIServer
) -> None:
    openai_server.script(text_reply(["Hello ", "there"], stall_after=2))
    with httpx.Client(base_url=sessiond.url, timeout=20.0) as http:
        sid = new_model_session(http)
        with http.stream(
            "POST",
            f"/v1/sessions/{sid}/messages",
            json={"content": "hi", "on_disconnect": "cancel"},
            headers={"Accept": "text/event-stream"},
        ) as response:
            for event in sse_events(response):
                if event.event == "text_delta":
                    break  # and hang up in the middle of the answer
        request = openai_server.wait_for_requests(1)[0]
        assert request.disconnected.wait(WAIT), "the model request stayed open"
        ended = turn_ended(http, sid)

    assert (ended["status"], ended["error_code"]) == ("cancelled", "disconnected")


def raw_post(port: int, path: str, body: dict[str, Any]) -> socket.socket:
    """Send a JSON POST on a raw socket (the test hangs up by closing it)."""
    data = json.dumps(body).encode()
    connection = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    connection.sendall(
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data)
    )
    return connection


def test_a_blocking_caller_that_goes_away_cancels_the_turn_under_cancel(
    sessiond: ServerProcess, openai_server: OpenAIServer
) -> None:
    openai_server.script(text_reply(["Hello ", "there"], stall_after=2))
    with httpx.Client(base_url=sessiond.url, timeout=20.0) as http:
        sid = new_model_session(http)
        connection = raw_post(
            sessiond.port,
            f"/v1/sessions/{sid}/messages",
            {"content": "hi", "on_disconnect": "cancel"},
        )
        request = openai_server.wait_for_requests(1)[0]
        connection.close()

        assert request.disconnected.wait(WAIT), "the model request stayed open"
        ended = turn_ended(http, sid)

    assert (ended["status"], ended["error_code"]) == ("cancelled", "disconnected")


def test_a_blocking_caller_that_goes_away_lets_the_turn_finish_by_default(
    sessiond: ServerProcess, openai_server: OpenAIServer
) -> None:
    held = text_reply(["Hello ", "there"], stall_after=2)
    openai_server.script(held)
    with httpx.Client(base_url=sessiond.url, timeout=20.0) as http:
        sid = new_model_session(http)
        connection = raw_post(
            sessiond.port, f"/v1/sessions/{sid}/messages", {"content": "hi"}
        )
        request = openai_server.wait_for_requests(1)[0]
        connection.close()
        held.release.set()
        ended = turn_ended(http, sid)
        history = http.get(f"/v1/sessions/{sid}/messages?order=asc").json()

    assert ended["status"] == "completed"
    assert not request.disconnected.is_set()
    assert [m["content"] for m in history["messages"]] == ["hi", "Hello there"]
