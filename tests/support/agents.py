"""Scripted in-process agents: real ``Agent`` implementations whose steps are
written by the test (no mock: the runtime drives them through the protocol).

A step is a list of outputs (``TextDelta``, ``ToolCallDelta``,
``FinalMessage``, an exception to raise), or a callable ``(history, tools) ->
list`` for a step that looks at what it was given. ``Gate`` makes a step wait for
the test: the step announces ``reached`` and blocks until ``release``. A run
whose generator is closed before its end sets the agent's ``closed`` (so a test
can prove the runtime closed it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runtime import FinalMessage, TextDelta, ToolCall, ToolSpec

WAIT = 10.0

Output = Any
Step = (
    list[Output]
    | Callable[[Sequence[Mapping[str, Any]], Sequence[ToolSpec]], list[Output]]
)


@dataclass
class Gate:
    """A point inside a step where it blocks until the test releases it."""

    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def wait(self) -> None:
        """Announce the gate, then block until released."""
        self.reached.set()
        if not self.release.wait(WAIT):
            msg = "the test never released the gate"
            raise RuntimeError(msg)


class ScriptedAgent:
    """Plays its steps in order, one per ``run`` call (the last one repeats)."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.calls = 0
        self.histories: list[list[dict[str, Any]]] = []
        self.tool_names: list[list[str]] = []
        self.closed = threading.Event()

    def run(
        self, history: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec] = ()
    ) -> Iterator[Any]:
        """Play the next step."""
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        self.histories.append([dict(m) for m in history])
        self.tool_names.append([t.name for t in tools])
        outputs = step(history, tools) if callable(step) else step
        try:
            for output in outputs:
                if isinstance(output, Gate):
                    output.wait()
                elif isinstance(output, BaseException):
                    raise output
                else:
                    yield output
        except GeneratorExit:
            self.closed.set()
            raise


def final(text: str, usage: tuple[int, int] = (1, 1), **fields: Any) -> FinalMessage:
    """A final answer."""
    return FinalMessage(
        content=text,
        usage={"input_tokens": usage[0], "output_tokens": usage[1]},
        **fields,
    )


def calls(
    *items: tuple[str, str, str], usage: tuple[int, int] = (1, 1), content: str = ""
) -> FinalMessage:
    """A step that asks for tools: ``(id, name, arguments JSON)`` each."""
    return FinalMessage(
        content=content,
        usage={"input_tokens": usage[0], "output_tokens": usage[1]},
        stop_reason="tool_use",
        tool_calls=[ToolCall(i, n, a) for i, n, a in items],
    )


def text(*words: str) -> list[Any]:
    """Text deltas."""
    return [TextDelta(w) for w in words]
