"""``AsyncRuntime``: the runtime's calls as coroutines that never block the loop."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from aggregates.errors import (
    InvalidRequestError,
)
from runtime.core import T
from runtime.principal import LOCAL_PRINCIPAL, Principal
from runtime.tail import AsyncSessionTail, LoopFanout
from runtime.turn_control import DISCONNECTED, CancelToken, check_disconnect_policy

if TYPE_CHECKING:
    from runtime.facade import Runtime


class AsyncRuntime:
    """The same API as :class:`Runtime`, as coroutines that run each call on a
    worker thread, so the event loop never blocks on an actor or the store."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._fanouts: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, LoopFanout
        ] = weakref.WeakKeyDictionary()

    def _fanout(self) -> LoopFanout:
        loop = asyncio.get_running_loop()
        fanout = self._fanouts.get(loop)
        if fanout is None:
            fanout = self._fanouts[loop] = LoopFanout(self.runtime.app.bus, loop)
        return fanout

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(partial(function, *args, **kwargs))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        # Every public call of Runtime, made awaitable; stream has its own bridge.
        attribute = getattr(self.runtime, name)
        if name.startswith("_") or not callable(attribute):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._call(attribute, *args, **kwargs)

        call.__name__ = name
        call.__doc__ = attribute.__doc__
        return call

    def interrupt_tails(self) -> None:
        """Wake every tail waiting on this loop with ``TailInterrupted`` (call on
        the loop, e.g. when the server begins to shut down)."""
        fanout = self._fanouts.get(asyncio.get_running_loop())
        if fanout is not None:
            fanout.interrupt()

    async def tail(
        self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL, after: int = 0
    ) -> AsyncSessionTail:
        """:meth:`Runtime.tail` for asyncio: waiting for items costs no CPU."""
        if not isinstance(after, int) or after < 0:
            raise InvalidRequestError("after must be a non-negative offset")
        await self._call(self.runtime.get, session_id, principal=principal)
        return AsyncSessionTail(self.runtime.views, self._fanout(), session_id, after)

    async def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        """:meth:`Runtime.stream` as an async iterator; the turn runs on a worker
        thread and hands each event to the loop as it happens. Leaving the loop
        early applies the disconnect policy (``on_disconnect``): ``cancel``
        cancels the turn at once, ``continue`` lets it run to its end."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        done = object()
        policy = check_disconnect_policy(
            kwargs.get("on_disconnect") or self.runtime.settings.on_disconnect
        )
        token = kwargs.get("cancel") or CancelToken()
        kwargs["cancel"] = token

        def produce() -> None:
            item: Any = done
            try:
                for event in self.runtime.stream(*args, **kwargs):
                    if stop.is_set():
                        continue  # nobody reads: the turn runs to its end
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except BaseException as error:
                item = error
            if not stop.is_set():
                loop.call_soon_threadsafe(queue.put_nowait, item)

        worker = loop.run_in_executor(None, produce)
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
            await worker
        finally:
            if not worker.done():
                stop.set()
                if policy == "cancel":
                    token.cancel(DISCONNECTED)
