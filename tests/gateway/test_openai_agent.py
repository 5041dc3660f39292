"""A sessiond process with an ``openai`` agent defined by the environment,
against the loopback chat-completions server: a native SSE turn carries the
model's deltas as the native event types."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import ServerFactory
from tests.gateway.helpers import new_session, sse_events
from tests.support.openai_server import OpenAIServer, error_reply, text_reply
from tests.support.server import ServerProcess

KEY = "sk-gateway-test-0123456789"


@pytest.fixture
def sessiond(
    server_factory: ServerFactory, openai_server: OpenAIServer
) -> ServerProcess:
    return server_factory(
        env={
            "SESSIOND_OPENAI_BASE_URL": openai_server.base_url,
            "SESSIOND_OPENAI_MODEL": "test-model",
            "SESSIOND_OPENAI_API_KEY_ENV": "TEST_MODEL_KEY",
            "TEST_MODEL_KEY": KEY,
        }
    )


def streamed_turn(http: httpx.Client, sid: str, content: str) -> list[tuple[str, dict]]:
    with http.stream(
        "POST",
        f"/v1/sessions/{sid}/messages",
        json={"content": content},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        return [(e.event or "", e.data) for e in sse_events(response)]


def test_a_native_sse_turn_streams_the_model_deltas(
    sessiond: ServerProcess, openai_server: OpenAIServer
) -> None:
    pieces = ["Take ", "the ", "TGV."]
    openai_server.script(text_reply(pieces, usage=(17, 3)))
    with httpx.Client(base_url=sessiond.url, timeout=20.0) as http:
        sid = new_session(http, agent_id="openai")["id"]

        events = streamed_turn(http, sid, "Trains to Lyon?")

    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "text_delta",
        "text_delta",
        "text_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "done",
    ]
    assert [data["text"] for name, data in events if name == "text_delta"] == pieces
    delta = events[names.index("message_delta")][1]
    assert delta["stop_reason"] == "end_turn"
    assert delta["usage"] == {"input_tokens": 17, "output_tokens": 3}
    assert events[-1][1]["reply"]["content"] == "Take the TGV."
    request = openai_server.requests[0]
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["messages"][-1] == {
        "role": "user",
        "content": "Trains to Lyon?",
    }


def test_a_provider_failure_ends_the_stream_with_an_error_and_keeps_the_message(
    sessiond: ServerProcess, openai_server: OpenAIServer
) -> None:
    openai_server.script(error_reply(400, code="context_length_exceeded"))
    with httpx.Client(base_url=sessiond.url, timeout=20.0) as http:
        sid = new_session(http, agent_id="openai")["id"]

        events = streamed_turn(http, sid, "Trains to Lyon?")
        history = http.get(f"/v1/sessions/{sid}/messages").json()["messages"]

    assert events[0][0] == "message_start"
    name, data = events[-1]
    assert name == "error"
    assert data["error"]["code"] == "provider_error"
    assert data["error"]["status"] == 502
    assert KEY not in str(data)
    assert [m["content"] for m in history if m["role"] == "user"] == ["Trains to Lyon?"]
    assert sessiond.log.read_text().count(KEY) == 0
