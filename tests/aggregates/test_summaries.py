"""Context summaries on the ``Session`` aggregate: recorded, valid while the
history they cover is what is visible, dropped, replayed and snapshotted."""

from __future__ import annotations

from typing import Any

import pytest

from aggregates import (
    InvalidRequestError,
    Session,
    SessionEndedError,
    SummaryNotFoundError,
)
from aggregates.session import SUMMARY_WINDOW
from tests.aggregates.test_session import Log, append, at, fork, new_session, rewind


def summarize(session: Session, to_offset: int, **fields: Any) -> int:
    fields.setdefault("from_offset", 2)
    fields.setdefault("text", f"up to {to_offset}")
    fields.setdefault("counter", "heuristic")
    fields.setdefault("tokens", 3)
    return session.record_summary(timestamp=at(30), to_offset=to_offset, **fields)


def valid(session: Session) -> list[tuple[int, int, int]]:
    return [
        (s["offset"], s["from_offset"], s["to_offset"])
        for s in session.valid_summaries()
    ]


def test_a_summary_is_recorded_with_its_range_and_adds_its_usage() -> None:
    session = new_session()
    for text in ("a", "b", "c"):
        append(session, text)  # 2, 3, 4
    offset = summarize(
        session, 3, model="m", usage={"input_tokens": 7, "output_tokens": 2}
    )
    assert offset == 5
    event = session.pending_events[-1]
    assert isinstance(event, Session.SummaryRecorded)
    assert (event.from_offset, event.to_offset, event.text) == (2, 3, "up to 3")
    assert event.spans == [["s1", 1, 3]]
    assert (event.counter, event.tokens, event.model) == ("heuristic", 3, "m")
    assert valid(session) == [(5, 2, 3)]
    assert session.usage == {"input_tokens": 7, "output_tokens": 2}
    # Nothing of the visible history changes.
    assert (session.head, session.message_count) == (4, 3)


def test_later_messages_leave_a_summary_valid() -> None:
    session = new_session()
    append(session, "a")
    append(session, "b")
    summarize(session, 3)
    append(session, "c")
    assert valid(session) == [(4, 2, 3)]


@pytest.mark.parametrize(
    ("to_offset", "from_offset", "text"),
    [(0, 1, "x"), (5, 2, "x"), (3, 4, "x"), (3, 2, "  "), (3, 0, "x")],
)
def test_a_bad_summary_is_refused_and_records_nothing(
    to_offset: int, from_offset: int, text: str
) -> None:
    session = new_session()
    for content in ("a", "b", "c"):
        append(session, content)
    before = session.version
    with pytest.raises(InvalidRequestError):
        summarize(session, to_offset, from_offset=from_offset, text=text)
    assert session.version == before


def test_a_rewind_before_a_summary_end_makes_it_stale_and_one_after_keeps_it() -> None:
    log = Log()
    session = new_session()
    for content in ("a", "b", "c", "d"):
        append(session, content)  # 2..5
    summarize(session, 3)  # 6
    summarize(session, 5)  # 7
    rewind(log, session, 4)  # to after "c": the first summary still stands
    assert valid(session) == [(6, 2, 3)]
    append(session, "e")
    assert valid(session) == [(6, 2, 3)]
    rewind(log, session, 2)  # before the end of both
    assert valid(session) == []


def test_a_rewind_to_exactly_a_summary_end_keeps_it() -> None:
    log = Log()
    session = new_session()
    append(session, "a")
    append(session, "b")
    summarize(session, 3)  # 4
    append(session, "c")
    rewind(log, session, 3)
    assert valid(session) == [(4, 2, 3)]


def test_clearing_the_history_makes_every_summary_stale() -> None:
    session = new_session()
    append(session, "a")
    summarize(session, 2)
    session.clear_history(timestamp=at(40))
    assert valid(session) == []
    append(session, "b")
    assert valid(session) == []


def test_a_fork_starts_without_summaries() -> None:
    log = Log()
    session = new_session()
    append(session, "a")
    append(session, "b")
    summarize(session, 3)
    forked = fork(log, session, "s2")
    assert valid(forked) == []
    assert valid(session) == [(4, 2, 3)]
    # The fork can summarize its inherited messages.
    append(forked, "c")
    assert summarize(forked, 3, from_offset=2) == forked.version
    assert forked.valid_summaries()[0]["spans"] == [["s1", 1, 3]]


def test_dropping_a_summary_removes_it_and_an_unknown_one_is_refused() -> None:
    session = new_session()
    append(session, "a")
    append(session, "b")
    first = summarize(session, 2)
    second = summarize(session, 3)
    session.drop_summary(timestamp=at(40), summary_offset=second)
    assert isinstance(session.pending_events[-1], Session.SummaryDropped)
    assert valid(session) == [(first, 2, 2)]
    before = session.version
    with pytest.raises(SummaryNotFoundError) as raised:
        session.drop_summary(timestamp=at(41), summary_offset=second)
    assert raised.value.code == "summary_not_found"
    assert session.version == before


def test_an_ended_session_takes_no_summary() -> None:
    session = new_session()
    append(session, "a")
    summarize(session, 2)
    session.end(timestamp=at(50))
    with pytest.raises(SessionEndedError):
        summarize(session, 2)
    with pytest.raises(SessionEndedError):
        session.drop_summary(timestamp=at(50), summary_offset=3)


def test_the_session_keeps_only_the_latest_summaries() -> None:
    session = new_session()
    append(session, "a")
    for _ in range(SUMMARY_WINDOW + 3):
        summarize(session, 2)
    assert len(session.summaries) == SUMMARY_WINDOW
    assert session.summaries[0]["offset"] == 3 + 3


def test_replay_and_snapshots_give_the_same_summaries() -> None:
    log = Log()
    session = new_session()
    append(session, "a")
    append(session, "b")
    summarize(session, 3)
    summarize(session, 2)
    session.drop_summary(timestamp=at(31), summary_offset=4)
    log.commit(session)
    replayed = log.replay("s1")
    assert replayed.summaries == session.summaries
    snapshot = Session.Snapshot.take(session)
    restored = snapshot.mutate(None)
    assert isinstance(restored, Session)
    assert restored.summaries == session.summaries
    assert valid(restored) == [(5, 2, 2)]


def test_a_snapshot_from_before_summaries_existed_reads_as_none() -> None:
    session = new_session()
    append(session, "a")
    snapshot = Session.Snapshot.take(session)
    del snapshot.state["summaries"]
    restored = snapshot.mutate(None)
    assert isinstance(restored, Session)
    assert restored.valid_summaries() == []
    assert summarize(restored, 2) == 3
    assert valid(restored) == [(3, 2, 2)]
