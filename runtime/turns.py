"""Agent turns: send, stream and submit a message; tools; turns resumed after
a crash.

A turn records the user message, runs the agent's tool loop
(:mod:`runtime.turn_loop`) and records its outcome. Turns of one session are
admitted by the session's concurrency policy (:mod:`runtime.turn_control`).

**Cancellation.** A turn stops at its next delta or tool boundary (at once
while it waits for its agent) when its caller's ``timeout`` passes, when a
newer message interrupts it, or when its :class:`CancelToken` is cancelled; the
agent's generator is then closed. A streaming caller that goes away (closes the
iterator, or its SSE/WebSocket connection drops) applies the disconnect policy:
``continue`` (the default: the turn runs to its end and its reply lands in the
log) or ``cancel`` (recorded as cancelled, ``disconnected``); the setting
``on_disconnect`` (``SESSIOND_ON_DISCONNECT``) sets the default, the
``on_disconnect`` argument overrides it per call.

**Crashes.** A turn whose process died is still open in the log (its opening
message is marked; ``turn_ended`` never came). :meth:`TurnCalls.resume_turns`
(which ``sessiond serve`` runs at start-up) carries each such turn on: a tool
call that was running is recorded ``in_doubt`` and never run again, a finished
one keeps its recorded result, and the agent runs its next step. A session that
receives a message before its open turn was resumed ends that turn as
``interrupted`` (``restart``), with the same in-doubt records, and runs the new
message's turn.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from aggregates.errors import InvalidRequestError
from aggregates.values import Status, concurrency_value, role_value
from runtime.agents import ToolSpec
from runtime.core import AnyList
from runtime.errors import ActorUnavailableError
from runtime.principal import LOCAL_PRINCIPAL, Principal
from runtime.tools import ToolFunction
from runtime.turn_control import (
    DISCONNECTED,
    CancelToken,
    check_disconnect_policy,
)
from runtime.turn_loop import TurnLoop

logger = logging.getLogger(__name__)


class TurnCalls(TurnLoop):
    """Agent turns and tools."""

    def register_tool(
        self,
        name: str,
        function: ToolFunction,
        *,
        description: str,
        parameters: Mapping[str, Any] | None = None,
    ) -> ToolSpec:
        """Register a tool (``function(arguments, context)``; see
        :mod:`runtime.tools.registry`). Agents whose config lists ``name`` in
        ``tools`` may call it."""
        return self.tools.register(
            name, function, description=description, parameters=parameters
        )

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
        concurrency: str | None = None,
        cancel: CancelToken | None = None,
    ) -> dict[str, Any]:
        """Append the message, run the agent's turn, append its reply.

        Returns ``{user_message, reply, tool_calls, usage, steps, status,
        stop_reason, session}``. A retry with the same ``idempotency_key``
        returns the first result and runs nothing. ``timeout`` (seconds) cancels
        the turn when it passes (``TurnTimeoutError``); ``concurrency``
        overrides the session's policy for this message.
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
            concurrency=concurrency,
            cancel=cancel,
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
        concurrency: str | None = None,
        on_disconnect: str | None = None,
        cancel: CancelToken | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Send a message and iterate the turn as it happens.

        Yields dicts whose ``type`` is ``message_start`` (with the recorded
        ``user_message``); per step ``content_block_start``, ``text_delta``,
        ``input_json_delta``, ``content_block_stop``, ``message_delta``,
        ``message_stop`` (with the recorded message); ``tool_result`` per tool
        call (with the recorded ``role: tool`` message); and finally ``done``
        (the result :meth:`send` returns). A failed turn raises
        ``TurnFailedError`` after recording the failure. Every event is also
        published live to the session's tails as a ``delta``. Closing the
        iterator early applies ``on_disconnect``.
        """
        policy = check_disconnect_policy(on_disconnect or self.settings.on_disconnect)
        token = cancel or CancelToken()
        turn = self._turn(
            session_id,
            content,
            principal=principal,
            role=role,
            attachments=attachments,
            metadata=metadata,
            idempotency_key=idempotency_key,
            expected_offset=expected_offset,
            timeout=timeout,
            concurrency=concurrency,
            token=token,
        )
        try:
            # Not ``yield from``: closing this generator must not close the turn,
            # which runs on (or records its cancellation) on its own.
            for event in turn:  # noqa: UP028
                yield event
        except GeneratorExit:
            if policy == "cancel":
                token.cancel(DISCONNECTED)
            self._finish_detached(turn, session_id)
            raise

    def _finish_detached(self, turn: Iterator[dict[str, Any]], session_id: str) -> None:
        """Run the rest of a turn nobody reads on a background thread."""

        def drain() -> None:
            try:
                for _ in turn:
                    pass
            except Exception as error:
                logger.warning(
                    "detached turn failed",
                    extra={"session_id": session_id, "error": type(error).__name__},
                )
            finally:
                with self._background_guard:
                    self._background.discard(threading.current_thread())

        self._start_background(drain, f"turn-{session_id}")

    def _start_background(self, target: Any, name: str) -> threading.Thread:
        worker = threading.Thread(target=target, name=name, daemon=True)
        with self._background_guard:
            self._background.add(worker)
        worker.start()
        return worker

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
        concurrency: str | None,
        token: CancelToken,
    ) -> Iterator[dict[str, Any]]:
        """The turn behind :meth:`stream`: waits for its place in the session's
        queue (by the concurrency policy), then runs."""
        agent_id, session_policy = self._turn_facts(session_id, principal)
        role = role_value(role)
        if timeout is not None and not timeout > 0:
            raise InvalidRequestError("timeout must be a positive number of seconds")
        agent = self.agents.get(agent_id) if role == "user" else None
        policy = concurrency_value(concurrency or session_policy)
        deadline = None if timeout is None else time.monotonic() + timeout
        queue = self.turn_queues.of(session_id)
        ticket = queue.enter(policy, token, deadline)
        try:
            yield from self._admitted(
                session_id,
                content,
                principal=principal,
                role=role,
                agent_id=agent_id,
                agent=agent,
                attachments=attachments,
                metadata=metadata,
                idempotency_key=idempotency_key,
                expected_offset=expected_offset,
                token=token,
                deadline=deadline,
            )
        finally:
            queue.leave(ticket)

    def _turn_facts(self, session_id: str, principal: Principal) -> tuple[str, str]:
        """The session's agent and concurrency policy, once the caller is known
        to see it: from the state its live actor holds when the session is
        active there and the caller's (both never change, and every check is
        made again in the actor's command), else from the index row with its
        usual checks, which decide (the actor's state may be another
        process's purged session of the same id). A read of the store after a
        write costs ~100 us under load (every write empties the other
        connections' page caches): a fifth of an echo turn over HTTP."""
        session = self.directory.loaded(session_id)
        if (
            session is not None
            and session.status == Status.ACTIVE.value
            and session.expires_at > self.clock.now()
            and principal.sees(session.owner_id)
        ):
            return session.agent_id, session.concurrency
        document = self._row(session_id, principal)["doc"]
        return document["agent_id"], document["concurrency"]

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
        concurrency: str | None = None,
        cancel: CancelToken | None = None,
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
                    concurrency=concurrency,
                    cancel=cancel,
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

        self._start_background(run, f"turn-{session_id}")
        if not recorded.wait(self.settings.actor_timeout):
            msg = f"session {session_id} did not record the message in time"
            raise ActorUnavailableError(msg)
        if "message" not in outcome:
            raise outcome["error"]
        return dict(outcome["message"])

    def turn_figures(self) -> dict[str, list[dict[str, Any]]]:
        """Counters since start-up for the metrics endpoint: ``tokens`` (by
        agent and direction), ``turns`` (by agent and status), ``tool_calls``
        (by tool and status)."""
        return self.turn_metrics.snapshot()

    def resume_turns(self, *, background: bool = False) -> list[dict[str, Any]]:
        """Carry on every turn a crash left open (see the module docstring);
        waits for them to end, or with ``background`` returns at once (``[]``).
        Returns ``{session_id, turn_offset, status}`` per turn (``status`` as
        recorded, or ``error`` with its code)."""
        if background:

            def run() -> None:
                try:
                    self.resume_turns()
                finally:
                    with self._background_guard:
                        self._background.discard(threading.current_thread())

            self._start_background(run, "resume-turns")
            return []
        resumed: list[dict[str, Any]] = []
        for session_id, turn_offset in self.views.open_turns():
            resumed.append(self._resume_one(session_id, turn_offset))
        return resumed

    def _resume_one(self, session_id: str, turn_offset: int) -> dict[str, Any]:
        queue = self.turn_queues.of(session_id)
        ticket = queue.enter("enqueue", CancelToken(), None)
        found: dict[str, Any] = {"session_id": session_id, "turn_offset": turn_offset}
        try:
            if self.views.turn_ended(session_id, turn_offset) is not None:
                found["status"] = "already_ended"
                return found
            for event in self._resume(session_id, turn_offset):
                if event["type"] == "done":
                    found["status"] = event["status"]
        except Exception as error:
            found["status"] = "error"
            found["error"] = str(getattr(error, "code", type(error).__name__))
            logger.warning(
                "resuming a turn failed",
                extra={"session_id": session_id, "error": type(error).__name__},
            )
        finally:
            queue.leave(ticket)
        return found
