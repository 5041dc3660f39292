"""``AsyncRuntime``: the same calls as coroutines, under ``asyncio.run`` and
``anyio.run``, with a streaming async iterator; the event loop keeps running while
a call waits on an actor, the store or an agent."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import anyio
import pytest

from runtime import (
    AsyncRuntime,
    FinalMessage,
    InvalidRequestError,
    Principal,
    Runtime,
    SessionNotFoundError,
    TailInterrupted,
    TextDelta,
)

WAIT = 30.0
STRANGER = Principal("stranger")


class GatedAgent:
    """Streams one word, then waits for the test to open the gate."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.gate = threading.Event()
        self.opened_in_time: bool | None = None

    def run(
        self, history: Sequence[Mapping[str, Any]], tools: Any = ()
    ) -> Iterator[Any]:
        self.started.set()
        yield TextDelta("waiting ")
        self.opened_in_time = self.gate.wait(WAIT)
        yield TextDelta("done")
        yield FinalMessage(
            content="waiting done", usage={"input_tokens": 1, "output_tokens": 2}
        )


def gated(runtime: Runtime) -> tuple[GatedAgent, str]:
    agent = GatedAgent()
    runtime.agents.register("gated", agent)
    return agent, runtime.create("gated")["id"]


def test_calls_work_under_asyncio_run(runtime: Runtime) -> None:
    aruntime = AsyncRuntime(runtime)

    async def main() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        session = await aruntime.create(name="async")
        result = await aruntime.send(session["id"], "hello from asyncio")
        history = await aruntime.history(session["id"], order="asc")
        return session, result, history

    session, result, history = asyncio.run(main())

    assert session["name"] == "async"
    assert result["reply"]["content"] == "hello from asyncio"
    assert [m["content"] for m in history["messages"]] == ["hello from asyncio"] * 2
    # What the coroutines did is what the synchronous API sees.
    assert runtime.get(session["id"])["offset"] == 4  # message, reply, turn_ended


def test_calls_work_under_anyio_run(runtime: Runtime) -> None:
    aruntime = AsyncRuntime(runtime)

    async def main() -> list[str]:
        session = await aruntime.create()
        async with anyio.create_task_group() as group:
            for i in range(5):
                group.start_soon(aruntime.append, session["id"], f"m{i}")
        messages = await aruntime.messages(session["id"])
        return sorted(m["content"] for m in messages)

    assert anyio.run(main) == [f"m{i}" for i in range(5)]


def test_errors_of_a_call_reach_the_coroutine_with_their_code(runtime: Runtime) -> None:
    aruntime = AsyncRuntime(runtime)
    session_id = runtime.create()["id"]

    async def main() -> None:
        with pytest.raises(SessionNotFoundError) as raised:
            await aruntime.get(session_id, principal=STRANGER)
        assert raised.value.code == "not_found"
        with pytest.raises(InvalidRequestError):
            await aruntime.history(session_id, limit=0)
        with pytest.raises(AttributeError):
            aruntime._row  # noqa: B018 - private calls are not offered

    asyncio.run(main())


def test_the_async_stream_yields_the_same_events_as_the_sync_stream(
    runtime: Runtime,
) -> None:
    aruntime = AsyncRuntime(runtime)
    sync_id = runtime.create()["id"]
    async_id = runtime.create()["id"]
    text = "the quick brown fox"
    expected = list(runtime.stream(sync_id, text))

    async def main() -> list[dict[str, Any]]:
        return [event async for event in aruntime.stream(async_id, text)]

    events = asyncio.run(main())

    assert [e["type"] for e in events] == [e["type"] for e in expected]
    assert [e.get("text") for e in events] == [e.get("text") for e in expected]
    assert "".join(e["text"] for e in events if e["type"] == "text_delta") == text
    assert events[-1]["reply"]["content"] == text
    assert [m["content"] for m in runtime.messages(async_id)] == [text, text]


def test_the_async_stream_raises_the_turns_error(runtime: Runtime) -> None:
    aruntime = AsyncRuntime(runtime)
    session_id = runtime.create()["id"]

    async def main() -> list[dict[str, Any]]:
        return [e async for e in aruntime.stream(session_id, "x", principal=STRANGER)]

    with pytest.raises(SessionNotFoundError):
        asyncio.run(main())
    assert runtime.messages(session_id) == []


def test_the_event_loop_keeps_running_while_a_call_waits(runtime: Runtime) -> None:
    aruntime = AsyncRuntime(runtime)
    agent, session_id = gated(runtime)

    async def main() -> tuple[dict[str, Any], int]:
        call = asyncio.ensure_future(aruntime.send(session_id, "go"))
        # The agent is now blocked in the call's turn; if that blocked the loop,
        # nothing below would run until the agent gave up waiting.
        assert await anyio.to_thread.run_sync(agent.started.wait, WAIT)
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0)
            ticks += 1
        assert not call.done()
        agent.gate.set()
        return await asyncio.wait_for(call, WAIT), ticks

    result, ticks = asyncio.run(main())

    assert ticks == 20
    assert agent.opened_in_time is True
    assert result["reply"]["content"] == "waiting done"


def test_a_concurrent_task_ticks_while_the_async_stream_waits_for_the_agent(
    runtime: Runtime,
) -> None:
    aruntime = AsyncRuntime(runtime)
    agent, session_id = gated(runtime)

    async def main() -> tuple[list[str], int]:
        ticks = 0
        first_delta = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            await first_delta.wait()
            for _ in range(10):
                await asyncio.sleep(0)
                ticks += 1
            agent.gate.set()

        task = asyncio.ensure_future(ticker())
        seen = []
        async for event in aruntime.stream(session_id, "go"):
            seen.append(event["type"])
            if event["type"] == "text_delta" and not first_delta.is_set():
                first_delta.set()
        await asyncio.wait_for(task, WAIT)
        return seen, ticks

    seen, ticks = asyncio.run(main())

    assert ticks == 10
    assert agent.opened_in_time is True
    assert seen == [
        "message_start",
        "content_block_start",
        "text_delta",
        "text_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "done",
    ]


def test_an_async_tail_gives_the_backlog_then_live_events(runtime: Runtime) -> None:
    aruntime = AsyncRuntime(runtime)
    session_id = runtime.create()["id"]
    runtime.append(session_id, "before")

    async def main() -> list[dict[str, Any]]:
        tail = await aruntime.tail(session_id)
        try:
            items = [await tail.get(WAIT), await tail.get(WAIT)]
            await aruntime.append(session_id, "live")
            items.append(await tail.get(WAIT))
            return items  # type: ignore[return-value]
        finally:
            await tail.aclose()

    items = asyncio.run(main())
    assert [item["offset"] for item in items] == [1, 2, 3]
    assert items[2]["event"]["data"]["content"] == "live"

    async def stranger() -> None:
        await aruntime.tail(session_id, principal=STRANGER)

    with pytest.raises(SessionNotFoundError):
        asyncio.run(stranger())


def test_interrupting_tails_wakes_a_waiting_get_and_every_later_one(
    runtime: Runtime,
) -> None:
    aruntime = AsyncRuntime(runtime)
    session_id = runtime.create()["id"]

    async def main() -> None:
        tail = await aruntime.tail(session_id, after=1)
        try:
            waiting = asyncio.ensure_future(tail.get(WAIT))
            await asyncio.sleep(0)  # let it start waiting
            aruntime.interrupt_tails()
            with pytest.raises(TailInterrupted):
                await asyncio.wait_for(waiting, WAIT)
            with pytest.raises(TailInterrupted):
                await tail.get(WAIT)
        finally:
            await tail.aclose()

    asyncio.run(main())


def test_a_timed_out_wait_loses_no_item(runtime: Runtime) -> None:
    aruntime = AsyncRuntime(runtime)
    session_id = runtime.create()["id"]

    async def main() -> list[Any]:
        tail = await aruntime.tail(session_id, after=1)
        try:
            silent = await tail.get(0.01)
            await aruntime.append(session_id, "after the ping")
            return [silent, await tail.get(WAIT)]
        finally:
            await tail.aclose()

    silent, item = asyncio.run(main())
    assert silent is None
    assert item["event"]["data"]["content"] == "after the ping"
