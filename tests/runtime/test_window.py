"""Context window strategies (pure): unit tests and properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.tokens import HeuristicCounter, WordCounter
from runtime.window import (
    RECENT,
    SMART,
    STRATEGIES,
    SUMMARIZE,
    Window,
    build_window,
    is_important,
    units_of,
)

WORDS = WordCounter()


def msg(
    offset: int,
    role: str,
    content: str = "",
    **metadata: Any,
) -> dict[str, Any]:
    """A message document (only the fields windows read)."""
    return {"offset": offset, "role": role, "content": content, "metadata": metadata}


def call(offset: int, *ids: str, content: str = "") -> dict[str, Any]:
    """An assistant step that called tools ``ids``."""
    return msg(
        offset,
        "assistant",
        content,
        tool_calls=[{"id": i, "name": "look", "arguments": "{}"} for i in ids],
    )


def result(offset: int, call_id: str, content: str = "ok") -> dict[str, Any]:
    """A tool result answering ``call_id``."""
    return msg(offset, "tool", content, tool_call_id=call_id, name="look", status="ok")


def summary_doc(to_offset: int, text: str, offset: int = 1000) -> dict[str, Any]:
    """A summary message as the runtime hands it to the window."""
    return {
        "offset": offset,
        "role": "system",
        "content": text,
        "metadata": {"summary": {"from_offset": 1, "to_offset": to_offset}},
    }


def offsets(window: Window) -> list[int]:
    return [m["offset"] for m in window.messages]


def words(n: int) -> str:
    return " ".join(["w"] * n)


# --- units


def test_a_tool_call_and_its_results_form_one_unit_and_orphans_are_left_out() -> None:
    history = [
        msg(1, "user", "a"),
        call(2, "c1", "c2"),
        result(3, "c1"),
        result(4, "c2"),
        result(5, "nobody-asked"),
        msg(6, "assistant", "done"),
    ]
    units, orphans = units_of(history, WORDS)
    assert [u.indexes for u in units] == [(0,), (1, 2, 3), (5,)]
    assert orphans == [4]


def test_a_result_belongs_to_the_latest_call_with_its_id() -> None:
    # Ids may repeat across turns (some servers number calls per response).
    history = [
        call(1, "c1"),
        result(2, "c1"),
        msg(3, "user", "again"),
        call(4, "c1"),
        result(5, "c1"),
    ]
    units, _ = units_of(history, WORDS)
    assert [u.indexes for u in units] == [(0, 1), (2,), (3, 4)]


def test_important_means_metadata_important_or_pinned_true() -> None:
    assert is_important(msg(1, "user", important=True))
    assert is_important(msg(1, "user", pinned=True))
    assert not is_important(msg(1, "user", important="yes"))
    assert not is_important(msg(1, "user"))


# --- recent


def test_recent_keeps_the_newest_messages_that_fit() -> None:
    history = [msg(i, "user" if i % 2 else "assistant", words(3)) for i in range(1, 9)]
    window = build_window(history, strategy=RECENT, budget=10, counter=WORDS)
    assert offsets(window) == [6, 7, 8]
    assert window.tokens == 9
    assert [m["offset"] for m in window.dropped] == [1, 2, 3, 4, 5]


def test_recent_stops_at_the_first_unit_that_does_not_fit_leaving_no_gap() -> None:
    history = [
        msg(1, "user", words(1)),
        msg(2, "assistant", words(20)),
        msg(3, "user", words(2)),
    ]
    window = build_window(history, strategy=RECENT, budget=10, counter=WORDS)
    assert offsets(window) == [3]  # not [1, 3]: message 1 would leave a gap


def test_a_tool_call_that_does_not_fit_goes_out_with_its_results() -> None:
    history = [
        msg(1, "user", words(2)),
        call(2, "c1", content=words(2)),
        result(3, "c1", words(6)),
        msg(4, "assistant", words(2)),
    ]
    window = build_window(history, strategy=RECENT, budget=9, counter=WORDS)
    assert offsets(window) == [1, 4]  # the last user message, and what fits


def test_the_latest_user_message_is_kept_even_alone_over_the_budget() -> None:
    history = [msg(1, "user", words(2)), msg(2, "user", words(50))]
    window = build_window(history, strategy=RECENT, budget=10, counter=WORDS)
    assert offsets(window) == [2]
    assert window.over_budget
    assert window.tokens == 50


def test_an_empty_history_gives_an_empty_window() -> None:
    for strategy in STRATEGIES:
        window = build_window([], strategy=strategy, budget=10, counter=WORDS)
        assert window.messages == []
        assert window.tokens == 0


def test_an_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="strategy"):
        build_window([], strategy="all", budget=10, counter=WORDS)


# --- smart


def test_smart_keeps_system_and_important_messages_then_the_most_recent() -> None:
    history = [
        msg(1, "system", words(3)),
        msg(2, "user", words(5)),
        msg(3, "user", words(2), pinned=True),
        msg(4, "assistant", words(5)),
        msg(5, "user", words(5)),
        msg(6, "assistant", words(2)),
        msg(7, "user", words(2)),
    ]
    window = build_window(history, strategy=SMART, budget=13, counter=WORDS)
    assert offsets(window) == [1, 3, 6, 7]
    recent = build_window(history, strategy=RECENT, budget=13, counter=WORDS)
    assert offsets(recent) == [5, 6, 7]


def test_smart_keeps_a_pinned_tool_result_with_its_call() -> None:
    history = [
        msg(1, "user", words(2)),
        call(2, "c1"),
        {
            **result(3, "c1", words(2)),
            "metadata": {"tool_call_id": "c1", "important": True},
        },
        msg(4, "user", words(9)),
        msg(5, "assistant", words(9)),
        msg(6, "user", words(1)),
    ]
    window = build_window(history, strategy=SMART, budget=5, counter=WORDS)
    assert offsets(window) == [2, 3, 6]


def test_smart_prefers_the_newest_important_messages_when_not_all_fit() -> None:
    history = [
        msg(1, "user", words(4), important=True),
        msg(2, "user", words(4), important=True),
        msg(3, "user", words(1)),
    ]
    window = build_window(history, strategy=SMART, budget=6, counter=WORDS)
    assert offsets(window) == [2, 3]


# --- summarize


def test_summarize_without_a_summary_folds_what_does_not_fit() -> None:
    history = [msg(i, "user" if i % 2 else "assistant", words(4)) for i in range(1, 7)]
    window = build_window(
        history, strategy=SUMMARIZE, budget=14, counter=WORDS, summary_reserve=6
    )
    # 14 - 6 reserved for the summary: two messages of 4 fit.
    assert offsets(window) == [5, 6]
    assert [m["offset"] for m in window.fold] == [1, 2, 3, 4]
    assert not window.summary_used


def test_summarize_folds_nothing_while_everything_fits() -> None:
    history = [msg(1, "user", words(4)), msg(2, "assistant", words(4))]
    window = build_window(
        history, strategy=SUMMARIZE, budget=10, counter=WORDS, summary_reserve=6
    )
    assert offsets(window) == [1, 2]
    assert window.fold == []


def test_summarize_shows_the_summary_in_place_of_the_messages_it_covers() -> None:
    history = [msg(i, "user" if i % 2 else "assistant", words(4)) for i in range(1, 7)]
    summary = summary_doc(4, words(3))
    window = build_window(
        history,
        strategy=SUMMARIZE,
        budget=14,
        counter=WORDS,
        summary=summary,
        summary_reserve=6,
    )
    assert offsets(window) == [1000, 5, 6]
    assert window.messages[0]["metadata"]["summary"]["to_offset"] == 4
    assert window.summary_used
    assert window.tokens == 11
    assert window.fold == []
    assert window.dropped == []


def test_summarize_never_covers_half_a_tool_unit() -> None:
    history = [
        msg(1, "user", words(1)),
        call(2, "c1"),
        result(3, "c1", words(1)),
        msg(4, "user", words(1)),
    ]
    # The summary ends between the call and its result: the unit is shown whole.
    window = build_window(
        history,
        strategy=SUMMARIZE,
        budget=50,
        counter=WORDS,
        summary=summary_doc(2, words(2)),
    )
    assert offsets(window) == [1000, 2, 3, 4]


def test_summarize_keeps_the_latest_user_message_even_if_summarized() -> None:
    history = [msg(1, "user", words(2)), msg(2, "assistant", words(2))]
    window = build_window(
        history,
        strategy=SUMMARIZE,
        budget=50,
        counter=WORDS,
        summary=summary_doc(2, words(2)),
    )
    assert offsets(window) == [1, 1000]


def test_a_summary_too_big_for_the_budget_is_left_out() -> None:
    history = [msg(1, "user", words(2)), msg(2, "user", words(2))]
    window = build_window(
        history,
        strategy=SUMMARIZE,
        budget=5,
        counter=WORDS,
        summary=summary_doc(1, words(20)),
    )
    assert offsets(window) == [2]
    assert window.tokens <= 5


def test_other_strategies_ignore_the_summary() -> None:
    history = [msg(1, "user", words(2)), msg(2, "user", words(2))]
    for strategy in (RECENT, SMART):
        window = build_window(
            history,
            strategy=strategy,
            budget=50,
            counter=WORDS,
            summary=summary_doc(1, words(2)),
        )
        assert offsets(window) == [1, 2]


# --- properties

ROLES = st.sampled_from(["user", "assistant", "system", "user", "assistant"])


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Visible histories with tool units (sometimes interleaved or orphaned)."""
    history: list[dict[str, Any]] = []
    pending: list[str] = []
    offset = 0
    for _ in range(draw(st.integers(0, 24))):
        offset += draw(st.integers(1, 3))
        kind = draw(st.sampled_from(["plain", "plain", "call", "result", "orphan"]))
        text = words(draw(st.integers(0, 12)))
        meta: dict[str, Any] = {}
        if draw(st.integers(0, 6)) == 0:
            meta["important" if draw(st.booleans()) else "pinned"] = True
        if kind == "call":
            ids = [f"c{offset}-{n}" for n in range(draw(st.integers(1, 3)))]
            pending.extend(ids)
            message = call(offset, *ids, content=text)
        elif kind == "result" and pending:
            message = result(
                offset, pending.pop(draw(st.integers(0, len(pending) - 1))), text
            )
        elif kind == "orphan":
            message = result(offset, "unknown", text)
        else:
            message = msg(offset, draw(ROLES), text)
        message["metadata"].update(meta)
        history.append(message)
    return history


def pairs(history: list[dict[str, Any]]) -> dict[int, list[int]]:
    """Offset of each tool-calling message -> offsets of the results answering
    it (a result answers the latest earlier call with its id)."""
    found: dict[int, list[int]] = {}
    for n, message in enumerate(history):
        if message["role"] != "tool":
            continue
        wanted = message["metadata"].get("tool_call_id")
        for earlier in reversed(history[:n]):
            ids = [c["id"] for c in earlier["metadata"].get("tool_calls", [])]
            if earlier["role"] == "assistant" and wanted in ids:
                found.setdefault(earlier["offset"], []).append(message["offset"])
                break
    for message in history:
        if message["metadata"].get("tool_calls"):
            found.setdefault(message["offset"], [])
    return found


def _check_invariants(
    history: list[dict[str, Any]], window: Window, budget: int, counter: Any
) -> None:
    real = [m for m in window.messages if "summary" not in m["metadata"]]
    shown = {m["offset"] for m in real}
    # Order preserved, nothing invented.
    assert [m["offset"] for m in real] == sorted(shown)
    assert all(m in history for m in real)
    # A call and its results are in or out together, and a result never shows
    # without its call (pairs found here independently of the module's units).
    for call_offset, result_offsets in pairs(history).items():
        assert {call_offset in shown} | {r in shown for r in result_offsets} == {
            call_offset in shown
        }
    paired = {r for results in pairs(history).values() for r in results}
    assert all(m["offset"] in paired for m in real if m["role"] == "tool")
    # The latest user message is always there.
    users = [m for m in history if m["role"] == "user"]
    if users:
        assert users[-1]["offset"] in shown
    # The budget holds unless the latest user message alone exceeds it.
    assert window.tokens == sum(counter.count(m) for m in window.messages)
    if window.tokens > budget:
        assert [m["offset"] for m in window.messages] == [users[-1]["offset"]]
        assert counter.count(users[-1]) > budget


@given(
    history=histories(),
    budget=st.integers(0, 80),
    strategy=st.sampled_from(STRATEGIES),
    heuristic=st.booleans(),
)
def test_every_window_keeps_units_whole_order_the_last_user_message_and_the_budget(
    history: list[dict[str, Any]], budget: int, strategy: str, heuristic: bool
) -> None:
    counter = HeuristicCounter() if heuristic else WORDS
    window = build_window(
        history, strategy=strategy, budget=budget, counter=counter, summary_reserve=5
    )
    _check_invariants(history, window, budget, counter)


@given(
    history=histories(),
    budget=st.integers(0, 80),
    cut=st.integers(0, 60),
    size=st.integers(0, 15),
)
def test_summarize_windows_keep_the_invariants_and_never_show_covered_units(
    history: list[dict[str, Any]], budget: int, cut: int, size: int
) -> None:
    summary = summary_doc(cut, words(size))
    window = build_window(
        history,
        strategy=SUMMARIZE,
        budget=budget,
        counter=WORDS,
        summary=summary,
        summary_reserve=5,
    )
    _check_invariants(history, window, budget, WORDS)
    units, _ = units_of(history, WORDS)
    users = [m for m in history if m["role"] == "user"]
    last_user = users[-1]["offset"] if users else None
    shown = {m["offset"] for m in window.messages}
    for unit in units:
        members = [history[i]["offset"] for i in unit.indexes]
        if max(members) <= cut and last_user not in members:
            assert not shown & set(members)
    if window.summary_used:
        # The summary sits between units: before it, only units it covers (the
        # latest user message); after it, those that reach past it.
        at = window.messages.index(summary)
        before = {m["offset"] for m in window.messages[:at]}
        for unit in units:
            members = {history[i]["offset"] for i in unit.indexes}
            if members & before:
                assert members <= before
                assert max(members) <= cut
    else:
        assert summary not in window.messages
    # What is folded is whole units not shown, and never the covered part.
    folded = {m["offset"] for m in window.fold}
    assert window.fold == window.dropped
    assert not folded & shown
    for unit in units:
        members = {history[i]["offset"] for i in unit.indexes}
        if max(members) <= cut and last_user not in members:
            assert not folded & members
        else:
            assert members <= folded or members <= shown


@given(history=histories(), budget=st.integers(0, 80))
def test_recent_shows_a_contiguous_run_that_the_next_older_unit_would_overflow(
    history: list[dict[str, Any]], budget: int
) -> None:
    window = build_window(history, strategy=RECENT, budget=budget, counter=WORDS)
    units, _ = units_of(history, WORDS)
    shown = {m["offset"] for m in window.messages}
    users = [m for m in history if m["role"] == "user"]
    last_user = users[-1]["offset"] if users else None
    by_recency = sorted(units, key=lambda u: u.last, reverse=True)
    for taken, unit in enumerate(by_recency):
        members = {history[i]["offset"] for i in unit.indexes}
        if not members <= shown:
            # The first unit left out did not fit; nothing older is shown but
            # the latest user message.
            used_without = window.tokens
            assert used_without + unit.tokens > budget
            older = [
                u
                for u in by_recency[taken + 1 :]
                if {history[i]["offset"] for i in u.indexes} & shown
            ]
            assert all(
                {history[i]["offset"] for i in u.indexes} == {last_user} for u in older
            )
            break


@given(history=histories(), budget=st.integers(0, 80))
def test_smart_keeps_every_system_message_whenever_they_all_fit(
    history: list[dict[str, Any]], budget: int
) -> None:
    window = build_window(history, strategy=SMART, budget=budget, counter=WORDS)
    units, _ = units_of(history, WORDS)
    users = [m for m in history if m["role"] == "user"]
    last_user_tokens = WORDS.count(users[-1]) if users else 0
    system_units = [
        u for u in units if any(history[i]["role"] == "system" for i in u.indexes)
    ]
    if last_user_tokens + sum(u.tokens for u in system_units) <= budget:
        shown = {m["offset"] for m in window.messages}
        for unit in system_units:
            assert {history[i]["offset"] for i in unit.indexes} <= shown
