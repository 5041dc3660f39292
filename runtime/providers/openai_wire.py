"""The OpenAI chat-completions wire format: history and tools in, chunks out.

Pure functions and one small fold, with no I/O, so that the provider module
holds only the HTTP conversation. :class:`StepAssembler` folds the chunks of one
completion (streamed, or a whole non-streamed answer seen as one chunk) into the
deltas to stream and the step's :class:`FinalMessage`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runtime.agents import FinalMessage, TextDelta, ToolCall, ToolCallDelta, ToolSpec

FINISH_REASONS: Mapping[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
"""OpenAI ``finish_reason`` → ``FinalMessage.stop_reason`` (others pass as they are)."""

MESSAGE_OVERHEAD_TOKENS = 4
"""What each message adds to an offline estimate (role and separators)."""


def estimate_tokens(text: str) -> int:
    """An offline token estimate: about four characters a token."""
    return (len(text) + 3) // 4


def request_messages(
    history: Sequence[Mapping[str, Any]], system_prompt: str | None
) -> list[dict[str, Any]]:
    """The ``messages`` of a request: the system prompt, then the history.

    An assistant message that called tools carries them as ``tool_calls``; a tool
    result answers its call by ``tool_call_id``; system messages (summaries
    included) pass as system messages.
    """
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    for document in history:
        role = document.get("role")
        content = str(document.get("content") or "")
        metadata = document.get("metadata") or {}
        if role == "assistant":
            message: dict[str, Any] = {"role": "assistant", "content": content}
            calls = metadata.get("tool_calls") or []
            if calls:
                message["tool_calls"] = [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {
                            "name": call["name"],
                            "arguments": call.get("arguments") or "{}",
                        },
                    }
                    for call in calls
                ]
                # OpenAI's own form of a call without text
                message["content"] = content or None
        elif role == "tool":
            message = {
                "role": "tool",
                "tool_call_id": metadata.get("tool_call_id"),
                "content": content,
            }
        elif role == "system":
            message = {"role": "system", "content": content}
        else:
            message = {"role": "user", "content": content}
        messages.append(message)
    return messages


def request_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """The ``tools`` of a request (function tools)."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": dict(tool.parameters),
            },
        }
        for tool in tools
    ]


def estimate_input_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """The offline estimate of a request's input tokens."""
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + estimate_tokens(message.get("content") or "")
        for call in message.get("tool_calls") or ():
            function = call["function"]
            total += estimate_tokens(function["name"] + function["arguments"])
    return total


@dataclass
class _PendingCall:
    call_id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)
    sent: int = 0
    """How many pieces of ``arguments`` were already streamed."""


class StepAssembler:
    """Folds the chunks of one completion into deltas and a final message.

    Tool calls arrive in pieces keyed by ``index``: the id and name first, the
    arguments' JSON text in fragments. A piece is streamed as a
    :class:`ToolCallDelta` as soon as its call's id and name are known; a call
    the server gave no id gets one from ``new_call_id``.
    """

    def __init__(self, new_call_id: Callable[[], str]) -> None:
        self._new_call_id = new_call_id
        self._text: list[str] = []
        self._calls: dict[int, _PendingCall] = {}
        self._ids: dict[str, int] = {}
        self.finish_reason: str | None = None
        self.usage: Mapping[str, int] | None = None
        self.model: str | None = None

    @property
    def streamed_anything(self) -> bool:
        """Whether any text or tool call arrived."""
        return bool(self._text or self._calls)

    def feed(self, chunk: Mapping[str, Any]) -> list[TextDelta | ToolCallDelta]:
        """The deltas ``chunk`` (a parsed ``chat.completion.chunk``) carries."""
        out: list[TextDelta | ToolCallDelta] = []
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self.usage = {
                "input_tokens": int(usage.get("prompt_tokens") or 0),
                "output_tokens": int(usage.get("completion_tokens") or 0),
            }
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # one completion is asked for (no ``n``)
            delta = choice.get("delta") or choice.get("message") or {}
            for key in ("content", "refusal"):
                text = delta.get(key)
                if isinstance(text, str) and text:
                    self._text.append(text)
                    out.append(TextDelta(text))
            for position, piece in enumerate(delta.get("tool_calls") or ()):
                out.extend(self._tool_piece(position, piece))
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return out

    def _tool_piece(
        self, position: int, piece: Mapping[str, Any]
    ) -> list[ToolCallDelta]:
        given_id = piece.get("id") or None
        index = piece.get("index")
        if not isinstance(index, int):
            # servers that send whole calls without an index
            index = self._ids.get(given_id, len(self._calls)) if given_id else position
        call = self._calls.setdefault(index, _PendingCall())
        function = piece.get("function") or {}
        if given_id and call.call_id is None:
            call.call_id = str(given_id)
            self._ids[call.call_id] = index
        if function.get("name") and call.name is None:
            call.name = str(function["name"])
        if isinstance(function.get("arguments"), str) and function["arguments"]:
            call.arguments.append(function["arguments"])
        if call.name is None:
            return []  # wait for the name before streaming anything of it
        if call.call_id is None:
            call.call_id = self._new_call_id()
            self._ids[call.call_id] = index
        out = [
            ToolCallDelta(call.call_id, call.name, text)
            for text in call.arguments[call.sent :]
        ]
        call.sent = len(call.arguments)
        return out

    def final(self, input_estimate: int) -> FinalMessage:
        """The step's final message (usage estimated if the server sent none)."""
        content = "".join(self._text)
        calls = [
            ToolCall(
                call_id=call.call_id or self._new_call_id(),
                name=call.name,
                arguments="".join(call.arguments) or "{}",
            )
            for _, call in sorted(self._calls.items())
            if call.name is not None
        ]
        reason = self.finish_reason
        stop_reason = FINISH_REASONS.get(reason, reason) if reason else "end_turn"
        metadata: dict[str, Any] = {"finish_reason": reason}
        if self.model:
            metadata["model"] = self.model
        if stop_reason == "max_tokens" and calls:
            # cut off in the middle of a call: its arguments are not whole JSON,
            # so nothing may run it
            metadata["truncated_tool_calls"] = len(calls)
            calls = []
        elif calls:
            stop_reason = "tool_use"  # some servers say "stop" after calls
        usage = self.usage
        if usage is None:
            output = estimate_tokens(content) + sum(
                estimate_tokens(call.name + call.arguments) for call in calls
            )
            usage = {"input_tokens": input_estimate, "output_tokens": output}
            metadata["usage_estimated"] = True
        return FinalMessage(
            content=content,
            usage=dict(usage),
            stop_reason=stop_reason,
            metadata=metadata,
            tool_calls=tuple(calls),
        )
