"""The child process of ``test_turn_crash``: runs one agent turn with a tool
that counts its own executions in a file, and can be killed at chosen points.

Usage: ``python turn_child.py DB COUNTER MODE``

- ``run-block-tool``: creates a session and sends a message; the agent's first
  step calls the ``count`` tool, which appends a line to ``COUNTER``, prints
  ``tool-running`` and blocks (the parent kills the process then);
- ``run-block-step``: the same, but the tool returns at once and the agent's
  *second* step prints ``step-running`` and blocks (killed after the tool ran
  and its result was recorded, before the next step answers);
- ``resume``: opens the runtime with the same agent and tool (which no longer
  block), calls ``resume_turns()`` and prints the outcome as one JSON line:
  ``{"resumed": [...], "messages": [...], "events": [...]}``.

Lines are flushed at once; ``session <id>`` is printed after creation.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson

from runtime import (
    AgentConfig,
    FinalMessage,
    Runtime,
    Settings,
    TextDelta,
    ToolCall,
    ToolContext,
    ToolSpec,
)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class CountingAgent:
    """Step 1 calls ``count``; the next step answers with the result's status."""

    def __init__(self, block_second_step: bool) -> None:
        self.block_second_step = block_second_step

    def run(
        self, history: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec] = ()
    ) -> Iterator[Any]:
        last = history[-1]
        if last["role"] != "tool":
            yield FinalMessage(
                content="",
                usage={"input_tokens": 1, "output_tokens": 1},
                stop_reason="tool_use",
                tool_calls=[ToolCall("call-1", "count", "{}")],
            )
            return
        if self.block_second_step:
            say("step-running")
            threading.Event().wait()
        status = last["metadata"]["status"]
        yield TextDelta(f"the tool call was {status}")
        yield FinalMessage(
            content=f"the tool call was {status}",
            usage={"input_tokens": 2, "output_tokens": 1},
        )


def main() -> None:
    db, counter, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

    def count(arguments: dict[str, Any], context: ToolContext) -> str:
        with counter.open("a") as file:
            file.write("ran\n")
            file.flush()
        if mode == "run-block-tool":
            say("tool-running")
            threading.Event().wait()
        return "counted"

    runtime = Runtime(Settings(db=db, supervisor_interval=0))
    runtime.register_tool("count", count, description="Counts its runs.")
    runtime.agents.register(
        "counting",
        CountingAgent(block_second_step=mode == "run-block-step"),
        AgentConfig(id="counting", provider="python", tools=("count",)),
    )
    if mode == "resume":
        resumed = runtime.resume_turns()
        sid = resumed[0]["session_id"] if resumed else ""
        found = {
            "resumed": resumed,
            "messages": runtime.messages(sid) if sid else [],
            "events": runtime.events(sid, limit=1000)["events"] if sid else [],
        }
        runtime.close()
        say(orjson.dumps(found).decode())
        return
    sid = runtime.create("counting")["id"]
    say(f"session {sid}")
    runtime.send(sid, "count once")
    say("finished")


if __name__ == "__main__":
    main()
