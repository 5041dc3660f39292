"""The tool loop: steps, tool calls recorded before and after they run, max_steps,
bad calls, failures, usage, and what an interrupted turn leaves behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from runtime import (
    AgentConfig,
    FinalMessage,
    Runtime,
    TextDelta,
    ToolCallDelta,
    ToolContext,
    ToolError,
    TurnFailedError,
)
from runtime.settings import ContextConfig
from runtime.turn_control import CancelToken
from tests.conftest import RuntimeFactory
from tests.support.agents import ScriptedAgent, calls, final, text

ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}


class ProviderDown(Exception):
    """What a provider raises: it names its own stable code."""

    code = "provider_error"


def add(arguments: dict[str, Any], context: ToolContext) -> int:
    return int(arguments["a"]) + int(arguments["b"])


def explode(arguments: dict[str, Any], context: ToolContext) -> None:
    msg = "SECRET detail the model must not see"
    raise ValueError(msg)


def refuse(arguments: dict[str, Any], context: ToolContext) -> None:
    msg = "this tool says no"
    raise ToolError(msg)


@pytest.fixture
def rt(runtime_factory: RuntimeFactory) -> Runtime:
    runtime = runtime_factory()
    runtime.register_tool("add", add, description="Add two integers.", parameters=ADD)
    runtime.register_tool("explode", explode, description="Fails.")
    runtime.register_tool("refuse", refuse, description="Refuses.")
    runtime.register_tool("hidden", add, description="Not for this agent.")
    return runtime


def use(
    rt: Runtime, agent: ScriptedAgent, *, max_steps: int = 8, tools: Any = None
) -> str:
    allowed = ("add", "explode", "refuse") if tools is None else tools
    rt.agents.register(
        "scripted",
        agent,
        AgentConfig(
            id="scripted", provider="python", tools=allowed, max_steps=max_steps
        ),
    )
    return str(rt.create("scripted")["id"])


def log(rt: Runtime, sid: str) -> list[dict[str, Any]]:
    return list(rt.events(sid, limit=1000)["events"])


def test_a_multi_step_turn_records_each_call_before_and_each_result_after_it_ran(
    rt: Runtime,
) -> None:
    agent = ScriptedAgent(
        [
            ToolCallDelta("c1", "add", '{"a": 1,'),
            ToolCallDelta("c1", "add", ' "b": 2}'),
            calls(("c1", "add", '{"a": 1, "b": 2}'), usage=(10, 2)),
        ],
        [  # two calls in one step: run one at a time, in order
            *text("checking "),
            calls(
                ("c2", "add", '{"a": 3, "b": 4}'),
                ("c3", "add", '{"a": 5, "b": 6}'),
                usage=(20, 3),
                content="checking ",
            ),
        ],
        [*text("the ", "sums"), final("the sums", usage=(30, 4))],
    )
    sid = use(rt, agent)

    events = list(rt.stream(sid, "add things"))

    result = events[-1]
    assert result["type"] == "done"
    assert result["steps"] == 3
    assert result["status"] == "completed"
    assert result["stop_reason"] == "end_turn"
    assert result["usage"] == {"input_tokens": 60, "output_tokens": 9}
    assert [
        (c["id"], c["name"], c["result"], c["status"]) for c in result["tool_calls"]
    ] == [
        ("c1", "add", "3", "ok"),
        ("c2", "add", "7", "ok"),
        ("c3", "add", "11", "ok"),
    ]
    assert result["reply"]["content"] == "the sums"

    messages = rt.messages(sid)
    user, step1, r1, step2, r2, r3, answer = messages
    assert [m["role"] for m in messages] == [
        "user", "assistant", "tool", "assistant", "tool", "tool", "assistant",
    ]  # fmt: skip
    assert step1["metadata"] == {
        "tool_calls": [{"id": "c1", "name": "add", "arguments": '{"a": 1, "b": 2}'}],
        "stop_reason": "tool_use",
        "step": 1,
    }
    assert step1["reply_to"] == user["offset"]
    assert step1["usage"] == {"input_tokens": 10, "output_tokens": 2}
    assert r1["metadata"] == {"tool_call_id": "c1", "name": "add", "status": "ok"}
    assert r1["reply_to"] == step1["offset"]
    assert r1["content"] == "3"
    assert step2["content"] == "checking "
    assert [r2["metadata"]["tool_call_id"], r3["metadata"]["tool_call_id"]] == [
        "c2",
        "c3",
    ]
    assert r2["reply_to"] == r3["reply_to"] == step2["offset"]
    assert answer["reply_to"] == user["offset"]
    assert answer["metadata"] == {"stop_reason": "end_turn"}

    # the agent saw each step's calls and results before its next step
    second = agent.histories[1]
    assert [m["role"] for m in second[-2:]] == ["assistant", "tool"]
    assert agent.tool_names[0] == ["add", "explode", "refuse"]

    ended = log(rt, sid)[-1]
    assert ended["type"] == "turn_ended"
    assert ended["data"] == {
        "turn_offset": user["offset"],
        "status": "completed",
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 60, "output_tokens": 9},
        "steps": 3,
        "tool_calls": 3,
        "reply_offset": answer["offset"],
    }
    assert rt.get(sid)["usage"] == {"input_tokens": 60, "output_tokens": 9}

    names = [e["type"] for e in events]
    assert names[:6] == [
        "message_start",
        "content_block_start",
        "content_block_start",
        "input_json_delta",
        "input_json_delta",
        "content_block_stop",
    ]
    assert events[2]["content_block"] == {"type": "tool_use", "id": "c1", "name": "add"}
    assert events[2]["index"] == 1
    results = [e for e in events if e["type"] == "tool_result"]
    assert [(e["id"], e["status"], e["content"]) for e in results] == [
        ("c1", "ok", "3"),
        ("c2", "ok", "7"),
        ("c3", "ok", "11"),
    ]
    assert results[0]["message"] == r1
    stops = [e["message"]["offset"] for e in events if e["type"] == "message_stop"]
    assert stops == [step1["offset"], step2["offset"], answer["offset"]]
    # a call that was not streamed still shows as a tool_use block with its input
    c2 = [e for e in events if e["type"] == "input_json_delta" and e["id"] == "c2"]
    assert [e["partial_json"] for e in c2] == ['{"a": 3, "b": 4}']


def test_max_steps_ends_the_turn_and_records_the_last_calls_as_not_run(
    rt: Runtime,
) -> None:
    agent = ScriptedAgent([calls(("again", "add", '{"a": 1, "b": 1}'))])
    sid = use(rt, agent, max_steps=2)

    result = rt.send(sid, "loop forever")

    assert result["steps"] == 2
    assert result["stop_reason"] == "max_steps"
    assert result["status"] == "completed"
    assert [c["status"] for c in result["tool_calls"]] == ["ok", "error"]
    assert result["tool_calls"][1]["result"].startswith("not run")
    assert result["reply"]["metadata"]["tool_calls"][0]["id"] == "again"
    assert agent.calls == 2
    ended = log(rt, sid)[-1]["data"]
    assert (ended["status"], ended["stop_reason"]) == ("completed", "max_steps")


def test_bad_calls_become_error_results_and_the_turn_goes_on(rt: Runtime) -> None:
    agent = ScriptedAgent(
        [
            calls(
                ("u", "no_such_tool", "{}"),
                ("h", "hidden", '{"a": 1, "b": 2}'),
                ("j", "add", '{"a": 1,'),
                ("s", "add", '{"a": "one", "b": 2, "c": 3}'),
                ("x", "explode", "{}"),
                ("r", "refuse", "{}"),
                ("k", "add", '{"a": 2, "b": 2}'),
            )
        ],
        [final("handled")],
    )
    sid = use(rt, agent)

    result = rt.send(sid, "try everything")

    found = {c["id"]: (c["status"], c["result"]) for c in result["tool_calls"]}
    assert found["u"] == ("error", "unknown tool 'no_such_tool'")
    assert found["h"] == ("error", "unknown tool 'hidden'")  # not in the agent's tools
    assert found["j"] == ("error", "the arguments are not valid JSON")
    status, text_ = found["s"]
    assert status == "error"
    assert "$.a: expected integer, got string" in text_
    assert "unexpected property 'c'" in text_
    assert found["x"] == ("error", "the tool failed (ValueError)")
    assert found["r"] == ("error", "this tool says no")
    assert found["k"] == ("ok", "4")
    assert result["reply"]["content"] == "handled"
    assert "SECRET" not in str(rt.messages(sid))


def test_a_failing_agent_ends_the_turn_failed_and_keeps_the_user_message(
    rt: Runtime,
) -> None:
    agent = ScriptedAgent([TextDelta("partial "), RuntimeError("model down")])
    sid = use(rt, agent)

    with pytest.raises(TurnFailedError) as failed:
        rt.send(sid, "hello")

    assert failed.value.code == "agent_error"
    assert [m["content"] for m in rt.messages(sid)] == ["hello"]
    ended = log(rt, sid)[-1]
    assert ended["type"] == "turn_ended"
    assert ended["data"]["status"] == "failed"
    assert ended["data"]["error_code"] == "agent_error"
    assert "model down" not in str(ended)
    assert "partial" not in str(ended)
    # the session goes on
    agent.steps.append([final("recovered")])
    assert rt.send(sid, "again")["reply"]["content"] == "recovered"


def test_a_providers_own_error_code_is_recorded_and_raised(rt: Runtime) -> None:
    sid = use(rt, ScriptedAgent([ProviderDown("upstream 500")]))
    with pytest.raises(TurnFailedError) as failed:
        rt.send(sid, "hello")
    assert failed.value.code == "provider_error"
    assert log(rt, sid)[-1]["data"]["error_code"] == "provider_error"


def test_a_failure_after_tool_steps_keeps_the_recorded_calls(rt: Runtime) -> None:
    agent = ScriptedAgent(
        [calls(("c1", "add", '{"a": 1, "b": 2}'))], [ProviderDown("gone")]
    )
    sid = use(rt, agent)
    with pytest.raises(TurnFailedError):
        rt.send(sid, "go")
    roles = [m["role"] for m in rt.messages(sid)]
    assert roles == ["user", "assistant", "tool"]
    assert log(rt, sid)[-1]["data"]["steps"] == 1
    assert log(rt, sid)[-1]["data"]["tool_calls"] == 1


def test_usage_is_summed_per_turn_per_session_and_counted_by_agent(
    rt: Runtime,
) -> None:
    agent = ScriptedAgent(
        [calls(("c", "add", '{"a": 1, "b": 1}'), usage=(5, 1))],
        [final("two", usage=(7, 2))],
        [final("three", usage=(3, 3))],
    )
    sid = use(rt, agent)
    first = rt.send(sid, "one")
    second = rt.send(sid, "again")
    assert first["usage"] == {"input_tokens": 12, "output_tokens": 3}
    assert second["usage"] == {"input_tokens": 3, "output_tokens": 3}
    assert rt.get(sid)["usage"] == {"input_tokens": 15, "output_tokens": 6}
    figures = rt.turn_figures()
    assert {"agent": "scripted", "direction": "input", "value": 15} in figures["tokens"]
    assert {"agent": "scripted", "direction": "output", "value": 6} in figures["tokens"]
    assert {"agent": "scripted", "status": "completed", "value": 2} in figures["turns"]
    assert {"tool": "add", "status": "ok", "value": 1} in figures["tool_calls"]


def test_an_idempotent_retry_answers_the_recorded_turn_and_runs_nothing(
    rt: Runtime,
) -> None:
    agent = ScriptedAgent(
        [calls(("c", "add", '{"a": 2, "b": 3}'), usage=(1, 1))], [final("5")]
    )
    sid = use(rt, agent)
    first = rt.send(sid, "sum", idempotency_key="k1")
    again = rt.send(sid, "sum", idempotency_key="k1")
    assert agent.calls == 2
    assert again["reply"] == first["reply"]
    assert again["usage"] == first["usage"]
    assert again["steps"] == 2
    assert [c["result"] for c in again["tool_calls"]] == ["5"]


def test_echo_and_agents_without_tools_run_as_one_step(runtime: Runtime) -> None:
    sid = runtime.create("echo")["id"]
    result = runtime.send(sid, "plain words")
    assert (result["steps"], result["tool_calls"]) == (1, [])
    assert result["reply"]["content"] == "plain words"


class LastTwo:
    """Declares it reads only the latest two messages; records what it got."""

    history_limit = 2

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def run(self, history: Any, tools: Any = ()) -> Any:
        self.seen.append([m["content"] for m in history])
        yield FinalMessage(content="ok")


def test_an_agent_with_a_history_limit_gets_only_its_latest_messages(
    runtime: Runtime,
) -> None:
    agent = LastTwo()
    runtime.agents.register("two", agent)
    sid = runtime.create("two")["id"]
    for text_ in ("one", "two", "three"):
        runtime.send(sid, text_)
    assert agent.seen[-1] == ["ok", "three"]


def test_a_configured_context_window_wins_over_the_agents_history_limit(
    runtime: Runtime,
) -> None:
    agent = LastTwo()
    runtime.agents.register(
        "windowed",
        agent,
        AgentConfig(
            id="windowed", provider="python", context=ContextConfig(max_tokens=4096)
        ),
    )
    sid = runtime.create("windowed")["id"]
    for text_ in ("one", "two", "three"):
        runtime.send(sid, text_)
    assert agent.seen[-1] == ["one", "ok", "two", "ok", "three"]


class InlineAgent(ScriptedAgent):
    """A scripted agent that declares its steps never block (``inline``); it
    notes the thread each step runs on."""

    inline = True

    def __init__(self, *steps: Any) -> None:
        super().__init__(*steps)
        self.threads: list[str] = []

    def run(self, history: Any, tools: Any = ()) -> Any:
        played = super().run(history, tools)

        def outputs() -> Iterator[Any]:
            # noted as the step runs (a pump thread would run this part)
            self.threads.append(threading.current_thread().name)
            yield from played

        return outputs()


def test_an_inline_agent_runs_on_the_turns_own_thread(rt: Runtime) -> None:
    agent = InlineAgent([*text("one ", "two"), final("one two")])
    sid = use(rt, agent)

    events = list(rt.stream(sid, "hi"))

    assert agent.threads == [threading.current_thread().name]
    assert [e["text"] for e in events if e["type"] == "text_delta"] == ["one ", "two"]
    assert events[-1]["reply"]["content"] == "one two"


def test_an_inline_agents_failure_ends_the_turn_failed(rt: Runtime) -> None:
    sid = use(rt, InlineAgent([*text("partial "), ProviderDown("upstream 500")]))

    with pytest.raises(TurnFailedError) as failed:
        rt.send(sid, "hello")

    assert failed.value.code == "provider_error"
    ended = log(rt, sid)[-1]
    assert (ended["type"], ended["data"]["status"]) == ("turn_ended", "failed")


def test_an_inline_agent_is_stopped_between_its_outputs_and_closed(
    rt: Runtime,
) -> None:
    token = CancelToken()

    def cancel_after_first(history: Any, tools: Any) -> Any:
        def outputs() -> Iterator[Any]:
            yield from text("kept ")
            token.cancel()  # as if the caller went away mid-step
            yield from text("handed over")  # given at the stop: kept too
            yield final("never produced")

        return outputs()

    agent = InlineAgent(cancel_after_first)
    sid = use(rt, agent)

    events = list(rt.stream(sid, "hi", cancel=token))

    deltas = [e["text"] for e in events if e["type"] == "text_delta"]
    assert deltas == ["kept ", "handed over"]
    assert agent.closed.is_set()  # the generator was closed, its finally ran
    ended = log(rt, sid)[-1]
    assert (ended["type"], ended["data"]["status"]) == ("turn_ended", "cancelled")
    assert "never produced" not in str(log(rt, sid))


def test_a_first_step_with_history_limit_one_gets_the_turns_own_message(
    runtime: Runtime,
) -> None:
    class LastOne(LastTwo):
        history_limit = 1

    agent = LastOne()
    runtime.agents.register("one", agent)
    sid = runtime.create("one")["id"]
    runtime.send(sid, "first")
    runtime.send(sid, "second")

    assert agent.seen == [["first"], ["second"]]


# --- one-write turns: an inline agent's first step runs in its message's command


class InlineOne(InlineAgent):
    """An inline agent that needs only the turn's own message: its first step
    runs inside the command that records that message."""

    history_limit = 1


def writes(rt: Runtime) -> int:
    return rt.metrics()["committed_writes"]


TURN_EVENTS = [
    "message_start",
    "content_block_start",
    "text_delta",
    "text_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "done",
]


def test_an_inline_turn_is_one_write(rt: Runtime) -> None:
    sid = use(rt, InlineOne([*text("one ", "two"), final("one two")]), tools=())
    before = writes(rt)

    events = list(rt.stream(sid, "hi"))

    assert writes(rt) == before + 1  # message, answer and turn_ended together
    assert [e["type"] for e in events] == TURN_EVENTS
    done = events[-1]
    assert done["reply"]["content"] == "one two"
    assert done["user_message"]["offset"] + 1 == done["reply"]["offset"]
    assert (done["steps"], done["status"]) == (1, "completed")
    assert done["session"]["message_count"] == 2
    assert [e["type"] for e in log(rt, sid)[-3:]] == [
        "message_appended",
        "message_appended",
        "turn_ended",
    ]


def test_an_inline_turn_watched_live_records_its_message_first(rt: Runtime) -> None:
    sid = use(rt, InlineOne([*text("one ", "two"), final("one two")]), tools=())
    seen: list[dict[str, Any]] = []
    unsubscribe = rt.app.bus.subscribe(sid, seen.append)  # what a live tail gets
    try:
        before = writes(rt)
        events = list(rt.stream(sid, "hi"))
    finally:
        unsubscribe()

    assert writes(rt) == before + 2  # the message, then the answer
    assert [e["type"] for e in events] == TURN_EVENTS
    kinds = [item["event"]["type"] for item in seen]
    # live: the deltas come before the answer's events, as the turn happened
    assert kinds.index("text_delta") < kinds.index("turn_ended")
    assert kinds.index("message_appended") < kinds.index("text_delta")


def test_an_inline_first_step_that_fails_runs_once_and_keeps_the_message(
    rt: Runtime,
) -> None:
    agent = InlineOne([*text("partial "), ProviderDown("upstream 500")])
    sid = use(rt, agent, tools=())
    before = writes(rt)

    with pytest.raises(TurnFailedError) as failed:
        rt.send(sid, "hello")

    assert failed.value.code == "provider_error"
    assert agent.calls == 1
    assert writes(rt) == before + 2  # the message alone, then the failure
    message, ended = log(rt, sid)[-2:]
    assert (message["type"], message["data"]["content"]) == (
        "message_appended",
        "hello",
    )
    assert (ended["type"], ended["data"]["status"]) == ("turn_ended", "failed")


def test_an_inline_first_step_that_asks_for_tools_goes_on_from_its_answer(
    rt: Runtime,
) -> None:
    agent = InlineOne(
        [calls(("c1", "add", '{"a": 2, "b": 3}'))],
        [final("five")],
    )
    sid = use(rt, agent, tools=("add",))

    result = rt.send(sid, "add them")

    assert agent.calls == 2  # the first step was not run again
    assert agent.tool_names[0] == ["add"]
    assert result["reply"]["content"] == "five"
    assert [c["result"] for c in result["tool_calls"]] == ["5"]
    assert result["steps"] == 2
    assert [e["type"] for e in log(rt, sid)[-5:]] == [
        *["message_appended"] * 4,  # asked, the step, the tool's result, answer
        "turn_ended",
    ]


def test_an_inline_first_step_cancelled_keeps_what_it_said(rt: Runtime) -> None:
    token = CancelToken()

    def cancel_after_first(history: Any, tools: Any) -> Any:
        def outputs() -> Iterator[Any]:
            yield from text("kept ")
            token.cancel()
            yield final("never produced")

        return outputs()

    agent = InlineOne(cancel_after_first)
    sid = use(rt, agent, tools=())

    events = list(rt.stream(sid, "hi", cancel=token))

    assert agent.calls == 1
    assert [e["text"] for e in events if e["type"] == "text_delta"] == ["kept "]
    ended = log(rt, sid)[-1]
    assert (ended["type"], ended["data"]["status"]) == ("turn_ended", "cancelled")
    assert "never produced" not in str(log(rt, sid))


def test_a_retried_inline_turn_answers_the_first_result_and_writes_nothing(
    rt: Runtime,
) -> None:
    agent = InlineOne([*text("one"), final("one")])
    sid = use(rt, agent, tools=())
    first = rt.send(sid, "hi", idempotency_key="k1")
    before = writes(rt)

    again = rt.send(sid, "hi", idempotency_key="k1")

    assert writes(rt) == before
    assert agent.calls == 1
    assert again["reply"] == first["reply"]
    assert again["user_message"] == first["user_message"]
