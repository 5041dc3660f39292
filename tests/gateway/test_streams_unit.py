"""The waiting primitive behind turn streams: a timeout (ping) loses nothing.
(Tails wait on their own future: tests/runtime/test_async_runtime.py.)"""

from __future__ import annotations

import asyncio

from gateway.streams import next_or_timeout, wants_event_stream


def test_a_timeout_keeps_the_pending_wait_so_the_next_item_is_not_lost() -> None:
    async def scenario() -> list[object]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        seen: list[object] = []
        item, pending = await next_or_timeout(queue.get, None, 0.01)
        seen.append(item)
        assert pending is not None
        queue.put_nowait("first")
        item, pending = await next_or_timeout(queue.get, pending, 1.0)
        seen.append(item)
        assert pending is None
        return seen

    assert asyncio.run(scenario()) == [None, "first"]


def test_event_stream_negotiation_honours_q_zero() -> None:
    class Fake:
        def __init__(self, accept: str) -> None:
            self.headers = {"accept": accept}

    assert wants_event_stream(Fake("text/event-stream"))  # type: ignore[arg-type]
    assert wants_event_stream(Fake("application/json, text/event-stream;q=0.5"))  # type: ignore[arg-type]
    assert not wants_event_stream(Fake("text/event-stream;q=0"))  # type: ignore[arg-type]
    assert not wants_event_stream(Fake("application/json"))  # type: ignore[arg-type]
