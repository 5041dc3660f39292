"""The wingman dialect (``/sessions``) against a real server: every route's happy
and error paths, the SSE stream frame by frame, concurrent messages to one
session, tool calls, pings and a failing agent."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DatabaseFactory
from tests.dialects.wingman_app import (
    FAILING_AGENT_ID,
    SLOW_AGENT_ID,
    TOOLING_AGENT_ID,
)
from tests.gateway.helpers import SSEEvent, sse_events
from tests.support.server import ServerProcess

SSE = {"Accept": "text/event-stream"}
MISSING = "01HZZZZZZZZZZZZZZZZZZZZZZZ"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[ServerProcess]:
    """One server (echo agent only) shared by this module's tests."""
    where = tmp_path_factory.mktemp("wingman")
    process = ServerProcess(database_factory(), log=where / "server.log")
    yield process.start()
    process.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    """A client of the shared server."""
    with httpx.Client(base_url=server.url, timeout=20.0) as http:
        yield http


@pytest.fixture(scope="module")
def agents_server(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[ServerProcess]:
    """A server that also has the test agents of ``wingman_app`` and pings idle
    streams every 0.1 s."""
    where = tmp_path_factory.mktemp("wingman-agents")
    process = ServerProcess(
        database_factory(),
        log=where / "server.log",
        factory="tests.dialects.wingman_app:create_agents_app",
        env={"TEST_PING_SECONDS": "0.1"},
    )
    yield process.start()
    process.stop()


def create(http: httpx.Client, **body: Any) -> dict[str, Any]:
    response = http.post("/sessions", json=body)
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


def stream(http: httpx.Client, sid: str, body: dict[str, Any]) -> list[SSEEvent]:
    with http.stream(
        "POST", f"/sessions/{sid}/message/stream", json=body, headers=SSE
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        return list(sse_events(r))


def text(content: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": content}]


# ---------------------------------------------------------------------- health


def test_health_answers_status_ok(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# ---------------------------------------------------------------------- sessions


def test_create_with_a_work_dir_answers_201_with_the_session_json(
    client: httpx.Client,
) -> None:
    response = client.post("/sessions", json={"work_dir": "/path/to/project"})
    assert response.status_code == 201
    document = response.json()
    assert set(document) == {
        "id",
        "work_dir",
        "agent_id",
        "history",
        "created_at",
        "updated_at",
    }
    assert document["work_dir"] == "/path/to/project"
    assert document["agent_id"] == "echo"
    assert document["history"] == []
    assert document["created_at"].endswith("Z")
    assert document["updated_at"] >= document["created_at"]


def test_create_without_a_body_omits_work_dir(client: httpx.Client) -> None:
    response = client.post("/sessions")
    assert response.status_code == 201
    assert "work_dir" not in response.json()


def test_create_refuses_a_bad_body_and_an_unknown_agent_with_400(
    client: httpx.Client,
) -> None:
    bad_json = client.post(
        "/sessions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert isinstance(bad_json.json()["error"], str)
    wrong_type = client.post("/sessions", json={"work_dir": 3})
    assert wrong_type.status_code == 400
    assert wrong_type.json() == {"error": "work_dir must be a string or null"}
    unknown_agent = client.post("/sessions", json={"agent_id": "nobody"})
    assert unknown_agent.status_code == 400
    assert set(unknown_agent.json()) == {"error"}


def test_get_answers_the_session_and_an_unknown_id_404_with_wingmans_error(
    client: httpx.Client,
) -> None:
    created = create(client, work_dir="/w")
    response = client.get(f"/sessions/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    missing = client.get(f"/sessions/{MISSING}")
    assert missing.status_code == 404
    assert missing.json() == {"error": f"session not found: {MISSING}"}


def test_list_answers_every_session_newest_first_with_its_history(
    client: httpx.Client,
) -> None:
    first = create(client, work_dir="/one")
    second = create(client)
    client.post(f"/sessions/{first['id']}/message", json={"message": "remember me"})
    response = client.get("/sessions")
    assert response.status_code == 200
    listed = response.json()
    ids = [session["id"] for session in listed]
    assert ids.index(second["id"]) < ids.index(first["id"])
    shown = listed[ids.index(first["id"])]
    assert shown["work_dir"] == "/one"
    assert shown["history"] == [
        {"role": "user", "content": text("remember me")},
        {"role": "assistant", "content": text("remember me")},
    ]


def test_put_sets_and_removes_the_work_dir(client: httpx.Client) -> None:
    created = create(client, work_dir="/old")
    updated = client.put(f"/sessions/{created['id']}", json={"work_dir": "/new"})
    assert updated.status_code == 200
    assert updated.json()["work_dir"] == "/new"
    assert updated.json()["updated_at"] >= created["updated_at"]
    assert client.get(f"/sessions/{created['id']}").json()["work_dir"] == "/new"
    unchanged = client.put(f"/sessions/{created['id']}", json={})
    assert unchanged.json()["work_dir"] == "/new"
    removed = client.put(f"/sessions/{created['id']}", json={"work_dir": ""})
    assert "work_dir" not in removed.json()


def test_put_answers_404_for_an_unknown_session_and_400_for_a_bad_body(
    client: httpx.Client,
) -> None:
    missing = client.put(f"/sessions/{MISSING}", json={"work_dir": "/x"})
    assert missing.status_code == 404
    assert missing.json() == {"error": f"session not found: {MISSING}"}
    created = create(client)
    bad = client.put(f"/sessions/{created['id']}", json={"work_dir": ["/x"]})
    assert bad.status_code == 400
    assert set(bad.json()) == {"error"}
    unknown_field = client.put(f"/sessions/{created['id']}", json={"name": "x"})
    assert unknown_field.status_code == 400


def test_delete_answers_deleted_and_the_session_is_gone_everywhere(
    client: httpx.Client,
) -> None:
    created = create(client)
    client.post(f"/sessions/{created['id']}/message", json={"message": "bye"})
    response = client.delete(f"/sessions/{created['id']}")
    assert response.status_code == 200
    assert response.json() == {"status": "deleted"}
    assert client.get(f"/sessions/{created['id']}").status_code == 404
    assert created["id"] not in [s["id"] for s in client.get("/sessions").json()]
    assert client.get(f"/v1/sessions/{created['id']}").status_code == 404
    again = client.delete(f"/sessions/{created['id']}")
    assert again.status_code == 404
    assert again.json() == {"error": f"session not found: {created['id']}"}


# ---------------------------------------------------------------------- messages


def test_a_message_answers_response_tool_calls_usage_and_steps(
    client: httpx.Client,
) -> None:
    created = create(client)
    response = client.post(
        f"/sessions/{created['id']}/message",
        json={"agent_id": "echo", "message": "What files are here?"},
    )
    assert response.status_code == 200
    assert response.json() == {
        "response": "What files are here?",
        "tool_calls": [],
        "usage": {"input_tokens": 4, "output_tokens": 4},
        "steps": 1,
    }
    history = client.get(f"/sessions/{created['id']}").json()["history"]
    assert history == [
        {"role": "user", "content": text("What files are here?")},
        {"role": "assistant", "content": text("What files are here?")},
    ]


def test_a_message_without_agent_id_or_with_an_empty_one_runs_the_sessions_agent(
    client: httpx.Client,
) -> None:
    created = create(client)
    for body in ({"message": "a"}, {"agent_id": "", "message": "b"}):
        response = client.post(f"/sessions/{created['id']}/message", json=body)
        assert response.status_code == 200
        assert response.json()["response"] == body["message"]


def test_message_checks_come_in_wingmans_order(client: httpx.Client) -> None:
    # the session first: a bad body to an unknown session is still 404
    missing = client.post(f"/sessions/{MISSING}/message", json={"bogus": 1})
    assert missing.status_code == 404
    assert missing.json() == {"error": f"session not found: {MISSING}"}
    sid = create(client)["id"]
    bad_json = client.post(
        f"/sessions/{sid}/message",
        content=b"[1,",
        headers={"content-type": "application/json"},
    )
    assert bad_json.status_code == 400
    assert set(bad_json.json()) == {"error"}
    for body in ({"agent_id": "echo"}, {"agent_id": "other", "message": ""}):
        response = client.post(f"/sessions/{sid}/message", json=body)
        assert response.status_code == 400
        assert response.json() == {"error": "message is required"}
    other = client.post(
        f"/sessions/{sid}/message", json={"agent_id": "other", "message": "x"}
    )
    assert other.status_code == 400
    assert other.json() == {
        "error": "agent_id is not this session's agent; the session runs echo"
    }
    assert client.get(f"/sessions/{sid}").json()["history"] == []


def test_the_stream_sends_the_whole_event_sequence_and_a_final_done_frame(
    client: httpx.Client,
) -> None:
    sid = create(client)["id"]
    events = stream(client, sid, {"agent_id": "echo", "message": "hello world"})
    assert [(e.event, e.data) for e in events] == [
        ("message_start", {"type": "message_start"}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text"},
            },
        ),
        ("text_delta", {"type": "text_delta", "index": 0, "text": "hello "}),
        ("text_delta", {"type": "text_delta", "index": 0, "text": "world"}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 2, "output_tokens": 2},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
        ("done", {"usage": {"input_tokens": 2, "output_tokens": 2}, "steps": 1}),
    ]
    history = client.get(f"/sessions/{sid}").json()["history"]
    assert history == [
        {"role": "user", "content": text("hello world")},
        {"role": "assistant", "content": text("hello world")},
    ]


def test_the_stream_answers_json_errors_before_it_starts(client: httpx.Client) -> None:
    missing = client.post(
        f"/sessions/{MISSING}/message/stream", json={"message": "x"}, headers=SSE
    )
    assert missing.status_code == 404
    assert missing.json() == {"error": f"session not found: {MISSING}"}
    sid = create(client)["id"]
    empty = client.post(f"/sessions/{sid}/message/stream", json={}, headers=SSE)
    assert empty.status_code == 400
    assert empty.json() == {"error": "message is required"}
    other = client.post(
        f"/sessions/{sid}/message/stream",
        json={"agent_id": "other", "message": "x"},
        headers=SSE,
    )
    assert other.status_code == 400


def test_concurrent_messages_to_one_session_lose_no_update(
    client: httpx.Client, server: ServerProcess
) -> None:
    sid = create(client)["id"]
    threads, per_thread = 8, 5

    def talk(thread: int) -> list[str]:
        answers = []
        with httpx.Client(base_url=server.url, timeout=60.0) as http:
            for number in range(per_thread):
                message = f"thread {thread} message {number}"
                response = http.post(
                    f"/sessions/{sid}/message",
                    json={"agent_id": "echo", "message": message},
                )
                assert response.status_code == 200, response.text
                answers.append(response.json()["response"])
        return answers

    with ThreadPoolExecutor(threads) as pool:
        answered = list(pool.map(talk, range(threads)))
    sent = {
        f"thread {t} message {n}" for t in range(threads) for n in range(per_thread)
    }
    assert {answer for answers in answered for answer in answers} == sent
    history = client.get(f"/sessions/{sid}").json()["history"]
    assert len(history) == 2 * threads * per_thread
    # turns never interleave: each user message is followed by its own reply
    pairs = list(zip(history[::2], history[1::2], strict=True))
    assert all(u["role"] == "user" and a["role"] == "assistant" for u, a in pairs)
    assert all(u["content"] == a["content"] for u, a in pairs)
    assert {u["content"][0]["text"] for u, _ in pairs} == sent
    for thread in range(threads):  # each thread's messages in the order it sent them
        own = [
            u["content"][0]["text"]
            for u, _ in pairs
            if f"thread {thread} " in u["content"][0]["text"]
        ]
        assert own == [f"thread {thread} message {n}" for n in range(per_thread)]


# ---------------------------------------------------------------------- failures


def test_a_failed_run_keeps_the_user_turn_and_answers_500(
    agents_server: ServerProcess,
) -> None:
    with httpx.Client(base_url=agents_server.url, timeout=20.0) as http:
        sid = create(http, agent_id=FAILING_AGENT_ID)["id"]
        response = http.post(f"/sessions/{sid}/message", json={"message": "do it"})
        assert response.status_code == 500
        assert response.json() == {"error": "inference failed: agent_error"}
        history = http.get(f"/sessions/{sid}").json()["history"]
        assert history == [{"role": "user", "content": text("do it")}]
        # the failure is in the session's log, without content
        log = http.get(f"/v1/sessions/{sid}/events").json()["events"]
        assert [e["type"] for e in log[-2:]] == ["message_appended", "turn_ended"]
        assert log[-1]["data"] == {
            "turn_offset": log[-2]["offset"],
            "status": "failed",
            "error_code": "agent_error",
            "usage": {"input_tokens": 0, "output_tokens": 0},
            "steps": 0,
            "tool_calls": 0,
        }


def test_a_failed_streamed_run_ends_with_a_json_error_frame_and_keeps_the_user_turn(
    agents_server: ServerProcess,
) -> None:
    with httpx.Client(base_url=agents_server.url, timeout=20.0) as http:
        sid = create(http, agent_id=FAILING_AGENT_ID)["id"]
        events = stream(http, sid, {"agent_id": FAILING_AGENT_ID, "message": "go"})
        assert [e.event for e in events] == [
            "message_start",
            "content_block_start",
            "text_delta",
            "error",
        ]
        assert events[-1].data == {
            "type": "error",
            "error": "inference failed: agent_error",
            "code": "agent_error",
        }
        history = http.get(f"/sessions/{sid}").json()["history"]
        assert history == [{"role": "user", "content": text("go")}]
        # the session goes on: the next turn runs (and fails) after the kept one
        http.post(f"/sessions/{sid}/message", json={"message": "again"})
        assert len(http.get(f"/sessions/{sid}").json()["history"]) == 2


def test_the_dialect_sees_sessions_of_the_native_api(
    client: httpx.Client, tmp_path: Path
) -> None:
    native = client.post(
        "/v1/sessions",
        json={"agent_id": "echo", "attributes": {"work_dir": str(tmp_path)}},
    )
    assert native.status_code == 201
    shown = client.get(f"/sessions/{native.json()['id']}").json()
    assert shown["work_dir"] == str(tmp_path)


# ---------------------------------------------------------------------- tools, pings


def test_tool_calls_are_answered_with_named_fields(
    agents_server: ServerProcess,
) -> None:
    with httpx.Client(base_url=agents_server.url, timeout=20.0) as http:
        sid = create(http, agent_id=TOOLING_AGENT_ID)["id"]
        response = http.post(
            f"/sessions/{sid}/message",
            json={"agent_id": TOOLING_AGENT_ID, "message": "list the files"},
        )
        assert response.status_code == 200
        assert response.json() == {
            "response": "done",
            "tool_calls": [
                {
                    "name": "ls",
                    "input": {"path": "."},
                    "output": "README.md",
                    "error": None,
                }
            ],
            "usage": {"input_tokens": 3, "output_tokens": 1},
            "steps": 2,
        }


def test_the_stream_sends_a_tool_calls_input_as_input_json_deltas(
    agents_server: ServerProcess,
) -> None:
    with httpx.Client(base_url=agents_server.url, timeout=20.0) as http:
        sid = create(http, agent_id=TOOLING_AGENT_ID)["id"]
        events = stream(http, sid, {"message": "list the files"})
        deltas = [e.data for e in events if e.event == "input_json_delta"]
        assert deltas == [
            {
                "type": "input_json_delta",
                "index": 1,
                "input_json": '{"path":',
                "id": "toolu_1",
                "name": "ls",
            },
            {
                "type": "input_json_delta",
                "index": 1,
                "input_json": '"."}',
                "id": "toolu_1",
                "name": "ls",
            },
        ]
        assert events[-1].event == "done"
        assert events[-1].data == {
            "usage": {"input_tokens": 3, "output_tokens": 1},
            "steps": 2,
        }


def test_an_idle_stream_sends_ping_frames_while_the_agent_works(
    agents_server: ServerProcess,
) -> None:
    with httpx.Client(base_url=agents_server.url, timeout=20.0) as http:
        sid = create(http, agent_id=SLOW_AGENT_ID)["id"]
        events = stream(http, sid, {"message": "take your time"})
        names = [e.event for e in events]
        assert names[:2] == ["message_start", "content_block_start"]
        assert "ping" in names
        assert all(e.data == {"type": "ping"} for e in events if e.event == "ping")
        without_pings = [name for name in names if name != "ping"]
        assert without_pings == [
            "message_start",
            "content_block_start",
            "text_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
            "done",
        ]
