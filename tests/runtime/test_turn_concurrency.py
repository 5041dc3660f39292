"""Concurrency policies (enqueue, reject, interrupt) and cancellation: caller
timeouts, cancel tokens and callers that go away. Synchronised with gates and
the session's turn queue, never with sleeps."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from runtime import (
    AgentConfig,
    CancelToken,
    Runtime,
    SessionBusyError,
    TextDelta,
    TurnTimeoutError,
)
from tests.support.agents import WAIT, Gate, ScriptedAgent, final

Send = Callable[..., dict[str, Any]]


def session(rt: Runtime, agent: ScriptedAgent, concurrency: str = "enqueue") -> str:
    rt.agents.register("scripted", agent, AgentConfig(id="scripted", provider="python"))
    return str(rt.create("scripted", concurrency=concurrency)["id"])


def turns_ended(rt: Runtime, sid: str) -> list[tuple[str, str | None]]:
    return [
        (e["data"]["status"], e["data"].get("error_code"))
        for e in rt.events(sid, limit=1000)["events"]
        if e["type"] == "turn_ended"
    ]


def idle(rt: Runtime, sid: str) -> None:
    assert rt.turn_queues.of(sid).wait_until(lambda q: not q.busy, WAIT)


@pytest.fixture
def pool() -> Any:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def test_enqueue_runs_messages_one_at_a_time_in_arrival_order(
    runtime: Runtime, pool: ThreadPoolExecutor
) -> None:
    gate = Gate()
    agent = ScriptedAgent(
        [gate, final("first done")],
        lambda history, tools: [final(f"answer to {history[-1]['content']}")],
    )
    sid = session(runtime, agent)
    queue = runtime.turn_queues.of(sid)
    first = pool.submit(runtime.send, sid, "first")
    assert gate.reached.wait(WAIT)
    later: list[Future[dict[str, Any]]] = []
    for n, text in enumerate(("second", "third", "fourth"), start=1):
        later.append(pool.submit(runtime.send, sid, text))
        assert queue.wait_until(lambda q, n=n: q.waiting == n, WAIT)
    # nothing of the waiting messages is recorded while the first turn runs
    assert [m["content"] for m in runtime.messages(sid)] == ["first"]
    gate.release.set()
    assert first.result(WAIT)["reply"]["content"] == "first done"
    replies = [f.result(WAIT)["reply"]["content"] for f in later]
    assert replies == ["answer to second", "answer to third", "answer to fourth"]
    contents = [m["content"] for m in runtime.messages(sid)]
    assert contents == [
        "first", "first done",
        "second", "answer to second",
        "third", "answer to third",
        "fourth", "answer to fourth",
    ]  # fmt: skip


def test_reject_refuses_a_message_while_a_turn_runs_and_records_nothing(
    runtime: Runtime, pool: ThreadPoolExecutor
) -> None:
    gate = Gate()
    sid = session(runtime, ScriptedAgent([gate, final("done")]), "reject")
    running = pool.submit(runtime.send, sid, "first")
    assert gate.reached.wait(WAIT)
    offset = runtime.get(sid)["offset"]
    with pytest.raises(SessionBusyError) as busy:
        runtime.send(sid, "second")
    assert busy.value.code == "busy"
    with pytest.raises(SessionBusyError):
        runtime.submit(sid, "third")
    assert runtime.get(sid)["offset"] == offset
    gate.release.set()
    assert running.result(WAIT)["reply"]["content"] == "done"
    # free again: the next message runs
    assert runtime.send(sid, "fourth")["reply"]["content"] == "done"


def test_a_reject_override_on_an_enqueue_session_answers_busy(
    runtime: Runtime, pool: ThreadPoolExecutor
) -> None:
    gate = Gate()
    sid = session(runtime, ScriptedAgent([gate, final("done")]))
    running = pool.submit(runtime.send, sid, "first")
    assert gate.reached.wait(WAIT)
    with pytest.raises(SessionBusyError):
        runtime.send(sid, "second", concurrency="reject")
    gate.release.set()
    running.result(WAIT)


def test_interrupt_stops_the_running_turn_keeps_its_partial_text_and_runs_the_new_one(
    runtime: Runtime, pool: ThreadPoolExecutor
) -> None:
    gate = Gate()
    agent = ScriptedAgent(
        [TextDelta("half an "), gate, TextDelta("answer"), final("half an answer")],
        [final("the new answer")],
    )
    sid = session(runtime, agent, "interrupt")
    streamed = threading.Event()

    def ask() -> dict[str, Any]:
        result: dict[str, Any] = {}
        for event in runtime.stream(sid, "long question"):
            if event["type"] == "text_delta":
                streamed.set()  # the partial text has reached the caller
            if event["type"] == "done":
                result = event
        return result

    first = pool.submit(ask)
    assert gate.reached.wait(WAIT)
    assert streamed.wait(WAIT)

    second = runtime.send(sid, "never mind")

    assert second["reply"]["content"] == "the new answer"
    interrupted = first.result(WAIT)
    assert interrupted["status"] == "interrupted"
    assert interrupted["reply"]["content"] == "half an "
    assert interrupted["reply"]["metadata"] == {
        "interrupted": True,
        "stop_reason": "interrupted",
    }
    assert [(m["role"], m["content"]) for m in runtime.messages(sid)] == [
        ("user", "long question"),
        ("assistant", "half an "),
        ("user", "never mind"),
        ("assistant", "the new answer"),
    ]
    assert turns_ended(runtime, sid) == [
        ("interrupted", "interrupted"),
        ("completed", None),
    ]
    # the interrupted step's generator is closed once it gives back control
    gate.release.set()
    assert agent.closed.wait(WAIT)


def test_a_caller_timeout_cancels_a_blocked_step_at_once_and_closes_its_generator(
    runtime: Runtime,
) -> None:
    gate = Gate()
    agent = ScriptedAgent([TextDelta("thinking "), gate, final("too late")])
    sid = session(runtime, agent)

    with pytest.raises(TurnTimeoutError) as timed_out:
        runtime.send(sid, "hurry", timeout=0.2)  # the agent is still blocked

    assert timed_out.value.code == "timeout"
    assert not gate.release.is_set()
    assert turns_ended(runtime, sid) == [("cancelled", "timeout")]
    kept = runtime.messages(sid)[-1]
    assert (kept["content"], kept["metadata"]["stop_reason"]) == (
        "thinking ",
        "cancelled",
    )
    assert not agent.closed.is_set()  # blocked inside the step: not yet closable
    gate.release.set()
    assert agent.closed.wait(WAIT)  # closed as soon as it handed back control


def test_a_caller_timeout_while_queued_records_nothing(
    runtime: Runtime, pool: ThreadPoolExecutor
) -> None:
    gate = Gate()
    sid = session(runtime, ScriptedAgent([gate, final("done")]))
    running = pool.submit(runtime.send, sid, "first")
    assert gate.reached.wait(WAIT)
    with pytest.raises(TurnTimeoutError):
        runtime.send(sid, "second", timeout=0.1)
    assert [m["content"] for m in runtime.messages(sid)] == ["first"]
    gate.release.set()
    running.result(WAIT)


def test_a_cancel_token_stops_the_turn_at_its_next_boundary(
    runtime: Runtime, pool: ThreadPoolExecutor
) -> None:
    gate = Gate()
    agent = ScriptedAgent([gate, final("never shown")])
    sid = session(runtime, agent)
    token = CancelToken()
    running = pool.submit(runtime.send, sid, "work", cancel=token)
    assert gate.reached.wait(WAIT)
    token.cancel()
    result = running.result(WAIT)
    assert (result["status"], result["reply"]) == ("cancelled", None)
    assert turns_ended(runtime, sid) == [("cancelled", "cancelled")]
    gate.release.set()
    assert agent.closed.wait(WAIT)


def test_a_stream_closed_early_is_cancelled_under_the_cancel_policy(
    runtime: Runtime,
) -> None:
    gate = Gate()
    agent = ScriptedAgent([TextDelta("first words "), gate, final("unseen")])
    sid = session(runtime, agent)
    events = runtime.stream(sid, "talk", on_disconnect="cancel")
    for event in events:
        if event["type"] == "text_delta":
            break
    events.close()  # the caller went away
    idle(runtime, sid)
    assert turns_ended(runtime, sid) == [("cancelled", "disconnected")]
    gate.release.set()
    assert agent.closed.wait(WAIT)


def test_a_stream_closed_early_runs_to_its_end_under_the_continue_policy(
    runtime: Runtime,
) -> None:
    gate = Gate()
    agent = ScriptedAgent([TextDelta("first "), gate, final("first and last")])
    sid = session(runtime, agent)
    events = runtime.stream(sid, "talk", on_disconnect="continue")
    for event in events:
        if event["type"] == "text_delta":
            break
    events.close()
    gate.release.set()
    idle(runtime, sid)
    assert turns_ended(runtime, sid) == [("completed", None)]
    assert runtime.messages(sid)[-1]["content"] == "first and last"
    assert not agent.closed.is_set()


def test_the_default_disconnect_policy_is_the_settings(
    runtime_factory: Any,
) -> None:
    runtime = runtime_factory(on_disconnect="cancel")
    gate = Gate()
    sid = session(runtime, ScriptedAgent([TextDelta("x "), gate, final("y")]))
    events = runtime.stream(sid, "talk")
    next(e for e in events if e["type"] == "text_delta")
    events.close()
    idle(runtime, sid)
    assert turns_ended(runtime, sid) == [("cancelled", "disconnected")]
    gate.release.set()


def test_a_tool_is_never_cut_short_the_turn_stops_after_it(
    runtime: Runtime, pool: ThreadPoolExecutor
) -> None:
    started, release = threading.Event(), threading.Event()

    def slow_tool(arguments: dict[str, Any], context: Any) -> str:
        started.set()
        assert release.wait(WAIT)
        return "tool finished"

    runtime.register_tool("slow", slow_tool, description="Slow.")
    from tests.support.agents import calls

    agent = ScriptedAgent(
        [calls(("a", "slow", "{}"), ("b", "slow", "{}"))], [final("unreached")]
    )
    runtime.agents.register(
        "tooling", agent, AgentConfig(id="tooling", provider="python", tools=("slow",))
    )
    sid = runtime.create("tooling")["id"]
    token = CancelToken()
    running = pool.submit(runtime.send, sid, "go", cancel=token)
    assert started.wait(WAIT)
    token.cancel()
    release.set()
    result = running.result(WAIT)
    assert result["status"] == "cancelled"
    assert [(c["id"], c["status"], c["result"]) for c in result["tool_calls"]] == [
        ("a", "ok", "tool finished"),
        (
            "b",
            "error",
            "not run: the turn stopped (cancelled) before this call started",
        ),
    ]
    assert agent.calls == 1
