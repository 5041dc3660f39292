"""The OpenAI-compatible provider against a real loopback chat-completions
server the tests script (tests/support/openai_server.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.agents import AgentOutput, FinalMessage, TextDelta, ToolCallDelta, ToolSpec
from runtime.errors import (
    ProviderError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
)
from runtime.providers.openai import OpenAIAgent
from runtime.settings import AgentConfig
from tests.support.openai_server import (
    OpenAIServer,
    Reply,
    dropped,
    error_reply,
    running_process,
    text_reply,
    tool_call,
    tool_reply,
)
from tests.support.server import free_port

USER = [{"role": "user", "content": "Find me a train to Lyon"}]
API_KEY = "sk-test-0123456789abcdef"

AgentFactory = Callable[..., OpenAIAgent]


@pytest.fixture
def delays() -> list[float]:
    """The waits the agent asked for between attempts (none is really waited)."""
    return []


@pytest.fixture
def agent_factory(
    openai_server: OpenAIServer, delays: list[float]
) -> Iterator[AgentFactory]:
    made: list[OpenAIAgent] = []

    def make(**changes: Any) -> OpenAIAgent:
        values: dict[str, Any] = {
            "id": "model",
            "provider": "openai",
            "model": "test-model",
            "base_url": openai_server.base_url,
        }
        values.update(changes)
        agent = OpenAIAgent(
            AgentConfig(**values), sleep=delays.append, random=lambda: 0.5
        )
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()


@pytest.fixture
def agent(agent_factory: AgentFactory) -> OpenAIAgent:
    return agent_factory()


def final_of(outputs: list[AgentOutput]) -> FinalMessage:
    assert isinstance(outputs[-1], FinalMessage)
    assert not any(isinstance(o, FinalMessage) for o in outputs[:-1])
    return outputs[-1]


# --- streaming


def test_text_streams_as_deltas_in_order_then_one_final_message(
    openai_server: OpenAIServer, agent: OpenAIAgent
) -> None:
    openai_server.script(text_reply(["Take ", "the ", "TGV", "."], usage=(31, 4)))

    outputs = list(agent.run(USER))

    assert outputs[:-1] == [
        TextDelta("Take "),
        TextDelta("the "),
        TextDelta("TGV"),
        TextDelta("."),
    ]
    final = final_of(outputs)
    assert final.content == "Take the TGV."
    assert final.usage == {"input_tokens": 31, "output_tokens": 4}
    assert final.stop_reason == "end_turn"
    assert final.tool_calls == ()
    assert final.metadata["model"] == "test-model"
    assert "usage_estimated" not in final.metadata


def test_a_delta_reaches_the_caller_before_the_server_sends_the_next(
    openai_server: OpenAIServer, agent: OpenAIAgent
) -> None:
    # the role chunk and the first piece, then the server holds the stream
    reply = text_reply(["first ", "second"], stall_after=2)
    openai_server.script(reply)

    outputs = agent.run(USER)
    assert next(outputs) == TextDelta("first ")
    request = openai_server.requests[0]
    assert not request.answered.is_set()  # the rest is not even sent yet
    reply.release.set()
    rest = list(outputs)

    assert rest[0] == TextDelta("second")
    assert final_of(rest).content == "first second"


def test_two_parallel_tool_calls_are_assembled_from_interleaved_chunks(
    openai_server: OpenAIServer, agent: OpenAIAgent
) -> None:
    search = tool_call("call_a", "search", '{"query": "trains to Lyon"}', pieces=4)
    weather = tool_call("call_b", "weather", '{"city": "Lyon", "days": 2}', pieces=3)
    openai_server.script(
        tool_reply(search, weather, text="Let me look.", interleave=True)
    )

    outputs = list(agent.run(USER))

    final = final_of(outputs)
    assert final.stop_reason == "tool_use"
    assert final.content == "Let me look."
    assert [c.to_json() for c in final.tool_calls] == [
        {"id": "call_a", "name": "search", "arguments": '{"query": "trains to Lyon"}'},
        {"id": "call_b", "name": "weather", "arguments": '{"city": "Lyon", "days": 2}'},
    ]
    pieces = [o for o in outputs if isinstance(o, ToolCallDelta)]
    # streamed as they came: interleaved, each piece named by its call
    assert [p.call_id for p in pieces] == [
        "call_a",
        "call_b",
        "call_a",
        "call_b",
        "call_a",
        "call_b",
        "call_a",
    ]
    for call in final.tool_calls:
        streamed = "".join(p.partial_json for p in pieces if p.call_id == call.call_id)
        assert streamed == call.arguments
        assert {p.name for p in pieces if p.call_id == call.call_id} == {call.name}


def test_a_tool_call_without_an_id_or_index_gets_one(
    openai_server: OpenAIServer, agent: OpenAIAgent
) -> None:
    whole = {"function": {"name": "clock", "arguments": "{}"}}
    openai_server.script(
        Reply(
            chunks=[
                {"choices": [{"index": 0, "delta": {"tool_calls": [whole]}}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            ]
        )
    )

    final = final_of(list(agent.run(USER)))

    (call,) = final.tool_calls
    assert call.name == "clock"
    assert call.call_id.startswith("call_")
    assert final.stop_reason == "tool_use"  # whatever the server called it


def test_the_request_maps_history_tools_system_prompt_and_sampling(
    openai_server: OpenAIServer, agent_factory: AgentFactory
) -> None:
    agent = agent_factory(
        system_prompt="You are terse.",
        params={"temperature": 0.2, "max_tokens": 64, "stop": ["\n\n"], "seed": 7},
    )
    history = [
        {
            "role": "system",
            "content": "Earlier: the user lives in Paris.",
            "metadata": {"summary": {"from_offset": 2, "to_offset": 9}},
        },
        {"role": "user", "content": "Trains to Lyon?", "metadata": None},
        {
            "role": "assistant",
            "content": "",
            "metadata": {
                "tool_calls": [
                    {"id": "call_1", "name": "search", "arguments": '{"q": "Lyon"}'}
                ]
            },
        },
        {
            "role": "tool",
            "content": '{"trains": 3}',
            "metadata": {"tool_call_id": "call_1", "name": "search", "status": "ok"},
        },
    ]
    tools = [
        ToolSpec(
            "search",
            "Search timetables.",
            {"type": "object", "properties": {"q": {"type": "string"}}},
        )
    ]
    openai_server.script(text_reply("Three trains."))

    list(agent.run(history, tools))

    body = openai_server.requests[0].body
    assert body == {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "system", "content": "Earlier: the user lives in Paris."},
            {"role": "user", "content": "Trains to Lyon?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "search", "arguments": '{"q": "Lyon"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"trains": 3}'},
        ],
        "temperature": 0.2,
        "max_tokens": 64,
        "stop": ["\n\n"],
        "seed": 7,
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "search",
                    "description": "Search timetables.",
                    "parameters": {
                        "type": "object",
                        "properties": {"q": {"type": "string"}},
                    },
                },
            }
        ],
    }
    assert openai_server.requests[0].path == "/v1/chat/completions"


def test_without_usage_from_the_server_it_is_estimated_and_marked(
    openai_server: OpenAIServer, agent: OpenAIAgent
) -> None:
    openai_server.script(text_reply("Take the TGV at nine.", usage=None))

    final = final_of(list(agent.run(USER)))

    assert final.metadata["usage_estimated"] is True
    assert final.usage["input_tokens"] > 0
    assert final.usage["output_tokens"] > 0


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("something_new", "something_new"),
    ],
)
def test_finish_reasons_map_onto_stop_reasons(
    openai_server: OpenAIServer,
    agent: OpenAIAgent,
    finish_reason: str,
    stop_reason: str,
) -> None:
    openai_server.script(text_reply("Hello", finish_reason=finish_reason))

    final = final_of(list(agent.run(USER)))

    assert final.stop_reason == stop_reason
    assert final.metadata["finish_reason"] == finish_reason


def test_a_tool_call_cut_off_by_the_token_limit_is_not_returned_to_run(
    openai_server: OpenAIServer, agent: OpenAIAgent
) -> None:
    cut = tool_call("call_1", "search", '{"query": "tra', pieces=2)
    openai_server.script(tool_reply(cut, finish_reason="length"))

    final = final_of(list(agent.run(USER)))

    assert final.stop_reason == "max_tokens"
    assert final.tool_calls == ()
    assert final.metadata["truncated_tool_calls"] == 1


def test_a_server_that_answers_one_json_completion_is_understood(
    openai_server: OpenAIServer, agent: OpenAIAgent
) -> None:
    call = tool_call("call_9", "search", '{"q": "x"}')
    openai_server.script(tool_reply(call, text="Looking.", usage=(5, 3), as_json=True))

    outputs = list(agent.run(USER))

    assert outputs[0] == TextDelta("Looking.")
    final = final_of(outputs)
    assert final.usage == {"input_tokens": 5, "output_tokens": 3}
    assert [c.to_json() for c in final.tool_calls] == [
        {"id": "call_9", "name": "search", "arguments": '{"q": "x"}'}
    ]


# --- failures and retries


def test_429_then_success_honours_retry_after(
    openai_server: OpenAIServer, agent: OpenAIAgent, delays: list[float]
) -> None:
    openai_server.script(error_reply(429, retry_after=0.05), text_reply("Hello"))

    final = final_of(list(agent.run(USER)))

    assert final.content == "Hello"
    assert len(openai_server.requests) == 2
    assert delays == [0.05]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_5xx_before_any_token_is_retried_with_backoff(
    openai_server: OpenAIServer, agent: OpenAIAgent, delays: list[float], status: int
) -> None:
    openai_server.script(error_reply(status), error_reply(status), text_reply("Hello"))

    final = final_of(list(agent.run(USER)))

    assert final.content == "Hello"
    assert len(openai_server.requests) == 3
    # exponential from 0.5 s, half fixed and half jitter (fixed at 0.5 here)
    assert delays == [0.375, 0.75]


def test_a_dropped_connection_before_any_token_is_retried(
    openai_server: OpenAIServer, agent: OpenAIAgent
) -> None:
    openai_server.script(dropped(), text_reply("Hello"))

    assert final_of(list(agent.run(USER))).content == "Hello"
    assert len(openai_server.requests) == 2


def test_a_stream_cut_before_any_token_is_retried(
    openai_server: OpenAIServer, agent: OpenAIAgent
) -> None:
    openai_server.script(text_reply("Lost", cut_after=1), text_reply("Hello"))

    assert final_of(list(agent.run(USER))).content == "Hello"
    assert len(openai_server.requests) == 2


def test_a_stream_cut_after_a_token_fails_the_step_and_is_not_retried(
    openai_server: OpenAIServer, agent: OpenAIAgent
) -> None:
    openai_server.script(
        text_reply(["Take ", "the ", "TGV"], cut_after=2), text_reply("x")
    )

    outputs: list[AgentOutput] = []
    with pytest.raises(ProviderError) as caught:
        outputs.extend(agent.run(USER))

    assert outputs == [TextDelta("Take ")]
    assert caught.value.code == "provider_error"
    assert len(openai_server.requests) == 1
    assert openai_server.pending == 1


def test_a_stream_that_ends_without_finishing_fails_once_a_token_was_sent(
    openai_server: OpenAIServer, agent: OpenAIAgent
) -> None:
    piece = {"choices": [{"index": 0, "delta": {"content": "Take"}}]}
    openai_server.script(Reply(chunks=[piece], done=False), text_reply("x"))

    with pytest.raises(ProviderError, match="ended early"):
        list(agent.run(USER))
    assert len(openai_server.requests) == 1


def test_an_error_inside_the_stream_fails_the_step(
    openai_server: OpenAIServer, agent: OpenAIAgent
) -> None:
    failure = {"error": {"message": "overloaded", "type": "server_error"}}
    openai_server.script(Reply(chunks=[failure]))

    with pytest.raises(ProviderError, match="server_error"):
        list(agent.run(USER))


def test_attempts_are_bounded_and_the_last_status_is_reported(
    openai_server: OpenAIServer, agent_factory: AgentFactory
) -> None:
    agent = agent_factory(max_attempts=2)
    openai_server.script(error_reply(500), error_reply(503), text_reply("never"))

    with pytest.raises(ProviderError) as caught:
        list(agent.run(USER))

    assert caught.value.code == "provider_error"
    assert caught.value.status == 503
    assert caught.value.agent_id == "model"
    assert len(openai_server.requests) == 2


def test_rate_limiting_that_persists_is_a_rate_limited_error(
    openai_server: OpenAIServer, agent: OpenAIAgent, delays: list[float]
) -> None:
    openai_server.script(*(error_reply(429, retry_after=0.01) for _ in range(3)))

    with pytest.raises(ProviderRateLimitedError) as caught:
        list(agent.run(USER))

    assert caught.value.code == "provider_rate_limited"
    assert caught.value.status == 429
    assert caught.value.retry_after == 0.01
    assert delays == [0.01, 0.01]
    assert len(openai_server.requests) == 3


def test_a_retry_after_beyond_the_cap_is_not_waited_for(
    openai_server: OpenAIServer, agent_factory: AgentFactory, delays: list[float]
) -> None:
    agent = agent_factory(backoff_cap_seconds=5)
    openai_server.script(error_reply(429, retry_after=60), text_reply("x"))

    with pytest.raises(ProviderRateLimitedError) as caught:
        list(agent.run(USER))

    assert caught.value.retry_after == 60
    assert delays == []
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_a_4xx_is_not_retried(
    openai_server: OpenAIServer, agent: OpenAIAgent, status: int
) -> None:
    openai_server.script(error_reply(status, code="invalid_value"), text_reply("x"))

    with pytest.raises(ProviderError) as caught:
        list(agent.run(USER))

    assert caught.value.status == status
    assert "invalid_value" in caught.value.detail  # the server's code, quoted
    assert len(openai_server.requests) == 1


def test_an_unreachable_server_is_retried_then_a_provider_error(
    agent_factory: AgentFactory, delays: list[float]
) -> None:
    agent = agent_factory(base_url=f"http://127.0.0.1:{free_port()}/v1")

    with pytest.raises(ProviderError, match="ConnectError") as caught:
        list(agent.run(USER))

    assert caught.value.status is None
    assert len(delays) == 2  # three attempts


def test_a_stream_that_stalls_times_out_and_is_not_retried(
    openai_server: OpenAIServer, agent_factory: AgentFactory
) -> None:
    agent = agent_factory(read_timeout_seconds=0.2)
    openai_server.script(
        text_reply(["Take ", "the ", "TGV"], stall_after=2), text_reply("x")
    )

    outputs: list[AgentOutput] = []
    with pytest.raises(ProviderTimeoutError) as caught:
        outputs.extend(agent.run(USER))

    assert outputs == [TextDelta("Take ")]
    assert caught.value.code == "provider_timeout"
    assert openai_server.requests[0].disconnected.wait(5)
    assert len(openai_server.requests) == 1


def test_a_server_silent_before_answering_times_out(
    openai_server: OpenAIServer, agent_factory: AgentFactory
) -> None:
    agent = agent_factory(read_timeout_seconds=0.2)
    gate = threading.Event()
    openai_server.script(text_reply("late", gate=gate), text_reply("x"))

    with pytest.raises(ProviderTimeoutError, match=r"sent nothing for 0\.2 s"):
        list(agent.run(USER))

    # a read timeout is not retried: the request may still be running upstream
    assert len(openai_server.requests) == 1
    assert openai_server.requests[0].disconnected.wait(5)


def test_errors_and_logs_carry_no_content_and_no_key(
    openai_server: OpenAIServer,
    agent_factory: AgentFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = agent_factory(api_key=API_KEY, system_prompt="PROMPT-SECRET-SYSTEM")
    history = [{"role": "user", "content": "PROMPT-SECRET-USER"}]
    echoed = "PROMPT-SECRET-USER is not allowed"  # an error body quoting the prompt
    openai_server.script(
        error_reply(429, retry_after=0.01, message=echoed),
        error_reply(500, message=echoed),
        error_reply(400, message=echoed, code=echoed),
    )

    with caplog.at_level(logging.DEBUG), pytest.raises(ProviderError) as caught:
        list(agent.run(history))

    text = f"{caught.value} {caught.value.detail} {caught.value!r}"
    assert "the model server answered 400" in text
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    for where in (text, caplog.text):
        assert "PROMPT-SECRET" not in where
        assert API_KEY not in where
    assert "retrying" in caplog.text
    assert API_KEY not in repr(agent.config)


def test_the_api_key_is_sent_as_a_bearer_token_only_when_configured(
    openai_server: OpenAIServer, agent_factory: AgentFactory
) -> None:
    openai_server.script(text_reply("a"), text_reply("b"))

    list(agent_factory(api_key=API_KEY).run(USER))
    list(agent_factory().run(USER))

    with_key, without = openai_server.requests
    assert with_key.headers["authorization"] == f"Bearer {API_KEY}"
    assert "authorization" not in without.headers


# --- cancellation


def test_closing_the_step_mid_stream_closes_the_upstream_connection(
    openai_server: OpenAIServer, agent: OpenAIAgent
) -> None:
    reply = text_reply(["Take ", "the ", "TGV"], stall_after=2)
    openai_server.script(reply)

    outputs = agent.run(USER)
    assert next(outputs) == TextDelta("Take ")
    request = openai_server.requests[0]
    assert not request.disconnected.is_set()
    outputs.close()  # type: ignore[attr-defined]

    assert request.disconnected.wait(5)
    assert not reply.release.is_set()  # the server was still holding the stream


def test_connections_are_reused_between_steps(
    openai_server: OpenAIServer, agent: OpenAIAgent
) -> None:
    openai_server.script(text_reply("a"), text_reply("b"))

    list(agent.run(USER))
    list(agent.run(USER))

    assert [r.disconnected.is_set() for r in openai_server.requests] == [False, False]
    assert (
        openai_server.requests[1].client_port == openai_server.requests[0].client_port
    )


# --- the scripted server as a process (for tests that kill processes)


def test_the_scripted_server_runs_as_a_process_with_a_control_api(
    tmp_path: Path, delays: list[float]
) -> None:
    script = {
        "replies": [
            {"error": 429, "retry_after": 0},
            {"text": "Take the TGV.", "usage": [9, 4]},
            {"pieces": ["held ", "back"], "stall_after": 2},
        ],
        "when_empty": "echo",
    }
    with running_process(script, tmp_path) as (_, base_url):
        config = AgentConfig(
            id="model", provider="openai", model="m", base_url=base_url
        )
        agent = OpenAIAgent(config, sleep=delays.append)
        try:
            first = final_of(list(agent.run(USER)))
            held = agent.run(USER)
            assert next(held) == TextDelta("held ")
            control = base_url.removesuffix("/v1")
            assert httpx.post(f"{control}/_control/release").status_code == 200
            second = final_of(list(held))
            httpx.post(
                f"{control}/_control/replies", json={"replies": [{"text": "added"}]}
            )
            third = final_of(list(agent.run(USER)))
            echoed = final_of(list(agent.run(USER)))
            recorded = httpx.get(f"{control}/_control/requests").json()
        finally:
            agent.close()

    assert first.content == "Take the TGV."
    assert first.usage == {"input_tokens": 9, "output_tokens": 4}
    assert delays == [0]
    assert second.content == "held back"
    assert third.content == "added"
    assert echoed.content == USER[0]["content"]
    assert len(recorded) == 5
    assert recorded[0]["body"]["messages"] == USER
