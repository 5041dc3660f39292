"""The tool loop, concurrency policies and cancellation of an ``openai`` agent,
end to end against the scripted loopback chat-completions server: the agent
is the real provider talking HTTP, the server decides what the model says and
records what it was sent (and whether the client went away)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from runtime import (
    AgentConfig,
    CancelToken,
    Runtime,
    SessionBusyError,
    ToolContext,
    TurnTimeoutError,
)
from runtime.providers.openai import OpenAIAgent
from tests.conftest import RuntimeFactory
from tests.support.openai_server import OpenAIServer, text_reply, tool_call, tool_reply

WAIT = 10.0

WEATHER = {"lyon": "sunny", "paris": "rain"}


def weather(arguments: dict[str, Any], context: ToolContext) -> str:
    return WEATHER[arguments["city"]]


@pytest.fixture
def runtime(runtime_factory: RuntimeFactory, openai_server: OpenAIServer) -> Runtime:
    model = AgentConfig(
        id="model",
        provider="openai",
        model="test-model",
        base_url=openai_server.base_url,
        system_prompt="Be brief.",
        tools=("weather",),
        max_attempts=1,
    )
    runtime = runtime_factory(agents={"model": model})
    runtime.register_tool(
        "weather",
        weather,
        description="The weather in a city.",
        parameters={
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    )
    return runtime


def two_calls() -> Any:
    return tool_reply(
        tool_call("call_a", "weather", '{"city": "lyon"}', pieces=3),
        tool_call("call_b", "weather", '{"city": "paris"}', pieces=2),
        interleave=True,
        usage=(20, 8),
    )


def test_two_parallel_calls_run_and_their_results_go_back_in_openai_form(
    runtime: Runtime, openai_server: OpenAIServer
) -> None:
    openai_server.script(
        two_calls(), text_reply("Lyon sunny, Paris rain.", usage=(30, 6))
    )
    sid = runtime.create("model")["id"]

    events = list(runtime.stream(sid, "Weather in Lyon and Paris?"))

    done = events[-1]
    assert done["type"] == "done"
    assert done["steps"] == 2
    assert [(c["id"], c["result"], c["status"]) for c in done["tool_calls"]] == [
        ("call_a", "sunny", "ok"),
        ("call_b", "rain", "ok"),
    ]
    assert done["usage"] == {"input_tokens": 50, "output_tokens": 14}
    assert done["reply"]["content"] == "Lyon sunny, Paris rain."
    # the arguments streamed in pieces, interleaved, reassembled per call
    pieces: dict[str, str] = {}
    for event in events:
        if event["type"] == "input_json_delta":
            pieces[event["id"]] = pieces.get(event["id"], "") + event["partial_json"]
    assert pieces == {"call_a": '{"city": "lyon"}', "call_b": '{"city": "paris"}'}
    assert len([e for e in events if e["type"] == "input_json_delta"]) == 5

    log = runtime.messages(sid)
    assert [m["role"] for m in log] == [
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]
    step, first, second = log[1:4]
    assert step["metadata"]["tool_calls"] == [
        {"id": "call_a", "name": "weather", "arguments": '{"city": "lyon"}'},
        {"id": "call_b", "name": "weather", "arguments": '{"city": "paris"}'},
    ]
    assert step["usage"] == {"input_tokens": 20, "output_tokens": 8}
    assert [r["metadata"] for r in (first, second)] == [
        {"tool_call_id": "call_a", "name": "weather", "status": "ok"},
        {"tool_call_id": "call_b", "name": "weather", "status": "ok"},
    ]
    assert first["reply_to"] == second["reply_to"] == step["offset"]
    assert step["offset"] < first["offset"] < second["offset"] < log[4]["offset"]

    asked, answered = (r.body for r in openai_server.wait_for_requests(2))
    assert asked["tools"][0]["function"]["name"] == "weather"
    assert answered["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Lyon and Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "lyon"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "paris"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "rain"},
    ]


def test_a_call_with_bad_arguments_is_an_error_result_the_model_reads(
    runtime: Runtime, openai_server: OpenAIServer
) -> None:
    openai_server.script(
        tool_reply(tool_call("call_x", "weather", '{"town": "lyon"}')),
        text_reply("Sorry."),
    )
    sid = runtime.create("model")["id"]

    result = runtime.send(sid, "Weather?")

    assert result["tool_calls"][0]["status"] == "error"
    sent = openai_server.wait_for_requests(2)[1].body["messages"][-1]
    assert sent["role"] == "tool"
    assert sent["tool_call_id"] == "call_x"
    assert "city" in sent["content"]


# --- concurrency: the first turn's stream is held open by the server


def stalled(text: str = "Hello there") -> Any:
    """A reply that streams its role chunk and first piece, then holds."""
    return text_reply(
        ["Hello ", "there"] if text == "Hello there" else text, stall_after=2
    )


class Streaming:
    """A turn streamed on its own thread; ``delta`` is set at its first text."""

    def __init__(self, runtime: Runtime, sid: str, content: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.delta = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(runtime, sid, content))
        self.thread.start()

    def _run(self, runtime: Runtime, sid: str, content: str) -> None:
        for event in runtime.stream(sid, content):
            self.events.append(event)
            if event["type"] == "text_delta":
                self.delta.set()

    def join(self) -> list[dict[str, Any]]:
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        return self.events


def wait_idle(runtime: Runtime, sid: str) -> None:
    queue = runtime.turn_queues.of(sid)
    assert queue.wait_until(lambda q: not q.busy, WAIT)


def test_reject_answers_busy_and_records_nothing_while_the_model_streams(
    runtime: Runtime, openai_server: OpenAIServer
) -> None:
    held = stalled()
    openai_server.script(held)
    sid = runtime.create("model", concurrency="reject")["id"]
    runtime.submit(sid, "first")
    openai_server.wait_for_requests(1)

    with pytest.raises(SessionBusyError):
        runtime.send(sid, "second")

    assert [m["content"] for m in runtime.messages(sid)] == ["first"]
    held.release.set()
    wait_idle(runtime, sid)
    assert [m["content"] for m in runtime.messages(sid)] == ["first", "Hello there"]
    assert len(openai_server.requests) == 1


def test_interrupt_stops_the_stream_closes_the_request_and_runs_the_new_turn(
    runtime: Runtime, openai_server: OpenAIServer
) -> None:
    openai_server.script(stalled(), text_reply("Second answer."))
    sid = runtime.create("model", concurrency="interrupt")["id"]
    streaming = Streaming(runtime, sid, "first")
    assert streaming.delta.wait(WAIT)
    first = openai_server.requests[0]

    result = runtime.send(sid, "second")

    assert result["reply"]["content"] == "Second answer."
    assert first.disconnected.wait(WAIT), "the interrupted request stayed open"
    ended = [
        e["data"] for e in runtime.events(sid)["events"] if e["type"] == "turn_ended"
    ]
    assert [(e["status"], e.get("error_code")) for e in ended] == [
        ("interrupted", "interrupted"),
        ("completed", None),
    ]
    log = runtime.messages(sid)
    assert [(m["role"], m["content"]) for m in log] == [
        ("user", "first"),
        ("assistant", "Hello "),
        ("user", "second"),
        ("assistant", "Second answer."),
    ]
    assert log[1]["metadata"]["interrupted"] is True
    assert streaming.join()[-1]["status"] == "interrupted"
    # the model saw the interrupted exchange as it was recorded
    assert openai_server.requests[1].body["messages"][1:] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Hello "},
        {"role": "user", "content": "second"},
    ]


def test_enqueue_runs_the_turns_one_after_the_other_in_order(
    runtime: Runtime, openai_server: OpenAIServer
) -> None:
    held = stalled()
    openai_server.script(held, text_reply("Second answer."))
    sid = runtime.create("model")["id"]
    runtime.submit(sid, "first")
    openai_server.wait_for_requests(1)
    results: list[dict[str, Any]] = []
    waiting = threading.Thread(
        target=lambda: results.append(runtime.send(sid, "second"))
    )
    waiting.start()
    queue = runtime.turn_queues.of(sid)
    assert queue.wait_until(lambda q: q.waiting == 1, WAIT)
    assert len(openai_server.requests) == 1  # the second turn waits for the first

    held.release.set()
    waiting.join(WAIT)

    assert results[0]["reply"]["content"] == "Second answer."
    assert [m["content"] for m in runtime.messages(sid)] == [
        "first",
        "Hello there",
        "second",
        "Second answer.",
    ]
    assert openai_server.requests[1].body["messages"][-3:] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Hello there"},
        {"role": "user", "content": "second"},
    ]


# --- cancellation closes the upstream request


def test_a_caller_timeout_cancels_the_turn_and_closes_the_request(
    runtime: Runtime, openai_server: OpenAIServer
) -> None:
    openai_server.script(stalled())
    sid = runtime.create("model")["id"]

    with pytest.raises(TurnTimeoutError):
        runtime.send(sid, "first", timeout=0.3)

    request = openai_server.wait_for_requests(1)[0]
    assert request.disconnected.wait(WAIT), "the request outlived its turn"
    ended = [
        e["data"] for e in runtime.events(sid)["events"] if e["type"] == "turn_ended"
    ]
    assert [(e["status"], e.get("error_code")) for e in ended] == [
        ("cancelled", "timeout")
    ]


def test_a_cancelled_step_is_not_retried_and_its_request_is_closed(
    runtime: Runtime, openai_server: OpenAIServer
) -> None:
    # Only the role chunk comes, then silence: nothing was streamed yet, so a
    # dropped connection would be retried, were it not the turn's own doing.
    config = AgentConfig(
        id="retrying",
        provider="openai",
        model="test-model",
        base_url=openai_server.base_url,
        max_attempts=3,
        backoff_seconds=0.0,
    )
    agent = OpenAIAgent(config)
    runtime.agents.register("retrying", agent, config)
    openai_server.script(text_reply("never", stall_after=1), text_reply("retried"))
    sid = runtime.create("retrying")["id"]
    token = CancelToken()
    outcome: list[dict[str, Any]] = []
    worker = threading.Thread(
        target=lambda: outcome.append(runtime.send(sid, "first", cancel=token))
    )
    worker.start()
    request = openai_server.wait_for_requests(1)[0]

    token.cancel()
    worker.join(WAIT)

    assert outcome[0]["status"] == "cancelled"
    assert request.disconnected.wait(WAIT), "the request outlived its turn"
    assert len(openai_server.requests) == 1
    assert openai_server.pending == 1
    agent.close()
