"""An app factory for a server with test agents
(``uvicorn --factory tests.dialects.wingman_app:create_agents_app``):

- ``failing`` streams a word, then fails;
- ``tooling`` calls the ``ls`` tool (streaming its input), then answers;
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
    ToolCall,
    ToolCallDelta,
)

FAILING_AGENT_ID = "failing"
TOOLING_AGENT_ID = "tooling"
SLOW_AGENT_ID = "slow"
SLOW_SECONDS = 0.6


def list_directory(arguments: dict[str, Any], context: Any) -> str:
    """The ``ls`` tool: always the same listing."""
    return "README.md"


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
    """Calls one tool (first step), then answers (second step)."""

    def run(
        self, history: Sequence[Mapping[str, Any]], tools: Any = ()
    ) -> Iterator[Any]:
        """Step 1: stream the call's input in two pieces; step 2: answer."""
        if history and history[-1]["role"] == "tool":
            yield TextDelta("done")
            yield FinalMessage(
                content="done", usage={"input_tokens": 2, "output_tokens": 1}
            )
            return
        yield ToolCallDelta(call_id="toolu_1", name="ls", partial_json='{"path":')
        yield ToolCallDelta(call_id="toolu_1", name="ls", partial_json='"."}')
        yield FinalMessage(
            content="",
            usage={"input_tokens": 1, "output_tokens": 0},
            stop_reason="tool_use",
            tool_calls=[ToolCall("toolu_1", "ls", '{"path": "."}')],
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
    runtime.register_tool(
        "ls",
        list_directory,
        description="List the working directory.",
        parameters={"type": "object", "properties": {"path": {"type": "string"}}},
    )
    for agent_id, agent in (
        (FAILING_AGENT_ID, FailingAgent()),
        (TOOLING_AGENT_ID, ToolingAgent()),
        (SLOW_AGENT_ID, SlowAgent()),
    ):
        runtime.agents.register(
            agent_id, agent, AgentConfig(id=agent_id, provider="python", tools=("ls",))
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
