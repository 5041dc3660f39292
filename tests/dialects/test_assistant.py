"""The kcosr/assistant sessions plugin dialect, against a real server process
(and, for the slow-agent paths, in process over the same app)."""

from __future__ import annotations

import http.server as http_server
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from gateway.app import create_app
from gateway.dialects import assistant
from runtime import FinalMessage, Runtime, TextDelta, WebhookEvent
from tests.conftest import DatabaseFactory, settings_for
from tests.gateway.helpers import TestClient
from tests.support.server import ServerProcess

OPS = "/api/plugins/sessions/operations/"
WAIT = 20.0


@pytest.fixture(scope="module")
def assistant_server(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[ServerProcess]:
    where = tmp_path_factory.mktemp("assistant-server")
    process = ServerProcess(database_factory(), log=where / "server.log")
    yield process.start()
    process.stop()


@pytest.fixture
def http(assistant_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=assistant_server.url, timeout=WAIT) as client:
        yield client


def call(http: httpx.Client, op: str, **arguments: Any) -> httpx.Response:
    return http.post(OPS + op, json=arguments)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is True
    return body["result"]


def fresh_id() -> str:
    return "s_" + uuid.uuid4().hex[:12]


def create(http: httpx.Client, session_id: str | None = None) -> dict[str, Any]:
    return ok(
        call(http, "create", agentId="echo", sessionId=session_id or fresh_id()), 201
    )


@dataclass
class Receiver:
    """A loopback webhook receiver."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int) -> list[dict[str, Any]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.received) >= count, WAIT)
            return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(http_server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
            with state.changed:
                state.received.append({"body": body, "headers": dict(self.headers)})
                state.changed.notify_all()

        def log_message(self, *_: Any) -> None:
            pass

    server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_port}/hook"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


# ------------------------------------------------------------------ transport


def test_an_unknown_operation_is_a_404_tool_not_found(http: httpx.Client) -> None:
    response = call(http, "explode")
    assert response.status_code == 404
    assert response.json() == {
        "error": "Unknown operation: explode",
        "code": "tool_not_found",
    }


def test_a_body_that_is_not_json_is_refused_with_the_originals_messages(
    http: httpx.Client,
) -> None:
    wrong_type = http.post(
        OPS + "list", content=b"{}", headers={"content-type": "text/plain"}
    )
    assert wrong_type.status_code == 400
    assert wrong_type.json() == {"error": "Content-Type must be application/json"}
    broken = http.post(
        OPS + "list", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400
    assert broken.json() == {"error": "Invalid JSON body"}


def test_an_empty_body_is_an_empty_argument_object(http: httpx.Client) -> None:
    result = ok(http.post(OPS + "list"))
    assert isinstance(result["sessions"], list)


def test_missing_and_mistyped_arguments_are_listed_together(http: httpx.Client) -> None:
    response = call(http, "message", content=5)
    assert response.status_code == 400
    assert response.json() == {
        "error": "sessionId is required; content has invalid type",
        "code": "invalid_arguments",
    }


def test_query_arguments_are_coerced_by_the_schema(http: httpx.Client) -> None:
    session = create(http)
    sid = session["sessionId"]
    renamed = ok(
        http.post(OPS + "update", params={"sessionId": sid, "name": "Query named"})
    )
    assert renamed["name"] == "Query named"
    cleared = ok(http.post(OPS + "update", params={"sessionId": sid, "name": "null"}))
    assert "name" not in cleared
    patched = ok(
        http.post(
            OPS + "update-attributes",
            params={"sessionId": sid, "patch": '{"ui": {"color": "red"}}'},
        )
    )
    assert patched["attributes"] == {"ui": {"color": "red"}}
    reply = ok(
        http.post(
            OPS + "message",
            params={"sessionId": sid, "content": "hi", "mode": "sync", "timeout": "30"},
        )
    )
    assert reply["status"] == "complete"


# ------------------------------------------------------------------ create and list


def test_create_answers_201_with_a_summary_of_the_callers_id(
    http: httpx.Client,
) -> None:
    sid = fresh_id()
    response = call(http, "create", agentId=" echo ", sessionId=sid)
    assert response.status_code == 201
    result = response.json()["result"]
    assert result["sessionId"] == sid
    assert result["agentId"] == "echo"
    assert {"createdAt", "updatedAt"} <= result.keys()


def test_creating_the_same_id_for_the_same_agent_again_returns_the_session(
    http: httpx.Client,
) -> None:
    first = create(http)
    again = create(http, first["sessionId"])
    assert again == first


def test_create_refuses_bad_ids_unknown_agents_and_an_id_of_another_agent(
    http: httpx.Client,
) -> None:
    bad = call(http, "create", agentId="echo", sessionId="no spaces")
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_arguments"
    long = call(http, "create", agentId="echo", sessionId="a" * 129)
    assert long.status_code == 400
    unknown = call(http, "create", agentId="nobody")
    assert unknown.status_code == 400
    assert unknown.json() == {
        "error": "Unknown agent: nobody",
        "code": "invalid_arguments",
    }
    missing = call(http, "create")
    assert missing.json() == {
        "error": "agentId is required",
        "code": "invalid_arguments",
    }


def test_create_without_an_id_makes_one_up(http: httpx.Client) -> None:
    result = ok(call(http, "create", agentId="echo"), 201)
    assert result["sessionId"]


def test_list_shows_live_sessions_and_not_deleted_ones(http: httpx.Client) -> None:
    kept = create(http)
    gone = create(http)
    ok(call(http, "delete", sessionId=gone["sessionId"]))
    listed = {s["sessionId"] for s in ok(call(http, "list"))["sessions"]}
    assert kept["sessionId"] in listed
    assert gone["sessionId"] not in listed


def test_list_shows_the_last_assistant_text_as_the_snippet(http: httpx.Client) -> None:
    sid = create(http)["sessionId"]
    long = "word " * 40
    ok(call(http, "message", sessionId=sid, content=long, mode="sync"))
    found = next(s for s in ok(call(http, "list"))["sessions"] if s["sessionId"] == sid)
    assert found["lastSnippet"] == long.strip()[:117] + "…"


# ------------------------------------------------------------------ update


def test_update_renames_and_pins_and_null_clears_both(http: httpx.Client) -> None:
    sid = create(http)["sessionId"]
    named = ok(
        call(
            http,
            "update",
            sessionId=sid,
            name="  Planning  ",
            pinnedAt="2026-01-01T00:00:00Z",
        )
    )
    assert named["name"] == "Planning"
    assert named["pinnedAt"]
    cleared = ok(call(http, "update", sessionId=sid, name=None, pinnedAt=None))
    assert "name" not in cleared
    assert "pinnedAt" not in cleared


def test_update_needs_a_name_or_a_pin_and_a_live_session(http: httpx.Client) -> None:
    sid = create(http)["sessionId"]
    nothing = call(http, "update", sessionId=sid)
    assert nothing.status_code == 400
    assert nothing.json() == {
        "error": "Missing name or pinnedAt",
        "code": "invalid_arguments",
    }
    blank = call(http, "update", sessionId=sid, name="   ")
    assert blank.status_code == 400
    missing = call(http, "update", sessionId="never_made", name="x")
    assert missing.status_code == 404
    assert missing.json()["code"] == "session_not_found"


def test_names_are_unique_regardless_of_case_among_live_sessions(
    http: httpx.Client,
) -> None:
    name = "Unique " + uuid.uuid4().hex[:6]
    first = create(http)["sessionId"]
    second = create(http)["sessionId"]
    ok(call(http, "update", sessionId=first, name=name))
    clash = call(http, "update", sessionId=second, name=name.upper())
    assert clash.status_code == 400
    assert clash.json()["code"] == "invalid_arguments"
    ok(
        call(http, "update", sessionId=first, name=name.lower())
    )  # its own name, recased
    ok(call(http, "delete", sessionId=first))
    assert ok(call(http, "update", sessionId=second, name=name))["name"] == name


# ------------------------------------------------------------------ attributes


def test_attribute_patches_deep_merge_and_null_deletes_a_key(
    http: httpx.Client,
) -> None:
    sid = create(http)["sessionId"]
    ok(
        call(
            http,
            "update-attributes",
            sessionId=sid,
            patch={"ui": {"color": "red", "size": 2}},
        )
    )
    merged = ok(
        call(
            http,
            "update-attributes",
            sessionId=sid,
            attributes={
                "ui": {"size": None, "font": "mono"},
                "core": {"workingDir": "/tmp"},
            },
        )
    )
    assert merged["attributes"] == {
        "ui": {"color": "red", "font": "mono"},
        "core": {"workingDir": "/tmp"},
    }
    emptied = ok(
        call(http, "update-attributes", sessionId=sid, patch={"ui": None, "core": None})
    )
    assert "attributes" not in emptied


def test_patch_wins_over_its_alias(http: httpx.Client) -> None:
    sid = create(http)["sessionId"]
    result = ok(
        call(
            http,
            "update-attributes",
            sessionId=sid,
            patch={"a": 1},
            attributes={"b": 2},
        )
    )
    assert result["attributes"] == {"a": 1}


def test_attribute_patches_are_checked(http: httpx.Client) -> None:
    sid = create(http)["sessionId"]
    for patch in ({"core": {"workingDir": "relative"}}, {"core": {"activeBranch": 3}}):
        response = call(http, "update-attributes", sessionId=sid, patch=patch)
        assert response.status_code == 400
    neither = call(http, "update-attributes", sessionId=sid)
    assert neither.json() == {
        "error": "patch must be an object",
        "code": "invalid_arguments",
    }
    mistyped = call(http, "update-attributes", sessionId=sid, patch=[1])
    assert mistyped.json()["error"] == "patch has invalid type"
    missing = call(http, "update-attributes", sessionId="never_made", patch={})
    assert missing.status_code == 404


# ------------------------------------------------------------------ events and messages


def test_a_sync_message_completes_and_its_turn_shows_in_events(
    http: httpx.Client,
) -> None:
    sid = create(http)["sessionId"]
    ok(call(http, "update", sessionId=sid, name="Echo " + sid))
    result = ok(
        call(http, "message", sessionId=sid, content="hello there", mode="sync")
    )
    assert result["status"] == "complete"
    assert result["response"] == "hello there"
    assert result["truncated"] is False
    assert result["toolCallCount"] == 0
    assert result["toolCalls"] == []
    assert result["sessionName"] == "Echo " + sid
    assert result["agentId"] == "echo"
    assert result["created"] is False
    events = ok(call(http, "events", sessionId=sid))
    assert events["sessionId"] == sid
    assert [(e["type"], e["payload"]["text"]) for e in events["events"]] == [
        ("user_message", "hello there"),
        ("assistant_done", "hello there"),
    ]
    assert events["events"][1]["responseId"] == result["responseId"]
    assert all(isinstance(e["timestamp"], int) for e in events["events"])


def test_a_long_sync_response_is_cut_to_ten_thousand_bytes(http: httpx.Client) -> None:
    sid = create(http)["sessionId"]
    result = ok(call(http, "message", sessionId=sid, content="é" * 6000, mode="sync"))
    assert result["truncated"] is True
    assert len(result["response"].encode()) <= 10_000


def test_events_after_an_id_are_exclusive_and_an_unknown_id_returns_all(
    http: httpx.Client,
) -> None:
    sid = create(http)["sessionId"]
    for text in ("one", "two"):
        ok(call(http, "message", sessionId=sid, content=text, mode="sync"))
    every = ok(call(http, "events", sessionId=sid))["events"]
    assert len(every) == 4
    after_first = ok(call(http, "events", sessionId=sid, after=every[0]["id"]))[
        "events"
    ]
    assert after_first == every[1:]
    assert (
        ok(call(http, "events", sessionId=sid, after=every[-1]["id"]))["events"] == []
    )
    assert ok(call(http, "events", sessionId=sid, after="unknown"))["events"] == every


def test_an_async_message_starts_and_its_reply_reaches_the_webhook_and_events(
    http: httpx.Client, receiver: Receiver
) -> None:
    sid = create(http)["sessionId"]
    result = ok(
        call(
            http,
            "message",
            sessionId=sid,
            content="later please",
            webhook={"url": receiver.url, "headers": {"x-hook": "secret"}},
        )
    )
    assert result["status"] == "started"
    # The plugin's completion callback, once, when the run ends.
    (delivered,) = receiver.wait_for(1)
    body = delivered["body"]
    assert body.pop("durationMs") >= 0
    assert body == {
        "sessionId": sid,
        "sessionName": sid,
        "agentId": "echo",
        "responseId": result["responseId"],
        "status": "complete",
        "toolCallCount": 0,
        "toolCalls": [],
        "response": "later please",
        "truncated": False,
        "error": None,
    }
    assert delivered["headers"]["x-hook"] == "secret"
    events = ok(call(http, "events", sessionId=sid))["events"]
    assert [e["type"] for e in events] == ["user_message", "assistant_done"]
    assert events[1]["responseId"] == result["responseId"]


def test_a_later_message_without_a_webhook_is_not_delivered(
    http: httpx.Client, receiver: Receiver
) -> None:
    sid = create(http)["sessionId"]
    hook = {"url": receiver.url}
    ok(call(http, "message", sessionId=sid, content="first", webhook=hook))
    receiver.wait_for(1)
    ok(call(http, "message", sessionId=sid, content="second", mode="sync"))
    ok(call(http, "message", sessionId=sid, content="third", webhook=hook))
    delivered = receiver.wait_for(2)
    assert [d["body"]["response"] for d in delivered] == ["first", "third"]


def test_message_arguments_are_checked(http: httpx.Client) -> None:
    sid = create(http)["sessionId"]
    cases: Sequence[Mapping[str, Any]] = (
        {"content": "   "},
        {"content": "x", "mode": "later"},
        {"content": "x", "timeout": 0},
        {"content": "x", "timeout": -3},
        {"content": "x", "webhook": {"url": " "}},
        {"content": "x", "webhook": {"url": "http://h", "headers": {"a": 1}}},
    )
    for arguments in cases:
        response = call(http, "message", sessionId=sid, **arguments)
        assert response.status_code == 400, arguments
        assert response.json()["code"] == "invalid_arguments"
    missing = call(http, "message", sessionId="never_made", content="x")
    assert missing.status_code == 404


# ------------------------------------------------------------------ clear and delete


def test_clear_empties_events_and_keeps_the_session(http: httpx.Client) -> None:
    sid = create(http)["sessionId"]
    ok(call(http, "update", sessionId=sid, name="Kept " + sid))
    ok(call(http, "message", sessionId=sid, content="forget me", mode="sync"))
    result = ok(call(http, "clear", sessionId=sid))
    assert result["sessionId"] == sid
    assert result["cleared"] is True
    assert result["updatedAt"]
    assert ok(call(http, "events", sessionId=sid))["events"] == []
    listed = next(
        s for s in ok(call(http, "list"))["sessions"] if s["sessionId"] == sid
    )
    assert listed["name"] == "Kept " + sid
    assert "lastSnippet" not in listed
    audit = http.get(f"/v1/sessions/{sid}/events").json()["events"]
    assert any(e["type"] == "history_cleared" for e in audit)


def test_delete_removes_the_session_from_every_operation(http: httpx.Client) -> None:
    sid = create(http)["sessionId"]
    ok(call(http, "message", sessionId=sid, content="bye", mode="sync"))
    result = ok(call(http, "delete", sessionId=sid))
    assert result["sessionId"] == sid
    assert result["deleted"] is True
    for op, extra in (
        ("events", {}),
        ("update", {"name": "x"}),
        ("message", {"content": "x"}),
        ("clear", {}),
        ("delete", {}),
    ):
        response = call(http, op, sessionId=sid, **extra)
        assert response.status_code == 404, op
        assert response.json() == {
            "error": "Session not found",
            "code": "session_not_found",
        }
    recreate = call(http, "create", agentId="echo", sessionId=sid)
    assert recreate.status_code == 400


# --- a slow agent, in process


class SlowAgent:
    """Writes one piece, then waits for ``release`` before finishing."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.closed = threading.Event()  # a run's generator was closed early
        self.finished: list[
            str
        ] = []  # the message each run that got to its end answered

    def run(
        self, history: Sequence[Mapping[str, Any]], tools: Any = ()
    ) -> Iterator[TextDelta | FinalMessage]:
        completed = False
        try:
            yield TextDelta("thinking ")
            assert self.release.wait(WAIT)
            yield TextDelta("done")
            self.finished.append(str(history[-1]["content"]))
            yield FinalMessage("thinking done")
            completed = True
        finally:
            if not completed:
                self.closed.set()


@pytest.fixture
def slow(db: str) -> Iterator[tuple[TestClient, Runtime, SlowAgent]]:
    runtime = Runtime(settings_for(db))
    agent = SlowAgent()
    runtime.agents.register("slow", agent)
    try:
        with TestClient(create_app(runtime=runtime)) as client:
            yield client, runtime, agent
    finally:
        agent.release.set()
        runtime.close()


def test_a_sync_timeout_answers_timeout_and_cancels_the_run(
    slow: tuple[TestClient, Runtime, SlowAgent],
) -> None:
    client, runtime, agent = slow
    client.post(OPS + "create", json={"agentId": "slow", "sessionId": "slow1"})
    response = client.post(
        OPS + "message",
        json={"sessionId": "slow1", "content": "go", "mode": "sync", "timeout": 1},
    )
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["status"] == "timeout"
    assert result["timeoutSeconds"] == 1
    assert result["message"] == "Request timed out after 1 seconds"
    # the run was cancelled before the answer: recorded, and the session free
    ended = [e for e in runtime.events("slow1")["events"] if e["type"] == "turn_ended"]
    assert [(e["data"]["status"], e["data"]["error_code"]) for e in ended] == [
        ("cancelled", "timeout")
    ]
    agent.release.set()
    assert agent.closed.wait(WAIT)  # its generator was closed, not run to the end
    after = client.post(
        OPS + "message",
        json={"sessionId": "slow1", "content": "once more", "mode": "sync"},
    ).json()["result"]
    assert after["status"] == "complete"
    assert after["response"] == "thinking done"
    assert agent.finished == ["once more"]
    events = client.post(OPS + "events", json={"sessionId": "slow1"}).json()["result"][
        "events"
    ]
    assert [(e["type"], e["payload"]["text"]) for e in events] == [
        ("user_message", "go"),
        ("assistant_done", "thinking "),  # what the cancelled run had written
        ("user_message", "once more"),
        ("assistant_done", "thinking done"),
    ]


def test_an_async_message_to_a_busy_session_answers_busy_with_status_200(
    slow: tuple[TestClient, Runtime, SlowAgent],
) -> None:
    client, _, agent = slow
    client.post(OPS + "create", json={"agentId": "slow", "sessionId": "slow2"})
    started = client.post(
        OPS + "message", json={"sessionId": "slow2", "content": "first"}
    )
    assert started.json()["result"]["status"] == "started"
    busy = client.post(
        OPS + "message", json={"sessionId": "slow2", "content": "second"}
    )
    assert busy.status_code == 200
    assert busy.json()["result"] == {
        "sessionId": "slow2",
        "sessionName": "slow2",
        "agentId": "slow",
        "created": False,
        "status": "busy",
        "code": "session_busy",
        "message": (
            "Agent is currently processing another message. "
            "Please wait or try a different session."
        ),
    }
    agent.release.set()


class BrokenAgent:
    """Fails at once, as a provider that is down does."""

    def run(
        self, history: Sequence[Mapping[str, Any]], tools: Any = ()
    ) -> Iterator[TextDelta | FinalMessage]:
        msg = "the model provider is down"
        raise RuntimeError(msg)
        yield  # a generator


def test_a_failed_async_run_calls_the_webhook_back_with_an_error(
    db: str, receiver: Receiver
) -> None:
    runtime = Runtime(settings_for(db))
    runtime.agents.register("broken", BrokenAgent())
    try:
        with TestClient(create_app(runtime=runtime)) as client:
            client.post(OPS + "create", json={"agentId": "broken", "sessionId": "b1"})
            started = client.post(
                OPS + "message",
                json={
                    "sessionId": "b1",
                    "content": "hi",
                    "webhook": {"url": receiver.url},
                },
            ).json()["result"]
            assert started["status"] == "started"
            (delivered,) = receiver.wait_for(1)
    finally:
        runtime.close()
    assert delivered["body"] == {
        "sessionId": "b1",
        "sessionName": "b1",
        "agentId": "broken",
        "responseId": started["responseId"],
        "status": "error",
        "toolCallCount": 0,
        "toolCalls": [],
        "response": "",
        "truncated": False,
        "error": "agent_error",
        "durationMs": 0,
    }


def test_the_callback_lists_each_tool_call_with_its_duration() -> None:
    def message(offset: int, at: str, **data: Any) -> dict[str, Any]:
        return {"offset": offset, "type": "message_appended", "at": at, "data": data}

    committed = [
        message(2, "2026-11-21T10:00:00.000Z", message_id="m2", role="user"),
        message(
            3,
            "2026-11-21T10:00:01.000Z",
            role="assistant",
            metadata={"tool_calls": [{"id": "c1", "name": "read_file"}]},
        ),
        message(
            4,
            "2026-11-21T10:00:01.250Z",
            role="tool",
            reply_to=3,
            metadata={"tool_call_id": "c1", "name": "read_file", "status": "ok"},
        ),
    ]
    reply = message(5, "2026-11-21T10:00:02.000Z", role="assistant", content="done")
    ended = {
        "offset": 6,
        "type": "turn_ended",
        "at": "2026-11-21T10:00:02.000Z",
        "data": {
            "turn_offset": 2,
            "status": "completed",
            "tool_calls": 1,
            "reply_offset": 5,
        },
    }
    payload = assistant.webhook_payload(
        WebhookEvent(
            session={"id": "s1", "name": "Trip", "agent_id": "a1"},
            event=ended,
            batch=[reply, ended],
            read=lambda after, upto: [
                e for e in committed if after < e["offset"] <= upto
            ],
        )
    )
    assert payload is not None
    body = orjson.loads(payload)
    assert body["responseId"] == "m2"
    assert body["sessionName"] == "Trip"
    assert body["toolCallCount"] == 1
    assert body["toolCalls"] == [{"name": "read_file", "durationMs": 250}]
    assert body["response"] == "done"
    assert body["durationMs"] == 2000
    # other events are not called back
    assert (
        assistant.webhook_payload(WebhookEvent({}, reply, [reply], lambda a, b: []))
        is None
    )
