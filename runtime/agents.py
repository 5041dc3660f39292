"""Agents: a history goes in; text deltas, tool calls and a final message come out.

One call of :meth:`Agent.run` is one model *step*. A step that ends with tool calls
(``FinalMessage.tool_calls``, ``stop_reason="tool_use"``) asks the runtime to run
them and call the agent again with the results appended to the history; the tool
loop itself lives in the runtime, so that every call is recorded before it runs.

History entries are message documents (``role``, ``content``, ``metadata``...). An
assistant step that called tools carries ``metadata.tool_calls`` (a list of
``{"id", "name", "arguments"}``, ``arguments`` being the model's JSON text); a tool
result is a ``role: tool`` message whose ``metadata`` holds ``tool_call_id``,
``name`` and ``status`` (``ok``, ``error`` or ``in_doubt``).

``run`` returns a generator: closing it (``close()``) cancels the step, and a
provider must then release its upstream request. A generator blocked inside a
step cannot be closed until it yields; an iterator that also has ``abort()``
(callable from any thread) lets the runtime cut such a step off at once. An agent
may declare ``history_limit = N`` to be handed the latest ``N`` messages instead
of its context window.

``echo`` is built in and always configured: it replies with the last user message,
streamed word by word, with deterministic usage, so everything runs offline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.errors import AgentNotFoundError
from runtime.settings import AgentConfig

_WORDS = re.compile(r"\S+\s*|\s+")


@dataclass(frozen=True)
class TextDelta:
    """A piece of the reply's text, in order."""

    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call's JSON input (``input_json_delta``)."""

    call_id: str
    name: str
    partial_json: str


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: its name, what it does, its JSON schema."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """One complete tool call the model asked for."""

    call_id: str
    name: str
    arguments: str
    """The JSON text of the arguments, exactly as the model produced it."""

    def to_json(self) -> dict[str, Any]:
        """The form kept in ``metadata.tool_calls``."""
        return {"id": self.call_id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class FinalMessage:
    """The end of one step: its text, what it cost, and the tools it calls."""

    content: str
    usage: Mapping[str, int] = field(default_factory=dict)
    stop_reason: str = "end_turn"
    """``end_turn``, ``max_tokens``, ``tool_use``... (the provider's finish reason
    mapped onto these names)."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tool_calls: Sequence[ToolCall] = ()
    steps: int = 1


AgentOutput = TextDelta | ToolCallDelta | FinalMessage


class Agent(Protocol):
    """Turns a history into a stream ending with exactly one ``FinalMessage``."""

    def run(
        self, history: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec] = ()
    ) -> Iterator[AgentOutput]:
        """Produce the next step after ``history`` (oldest first), which may call
        any of ``tools``.

        Optional attributes an agent may declare: ``history_limit`` (read only
        the latest N messages, no context window) and ``inline = True`` (its
        steps never block, so they run on the turn's thread without a pump; a
        step that could wait on I/O must not declare it, or cancellation and
        deadlines could not stop it while it waits)."""
        ...


def split_words(text: str) -> list[str]:
    """``text`` in streamable pieces: each word with the spaces after it."""
    return _WORDS.findall(text)


def count_words(text: str) -> int:
    """The offline token estimate the echo agent reports: whitespace words."""
    return len(text.split())


class EchoAgent:
    """Replies with the last user message, word by word."""

    history_limit = 1
    """The turn hands it the latest message only (it reads nothing else), not a
    context window: windows cost reads and token counting on every step."""

    inline = True
    """Its steps compute in memory and never block: they run on the turn's
    thread (see :mod:`runtime.turn_step`)."""

    def run(
        self, history: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec] = ()
    ) -> Iterator[AgentOutput]:
        """Echo the last user message (``echo`` never calls tools)."""
        last = next((m for m in reversed(history) if m["role"] == "user"), None)
        content = "" if last is None else str(last["content"])
        for word in split_words(content):
            yield TextDelta(word)
        words = count_words(content)
        yield FinalMessage(
            content=content,
            usage={"input_tokens": words, "output_tokens": words},
        )


class AgentRegistry:
    """The configured agents, by id, built once (an ``openai`` agent holds a
    connection pool: :meth:`close` releases them all)."""

    def __init__(self, configs: Mapping[str, AgentConfig]) -> None:
        # imported here: the provider module imports this one (the protocol)
        from runtime.providers.openai import OpenAIAgent

        self._configs = dict(configs)
        self._agents: dict[str, Agent] = {}
        for agent_id, config in self._configs.items():
            if config.provider == "echo":
                self._agents[agent_id] = EchoAgent()
            elif config.provider == "openai":
                self._agents[agent_id] = OpenAIAgent(config)

    def close(self) -> None:
        """Release what the agents hold (connection pools); called on shutdown."""
        for agent in self._agents.values():
            close = getattr(agent, "close", None)
            if callable(close):
                close()

    def config(self, agent_id: str) -> AgentConfig:
        """The configuration of an agent; unknown ids are an error."""
        try:
            return self._configs[agent_id]
        except KeyError:
            msg = f"no agent {agent_id!r} is configured"
            raise AgentNotFoundError(msg) from None

    def get(self, agent_id: str) -> Agent:
        """The agent that runs turns for ``agent_id``."""
        config = self.config(agent_id)
        try:
            return self._agents[agent_id]
        except KeyError:
            msg = (
                f"agent {agent_id!r} uses provider {config.provider!r}, "
                "which is not available"
            )
            raise AgentNotFoundError(msg) from None

    def register(
        self, agent_id: str, agent: Agent, config: AgentConfig | None = None
    ) -> None:
        """Add (or replace) an agent in process, e.g. a custom Python agent."""
        self._configs[agent_id] = config or AgentConfig(id=agent_id, provider="python")
        self._agents[agent_id] = agent

    def ids(self) -> list[str]:
        """Every configured agent id."""
        return sorted(self._configs)
