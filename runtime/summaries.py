"""Producing the text of context summaries.

A :class:`Summarizer` folds messages (and the summary they continue, if any)
into one text. The default, :class:`AgentSummarizer`, asks the session's own
agent: one :meth:`Agent.run` step over a summarisation instruction, the previous
summary and the messages to fold, ending with the instruction as the user's
message. With the offline ``echo`` agent the text is that instruction (echo
repeats the last user message): deterministic, so tests stay offline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.agents import Agent, FinalMessage

INSTRUCTION = (
    "Summarize the conversation so far in a few sentences: the facts, decisions "
    "and open questions the assistant needs to carry on."
)
"""What the default summarizer asks the agent."""


@dataclass(frozen=True)
class SummaryText:
    """A summary's text, what produced it and what that cost."""

    text: str
    model: str | None = None
    usage: Mapping[str, int] = field(default_factory=dict)


class Summarizer(Protocol):
    """Folds messages into a summary text."""

    def summarize(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        previous: Mapping[str, Any] | None = None,
    ) -> SummaryText:
        """Summarize ``messages`` (oldest first, whole tool units), continuing
        ``previous`` (the summary message they follow), if any."""
        ...


class AgentSummarizer:
    """Asks an agent for the summary in one model step (no tools)."""

    def __init__(
        self, agent: Agent, *, model: str | None = None, instruction: str = INSTRUCTION
    ) -> None:
        self.agent = agent
        self.model = model
        self.instruction = instruction

    def summarize(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        previous: Mapping[str, Any] | None = None,
    ) -> SummaryText:
        """Run the agent over the instruction, ``previous`` and ``messages``."""
        instruction = {
            "role": "system",
            "content": self.instruction,
            "metadata": {},
        }
        history: list[Mapping[str, Any]] = [instruction]
        if previous is not None:
            history.append(previous)
        history.extend(messages)
        history.append({"role": "user", "content": self.instruction, "metadata": {}})
        final: FinalMessage | None = None
        outputs = self.agent.run(history)
        try:
            for output in outputs:
                if isinstance(output, FinalMessage):
                    final = output
        finally:
            close = getattr(outputs, "close", None)
            if close is not None:
                close()
        if final is None or not final.content.strip():
            msg = "the agent produced no summary"
            raise RuntimeError(msg)
        return SummaryText(
            text=final.content.strip(), model=self.model, usage=dict(final.usage)
        )
