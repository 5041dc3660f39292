"""One-write turns: an ``inline`` agent that needs only the turn's own message
runs its first step inside the command that records that message, so that a
turn answered in one step is one write (message, answer and ``turn_ended``)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from aggregates.session import Session
from aggregates.values import TurnStatus
from runtime.agents import Agent, FinalMessage
from runtime.commands import is_command
from runtime.settings import ContextConfig
from runtime.turn_control import CancelToken
from runtime.turn_recording import Ending, TurnRecording, reply_of
from runtime.turn_records import TurnState, add_usage
from runtime.turn_step import StepFailed, StepStopped, calls_of, run_step


@dataclass
class FirstStep:
    """An inline turn's first step, run in the command that recorded the turn's
    message (see :meth:`InlineTurns._first_step`). ``state`` is set when its
    answer was recorded in that command too."""

    user_message: dict[str, Any]
    """The message's document, as that command made it (its identity tells the
    command's last run from earlier ones)."""
    events: list[dict[str, Any]] = field(default_factory=list)
    final: FinalMessage | None = None
    error: StepStopped | StepFailed | None = None
    state: TurnState | None = None
    ending: Ending | None = None
    offset: int | None = None

    def replay(self) -> Generator[dict[str, Any], None, FinalMessage]:
        """The step again, as a step: its events, then its end."""
        yield from self.events
        if self.error is not None:
            raise self.error
        assert self.final is not None
        return self.final


def drained(
    step: Generator[dict[str, Any], None, FinalMessage], into: list[dict[str, Any]]
) -> FinalMessage:
    """Run ``step`` to its end, keeping its events in ``into``."""
    while True:
        try:
            into.append(next(step))
        except StopIteration as stop:
            final: FinalMessage = stop.value
            return final


class InlineTurns(TurnRecording):
    """The first step of an inline turn, run in its message's command."""

    def _runs_inline(
        self, session_id: str, agent_id: str, agent: Agent, content: str
    ) -> bool:
        """Whether the turn's first step runs inside the command that records
        its message: the agent never blocks (``inline``) and needs only that
        message (``history_limit`` 1, no context window), and nobody tails the
        session here (the step's deltas, sent after the write, would follow the
        events they led to)."""
        if not getattr(agent, "inline", False):
            return False
        if getattr(agent, "history_limit", None) != 1:
            return False
        return (
            self.agents.config(agent_id).context == ContextConfig()
            and not is_command(content)
            and not self.app.bus.has_subscribers(session_id)
        )

    def _first_step(
        self,
        agent_id: str,
        agent: Agent,
        token: CancelToken,
        deadline: float | None,
        first: list[FirstStep],
    ) -> Callable[[Session, dict[str, Any]], None]:
        """The ``then`` of an inline turn's message: run the first step on the
        message just applied. A final answer is applied there too, with
        ``turn_ended``, so that the whole turn is one write (and nothing is sent
        to anyone before it is durable). Any other outcome (stopped, failed,
        tool calls) applies nothing more: the message is written alone and the
        turn goes on the usual way from the step's outcome (see
        :meth:`FirstStep.replay`), without running it again. A command re-run
        on a version conflict (another process wrote) runs the step again."""
        config = self.agents.config(agent_id)
        specs = self.tools.specs(config.tools)

        def first_step(session: Session, user_message: dict[str, Any]) -> None:
            if config.max_steps < 1:
                return  # the turn ends at once, the usual way
            step = FirstStep(user_message)
            first.append(step)
            try:
                step.final = drained(
                    run_step(agent, [user_message], specs, token, deadline),
                    step.events,
                )
            except (StepStopped, StepFailed) as error:
                step.error = error
                return
            if calls_of(step.final):
                return
            state = TurnState(session.id, user_message["offset"], user_message)
            state.steps += step.final.steps
            add_usage(state.usage, step.final.usage)
            step.ending = Ending(session.id)
            step.offset = self._ending_command(
                state,
                agent_id,
                step.ending,
                status=TurnStatus.COMPLETED.value,
                stop_reason=step.final.stop_reason,
                reply=reply_of(step.final, command=False),
            )(session)
            step.state = state

        return first_step

    def _answered(self, step: FirstStep, agent_id: str) -> Iterator[dict[str, Any]]:
        """The events of a turn answered in its message's write (after it)."""
        state, final, ending = step.state, step.final, step.ending
        assert state is not None
        assert final is not None
        assert ending is not None
        self.turn_metrics.count_tokens(agent_id, final.usage)
        reply = self._ended(
            state, agent_id, ending, step.offset, TurnStatus.COMPLETED.value, None
        )
        for event in step.events:
            yield self._emit(state, event)
        yield from self._answer_events(state, final, reply)
