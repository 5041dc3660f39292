"""One model step of a turn: the agent's generator runs on a pump thread; the
turn's thread turns its outputs into stream events and watches the turn's
cancellation and deadline while it waits. An agent that never blocks (it
computes its outputs in memory, like ``echo``) declares ``inline = True`` and
runs on the turn's thread instead: a thread and a hand-over per delta cost more
than such a step itself.

Why a pump: a generator cannot be closed from another thread while it runs, and
an agent may block inside a step (a slow model, a stalled connection). The turn
thread never blocks on the agent: it waits on a queue that the pump, the
cancellation and the deadline all wake. When the turn stops early the pump
closes the generator (``close()``: the agent's ``finally`` runs and a provider
releases its upstream request) as soon as the agent hands back control; the
turn does not wait for that. An agent blocked inside a step does not hand back
control until its server sends something: if the iterator ``run`` returned has
an ``abort()`` method, the turn thread calls it (an ``openai`` agent then shuts
its connection down, so the server sees the request end at once).

Stream events of a step: ``content_block_start`` for the text block (index 0,
opened at once), ``text_delta``; for each tool call a ``tool_use`` block
(index 1, 2, ...: ``content_block_start`` with ``{"type": "tool_use", "id",
"name"}``, ``input_json_delta``, ``content_block_stop``); then
``content_block_stop`` of the text block.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runtime.agents import (
    Agent,
    AgentOutput,
    FinalMessage,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
)
from runtime.turn_control import TIMEOUT, CancelToken

logger = logging.getLogger(__name__)

_END = object()
_WAKE = object()
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
AGENT_ERROR = "agent_error"


class StepStopped(Exception):
    """The step was stopped (cancelled, interrupted, timed out); ``partial`` is
    the text streamed so far."""

    def __init__(self, reason: str, partial: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial


class StepFailed(Exception):
    """The agent failed; ``code`` is the stable error code recorded."""

    def __init__(self, code: str, error_type: str) -> None:
        super().__init__(code)
        self.code = code
        self.error_type = error_type


@dataclass
class _Failure:
    error: BaseException


def error_code(error: BaseException) -> str:
    """The stable code of an agent's failure: the exception's own ``code`` when
    it declares one (providers do: ``provider_error``...), else ``agent_error``."""
    code = getattr(error, "code", None)
    if isinstance(code, str) and _CODE.match(code):
        return code
    return AGENT_ERROR


def _pump(
    outputs: Iterator[AgentOutput], items: queue.SimpleQueue[Any], stop: threading.Event
) -> None:
    try:
        for output in outputs:
            items.put(output)
            if stop.is_set():
                break
    except BaseException as error:  # handed to the turn thread, which decides
        items.put(_Failure(error))
    else:
        items.put(_END)
    finally:
        _close(outputs)


def _close(outputs: Iterator[AgentOutput]) -> None:
    """Close an agent's generator (its ``finally`` runs), logging a failure."""
    close = getattr(outputs, "close", None)
    if close is not None:
        try:
            close()
        except Exception as error:
            logger.warning(
                "agent generator failed to close", extra={"error": type(error).__name__}
            )


@dataclass
class _Blocks:
    """Content blocks of the step: text at 0, tool calls from 1."""

    by_call: dict[str, int] = field(default_factory=dict)
    open_call: str | None = None

    def start(self, call_id: str, name: str) -> list[dict[str, Any]]:
        events = self.stop_call()
        index = len(self.by_call) + 1
        self.by_call[call_id] = index
        self.open_call = call_id
        events.append(
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": call_id, "name": name},
            }
        )
        return events

    def json_delta(self, call_id: str, name: str, partial: str) -> dict[str, Any]:
        """A piece of a started call's input (``input_json_delta``)."""
        return {
            "type": "input_json_delta",
            "index": self.by_call[call_id],
            "id": call_id,
            "name": name,
            "partial_json": partial,
        }

    def stop_call(self) -> list[dict[str, Any]]:
        if self.open_call is None:
            return []
        index = self.by_call[self.open_call]
        self.open_call = None
        return [{"type": "content_block_stop", "index": index}]


def run_step(
    agent: Agent,
    history: Sequence[Mapping[str, Any]],
    specs: Sequence[ToolSpec],
    token: CancelToken,
    deadline: float | None,
) -> Generator[dict[str, Any], None, FinalMessage]:
    """Run one step, yielding its stream events; returns its ``FinalMessage``.

    Raises ``StepStopped`` when the token is cancelled or ``deadline``
    (``time.monotonic()``) passes, ``StepFailed`` when the agent fails.
    """
    if token.reason is not None:
        raise StepStopped(token.reason, "")
    try:
        # Agents written before tools existed take the history alone.
        outputs = iter(agent.run(history, specs) if specs else agent.run(history))
    except Exception as error:
        raise StepFailed(error_code(error), type(error).__name__) from error
    source = (
        _InlineSource(outputs)
        if getattr(agent, "inline", False)
        else _PumpedSource(outputs, token)
    )
    partial: list[str] = []
    blocks = _Blocks()
    final: FinalMessage | None = None
    finished = False
    try:
        yield {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text"},
        }
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                if remaining is not None and remaining <= 0:
                    raise queue.Empty
                item = source.next(remaining)
            except queue.Empty:
                raise StepStopped(TIMEOUT, "".join(partial)) from None
            if isinstance(item, TextDelta):
                # Text the agent gave before the stop is part of what it said:
                # streamed, and kept in the partial answer.
                partial.append(item.text)
                yield {"type": "text_delta", "index": 0, "text": item.text}
            if token.reason is not None:
                raise StepStopped(token.reason, "".join(partial))
            if item is _WAKE or isinstance(item, TextDelta):
                continue
            if item is _END:
                break
            if isinstance(item, _Failure):
                failure = item.error
                raise StepFailed(
                    error_code(failure), type(failure).__name__
                ) from failure
            if isinstance(item, ToolCallDelta):
                if item.call_id not in blocks.by_call:
                    yield from blocks.start(item.call_id, item.name)
                yield blocks.json_delta(item.call_id, item.name, item.partial_json)
            elif isinstance(item, FinalMessage):
                final = item
        if final is None:
            msg = "the agent ended its step without a final message"
            raise StepFailed(AGENT_ERROR, "ProtocolError") from RuntimeError(msg)
        for call in calls_of(final):
            if call.call_id not in blocks.by_call:
                # Not streamed: its input in one piece.
                yield from blocks.start(call.call_id, call.name)
                yield blocks.json_delta(call.call_id, call.name, call.arguments)
        yield from blocks.stop_call()
        yield {"type": "content_block_stop", "index": 0}
        finished = True
        return final
    finally:
        source.close(finished=finished)


class _PumpedSource:
    """The step's outputs from a pump thread, so that the turn thread can stop
    waiting (cancellation, deadline) while the agent blocks."""

    def __init__(self, outputs: Iterator[AgentOutput], token: CancelToken) -> None:
        self._outputs = outputs
        self._token = token
        self._items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stop = threading.Event()
        token.add_waker(self._wake)
        threading.Thread(
            target=_pump,
            args=(outputs, self._items, self._stop),
            name="agent-step",
            daemon=True,
        ).start()

    def _wake(self) -> None:
        self._items.put(_WAKE)

    def next(self, timeout: float | None) -> Any:
        """The next output, ``_WAKE``, ``_END`` or a ``_Failure``; raises
        ``queue.Empty`` when ``timeout`` passes first."""
        return self._items.get(timeout=timeout)

    def close(self, *, finished: bool) -> None:
        """Let the pump close the generator; cut an unfinished step off."""
        self._token.remove_waker(self._wake)
        self._stop.set()
        if not finished:
            _abort(self._outputs)


class _InlineSource:
    """The outputs of an agent that never blocks (``inline = True``), read on
    the turn's own thread: no pump thread and no hand-over per delta. The turn
    checks cancellation and the deadline between outputs."""

    def __init__(self, outputs: Iterator[AgentOutput]) -> None:
        self._outputs = outputs

    def next(self, timeout: float | None) -> Any:
        """The next output, ``_END`` or a ``_Failure`` (never waits)."""
        try:
            return next(self._outputs)
        except StopIteration:
            return _END
        except Exception as error:  # decided by the turn, as for a pumped step
            return _Failure(error)

    def close(self, *, finished: bool) -> None:
        """Close the generator (its ``finally`` runs now)."""
        _close(self._outputs)


def _abort(outputs: Iterator[AgentOutput]) -> None:
    """Cut a step that stopped early off from its upstream, if it can be."""
    abort = getattr(outputs, "abort", None)
    if not callable(abort):
        return
    try:
        abort()
    except Exception as error:
        logger.warning(
            "agent step failed to abort", extra={"error": type(error).__name__}
        )


def calls_of(final: FinalMessage) -> list[ToolCall]:
    """The tool calls a step asks for (mappings are accepted as ``ToolCall``)."""
    calls: list[ToolCall] = []
    for call in final.tool_calls:
        if isinstance(call, ToolCall):
            calls.append(call)
        else:
            mapping: Mapping[str, Any] = call
            arguments = mapping.get("arguments", "{}")
            calls.append(
                ToolCall(
                    call_id=str(mapping.get("id", "")),
                    name=str(mapping.get("name", "")),
                    arguments=arguments if isinstance(arguments, str) else "{}",
                )
            )
    return calls
