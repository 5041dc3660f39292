"""The tool loop of an agent turn, and how it is recorded.

A turn runs model steps (:mod:`runtime.turn_step`) until a step gives a final
answer or ``max_steps`` (from the agent's config) is reached. A step that asks
for tools is recorded as an assistant message *before* any of its tools runs;
its calls then run one at a time, in order, each result recorded *after* it ran
(see :mod:`runtime.turn_records` for the shapes). So after a crash, a finished
call is never run again (its result is in the log) and an unfinished one is
reported ``in_doubt`` rather than repeated.

Every turn ends with a ``turn_ended`` event (``Session.TurnEnded``), written in
the same transaction as its final answer:

- ``completed`` (``stop_reason`` ``end_turn``, ``max_tokens``, ``max_steps``...);
- ``failed``: the agent or its provider raised; ``error_code`` is stable
  (``agent_error``, or the provider's own code such as ``provider_error``), no
  content is recorded, the user message stays; the caller gets
  ``TurnFailedError``;
- ``interrupted``: a newer message interrupted it (``interrupt`` policy), or it
  was cut short by a restart and not resumed (``error_code`` ``restart`` or
  ``agent_unavailable``);
- ``cancelled``: its caller's ``timeout`` passed (``timeout``; the caller gets
  ``TurnTimeoutError``), its streaming caller went away under the ``cancel``
  disconnect policy (``disconnected``), or a ``CancelToken`` was cancelled.

An interrupted or cancelled step keeps the text it had streamed as an assistant
message marked ``metadata.interrupted``; calls it asked for and never ran get an
``error`` result ("not run"), so every call in the history has its result.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from aggregates.errors import TurnOpenError
from aggregates.session import Session
from aggregates.values import TurnStatus
from runtime.agents import (
    Agent,
    AgentOutput,
    FinalMessage,
    TextDelta,
    ToolCall,
    ToolSpec,
    split_words,
)
from runtime.commands import CommandResult, is_command
from runtime.core import AnyList
from runtime.errors import TurnFailedError, TurnTimeoutError
from runtime.principal import Principal
from runtime.settings import ContextConfig
from runtime.tools import ToolContext, ToolOutcome
from runtime.turn_control import INTERRUPTED, TIMEOUT, CancelToken
from runtime.turn_inline import FirstStep, InlineTurns
from runtime.turn_recording import Reply, reply_of
from runtime.turn_records import (
    TurnState,
    add_usage,
    read_turn,
)
from runtime.turn_step import StepFailed, StepStopped, calls_of, run_step

RESTART = "restart"
AGENT_UNAVAILABLE = "agent_unavailable"
MAX_STEPS = "max_steps"
TURN_READ_LIMIT = 1000


def command_outputs(result: CommandResult) -> Iterator[AgentOutput]:
    """A chat command's answer, streamed like an agent's reply."""
    for word in split_words(result.text):
        yield TextDelta(word)
    yield FinalMessage(content=result.text, metadata={"command": result.name}, steps=0)


class _CommandAgent:
    """A chat command as a one-step agent: it runs once, when the step runs."""

    def __init__(
        self, runtime: TurnLoop, session_id: str, content: str, principal: Principal
    ) -> None:
        self._runtime = runtime
        self._session_id = session_id
        self._content = content
        self._principal = principal
        self.result: CommandResult | None = None

    def run(
        self, history: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec] = ()
    ) -> Iterator[AgentOutput]:
        """Carry out the command and stream its answer (one step, no tools)."""
        self.result = self._runtime.commands.run(
            self._session_id, self._content, self._principal
        )
        yield from command_outputs(self.result)


class TurnLoop(InlineTurns):
    """The turn machinery behind ``Runtime.send``, ``stream``, ``submit`` and
    ``resume_turns``."""

    # --- reading

    def _agent_history(
        self, state: TurnState, agent_id: str, principal: Principal, agent: Agent
    ) -> list[dict[str, Any]]:
        """What the agent sees: the session's context window (see
        :mod:`runtime.window`), read again before every step so that the tool
        results already recorded are in it. With the ``summarize`` strategy this
        may record a summary first. An agent that declares ``history_limit``
        (e.g. ``echo``: 1) gets just that many latest messages instead, unless
        its configuration sets a context window. With a limit of 1, the first
        step gets the message that opened the turn, as recorded (no read)."""
        session_id = state.session_id
        limit = getattr(agent, "history_limit", None)
        if (
            isinstance(limit, int)
            and limit > 0
            and self.agents.config(agent_id).context == ContextConfig()
        ):
            if limit == 1 and state.steps == 0 and state.user_message is not None:
                return [state.user_message]
            # (read only here: agents without a limit pay no extra read per step)
            row = self._row(session_id, principal)
            history, _ = self.views.history(row["spans"], limit=limit, descending=True)
            history.reverse()
            return history
        return self.api._turn_history(session_id, principal)

    def _read_turn(
        self, session_id: str, turn_offset: int, user_message: dict[str, Any] | None
    ) -> TurnState:
        messages, _ = self.views.history(
            [[session_id, turn_offset, None]], limit=TURN_READ_LIMIT, descending=False
        )
        return read_turn(session_id, turn_offset, user_message, messages)

    # --- the turn

    def _open_message(
        self,
        session_id: str,
        content: str,
        *,
        role: str,
        author_id: str | None,
        attachments: AnyList | None,
        metadata: Mapping[str, Any] | None,
        idempotency_key: str | None,
        expected_offset: int | None,
        opens_turn: bool,
        recorded: list[dict[str, Any]],
        principal: Principal,
        then: Callable[[Session, dict[str, Any]], None] | None = None,
    ) -> tuple[int, bool, str]:
        """Record the message that opens the turn (its document into
        ``recorded``); a turn a crash left open is closed first (the session's
        turn queue is held, so it cannot be live). The actor checks that
        ``principal`` sees the session it writes to."""
        for _ in range(4):
            try:
                return self._append(
                    session_id,
                    content,
                    role=role,
                    author_id=author_id,
                    attachments=attachments,
                    metadata=metadata,
                    usage=None,
                    idempotency_key=idempotency_key,
                    expected_offset=expected_offset,
                    reply_to=None,
                    opens_turn=opens_turn,
                    recorded=recorded,
                    principal=principal,
                    then=then,
                )
            except TurnOpenError as error:
                self._close_stale(session_id, error.turn_offset)
        msg = f"session {session_id} kept a turn open"
        raise RuntimeError(msg)

    def _admitted(
        self,
        session_id: str,
        content: str,
        *,
        principal: Principal,
        role: str,
        agent_id: str,
        agent: Agent | None,
        attachments: AnyList | None,
        metadata: Mapping[str, Any] | None,
        idempotency_key: str | None,
        expected_offset: int | None,
        token: CancelToken,
        deadline: float | None,
    ) -> Iterator[dict[str, Any]]:
        """The turn once the session's queue let it in."""
        recorded: list[dict[str, Any]] = []
        first: list[FirstStep] = []
        then = (
            self._first_step(agent_id, agent, token, deadline, first)
            if agent is not None
            and self._runs_inline(session_id, agent_id, agent, content)
            else None
        )
        offset, duplicate, session_id = self._open_message(
            session_id,
            content,
            role=role,
            author_id=principal.id if role == "user" else None,
            attachments=attachments,
            metadata=metadata,
            idempotency_key=idempotency_key,
            expected_offset=expected_offset,
            opens_turn=agent is not None,
            recorded=recorded,
            principal=principal,
            then=then,
        )
        user_message = (
            recorded[-1]
            if recorded
            and not duplicate
            and recorded[-1]["session_id"] == session_id
            and recorded[-1]["offset"] == offset
            else self.views.message_at(session_id, offset)
        )
        step = (
            first[-1]
            if first and not duplicate and first[-1].user_message is user_message
            else None
        )
        state = (
            step.state
            if step is not None and step.state is not None
            else TurnState(session_id, offset, user_message)
        )
        yield self._emit(state, {"type": "message_start", "user_message": user_message})
        if step is not None and step.state is not None:
            yield from self._answered(step, agent_id)
            return
        if duplicate:
            yield self._emit(state, self._recorded_done(state))
            return
        if agent is None:
            yield self._emit(state, self._done(state, None))
            return
        if is_command(content):
            command = _CommandAgent(self, session_id, content, principal)
            yield from self._loop(
                state, agent_id, command, principal, token, deadline, command=command
            )
            return
        yield from self._loop(
            state, agent_id, agent, principal, token, deadline, first=step
        )

    def _recorded_done(self, state: TurnState) -> dict[str, Any]:
        """A retry's answer: the first turn's result, from the log."""
        ended = self.views.turn_ended(state.session_id, state.turn_offset)
        if ended is None:  # a message recorded before turns were
            reply = self.views.reply_to(state.session_id, state.turn_offset)
            if reply is not None:
                add_usage(state.usage, reply.get("usage"))
                state.steps = 1
            return self._done(state, reply)
        recorded = self._read_turn(
            state.session_id, state.turn_offset, state.user_message
        )
        offset = ended.get("reply_offset")
        reply = (
            None if offset is None else self.views.message_at(state.session_id, offset)
        )
        recorded.usage = {
            k: int(v) for k, v in (ended.get("usage") or recorded.usage).items()
        }
        recorded.steps = int(ended.get("steps", recorded.steps))
        return self._done(
            recorded,
            reply,
            status=str(ended["status"]),
            stop_reason=ended.get("stop_reason"),
        )

    def _loop(
        self,
        state: TurnState,
        agent_id: str,
        agent: Agent,
        principal: Principal,
        token: CancelToken,
        deadline: float | None,
        *,
        command: _CommandAgent | None = None,
        first: FirstStep | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Run the turn's steps to its end, recording every outcome (``first``:
        the first step already ran, see :meth:`_first_step`)."""
        try:
            yield from self._steps(
                state, agent_id, agent, principal, token, deadline, command, first
            )
        except StepStopped as stop:
            yield from self._stopped(state, agent_id, stop)
        except StepFailed as failure:
            self._finish(
                state, agent_id, status=TurnStatus.FAILED.value, error_code=failure.code
            )
            msg = f"the agent failed ({failure.code})"
            raise TurnFailedError(msg, failure.code) from None

    def _steps(
        self,
        state: TurnState,
        agent_id: str,
        agent: Agent,
        principal: Principal,
        token: CancelToken,
        deadline: float | None,
        command: _CommandAgent | None,
        first: FirstStep | None = None,
    ) -> Iterator[dict[str, Any]]:
        config = self.agents.config(agent_id)
        allowed = () if command is not None else config.tools
        specs = self.tools.specs(allowed)
        while True:
            if state.steps >= config.max_steps and command is None:
                yield from self._max_steps(state, agent_id)
                return
            if first is not None:
                running, first = first.replay(), None
            else:
                self._check(token, deadline)
                history = (
                    []
                    if command is not None
                    else self._agent_history(state, agent_id, principal, agent)
                )
                running = run_step(agent, history, specs, token, deadline)
            final = yield from self._emitting(state, running)
            state.steps += final.steps
            add_usage(state.usage, final.usage)
            self.turn_metrics.count_tokens(agent_id, final.usage)
            calls = self._named_calls(calls_of(final), state.steps)
            if not calls:
                yield from self._completed(state, agent_id, final, command, principal)
                return
            step = self._record(
                state,
                final.content,
                role="assistant",
                author_id=agent_id,
                metadata={
                    **final.metadata,
                    "tool_calls": [c.to_json() for c in calls],
                    "stop_reason": "tool_use",
                    "step": state.steps,
                },
                usage=final.usage,
                reply_to=state.turn_offset,
            )
            state.asked(step, calls)
            yield self._emit(
                state,
                {
                    "type": "message_delta",
                    "stop_reason": "tool_use",
                    "usage": dict(final.usage),
                },
            )
            yield self._emit(state, {"type": "message_stop", "message": step})
            if state.steps >= config.max_steps:
                yield from self._max_steps(state, agent_id)
                return
            context = self._tool_context(state, agent_id, principal, token)
            for call in calls:
                self._check(token, deadline)
                outcome = self._run_tool(call, allowed, context)
                yield from self._record_result(
                    state, call, outcome.status, outcome.content, outcome.duration_ms
                )

    @staticmethod
    def _check(token: CancelToken, deadline: float | None) -> None:
        """A turn boundary: stop when cancelled or out of time."""
        if token.reason is not None:
            raise StepStopped(token.reason, "")
        if deadline is not None and time.monotonic() >= deadline:
            raise StepStopped(TIMEOUT, "")

    @staticmethod
    def _named_calls(calls: list[ToolCall], step: int) -> list[ToolCall]:
        # Every call needs an id its result can name; a model that sent none (or
        # the same one twice) gets one made up from the step and position.
        seen: set[str] = set()
        named = []
        for index, call in enumerate(calls):
            call_id = call.call_id
            if not call_id or call_id in seen:
                call_id = f"call_{step}_{index}"
            seen.add(call_id)
            named.append(
                ToolCall(call_id=call_id, name=call.name, arguments=call.arguments)
            )
        return named

    def _tool_context(
        self, state: TurnState, agent_id: str, principal: Principal, token: CancelToken
    ) -> ToolContext:
        row = self._row(state.session_id, principal)
        return ToolContext(
            runtime=self.api,
            session_id=state.session_id,
            principal=principal,
            agent_id=agent_id,
            attributes=dict(row["doc"].get("attributes") or {}),
            call_id="",
            cancelled=token.event,
            work_root=self.settings.work_root,
        )

    def _run_tool(
        self, call: ToolCall, allowed: Sequence[str], context: ToolContext
    ) -> ToolOutcome:
        return self.tools.call(
            call, allowed, dataclasses.replace(context, call_id=call.call_id)
        )

    def _completed(
        self,
        state: TurnState,
        agent_id: str,
        final: FinalMessage,
        command: _CommandAgent | None,
        principal: Principal,
    ) -> Iterator[dict[str, Any]]:
        reply = self._finish(
            state,
            agent_id,
            status=TurnStatus.COMPLETED.value,
            stop_reason=final.stop_reason,
            reply=reply_of(final, command=command is not None),
        )
        if command is not None and command.result is not None and command.result.reset:
            # The answer stays with the session it speaks of; the conversation
            # carries on in the successor.
            state.session_id = self.api.reset(state.session_id, principal=principal)[
                "id"
            ]
        yield from self._answer_events(state, final, reply)

    def _max_steps(self, state: TurnState, agent_id: str) -> Iterator[dict[str, Any]]:
        yield from self._settle_calls(state, MAX_STEPS, crashed=False)
        reply_offset = None if state.last_step is None else state.last_step["offset"]
        reply = self._finish(
            state,
            agent_id,
            status=TurnStatus.COMPLETED.value,
            stop_reason=MAX_STEPS,
            reply_offset=reply_offset,
        )
        yield self._emit(state, self._done(state, reply, stop_reason=MAX_STEPS))

    def _stopped(
        self, state: TurnState, agent_id: str, stop: StepStopped
    ) -> Iterator[dict[str, Any]]:
        """Record a turn stopped early (interrupted or cancelled)."""
        status = (
            TurnStatus.INTERRUPTED.value
            if stop.reason == INTERRUPTED
            else TurnStatus.CANCELLED.value
        )
        yield from self._settle_calls(state, stop.reason, crashed=False)
        partial = (
            Reply(stop.partial, {"interrupted": True, "stop_reason": status}, None)
            if stop.partial
            else None
        )
        reply = self._finish(
            state,
            agent_id,
            status=status,
            stop_reason=status,
            error_code=stop.reason,
            reply=partial,
        )
        yield self._emit(
            state,
            {
                "type": "message_delta",
                "stop_reason": status,
                "usage": dict(state.usage),
            },
        )
        yield self._emit(state, {"type": "message_stop", "message": reply})
        if stop.reason == TIMEOUT:
            msg = "the agent's turn did not finish in time"
            raise TurnTimeoutError(msg)
        yield self._emit(
            state, self._done(state, reply, status=status, stop_reason=status)
        )

    # --- turns a crash left open

    def _close_stale(self, session_id: str, turn_offset: int) -> None:
        """End a turn a crash left open without resuming it (a newer message
        came first): its unfinished call is in doubt, the turn interrupted."""
        state = self._read_turn(session_id, turn_offset, None)
        agent_id = self._row(session_id, _ADMIN)["doc"]["agent_id"]
        for _ in self._settle_calls(state, RESTART, crashed=True):
            pass
        self._finish(
            state,
            agent_id,
            status=TurnStatus.INTERRUPTED.value,
            stop_reason=TurnStatus.INTERRUPTED.value,
            error_code=RESTART,
        )

    def _resume(self, session_id: str, turn_offset: int) -> Iterator[dict[str, Any]]:
        """Carry on a turn a crash left open: settle its unfinished calls, then
        run its next step (or end it when its agent is gone or it was a chat
        command, which is never run twice)."""
        user_message = self.views.message_at(session_id, turn_offset)
        state = self._read_turn(session_id, turn_offset, user_message)
        row = self._row(session_id, _ADMIN)
        agent_id = row["doc"]["agent_id"]
        owner = Principal(row["owner_id"])
        yield from self._settle_calls(state, RESTART, crashed=True)
        try:
            agent = self.agents.get(agent_id)
        except Exception:
            agent = None
        command = user_message is not None and is_command(user_message["content"])
        if agent is None or command:
            reply = self._finish(
                state,
                agent_id,
                status=TurnStatus.INTERRUPTED.value,
                stop_reason=TurnStatus.INTERRUPTED.value,
                error_code=AGENT_UNAVAILABLE if agent is None else RESTART,
            )
            status = TurnStatus.INTERRUPTED.value
            yield self._emit(
                state, self._done(state, reply, status=status, stop_reason=status)
            )
            return
        yield from self._loop(state, agent_id, agent, owner, CancelToken(), None)


_ADMIN = Principal("sessiond-runtime", admin=True)
