"""How a turn's outcomes are recorded and announced: the events it streams,
the messages its steps and tools leave, and its ending (the final answer and
``turn_ended`` in one write). The loop that decides them is
:mod:`runtime.turn_loop`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from aggregates.session import Session
from aggregates.values import TurnStatus
from projections.codec import encode_state
from projections.documents import message_document, stored_session_document
from runtime.agents import FinalMessage, ToolCall
from runtime.calls_messages import MessageCalls
from runtime.turn_records import (
    TurnState,
    tool_metadata,
    unfinished_results,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    content: str
    metadata: Mapping[str, Any]
    usage: Mapping[str, int] | None


@dataclass
class Ending:
    """What a turn's ending write recorded (filled in by its command)."""

    turn_session: str
    """The session that opened the turn (a reset may move the answer on)."""
    reply: dict[str, Any] | None = None
    session: dict[str, Any] | None = None


def reply_of(final: FinalMessage, *, command: bool) -> Reply:
    """The answer a final message records (an agent's names its stop reason)."""
    metadata = dict(final.metadata)
    if not command:
        metadata.setdefault("stop_reason", final.stop_reason)
    return Reply(final.content, metadata, final.usage)


class TurnRecording(MessageCalls):
    """Recording and announcing a turn's outcomes (see the module docstring)."""

    def _emit(self, state: TurnState, event: dict[str, Any]) -> dict[str, Any]:
        """Publish a turn event live to the session's tails; returns it."""
        bus = self.app.bus
        if bus.has_subscribers(state.session_id):
            bus.publish(state.session_id, {"type": "delta", "event": event})
        return event

    def _emitting(
        self, state: TurnState, inner: Generator[dict[str, Any], None, FinalMessage]
    ) -> Generator[dict[str, Any], None, FinalMessage]:
        try:
            while True:
                try:
                    event = next(inner)
                except StopIteration as stop:
                    final: FinalMessage = stop.value
                    return final
                yield self._emit(state, event)
        finally:
            inner.close()

    def _record(
        self,
        state: TurnState,
        content: str,
        *,
        role: str,
        author_id: str | None,
        metadata: Mapping[str, Any],
        usage: Mapping[str, int] | None,
        reply_to: int,
    ) -> dict[str, Any]:
        recorded: list[dict[str, Any]] = []
        _, _, state.session_id = self._append(
            state.session_id,
            content,
            role=role,
            author_id=author_id,
            attachments=None,
            metadata=metadata,
            usage=dict(usage) if usage else None,
            idempotency_key=None,
            expected_offset=None,
            reply_to=reply_to,
            recorded=recorded,
        )
        return recorded[-1]

    def _record_result(
        self,
        state: TurnState,
        call: ToolCall,
        status: str,
        content: str,
        duration_ms: int = 0,
    ) -> Iterator[dict[str, Any]]:
        """Record one call's result and yield its ``tool_result`` event."""
        assert state.last_step is not None
        message = self._record(
            state,
            content,
            role="tool",
            author_id=call.name,
            metadata=tool_metadata(call, status),
            usage=None,
            reply_to=state.last_step["offset"],
        )
        state.answered(call, status, content, duration_ms)
        self.turn_metrics.count_tool_call(call.name, status)
        yield self._emit(
            state,
            {
                "type": "tool_result",
                "id": call.call_id,
                "name": call.name,
                "status": status,
                "content": content,
                "message": message,
            },
        )

    def _settle_calls(
        self, state: TurnState, reason: str, *, crashed: bool
    ) -> Iterator[dict[str, Any]]:
        """Record a result for every call of the last step left without one."""
        for call, status, content in unfinished_results(
            list(state.unanswered), reason, crashed=crashed
        ):
            yield from self._record_result(state, call, status, content)

    def _finish(
        self,
        state: TurnState,
        agent_id: str,
        *,
        status: str,
        stop_reason: str | None = None,
        error_code: str | None = None,
        reply: Reply | None = None,
        reply_offset: int | None = None,
    ) -> dict[str, Any] | None:
        """Record the final answer (if any) and ``turn_ended`` in one write;
        returns the answer's document."""
        ending = Ending(state.session_id)
        command = self._ending_command(
            state,
            agent_id,
            ending,
            status=status,
            stop_reason=stop_reason,
            error_code=error_code,
            reply=reply,
            reply_offset=reply_offset,
        )
        offset, state.session_id = self._execute_on(state.session_id, command)
        return self._ended(state, agent_id, ending, offset, status, error_code)

    def _ending_command(
        self,
        state: TurnState,
        agent_id: str,
        ending: Ending,
        *,
        status: str,
        stop_reason: str | None = None,
        error_code: str | None = None,
        reply: Reply | None = None,
        reply_offset: int | None = None,
    ) -> Callable[[Session], int | None]:
        """The command that applies the answer (if any) and ``turn_ended``;
        it returns the answer's offset and leaves the answer's and the
        session's documents in ``ending``."""
        message_id = self._new_id()

        def command(session: Session) -> int | None:
            offset = reply_offset
            now = self.clock.now()
            if reply is not None:
                offset = session.append_message(
                    timestamp=now,
                    message_id=message_id,
                    role="assistant",
                    content=reply.content,
                    author_id=agent_id,
                    metadata=dict(reply.metadata) or None,
                    usage=dict(reply.usage) if reply.usage else None,
                    reply_to=state.turn_offset,
                )
                stored = orjson.loads(encode_state(vars(session.pending_events[-1])))
                ending.reply = message_document(session.id, offset, stored)
            # After a reset the answer follows the conversation to the successor;
            # the turn belongs to the session that opened it.
            if (
                session.id == ending.turn_session
                and session.pending_turn() == state.turn_offset
            ):
                session.end_turn(
                    timestamp=now,
                    turn_offset=state.turn_offset,
                    status=status,
                    stop_reason=stop_reason,
                    error_code=error_code,
                    usage=dict(state.usage),
                    steps=state.steps,
                    tool_calls=len(state.tool_calls),
                    reply_offset=offset,
                )
            ending.session = stored_session_document(session)
            return offset

        return command

    def _ended(
        self,
        state: TurnState,
        agent_id: str,
        ending: Ending,
        offset: int | None,
        status: str,
        error_code: str | None,
    ) -> dict[str, Any] | None:
        """After the ending write: count and log the turn; the answer's
        document."""
        if ending.session is not None and ending.session["id"] == state.session_id:
            state.session = ending.session
        self.turn_metrics.count_turn(agent_id, status)
        logger.info(
            "turn ended",
            extra={
                "session_id": ending.turn_session,
                "turn_offset": state.turn_offset,
                "status": status,
                "error_code": error_code,
                "steps": state.steps,
            },
        )
        if ending.reply is not None:
            return ending.reply
        if offset is None:
            return None
        return self.views.message_at(state.session_id, offset)

    def _done(
        self,
        state: TurnState,
        reply: dict[str, Any] | None,
        *,
        status: str = TurnStatus.COMPLETED.value,
        stop_reason: str | None = None,
    ) -> dict[str, Any]:
        return {
            "type": "done",
            "user_message": state.user_message,
            "reply": reply,
            "tool_calls": list(state.tool_calls),
            "usage": dict(state.usage),
            "steps": state.steps,
            "status": status,
            "stop_reason": stop_reason,
            "session": self._decorate(state.session)
            if state.session is not None and state.session["id"] == state.session_id
            else self._document(state.session_id),
        }

    def _answer_events(
        self, state: TurnState, final: FinalMessage, reply: dict[str, Any] | None
    ) -> Iterator[dict[str, Any]]:
        """The events that close a completed turn, once its answer is recorded."""
        yield self._emit(
            state,
            {
                "type": "message_delta",
                "stop_reason": final.stop_reason,
                "usage": dict(final.usage),
            },
        )
        yield self._emit(state, {"type": "message_stop", "message": reply})
        yield self._emit(state, self._done(state, reply, stop_reason=final.stop_reason))
