"""Context windows of an ``openai`` agent, seen from the model server: the
request bodies the loopback chat-completions server receives never split a
tool call from its results, keep the latest user message, and with
``summarize`` carry the summary the agent itself was asked to write."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from runtime import AgentConfig, ToolContext
from runtime.settings import ContextConfig
from runtime.summaries import INSTRUCTION
from tests.conftest import RuntimeFactory
from tests.support.openai_server import (
    OpenAIServer,
    Reply,
    text_reply,
    tool_call,
    tool_reply,
)


def weather(arguments: dict[str, Any], context: ToolContext) -> str:
    return {"lyon": "sunny", "paris": "rain"}[arguments["city"]]


def assert_pairs_intact(messages: Sequence[Mapping[str, Any]]) -> None:
    """Every call is answered right after it, every result follows its call."""
    index = 0
    while index < len(messages):
        message = messages[index]
        assert message["role"] != "tool", f"a result without its call: {messages}"
        calls = [c["id"] for c in message.get("tool_calls") or ()]
        results = [
            m["tool_call_id"] for m in messages[index + 1 : index + 1 + len(calls)]
        ]
        assert results == calls, f"a call without its results: {messages}"
        index += 1 + len(calls)


def test_a_recent_window_drops_a_call_with_its_results_and_keeps_the_last_message(
    runtime_factory: RuntimeFactory, openai_server: OpenAIServer
) -> None:
    window = ContextConfig(
        strategy="recent", max_tokens=12, reserve_output_tokens=0, counter="words"
    )
    model = AgentConfig(
        id="model",
        provider="openai",
        model="test-model",
        base_url=openai_server.base_url,
        tools=("weather",),
        context=window,
    )
    runtime = runtime_factory(agents={"model": model})
    runtime.register_tool(
        "weather",
        weather,
        description="The weather in a city.",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
    openai_server.script(
        tool_reply(tool_call("call_a", "weather", '{"city": "lyon"}')),
        text_reply("Lyon is sunny."),
        tool_reply(tool_call("call_b", "weather", '{"city": "paris"}')),
        text_reply("Paris has rain."),
        text_reply("You are welcome."),
    )
    sid = runtime.create("model")["id"]
    long_message = " ".join(["thanks"] * 20)  # alone over the budget

    for content in ("weather in lyon", "and in paris then", long_message):
        assert runtime.send(sid, content)["status"] == "completed"

    bodies = [r.body["messages"] for r in openai_server.wait_for_requests(5)]
    for messages in bodies:
        assert_pairs_intact(messages)
    call_a = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "lyon"}'},
            }
        ],
    }
    # The second turn's first step still sees the first call and its result...
    assert bodies[2] == [
        call_a,
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "assistant", "content": "Lyon is sunny."},
        {"role": "user", "content": "and in paris then"},
    ]
    # ...its next step has room for the result (1 word) but not for the call
    # with it (3 words): both are left out.
    assert bodies[3] == [
        {"role": "assistant", "content": "Lyon is sunny."},
        {"role": "user", "content": "and in paris then"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_b", "content": "rain"},
    ]
    assert bodies[4] == [{"role": "user", "content": long_message}]


def test_summarize_asks_the_model_for_a_summary_and_sends_it_as_a_system_message(
    runtime_factory: RuntimeFactory,
) -> None:
    numbers = itertools.count(1)

    def summaries(body: Any) -> Reply | None:
        if body["messages"][-1]["content"] != INSTRUCTION:
            return None
        return text_reply(f"summary number {next(numbers)}", usage=(11, 3))

    window = ContextConfig(
        strategy="summarize",
        max_tokens=10,
        reserve_output_tokens=0,
        counter="words",
        summary_tokens=3,
    )
    with OpenAIServer(when_empty="echo", route=summaries) as openai_server:
        model = AgentConfig(
            id="model",
            provider="openai",
            model="test-model",
            base_url=openai_server.base_url,
            system_prompt="Be brief.",
            tools=("weather",),
            context=window,
        )
        runtime = runtime_factory(agents={"model": model})
        runtime.register_tool("weather", weather, description="The weather.")
        sid = runtime.create("model")["id"]
        for text in ("one two", "three four", "five six", "seven eight"):
            runtime.send(sid, text)
        requests = [r.body for r in openai_server.requests]

    asked = [b for b in requests if b["messages"][-1]["content"] == INSTRUCTION]
    assert asked, "no summary was asked for"
    for body in asked:
        assert "tools" not in body  # one step, no tools
        assert body["messages"][:2] == [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": INSTRUCTION},
        ]
        assert body["messages"][-1] == {"role": "user", "content": INSTRUCTION}
        assert_pairs_intact(body["messages"])
    recorded = [
        e["data"]
        for e in runtime.events(sid, limit=1000)["events"]
        if e["type"] == "summary_recorded"
    ]
    assert len(recorded) == len(asked)
    assert recorded[-1]["text"] == f"summary number {len(asked)}"
    assert recorded[-1]["usage"] == {"input_tokens": 11, "output_tokens": 3}
    last = requests[-1]["messages"]
    assert last[:2] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": recorded[-1]["text"]},
    ]
    assert last[-1] == {"role": "user", "content": "seven eight"}
    # the summary's own request is not part of any turn's conversation
    assert all(
        m["content"] != INSTRUCTION
        for body in requests
        if body not in asked
        for m in body["messages"]
    )


def test_a_smart_window_sends_the_pinned_message_then_the_most_recent(
    runtime_factory: RuntimeFactory,
) -> None:
    window = ContextConfig(
        strategy="smart", max_tokens=8, reserve_output_tokens=0, counter="words"
    )
    with OpenAIServer(when_empty="echo") as openai_server:
        model = AgentConfig(
            id="model",
            provider="openai",
            model="test-model",
            base_url=openai_server.base_url,
            context=window,
        )
        runtime = runtime_factory(agents={"model": model})
        sid = runtime.create("model")["id"]
        runtime.send(sid, "the code is 42", metadata={"pinned": True})
        for text in ("one two", "three four", "five six"):
            runtime.send(sid, text)
        last = openai_server.requests[-1].body["messages"]

    assert last == [
        {"role": "user", "content": "the code is 42"},
        {"role": "assistant", "content": "three four"},
        {"role": "user", "content": "five six"},
    ]
