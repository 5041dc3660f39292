"""Turns a crash left open, in process: the durable open-turn marker, and a
message that arrives before resumption (the crash tests with real processes
are in tests/faults/test_turn_crash.py)."""

from __future__ import annotations

from typing import Any

from runtime import AgentConfig, Runtime
from tests.support.agents import ScriptedAgent, final


def leftovers_of_a_crash(runtime: Runtime, sid: str) -> int:
    """What a process killed while its tool ran leaves: the opening message
    and the step that asked for two calls, no result, no turn_ended."""
    offset, _, _ = runtime._append(
        sid,
        "go",
        role="user",
        author_id="local",
        attachments=None,
        metadata=None,
        usage=None,
        idempotency_key=None,
        expected_offset=None,
        reply_to=None,
        opens_turn=True,
    )
    runtime.append(
        sid,
        "",
        role="assistant",
        metadata={
            "tool_calls": [
                {"id": "c1", "name": "t", "arguments": "{}"},
                {"id": "c2", "name": "t", "arguments": "{}"},
            ]
        },
        reply_to=offset,
    )
    return offset


def statuses(runtime: Runtime, sid: str) -> list[Any]:
    return [
        (e["data"]["status"], e["data"].get("error_code"))
        for e in runtime.events(sid, limit=1000)["events"]
        if e["type"] == "turn_ended"
    ]


def test_an_open_turn_is_listed_durably_until_it_ends(runtime: Runtime) -> None:
    sid = runtime.create("echo")["id"]
    offset = leftovers_of_a_crash(runtime, sid)
    assert runtime.views.open_turns() == [(sid, offset)]
    runtime.rebuild_projections()  # the marker is a view: rebuilt from the log
    assert runtime.views.open_turns() == [(sid, offset)]
    runtime.resume_turns()
    assert runtime.views.open_turns() == []


def test_a_message_before_resumption_closes_the_open_turn_in_doubt(
    runtime: Runtime,
) -> None:
    agent = ScriptedAgent([final("fresh answer")])
    runtime.agents.register(
        "scripted", agent, AgentConfig(id="scripted", provider="python")
    )
    sid = runtime.create("scripted")["id"]
    leftovers_of_a_crash(runtime, sid)

    result = runtime.send(sid, "hello again")

    assert result["reply"]["content"] == "fresh answer"
    found = [
        (m["role"], m["metadata"].get("tool_call_id"), m["metadata"].get("status"))
        for m in runtime.messages(sid)
    ]
    assert found == [
        ("user", None, None),
        ("assistant", None, None),
        ("tool", "c1", "in_doubt"),  # may have been running when it died
        ("tool", "c2", "error"),  # after it: never started
        ("user", None, None),
        ("assistant", None, None),
    ]
    assert statuses(runtime, sid) == [("interrupted", "restart"), ("completed", None)]
    # the new turn's agent saw every call paired with its result
    roles = [m["role"] for m in agent.histories[0]]
    assert roles == ["user", "assistant", "tool", "tool", "user"]


def test_resuming_without_the_agent_ends_the_turn_interrupted(
    runtime: Runtime,
) -> None:
    runtime.agents.register(
        "gone", ScriptedAgent([final("x")]), AgentConfig(id="gone", provider="python")
    )
    sid = runtime.create("gone")["id"]
    leftovers_of_a_crash(runtime, sid)
    del runtime.agents._agents["gone"]  # as after a restart without it

    resumed = runtime.resume_turns()

    assert resumed == [{"session_id": sid, "turn_offset": 2, "status": "interrupted"}]
    assert statuses(runtime, sid) == [("interrupted", "agent_unavailable")]
    assert [m["metadata"].get("status") for m in runtime.messages(sid)][2:] == [
        "in_doubt",
        "error",
    ]
