"""Runtime calls on messages: append, turns (send, stream, submit, chat
commands), history, the log and its tails."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from aggregates.errors import (
    InvalidRequestError,
)
from aggregates.session import Session
from aggregates.values import (
    Role,
)
from projections.codec import encode_state
from projections.documents import message_document
from runtime.agents import (
    AgentOutput,
    FinalMessage,
    TextDelta,
    ToolCallDelta,
    split_words,
)
from runtime.commands import CommandResult, is_command
from runtime.core import (
    HISTORY_MAX_LIMIT,
    AnyList,
    DocumentList,
    RuntimeCore,
    _ResetTo,
)
from runtime.errors import (
    ActorUnavailableError,
    TurnTimeoutError,
)
from runtime.export import render_markdown, render_text
from runtime.principal import LOCAL_PRINCIPAL, Principal
from runtime.tail import SessionTail

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


def command_outputs(result: CommandResult) -> Iterator[AgentOutput]:
    """A chat command's answer, streamed like an agent's reply."""
    for word in split_words(result.text):
        yield TextDelta(word)
    yield FinalMessage(content=result.text, metadata={"command": result.name}, steps=0)


class MessageCalls(RuntimeCore):
    """Messages, agent turns, history and the event log."""

    def append(
        self,
        session_id: str,
        content: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        role: str = "user",
        author_id: str | None = None,
        attachments: AnyList | None = None,
        metadata: Mapping[str, Any] | None = None,
        usage: Mapping[str, int] | None = None,
        idempotency_key: str | None = None,
        expected_offset: int | None = None,
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """Append one message without running a turn; returns the ``Message``.

        With ``idempotency_key``, a retry returns the first message and appends
        nothing (keys are remembered for the session's last
        ``IDEMPOTENCY_WINDOW`` keyed messages). ``expected_offset`` must equal
        the session's offset (else ``OffsetConflictError`` with the current one).
        """
        self._row(session_id, principal)
        recorded: DocumentList = []
        offset, duplicate, session_id = self._append(
            session_id,
            content,
            role=role,
            author_id=author_id or (principal.id if role == "user" else None),
            attachments=attachments,
            metadata=metadata,
            usage=usage,
            idempotency_key=idempotency_key,
            expected_offset=expected_offset,
            reply_to=reply_to,
            recorded=recorded,
        )
        if recorded and not duplicate:
            message = recorded[-1]
            if message["session_id"] == session_id and message["offset"] == offset:
                return message
        # A retry (idempotency key) answers the message recorded the first time.
        found = self.views.message_at(session_id, offset)
        assert found is not None
        return found

    def _append(
        self,
        session_id: str,
        content: str,
        *,
        role: str,
        author_id: str | None,
        attachments: AnyList | None,
        metadata: Mapping[str, Any] | None,
        usage: Mapping[str, int] | None,
        idempotency_key: str | None,
        expected_offset: int | None,
        reply_to: int | None,
        recorded: DocumentList | None = None,
    ) -> tuple[int, bool, str]:
        """Append on the session's actor; returns (offset, whether it was a
        retry, the session it went to). ``recorded`` receives the new message's
        document, made from the very bytes the log stores, so that the caller
        need not read it back (reading after a write costs ~100 us: every write
        empties the other connections' page caches)."""
        if attachments is not None and not isinstance(attachments, list):
            raise InvalidRequestError("attachments must be a list")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidRequestError("metadata must be an object")
        message_id = self._new_id()

        def command(session: Session) -> Any:  # (offset, duplicate), or _ResetTo
            seen = session.seen_idempotency_key(idempotency_key)
            if seen is not None:
                return seen, True
            successor = session.successor()
            if successor is not None:
                # Reset (e.g. by the supervisor at an idle or daily reset point)
                # before this message came: it belongs to the session carrying on.
                return _ResetTo(successor)
            offset = session.append_message(
                timestamp=self.clock.now(),
                message_id=message_id,
                role=role,
                content=content,
                author_id=author_id,
                attachments=attachments,
                metadata=dict(metadata) if metadata else None,
                usage=dict(usage) if usage else None,
                idempotency_key=idempotency_key,
                reply_to=reply_to,
                expected_offset=expected_offset,
            )
            if recorded is not None:
                state = vars(session.pending_events[-1])
                stored = orjson.loads(encode_state(state))  # as the log stores it
                recorded.append(message_document(session.id, offset, stored))
            return offset, False

        (offset, duplicate), session_id = self._execute_on(session_id, command)
        return offset, duplicate, session_id

    def send(
        self,
        session_id: str,
        content: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        role: str = "user",
        attachments: AnyList | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        expected_offset: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Append the message, run the agent's turn, append its reply.

        Returns ``{user_message, reply, tool_calls, usage, steps, session}``. A
        retry with the same ``idempotency_key`` returns the first result and
        runs nothing.
        """
        result: dict[str, Any] = {}
        for event in self.stream(
            session_id,
            content,
            principal=principal,
            role=role,
            attachments=attachments,
            metadata=metadata,
            idempotency_key=idempotency_key,
            expected_offset=expected_offset,
            timeout=timeout,
        ):
            if event["type"] == "done":
                result = {k: v for k, v in event.items() if k != "type"}
        return result

    def stream(
        self,
        session_id: str,
        content: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        role: str = "user",
        attachments: AnyList | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        expected_offset: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Send a message and iterate the turn as it happens.

        Yields dicts whose ``type`` is ``message_start`` (with the recorded
        ``user_message``), ``content_block_start``, ``text_delta``,
        ``input_json_delta``, ``content_block_stop``, ``message_delta``,
        ``message_stop`` (with the recorded ``message``) and finally ``done``
        (the same result :meth:`send` returns). Turns of one session run one at a
        time, in arrival order. Every event is also published live to the
        session's tails as a ``delta``.
        """
        bus = self.app.bus
        for event in self._turn(
            session_id,
            content,
            principal=principal,
            role=role,
            attachments=attachments,
            metadata=metadata,
            idempotency_key=idempotency_key,
            expected_offset=expected_offset,
            timeout=timeout,
        ):
            if bus.has_subscribers(session_id):
                bus.publish(session_id, {"type": "delta", "event": event})
            yield event

    def _turn(
        self,
        session_id: str,
        content: str,
        *,
        principal: Principal,
        role: str,
        attachments: AnyList | None,
        metadata: Mapping[str, Any] | None,
        idempotency_key: str | None,
        expected_offset: int | None,
        timeout: float | None,
    ) -> Iterator[dict[str, Any]]:
        """The turn behind :meth:`stream`: holds the session's turn lock, records
        the message, runs the agent and records its reply."""
        row = self._row(session_id, principal)
        try:
            role = Role(role).value
        except ValueError:
            raise InvalidRequestError(
                "role must be one of user, assistant, system, tool"
            ) from None
        agent = self.agents.get(row["doc"]["agent_id"]) if role == "user" else None
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        turn = self._turn_lock(session_id)
        if not turn.lock.acquire(timeout=-1 if timeout is None else timeout):
            msg = "the session's previous turn did not finish in time"
            raise TurnTimeoutError(msg)
        try:
            offset, duplicate, session_id = self._append(
                session_id,
                content,
                role=role,
                author_id=principal.id if role == "user" else None,
                attachments=attachments,
                metadata=metadata,
                usage=None,
                idempotency_key=idempotency_key,
                expected_offset=expected_offset,
                reply_to=None,
            )
            user_message = self.views.message_at(session_id, offset)
            yield {"type": "message_start", "user_message": user_message}
            if duplicate or agent is None:
                reply = self.views.reply_to(session_id, offset) if duplicate else None
                yield self._done(session_id, user_message, reply)
                return
            command = (
                self.commands.run(session_id, content, principal)
                if is_command(content)
                else None
            )
            if command is not None:
                outputs: Iterator[AgentOutput] = command_outputs(command)
            else:
                history = self.api._turn_history(session_id, principal)
                outputs = iter(agent.run(history))
            final: FinalMessage | None = None
            yield {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text"},
            }
            for output in outputs:
                if deadline is not None and self.clock.monotonic() > deadline:
                    msg = "the agent's turn did not finish in time"
                    raise TurnTimeoutError(msg)
                if isinstance(output, TextDelta):
                    yield {"type": "text_delta", "index": 0, "text": output.text}
                elif isinstance(output, ToolCallDelta):
                    yield {
                        "type": "input_json_delta",
                        "index": 0,
                        "id": output.call_id,
                        "name": output.name,
                        "partial_json": output.partial_json,
                    }
                else:
                    final = output
            yield {"type": "content_block_stop", "index": 0}
            if final is None:
                msg = "the agent ended its turn without a final message"
                raise RuntimeError(msg)
            reply_offset, _, session_id = self._append(
                session_id,
                final.content,
                role="assistant",
                author_id=row["doc"]["agent_id"],
                attachments=None,
                metadata=dict(final.metadata) or None,
                usage=dict(final.usage),
                idempotency_key=None,
                expected_offset=None,
                reply_to=offset,
            )
            reply = self.views.message_at(session_id, reply_offset)
            if command is not None and command.reset:
                # The answer stays with the session it speaks of; the
                # conversation carries on in the successor.
                session_id = self.api.reset(session_id, principal=principal)["id"]
            yield {
                "type": "message_delta",
                "stop_reason": final.stop_reason,
                "usage": dict(final.usage),
            }
            yield {"type": "message_stop", "message": reply}
            yield self._done(
                session_id,
                user_message,
                reply,
                tool_calls=list(
                    final.tool_calls
                ),  # the tool loop (issue 6) reworks this
                steps=final.steps,
            )
        finally:
            turn.lock.release()

    def submit(
        self,
        session_id: str,
        content: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        role: str = "user",
        attachments: AnyList | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        expected_offset: int | None = None,
    ) -> dict[str, Any]:
        """Record the message and run the turn in the background; returns the
        recorded user ``Message`` as soon as it is durable. The reply arrives on
        the session's tail (and in its history)."""
        self._row(session_id, principal)
        recorded = threading.Event()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                for event in self.stream(
                    session_id,
                    content,
                    principal=principal,
                    role=role,
                    attachments=attachments,
                    metadata=metadata,
                    idempotency_key=idempotency_key,
                    expected_offset=expected_offset,
                ):
                    if event["type"] == "message_start":
                        outcome["message"] = event["user_message"]
                        recorded.set()
            except BaseException as error:
                outcome.setdefault("error", error)
                if recorded.is_set():
                    logger.warning(
                        "background turn failed",
                        extra={"session_id": session_id, "error": type(error).__name__},
                    )
            finally:
                recorded.set()
                with self._background_guard:
                    self._background.discard(threading.current_thread())

        worker = threading.Thread(target=run, name=f"turn-{session_id}", daemon=True)
        with self._background_guard:
            self._background.add(worker)
        worker.start()
        if not recorded.wait(self.settings.actor_timeout):
            msg = f"session {session_id} did not record the message in time"
            raise ActorUnavailableError(msg)
        if "message" not in outcome:
            raise outcome["error"]
        return dict(outcome["message"])

    def _done(
        self,
        session_id: str,
        user_message: dict[str, Any] | None,
        reply: dict[str, Any] | None,
        *,
        tool_calls: AnyList | None = None,
        steps: int | None = None,
    ) -> dict[str, Any]:
        usage = (reply or {}).get("usage") or {"input_tokens": 0, "output_tokens": 0}
        return {
            "type": "done",
            "user_message": user_message,
            "reply": reply,
            "tool_calls": tool_calls or [],
            "usage": usage,
            "steps": steps if steps is not None else (1 if reply else 0),
            "session": self._document(session_id),
        }

    def history(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        limit: int = 50,
        before: int | None = None,
        after: int | None = None,
        order: str = "desc",
    ) -> dict[str, Any]:
        """A page of the visible history: ``{messages, has_more}``.

        ``before``/``after`` are exclusive offsets; ``order`` is ``desc``
        (newest first, the default) or ``asc``. ``has_more`` is exact.
        """
        if not 1 <= limit <= HISTORY_MAX_LIMIT:
            raise InvalidRequestError(f"limit must be within 1..{HISTORY_MAX_LIMIT}")
        if order not in ("asc", "desc"):
            raise InvalidRequestError("order must be asc or desc")
        for label, value in (("before", before), ("after", after)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InvalidRequestError(f"{label} must be a non-negative offset")
        if not isinstance(session_id, str):
            self._checked(None, session_id, principal)
        # The index row and the page come from one read transaction.
        row, messages, has_more = self.views.session_history(
            session_id,
            limit=limit,
            before=before,
            after=after,
            descending=order == "desc",
        )
        checked = self._checked(row, session_id, principal)
        if checked is not row:  # it changed meanwhile (expired on the spot)
            messages, has_more = self.views.history(
                checked["spans"],
                limit=limit,
                before=before,
                after=after,
                descending=order == "desc",
            )
        return {"messages": messages, "has_more": has_more}

    def messages(
        self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL
    ) -> DocumentList:
        """The whole visible history, oldest first."""
        row = self._row(session_id, principal)
        found: DocumentList = []
        after: int | None = None
        while True:
            page, has_more = self.views.history(
                row["spans"], limit=HISTORY_MAX_LIMIT, after=after, descending=False
            )
            found.extend(page)
            if not has_more:
                return found
            after = page[-1]["offset"]

    def history_text(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        format: str = "markdown",
    ) -> str:
        """The visible history rendered as ``markdown`` or ``text``."""
        messages = self.messages(session_id, principal=principal)
        if format == "markdown":
            return render_markdown(
                self.api.get(session_id, principal=principal), messages
            )
        if format == "text":
            return render_text(messages)
        raise InvalidRequestError("format must be markdown or text")

    def events(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        after: int = 0,
        limit: int = 100,
        include_expired: bool = False,
    ) -> dict[str, Any]:
        """A page of the session's own log after offset ``after``: ``{events,
        has_more}`` (the audit view; abandoned branches included). An admin may
        pass ``include_expired`` to read an expired session's log."""
        if not 1 <= limit <= HISTORY_MAX_LIMIT:
            raise InvalidRequestError(f"limit must be within 1..{HISTORY_MAX_LIMIT}")
        if not isinstance(after, int) or after < 0:
            raise InvalidRequestError("after must be a non-negative offset")
        self._row(
            session_id, principal, allow_expired=include_expired and principal.admin
        )
        events, has_more = self.views.events(session_id, after=after, limit=limit)
        return {"events": events, "has_more": has_more}

    def tail(
        self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL, after: int = 0
    ) -> SessionTail:
        """Follow the session's log from offset ``after``: the backlog, then live
        events and turn deltas (see :mod:`runtime.tail`)."""
        self._row(session_id, principal)
        if not isinstance(after, int) or after < 0:
            raise InvalidRequestError("after must be a non-negative offset")
        return SessionTail(self.views, self.app.bus, session_id, after)
