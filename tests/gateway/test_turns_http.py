"""Agent turns over the native API: tool steps on the SSE stream, failed turns
as 502 problems or an ``error`` event, ``busy``, message options, and token
metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from runtime import AgentConfig, Runtime, Settings, TextDelta, ToolContext
from tests.support.agents import WAIT, Gate, ScriptedAgent, calls, final


class ProviderDown(Exception):
    code = "provider_error"


def double(arguments: dict[str, Any], context: ToolContext) -> int:
    return 2 * int(arguments["n"])


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, Runtime]]:
    runtime = Runtime(Settings(db=str(tmp_path / "t.db"), supervisor_interval=0))
    runtime.register_tool(
        "double",
        double,
        description="Double a number.",
        parameters={"type": "object", "properties": {"n": {"type": "integer"}}},
    )
    try:
        with TestClient(create_app(runtime=runtime)) as client:
            yield client, runtime
    finally:
        runtime.close()


def agent_session(runtime: Runtime, agent: ScriptedAgent, **create: Any) -> str:
    runtime.agents.register(
        "scripted",
        agent,
        AgentConfig(id="scripted", provider="python", tools=("double",)),
    )
    return str(runtime.create("scripted", **create)["id"])


def sse(client: TestClient, sid: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    found = []
    with client.stream(
        "POST",
        f"/v1/sessions/{sid}/messages",
        json=body,
        headers={"accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                found.append((name, orjson.loads(line[6:])))
    return found


def test_the_stream_shows_tool_use_blocks_and_tool_results(
    app: tuple[TestClient, Runtime],
) -> None:
    client, runtime = app
    sid = agent_session(
        runtime,
        ScriptedAgent(
            [calls(("c1", "double", '{"n": 21}'))], [TextDelta("42"), final("42")]
        ),
    )
    events = sse(client, sid, {"content": "double 21"})
    names = [n for n, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_start",
        "input_json_delta",
        "content_block_stop",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "tool_result",
        "content_block_start",
        "text_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "done",
    ]
    tool_use = events[2][1]
    assert tool_use == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "c1", "name": "double"},
    }
    result = events[8][1]
    assert (result["id"], result["status"], result["content"]) == ("c1", "ok", "42")
    assert result["message"]["metadata"]["tool_call_id"] == "c1"
    done = events[-1][1]
    assert done["steps"] == 2
    assert done["tool_calls"][0]["result"] == "42"


def test_a_failed_turn_is_a_502_problem_and_the_user_message_stays(
    app: tuple[TestClient, Runtime],
) -> None:
    client, runtime = app
    sid = agent_session(runtime, ScriptedAgent([ProviderDown("x")]))
    response = client.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"})
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "provider_error"
    assert [m["content"] for m in runtime.messages(sid)] == ["hi"]
    events = sse(client, sid, {"content": "again"})
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["code"] == "provider_error"


def test_reject_answers_409_busy_and_appends_nothing(
    app: tuple[TestClient, Runtime],
) -> None:
    client, runtime = app
    gate = Gate()
    sid = agent_session(runtime, ScriptedAgent([gate, final("done")]))
    runtime.submit(sid, "first")
    assert gate.reached.wait(WAIT)
    response = client.post(
        f"/v1/sessions/{sid}/messages",
        json={"content": "second", "concurrency": "reject"},
    )
    assert response.status_code == 409
    assert response.json()["code"] == "busy"
    assert [m["content"] for m in runtime.messages(sid)] == ["first"]
    gate.release.set()
    for bad in ({"concurrency": "sometimes"}, {"on_disconnect": "shrug"}):
        refused = client.post(
            f"/v1/sessions/{sid}/messages", json={"content": "x", **bad}
        )
        assert refused.status_code == 400, bad


def test_metrics_count_tokens_by_agent_and_direction(
    app: tuple[TestClient, Runtime],
) -> None:
    client, runtime = app
    sid = agent_session(runtime, ScriptedAgent([final("ok", usage=(7, 3))]))
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"})
    text = client.get("/metrics").text
    assert 'sessiond_tokens_total{agent="scripted",direction="input"} 7' in text
    assert 'sessiond_tokens_total{agent="scripted",direction="output"} 3' in text
    assert 'sessiond_turns_total{agent="scripted",status="completed"} 1' in text
    assert client.get(f"/v1/sessions/{sid}").json()["usage"] == {
        "input_tokens": 7,
        "output_tokens": 3,
    }


def test_a_closed_websocket_cancels_its_turns_under_the_cancel_policy(
    tmp_path: Path,
) -> None:
    runtime = Runtime(
        Settings(
            db=str(tmp_path / "w.db"), supervisor_interval=0, on_disconnect="cancel"
        )
    )
    gate = Gate()
    agent = ScriptedAgent([TextDelta("typing "), gate, final("never")])
    try:
        sid = agent_session(runtime, agent)
        with TestClient(create_app(runtime=runtime)) as client:
            with client.websocket_connect(f"/v1/sessions/{sid}/ws") as ws:
                ws.send_text('{"type": "message", "content": "hello"}')
                while ws.receive_json()["type"] != "accepted":
                    pass
                assert gate.reached.wait(WAIT)
            queue = runtime.turn_queues.of(sid)
            assert queue.wait_until(lambda q: not q.busy, WAIT)
        ended = [e for e in runtime.events(sid)["events"] if e["type"] == "turn_ended"]
        assert [(e["data"]["status"], e["data"]["error_code"]) for e in ended] == [
            ("cancelled", "disconnected")
        ]
        gate.release.set()
        assert agent.closed.wait(WAIT)
    finally:
        gate.release.set()
        runtime.close()
