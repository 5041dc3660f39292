"""An app factory for a server with test agents
(``uvicorn --factory tests.dialects.wingman_app:create_agents_app``):

- ``failing`` streams a word, then fails;
- ``tooling`` streams a tool call's input and reports the call in its result;
- ``slow`` waits ``SLOW_SECONDS`` before answering (so an idle stream pings).

``TEST_PING_SECONDS`` sets the stream's ping interval.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import anyio
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.limits import Limits
from runtime import (
    AgentConfig,
    FinalMessage,
    Runtime,
    Settings,
    TextDelta,
    ToolCallDelta,
)

FAILING_AGENT_ID = "failing"
TOOLING_AGENT_ID = "tooling"
SLOW_AGENT_ID = "slow"
SLOW_SECONDS = 0.6
TOOL_CALL = {
    "id": "toolu_1",
    "name": "ls",
    "input": {"path": "."},
    "output": "README.md",
    "error": None,
}


class FailingAgent:
    """Streams a first word, then fails."""

    def run(
        self, history: Sequence[Mapping[str, Any]], tools: Any = ()
    ) -> Iterator[Any]:
        """Yield one delta and raise."""
        yield TextDelta("partial ")
        msg = "the model provider is down"
        raise RuntimeError(msg)


class ToolingAgent:
    """Calls one tool, then answers."""

    def run(
        self, history: Sequence[Mapping[str, Any]], tools: Any = ()
    ) -> Iterator[Any]:
        """Stream the call's input in two pieces, then the answer."""
        yield ToolCallDelta(call_id="toolu_1", name="ls", partial_json='{"path":')
        yield ToolCallDelta(call_id="toolu_1", name="ls", partial_json='"."}')
        yield TextDelta("done")
        yield FinalMessage(
            content="done",
            usage={"input_tokens": 3, "output_tokens": 1},
            stop_reason="end_turn",
            tool_calls=[TOOL_CALL],
            steps=2,
        )


class SlowAgent:
    """Answers after a while."""

    def run(
        self, history: Sequence[Mapping[str, Any]], tools: Any = ()
    ) -> Iterator[Any]:
        """Wait, then answer ``late``."""
        threading.Event().wait(SLOW_SECONDS)  # the agent's own latency
        yield TextDelta("late")
        yield FinalMessage(
            content="late", usage={"input_tokens": 1, "output_tokens": 1}
        )


def create_agents_app() -> Starlette:
    """The app over a runtime (settings from the environment) that also has the
    test agents; the runtime closes when the app shuts down."""
    settings = Settings.from_env()
    runtime = Runtime(settings)
    for agent_id, agent in (
        (FAILING_AGENT_ID, FailingAgent()),
        (TOOLING_AGENT_ID, ToolingAgent()),
        (SLOW_AGENT_ID, SlowAgent()),
    ):
        runtime.agents.register(
            agent_id, agent, AgentConfig(id=agent_id, provider="python")
        )
    limits = Limits(ping_seconds=float(os.environ.get("TEST_PING_SECONDS", "15")))
    app = create_app(settings, runtime, limits=limits)
    served = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: Starlette) -> AsyncIterator[None]:
        async with served(application):
            yield
        await anyio.to_thread.run_sync(runtime.close)

    app.router.lifespan_context = lifespan
    return app
