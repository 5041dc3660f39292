"""What a turn has recorded, and the shapes it records.

A turn opened by the message at offset ``T`` records, in order:

- per step that calls tools, a ``role: assistant`` message with
  ``reply_to = T``, its text (may be empty), its ``usage``, and ``metadata``
  ``{"tool_calls": [{"id", "name", "arguments"}], "stop_reason": "tool_use",
  "step": n}``, before any of its tools runs;
- per call, after it ran, a ``role: tool`` message with ``reply_to`` = the
  offset of the asking message, the result text as ``content``, ``author_id``
  = the tool's name and ``metadata`` ``{"tool_call_id", "name", "status"}``
  (``ok``, ``error``, or ``in_doubt`` for a call cut short by a crash);
- the final answer: a ``role: assistant`` message with ``reply_to = T`` and
  ``metadata.stop_reason``, or, when the turn was interrupted or cancelled
  while the agent was writing, the partial answer with
  ``metadata = {"interrupted": true, "stop_reason": "interrupted"|"cancelled"}``;
- a ``turn_ended`` event (``Session.TurnEnded``) in the same transaction as the
  final answer: status, stop reason, error code, summed usage, steps, tool
  calls, and the offset of the reply.

:func:`read_turn` rebuilds a :class:`TurnState` from those records, which is
how a turn resumes after a crash and how an idempotent retry answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime.agents import ToolCall
from runtime.tools import ERROR, IN_DOUBT

IN_DOUBT_TEXT = (
    "in doubt: the service stopped while this tool call was running; it may or "
    "may not have taken effect, and it was not run again"
)
NOT_RUN_TEXT = "not run: the turn stopped ({reason}) before this call started"


def zero_usage() -> dict[str, int]:
    """``{"input_tokens": 0, "output_tokens": 0}``."""
    return {"input_tokens": 0, "output_tokens": 0}


def add_usage(total: dict[str, int], usage: Mapping[str, Any] | None) -> None:
    """Add one usage to a running total (input and output tokens)."""
    for key in ("input_tokens", "output_tokens"):
        total[key] += int((usage or {}).get(key, 0) or 0)


@dataclass
class TurnState:
    """A turn in progress: what it has recorded so far."""

    session_id: str
    turn_offset: int
    user_message: dict[str, Any] | None
    steps: int = 0
    usage: dict[str, int] = field(default_factory=zero_usage)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    last_step: dict[str, Any] | None = None
    """The last step message that asked for tools."""
    unanswered: list[ToolCall] = field(default_factory=list)
    """Calls of ``last_step`` without a recorded result, in order."""
    session: dict[str, Any] | None = None
    """The session's document as the turn's last write left it (saves reading
    it back for the result), when that write recorded it."""

    def asked(self, message: Mapping[str, Any], calls: Iterable[ToolCall]) -> None:
        """A step message that asks for ``calls`` was recorded."""
        self.last_step = dict(message)
        self.unanswered = list(calls)

    def answered(
        self, call: ToolCall, status: str, content: str, duration_ms: int = 0
    ) -> dict[str, Any]:
        """A call's result was recorded; returns its entry of ``tool_calls``."""
        self.unanswered = [c for c in self.unanswered if c.call_id != call.call_id]
        entry = {
            "id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
            "result": content,
            "status": status,
            "duration_ms": duration_ms,
        }
        self.tool_calls.append(entry)
        return entry


def tool_metadata(call: ToolCall, status: str) -> dict[str, Any]:
    """The ``metadata`` of a ``role: tool`` message."""
    return {"tool_call_id": call.call_id, "name": call.name, "status": status}


def unfinished_results(
    calls: list[ToolCall], reason: str, *, crashed: bool
) -> list[tuple[ToolCall, str, str]]:
    """The results to record for calls left without one: after a crash the
    first may have been running (``in_doubt``); the later ones, like every one
    a stopped turn never reached, never started (``error``, not run)."""
    found: list[tuple[ToolCall, str, str]] = []
    for index, call in enumerate(calls):
        if crashed and index == 0:
            found.append((call, IN_DOUBT, IN_DOUBT_TEXT))
        else:
            found.append((call, ERROR, NOT_RUN_TEXT.format(reason=reason)))
    return found


def calls_in(message: Mapping[str, Any]) -> list[ToolCall]:
    """The tool calls a recorded step message asked for."""
    return [
        ToolCall(
            call_id=str(c["id"]), name=str(c["name"]), arguments=str(c["arguments"])
        )
        for c in (message.get("metadata") or {}).get("tool_calls") or []
    ]


def read_turn(
    session_id: str,
    turn_offset: int,
    user_message: dict[str, Any] | None,
    messages: Iterable[Mapping[str, Any]],
) -> TurnState:
    """The state of the turn opened at ``turn_offset`` from the session's
    messages recorded after it (oldest first; other messages are skipped)."""
    state = TurnState(session_id, turn_offset, user_message)
    steps: dict[int, list[ToolCall]] = {}
    for message in messages:
        metadata = message.get("metadata") or {}
        if message["role"] == "assistant" and message.get("reply_to") == turn_offset:
            state.steps += 1
            add_usage(state.usage, message.get("usage"))
            calls = calls_in(message)
            if calls:
                steps[message["offset"]] = calls
                state.asked(message, calls)
        elif message["role"] == "tool" and message.get("reply_to") in steps:
            asked = {c.call_id: c for c in steps[message["reply_to"]]}
            call = asked.get(str(metadata.get("tool_call_id")))
            if call is not None:
                state.answered(call, str(metadata.get("status")), message["content"])
    return state
