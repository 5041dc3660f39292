"""Runtime calls on context windows: what an agent sees of a session's history,
and the summaries that stand for older messages.

The window itself is pure (:mod:`runtime.window`); this module reads the visible
history, picks the summary in use, records new summaries through the session's
actor and hands the turn its history (:meth:`ContextCalls._turn_history`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aggregates.errors import InvalidRequestError, SessionEndedError
from aggregates.session import Session, Span, truncate_spans
from projections.documents import format_time, summary_message
from runtime.core import HISTORY_MAX_LIMIT, RuntimeCore
from runtime.errors import ConcurrencyConflictError
from runtime.principal import LOCAL_PRINCIPAL, Principal
from runtime.settings import AgentConfig, ContextConfig, Settings
from runtime.summaries import AgentSummarizer, Summarizer
from runtime.tokens import TokenCounter, TokenCounters
from runtime.window import SMART, SUMMARIZE, Window, build_window, units_of

logger = logging.getLogger(__name__)

PAGE = 100
"""Messages read per page while looking back for the window."""


@dataclass(frozen=True)
class _Plan:
    """Everything one window of one session is computed from."""

    agent_id: str
    config: ContextConfig
    counter: TokenCounter
    budget: int
    spans: list[Span]
    messages: list[dict[str, Any]]
    summary: dict[str, Any] | None  # the summary message in use, if any
    summaries: list[dict[str, Any]]  # the valid ones, oldest first

    def window(self, summary: Mapping[str, Any] | None = None) -> Window:
        chosen = summary if summary is not None else self.summary
        return build_window(
            self.messages,
            strategy=self.config.strategy,
            budget=self.budget,
            counter=self.counter,
            summary=chosen,
            summary_reserve=self.config.summary_tokens,
        )


def _summary_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "offset": entry["offset"],
        "from_offset": entry["from_offset"],
        "to_offset": entry["to_offset"],
        "tokens": entry["tokens"],
    }


class ContextCalls(RuntimeCore):
    """Context windows and summaries."""

    def __init__(self, settings: Settings | None = None) -> None:
        counters = TokenCounters()
        for config in (settings or Settings()).agents.values():
            # A bad counter name is a configuration error, found at start-up.
            counters.get(config.context.counter)
        self.token_counters = counters
        self._summarizers: dict[str, Summarizer] = {}
        super().__init__(settings)

    def register_token_counter(self, name: str, counter: TokenCounter) -> None:
        """Make ``counter`` available to agents whose ``context.counter`` is
        ``name``."""
        self.token_counters.register(name, counter)

    def register_summarizer(self, agent_id: str, summarizer: Summarizer) -> None:
        """Produce the summaries of ``agent_id``'s sessions with ``summarizer``
        (by default the agent itself writes them)."""
        self._summarizers[agent_id] = summarizer

    # --- calls

    def context(
        self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL
    ) -> dict[str, Any]:
        """What the session's agent would be handed now, and why: ``{agent_id,
        strategy, counter, max_tokens, reserve_output_tokens, budget, tokens,
        messages, dropped, summary, summaries}`` (``dropped``: how many visible
        messages are neither shown nor covered by the summary in use;
        ``summary``: the one shown, if any; ``summaries``: those still valid).
        Reads only: no summary is made."""
        plan = self._plan(session_id, principal, with_summaries=True)
        window = plan.window()
        in_use = None
        if window.summary_used and plan.summary is not None:
            offset = plan.summary["offset"]
            in_use = next(
                (_summary_entry(s) for s in plan.summaries if s["offset"] == offset),
                None,
            )
        return {
            "agent_id": plan.agent_id,
            "strategy": plan.config.strategy,
            "counter": plan.config.counter,
            "max_tokens": plan.config.max_tokens,
            "reserve_output_tokens": plan.config.reserve_output_tokens,
            "budget": plan.budget,
            "tokens": window.tokens,
            "messages": window.messages,
            "dropped": len(window.dropped),
            "summary": in_use,
            "summaries": [_summary_entry(s) for s in plan.summaries],
        }

    def summarize(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        to_offset: int | None = None,
        summarizer: Summarizer | None = None,
    ) -> dict[str, Any]:
        """Fold the visible history up to ``to_offset`` (default: all of it)
        into a summary and record it; returns the summary ``{offset,
        from_offset, to_offset, text, tokens, counter, model, usage,
        created_at}``.

        The summary continues the latest valid one (its messages are not folded
        again); a tool call is folded with its results. The messages stay in the
        log: dropping the summary (:meth:`drop_summary`) gives them back to the
        window.
        """
        if to_offset is not None and (
            not isinstance(to_offset, int) or isinstance(to_offset, bool)
        ):
            raise InvalidRequestError("to_offset must be an offset")
        plan = self._plan(session_id, principal, read_all=True)
        previous = plan.summary
        after = (
            0 if previous is None else int(previous["metadata"]["summary"]["to_offset"])
        )
        if to_offset is not None and not any(
            m["offset"] == to_offset for m in plan.messages
        ):
            raise InvalidRequestError(
                "to_offset must be the offset of a visible message"
            )
        units, _ = units_of(plan.messages, plan.counter)
        fold = [
            plan.messages[i]
            for unit in units
            if (
                to_offset is None
                or plan.messages[unit.indexes[0]]["offset"] <= to_offset
            )
            and plan.messages[unit.last]["offset"] > after
            for i in unit.indexes
        ]
        fold.sort(key=lambda m: int(m["offset"]))
        if not fold:
            raise InvalidRequestError("there is nothing new to summarize")
        return self._record_summary(session_id, plan, fold, previous, summarizer)

    def drop_summary(
        self,
        session_id: str,
        summary_offset: int,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
    ) -> None:
        """Stop using the summary recorded at ``summary_offset``; the window
        shows the messages it covered again (or an older summary)."""
        self._row(session_id, principal)
        if not isinstance(summary_offset, int) or isinstance(summary_offset, bool):
            raise InvalidRequestError("summary_offset must be an offset")
        self._execute(
            session_id,
            lambda s: s.drop_summary(
                timestamp=self.clock.now(), summary_offset=summary_offset
            ),
        )

    # --- the turn's hook

    def _turn_history(
        self, session_id: str, principal: Principal
    ) -> list[dict[str, Any]]:
        """The history the agent of ``session_id`` is handed for its next step:
        its context window. With ``summarize``, messages that no longer fit are
        first folded into a new summary (a failure to summarize is logged and
        the window is used without it)."""
        plan = self._plan(session_id, principal)
        window = plan.window()
        if plan.config.strategy == SUMMARIZE and window.fold:
            try:
                made = self._record_summary(
                    session_id, plan, window.fold, plan.summary, None
                )
            except Exception as error:  # the turn goes on without a new summary
                logger.warning(
                    "context summary failed",
                    extra={"session_id": session_id, "error": type(error).__name__},
                )
            else:
                window = plan.window(
                    summary_message(
                        session_id, made["offset"], {**made, "at": made["created_at"]}
                    )
                )
        return window.messages

    # --- helpers

    def _plan(
        self,
        session_id: str,
        principal: Principal,
        *,
        read_all: bool = False,
        with_summaries: bool = False,
    ) -> _Plan:
        row = self._row(session_id, principal)
        agent_id = row["doc"]["agent_id"]
        agent_config: AgentConfig = self.agents.config(agent_id)
        config = agent_config.context
        try:
            counter = self.token_counters.get(config.counter)
        except ValueError as error:
            raise InvalidRequestError(str(error)) from None
        budget = config.budget
        if agent_config.system_prompt:
            budget -= counter.count(
                {"role": "system", "content": agent_config.system_prompt}
            )
        summaries: list[dict[str, Any]] = []
        summary: dict[str, Any] | None = None
        if config.strategy == SUMMARIZE or read_all or with_summaries:
            summaries = self._read(session_id, Session.valid_summaries)
            if summaries:
                summary = self._summary_message(session_id, summaries[-1]["offset"])
        messages = self._window_messages(
            row["spans"],
            config,
            counter,
            budget,
            None
            if read_all or summary is None
            else int(summary["metadata"]["summary"]["to_offset"]),
            read_all=read_all or config.strategy == SMART,
        )
        return _Plan(
            agent_id=agent_id,
            config=config,
            counter=counter,
            budget=budget,
            spans=row["spans"],
            messages=messages,
            summary=summary,
            summaries=summaries,
        )

    def _window_messages(
        self,
        spans: list[Span],
        config: ContextConfig,
        counter: TokenCounter,
        budget: int,
        summarized_to: int | None,
        *,
        read_all: bool,
    ) -> list[dict[str, Any]]:
        """The newest visible messages a window can need, oldest first: all of
        them (up to ``max_messages``) for ``smart`` and for a first summary;
        otherwise back to where the budget (``recent``) or the summary in use
        (``summarize``) ends, and always back to the latest user message and to
        a whole tool unit."""
        found: list[dict[str, Any]] = []  # newest first
        tokens = 0
        seen_user = False
        before: int | None = None
        limit = config.max_messages
        while len(found) < limit:
            page, has_more = self.views.history(
                spans,
                limit=min(PAGE, limit - len(found), HISTORY_MAX_LIMIT),
                before=before,
                descending=True,
            )
            for message in page:
                found.append(message)
                tokens += counter.count(message)
                seen_user = seen_user or message["role"] == "user"
            if not has_more or not page:
                break
            before = page[-1]["offset"]
            oldest = page[-1]
            if read_all or not seen_user or oldest["role"] == "tool":
                continue
            if config.strategy == SUMMARIZE:
                if summarized_to is not None and oldest["offset"] <= summarized_to:
                    break
            elif tokens > budget:
                break
        found.reverse()
        return found

    def _summary_message(self, session_id: str, offset: int) -> dict[str, Any]:
        events, _ = self.views.events(session_id, after=offset - 1, limit=1)
        event = events[0]
        return summary_message(session_id, offset, {**event["data"], "at": event["at"]})

    def _record_summary(
        self,
        session_id: str,
        plan: _Plan,
        fold: Sequence[Mapping[str, Any]],
        previous: Mapping[str, Any] | None,
        summarizer: Summarizer | None,
    ) -> dict[str, Any]:
        """Summarize ``fold`` (continuing ``previous``) and record the summary
        through the session's actor, unless the history it covers changed
        meanwhile (``ConcurrencyConflictError``)."""
        agent_config = self.agents.config(plan.agent_id)
        chosen = summarizer or self._summarizers.get(plan.agent_id)
        if chosen is None:
            chosen = AgentSummarizer(
                self.agents.get(plan.agent_id),
                model=agent_config.model or plan.agent_id,
            )
        made = chosen.summarize(fold, previous=previous)
        from_offset = (
            int(previous["metadata"]["summary"]["from_offset"])
            if previous is not None
            else int(fold[0]["offset"])
        )
        to_offset = max(int(m["offset"]) for m in fold)
        covered = truncate_spans(plan.spans, to_offset)
        tokens = plan.counter.count_text(made.text)

        def command(session: Session) -> int:
            if session.id != session_id:
                # A due reset ran first: the conversation carries on elsewhere.
                raise SessionEndedError(f"session {session_id} has ended")
            if truncate_spans(session.spans, to_offset) != covered:
                msg = "the history changed while it was being summarized"
                raise ConcurrencyConflictError(msg, session.version)
            return session.record_summary(
                timestamp=self.clock.now(),
                from_offset=from_offset,
                to_offset=to_offset,
                text=made.text,
                counter=plan.config.counter,
                tokens=tokens,
                model=made.model,
                usage=dict(made.usage) or None,
            )

        offset = self._execute(session_id, command)
        logger.info(
            "context summary recorded",
            extra={
                "session_id": session_id,
                "offset": offset,
                "from_offset": from_offset,
                "to_offset": to_offset,
            },
        )
        return {
            "offset": offset,
            "from_offset": from_offset,
            "to_offset": to_offset,
            "text": made.text,
            "tokens": tokens,
            "counter": plan.config.counter,
            "model": made.model,
            "usage": dict(made.usage) or None,
            "created_at": format_time(self.clock.now()),
        }
