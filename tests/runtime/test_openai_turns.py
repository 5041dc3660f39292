"""Turns of an ``openai`` agent through the runtime, against the loopback
chat-completions server (one model step per turn: no tools)."""

from __future__ import annotations

import pytest

from runtime import AgentConfig, Runtime
from tests.conftest import RuntimeFactory
from tests.support.openai_server import OpenAIServer, text_reply


@pytest.fixture
def runtime(runtime_factory: RuntimeFactory, openai_server: OpenAIServer) -> Runtime:
    model = AgentConfig(
        id="model",
        provider="openai",
        model="test-model",
        base_url=openai_server.base_url,
        system_prompt="Be brief.",
        params={"temperature": 0},
    )
    return runtime_factory(agents={"echo": AgentConfig(id="echo"), "model": model})


def test_send_records_the_model_reply_with_its_usage(
    runtime: Runtime, openai_server: OpenAIServer
) -> None:
    openai_server.script(text_reply(["Take ", "the ", "TGV."], usage=(42, 3)))
    sid = runtime.create("model")["id"]

    result = runtime.send(sid, "Trains to Lyon?")

    reply = result["reply"]
    assert reply["content"] == "Take the TGV."
    assert reply["role"] == "assistant"
    assert reply["usage"] == {"input_tokens": 42, "output_tokens": 3}
    assert reply["metadata"]["finish_reason"] == "stop"
    assert result["usage"] == {"input_tokens": 42, "output_tokens": 3}
    page = runtime.history(sid, order="asc")["messages"]
    assert [(m["role"], m["content"]) for m in page] == [
        ("user", "Trains to Lyon?"),
        ("assistant", "Take the TGV."),
    ]
    body = openai_server.requests[0].body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Trains to Lyon?"},
    ]
    assert body["temperature"] == 0


def test_the_next_turn_sends_the_conversation_so_far(
    runtime: Runtime, openai_server: OpenAIServer
) -> None:
    openai_server.script(text_reply("Take the TGV."), text_reply("At nine."))
    sid = runtime.create("model")["id"]

    runtime.send(sid, "Trains to Lyon?")
    runtime.send(sid, "When?")

    assert openai_server.requests[1].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Trains to Lyon?"},
        {"role": "assistant", "content": "Take the TGV."},
        {"role": "user", "content": "When?"},
    ]


def test_streaming_a_turn_yields_the_model_deltas_in_order(
    runtime: Runtime, openai_server: OpenAIServer
) -> None:
    pieces = ["Take ", "the ", "TGV ", "at ", "nine."]
    openai_server.script(text_reply(pieces))
    sid = runtime.create("model")["id"]

    events = list(runtime.stream(sid, "Trains to Lyon?"))

    types = [e["type"] for e in events]
    assert types == [
        "message_start",
        "content_block_start",
        *["text_delta"] * len(pieces),
        "content_block_stop",
        "message_delta",
        "message_stop",
        "done",
    ]
    assert [e["text"] for e in events if e["type"] == "text_delta"] == pieces
    assert events[types.index("message_delta")]["stop_reason"] == "end_turn"
