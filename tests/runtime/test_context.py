"""Context windows in the runtime: the turn hands its agent the window, summaries
are recorded as events, used, ignored once stale, dropped, and survive rebuilds
and restarts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from runtime import (
    AgentConfig,
    FinalMessage,
    InvalidRequestError,
    Runtime,
    SummaryNotFoundError,
    TextDelta,
)
from runtime.agents import AgentOutput, ToolSpec
from runtime.errors import ConcurrencyConflictError
from runtime.settings import ContextConfig
from runtime.summaries import INSTRUCTION, SummaryText
from tests.conftest import RuntimeFactory


class RecordingAgent:
    """Echoes the last user message, and keeps every history it was handed."""

    def __init__(self) -> None:
        self.seen: list[list[dict[str, Any]]] = []

    def run(
        self, history: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec] = ()
    ) -> Iterator[AgentOutput]:
        self.seen.append([dict(m) for m in history])
        last = next((m for m in reversed(history) if m["role"] == "user"), None)
        content = "" if last is None else str(last["content"])
        yield TextDelta(content)
        yield FinalMessage(content=content, usage={"input_tokens": 1})


class FixedSummarizer:
    """Summarizes to a fixed text, remembering what it was asked to fold."""

    def __init__(self, text: str = "the story so far") -> None:
        self.text = text
        self.calls: list[tuple[list[int], Any]] = []

    def summarize(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        previous: Mapping[str, Any] | None = None,
    ) -> SummaryText:
        self.calls.append(([m["offset"] for m in messages], previous))
        return SummaryText(
            self.text, model="fixed", usage={"input_tokens": 5, "output_tokens": 2}
        )


def with_agent(
    runtime: Runtime, strategy: str, max_tokens: int, **context: Any
) -> RecordingAgent:
    """Register a recording agent ``rec`` counting in words, with no reserve."""
    agent = RecordingAgent()
    config = AgentConfig(
        id="rec",
        provider="python",
        context=ContextConfig(
            strategy=strategy,
            max_tokens=max_tokens,
            reserve_output_tokens=0,
            counter="words",
            **context,
        ),
    )
    runtime.agents.register("rec", agent, config)
    return agent


def contents(history: Sequence[Mapping[str, Any]]) -> list[str]:
    return [m["content"] for m in history]


def types(runtime: Runtime, session_id: str) -> list[str]:
    return [e["type"] for e in runtime.events(session_id, limit=1000)["events"]]


# --- the turn uses the window


def test_the_turn_hands_the_agent_the_recent_window(runtime: Runtime) -> None:
    agent = with_agent(runtime, "recent", max_tokens=7)
    sid = runtime.create("rec")["id"]
    for text in ("one two", "three four", "five six"):
        runtime.send(sid, text)
    # 2 words a message: the budget of 7 holds the last three.
    assert contents(agent.seen[-1]) == ["three four", "three four", "five six"]
    assert runtime.context(sid)["messages"][-1]["content"] == "five six"


def test_the_latest_user_message_reaches_the_agent_even_over_the_budget(
    runtime: Runtime,
) -> None:
    agent = with_agent(runtime, "recent", max_tokens=3)
    sid = runtime.create("rec")["id"]
    runtime.send(sid, "a message far longer than the budget")
    assert contents(agent.seen[-1]) == ["a message far longer than the budget"]


def test_the_window_never_splits_a_tool_call_from_its_results(
    runtime: Runtime,
) -> None:
    agent = with_agent(runtime, "recent", max_tokens=9)
    sid = runtime.create("rec")["id"]
    runtime.append(sid, "look it up")
    asked = runtime.append(
        sid,
        "",
        role="assistant",
        metadata={"tool_calls": [{"id": "c1", "name": "look", "arguments": "{}"}]},
    )
    runtime.append(
        sid,
        "a long result of many many words",
        role="tool",
        metadata={"tool_call_id": "c1", "name": "look", "status": "ok"},
        reply_to=asked["offset"],
    )
    runtime.append(sid, "found it", role="assistant")
    runtime.send(sid, "thanks")
    # The result (7 words) fits alone, but not with its call's unit and the
    # rest: both go, together.
    assert contents(agent.seen[-1]) == ["found it", "thanks"]

    agent = with_agent(runtime, "recent", max_tokens=13)
    runtime.send(sid, "more")
    roles = [m["role"] for m in agent.seen[-1]]
    assert roles == ["assistant", "tool", "assistant", "user", "assistant", "user"]


def test_smart_keeps_pinned_and_system_messages(runtime: Runtime) -> None:
    agent = with_agent(runtime, "smart", max_tokens=9)
    sid = runtime.create("rec")["id"]
    runtime.append(sid, "be brief", role="system")
    runtime.append(sid, "my name is Ada", metadata={"pinned": True})
    for text in ("filler one", "filler two", "filler three"):
        runtime.append(sid, text)
    runtime.send(sid, "who am I")
    assert contents(agent.seen[-1]) == ["be brief", "my name is Ada", "who am I"]
    context = runtime.context(sid)
    assert context["strategy"] == "smart"
    assert context["dropped"] == 4  # three fillers and the reply


def test_the_system_prompt_counts_against_the_budget(runtime: Runtime) -> None:
    agent = RecordingAgent()
    runtime.agents.register(
        "rec",
        agent,
        AgentConfig(
            id="rec",
            provider="python",
            system_prompt="you are a careful helper",
            context=ContextConfig(
                max_tokens=12, reserve_output_tokens=2, counter="words"
            ),
        ),
    )
    sid = runtime.create("rec")["id"]
    assert runtime.context(sid)["budget"] == 12 - 2 - 5
    runtime.send(sid, "one two three")
    runtime.send(sid, "four")
    assert contents(agent.seen[-1]) == ["one two three", "four"]


def test_an_unknown_counter_of_an_agent_added_later_is_a_clear_error(
    runtime: Runtime,
) -> None:
    runtime.agents.register(
        "rec",
        RecordingAgent(),
        AgentConfig(id="rec", provider="python", context=ContextConfig(counter="x")),
    )
    sid = runtime.create("rec")["id"]
    with pytest.raises(InvalidRequestError, match="token counter"):
        runtime.context(sid)


def test_an_unknown_counter_in_the_settings_stops_the_start(
    runtime_factory: RuntimeFactory,
) -> None:
    agents = {"a": AgentConfig(id="a", context=ContextConfig(counter="nope"))}
    with pytest.raises(ValueError, match="token counter"):
        runtime_factory(agents=agents)


def test_a_registered_counter_is_used(runtime: Runtime) -> None:
    class Chars:
        def count_text(self, text: str) -> int:
            return len(text)

        def count(self, message: Mapping[str, Any]) -> int:
            return len(str(message.get("content") or ""))

    runtime.register_token_counter("chars", Chars())
    agent = with_agent(runtime, "recent", max_tokens=10)
    runtime.agents.register(
        "rec",
        agent,
        AgentConfig(
            id="rec",
            provider="python",
            context=ContextConfig(
                max_tokens=10, reserve_output_tokens=0, counter="chars"
            ),
        ),
    )
    sid = runtime.create("rec")["id"]
    runtime.send(sid, "abcd")
    runtime.send(sid, "efgh")
    assert contents(agent.seen[-1]) == ["abcd", "efgh"]
    assert runtime.context(sid)["tokens"] == 8


# --- summaries


def test_the_summarize_strategy_records_a_summary_and_hands_it_to_the_agent(
    runtime: Runtime,
) -> None:
    agent = with_agent(runtime, "summarize", max_tokens=9, summary_tokens=4)
    summarizer = FixedSummarizer("so far so good")
    runtime.register_summarizer("rec", summarizer)
    sid = runtime.create("rec")["id"]
    for text in ("alpha beta", "gamma delta"):
        runtime.send(sid, text)
    assert "summary_recorded" not in types(runtime, sid)
    # 10 words of history for a budget of 9: fold what leaves 5 for the run.
    runtime.send(sid, "epsilon zeta")

    folded, previous = summarizer.calls[-1]
    assert previous is None
    # (each turn: the user message, the reply, the turn_ended record)
    assert folded == [2, 3, 5]
    history = agent.seen[-1]
    summary = history[0]
    assert summary["role"] == "system"
    assert summary["content"] == "so far so good"
    assert summary["metadata"] == {"summary": {"from_offset": 2, "to_offset": 5}}
    assert contents(history[1:]) == ["gamma delta", "epsilon zeta"]

    recorded = [
        e
        for e in runtime.events(sid, limit=100)["events"]
        if e["type"] == "summary_recorded"
    ]
    assert len(recorded) == 1
    data = recorded[0]["data"]
    assert data["from_offset"] == 2
    assert data["to_offset"] == 5
    assert data["text"] == "so far so good"
    assert data["counter"] == "words"
    assert data["tokens"] == 4
    assert data["model"] == "fixed"
    assert data["usage"] == {"input_tokens": 5, "output_tokens": 2}
    assert summary["offset"] == recorded[0]["offset"] == 9
    # Its cost counts in the session's usage; the messages are all still there.
    assert runtime.get(sid)["usage"]["input_tokens"] == 5 + 3
    assert runtime.get(sid)["message_count"] == 6


def test_a_later_summary_continues_the_previous_one(runtime: Runtime) -> None:
    with_agent(runtime, "summarize", max_tokens=9, summary_tokens=4)
    summarizer = FixedSummarizer("so far so good")
    runtime.register_summarizer("rec", summarizer)
    sid = runtime.create("rec")["id"]
    for text in ("alpha beta", "gamma delta", "epsilon zeta", "eta theta"):
        runtime.send(sid, text)
    first, second = summarizer.calls
    # (each turn: the user message, the reply, the turn_ended record)
    assert first == ([2, 3, 5], None)
    folded, previous = second
    assert folded == [6, 8]
    assert previous is not None
    assert previous["metadata"]["summary"] == {"from_offset": 2, "to_offset": 5}
    context = runtime.context(sid)
    assert context["summary"]["from_offset"] == 2
    assert context["summary"]["to_offset"] == 8
    assert [s["to_offset"] for s in context["summaries"]] == [5, 8]


def test_the_default_summarizer_asks_the_sessions_own_agent(
    runtime: Runtime,
) -> None:
    agent = with_agent(runtime, "summarize", max_tokens=40, summary_tokens=20)
    sid = runtime.create("rec")["id"]
    for n in range(6):
        runtime.send(sid, f"message {n} " + "word " * 4)
    asked = [h for h in agent.seen if h[-1]["content"] == INSTRUCTION]
    assert asked, "the agent was never asked for a summary"
    assert asked[0][0] == {"role": "system", "content": INSTRUCTION, "metadata": {}}
    summary = agent.seen[-1][0]
    assert summary["content"] == INSTRUCTION  # what the echoing agent answers
    assert summary["metadata"]["summary"]["from_offset"] == 2


def test_a_failing_summarizer_does_not_fail_the_turn(runtime: Runtime) -> None:
    class Broken:
        def summarize(self, messages: Any, *, previous: Any = None) -> SummaryText:
            msg = "model down"
            raise RuntimeError(msg)

    agent = with_agent(runtime, "summarize", max_tokens=8, summary_tokens=2)
    runtime.register_summarizer("rec", Broken())
    sid = runtime.create("rec")["id"]
    for text in ("alpha beta", "gamma delta", "epsilon zeta"):
        runtime.send(sid, text)
    assert "summary_recorded" not in types(runtime, sid)
    assert contents(agent.seen[-1])[-1] == "epsilon zeta"
    assert sum(len(m["content"].split()) for m in agent.seen[-1]) <= 8


def test_explicit_summaries_fold_up_to_an_offset_and_can_be_dropped(
    runtime: Runtime,
) -> None:
    agent = with_agent(runtime, "summarize", max_tokens=100)
    runtime.register_summarizer("rec", FixedSummarizer())
    sid = runtime.create("rec")["id"]
    for text in ("alpha", "beta", "gamma"):
        runtime.send(sid, text)  # 2..10: message, reply, turn_ended each

    made = runtime.summarize(sid, to_offset=6)
    assert (made["from_offset"], made["to_offset"], made["offset"]) == (2, 6, 11)
    assert made["text"] == "the story so far"
    assert made["counter"] == "words"
    assert made["tokens"] == 4
    assert contents(runtime.context(sid)["messages"]) == [
        "the story so far",
        "gamma",
        "gamma",
    ]
    runtime.send(sid, "delta")
    assert contents(agent.seen[-1])[0] == "the story so far"

    runtime.drop_summary(sid, made["offset"])
    assert "summary_dropped" in types(runtime, sid)
    context = runtime.context(sid)
    assert context["summary"] is None
    assert context["summaries"] == []
    assert contents(context["messages"])[:2] == ["alpha", "alpha"]
    with pytest.raises(SummaryNotFoundError):
        runtime.drop_summary(sid, made["offset"])


def test_an_explicit_summary_folds_a_tool_call_with_its_results(
    runtime: Runtime,
) -> None:
    with_agent(runtime, "summarize", max_tokens=100)
    summarizer = FixedSummarizer()
    runtime.register_summarizer("rec", summarizer)
    sid = runtime.create("rec")["id"]
    runtime.append(sid, "look")  # 2
    runtime.append(
        sid,
        "",
        role="assistant",
        metadata={"tool_calls": [{"id": "c1", "name": "look", "arguments": "{}"}]},
    )  # 3
    runtime.append(sid, "r", role="tool", metadata={"tool_call_id": "c1"})  # 4
    runtime.append(sid, "done", role="assistant")  # 5
    made = runtime.summarize(sid, to_offset=3)
    assert summarizer.calls[-1][0] == [2, 3, 4]
    assert made["to_offset"] == 4


def test_bad_explicit_summaries_are_refused_and_record_nothing(
    runtime: Runtime,
) -> None:
    with_agent(runtime, "recent", max_tokens=100)
    runtime.register_summarizer("rec", FixedSummarizer())
    sid = runtime.create("rec")["id"]
    with pytest.raises(InvalidRequestError, match="nothing new"):
        runtime.summarize(sid)
    runtime.send(sid, "alpha")
    offset = runtime.get(sid)["offset"]
    for bad in (1, 99, True, "2"):
        with pytest.raises(InvalidRequestError):
            runtime.summarize(sid, to_offset=bad)  # type: ignore[arg-type]
    runtime.summarize(sid)
    with pytest.raises(InvalidRequestError, match="nothing new"):
        runtime.summarize(sid)
    assert runtime.get(sid)["offset"] == offset + 1
    with pytest.raises(InvalidRequestError):
        runtime.drop_summary(sid, "x")  # type: ignore[arg-type]


def test_a_summary_is_ignored_after_a_rewind_before_its_end(
    runtime: Runtime,
) -> None:
    agent = with_agent(runtime, "summarize", max_tokens=100)
    runtime.register_summarizer("rec", FixedSummarizer())
    sid = runtime.create("rec")["id"]
    runtime.send(sid, "alpha")  # 2, 3
    checkpoint = runtime.checkpoint_save(sid, "early")  # 4
    runtime.send(sid, "beta")  # 5, 6
    runtime.summarize(sid)  # 7: covers 2..6
    assert runtime.context(sid)["summary"] is not None

    runtime.checkpoint_restore(sid, checkpoint["id"])
    context = runtime.context(sid)
    assert context["summary"] is None
    assert context["summaries"] == []
    runtime.send(sid, "gamma")
    assert contents(agent.seen[-1]) == ["alpha", "alpha", "gamma"]
    # Nothing was lost: the log still holds the summary and the messages.
    assert types(runtime, sid).count("summary_recorded") == 1


def test_a_summary_stays_valid_after_a_rewind_past_its_end(runtime: Runtime) -> None:
    with_agent(runtime, "summarize", max_tokens=100)
    runtime.register_summarizer("rec", FixedSummarizer())
    sid = runtime.create("rec")["id"]
    runtime.send(sid, "alpha")  # 2, 3
    made = runtime.summarize(sid)  # 4
    runtime.send(sid, "beta")  # 5, 6
    runtime.rewind(sid, 4)
    assert runtime.context(sid)["summary"]["offset"] == made["offset"]


def test_a_cleared_or_forked_history_uses_no_old_summary(runtime: Runtime) -> None:
    with_agent(runtime, "summarize", max_tokens=100)
    runtime.register_summarizer("rec", FixedSummarizer())
    sid = runtime.create("rec")["id"]
    runtime.send(sid, "alpha")
    runtime.summarize(sid)
    fork = runtime.fork(sid)
    assert runtime.context(fork["id"])["summary"] is None
    assert contents(runtime.context(fork["id"])["messages"]) == ["alpha", "alpha"]
    runtime.clear(sid)
    assert runtime.context(sid)["summaries"] == []


def test_a_summary_of_a_history_that_changed_meanwhile_is_not_recorded(
    runtime: Runtime,
) -> None:
    with_agent(runtime, "recent", max_tokens=100)
    sid = runtime.create("rec")["id"]
    runtime.send(sid, "alpha")
    checkpoint = runtime.checkpoint_save(sid, "start")
    runtime.send(sid, "beta")

    class Rewinding:
        """Restores a checkpoint while it summarizes (another writer)."""

        def summarize(self, messages: Any, *, previous: Any = None) -> SummaryText:
            runtime.checkpoint_restore(sid, checkpoint["id"])
            return SummaryText("stale")

    with pytest.raises(ConcurrencyConflictError):
        runtime.summarize(sid, summarizer=Rewinding())
    assert "summary_recorded" not in types(runtime, sid)


def test_context_is_read_only(runtime: Runtime) -> None:
    with_agent(runtime, "summarize", max_tokens=4, summary_tokens=1)
    runtime.register_summarizer("rec", FixedSummarizer())
    sid = runtime.create("rec")["id"]
    runtime.append(sid, "one two three")
    runtime.append(sid, "four five six")
    offset = runtime.get(sid)["offset"]
    context = runtime.context(sid)
    assert context["dropped"] == 1
    assert runtime.get(sid)["offset"] == offset


def test_summaries_survive_a_rebuild_of_the_projections_and_a_restart(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime = runtime_factory()
    with_agent(runtime, "summarize", max_tokens=9, summary_tokens=4)
    runtime.register_summarizer("rec", FixedSummarizer())
    sid = runtime.create("rec")["id"]
    for text in ("alpha beta", "gamma delta", "epsilon zeta", "eta theta"):
        runtime.send(sid, text)
    summaries = runtime.context(sid)["summaries"]
    assert len(summaries) == 2
    runtime.drop_summary(sid, summaries[-1]["offset"])
    assert runtime.context(sid)["summary"] == summaries[0]

    def snapshot(rt: Runtime) -> tuple[Any, ...]:
        return (
            rt.get(sid),
            rt.messages(sid),
            rt.events(sid, limit=1000),
            rt.context(sid),
        )

    before = snapshot(runtime)
    assert runtime.rebuild_projections() >= 1
    assert snapshot(runtime) == before
    runtime.close()

    reopened = runtime_factory()
    with_agent(reopened, "summarize", max_tokens=9, summary_tokens=4)
    after = snapshot(reopened)
    assert after[1:] == before[1:]
    assert after[0]["offset"] == before[0]["offset"]
