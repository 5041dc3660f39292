"""The change feed: a tail on one runtime sees what another runtime on the same
store records, in order, once each (issue 7, item 2); on PostgreSQL a commit
wakes the other feed through LISTEN/NOTIFY. Real files, real
threads; waits are bounded tail reads, never sleeps."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from runtime import Runtime
from runtime.postgres_cluster import PostgresChangeSource
from tests.conftest import RuntimeFactory

WAIT = 10.0


@pytest.fixture
def pair(runtime_factory: RuntimeFactory) -> tuple[Runtime, Runtime]:
    return (
        runtime_factory(supervisor_interval=0, feed_interval=0.01),
        runtime_factory(supervisor_interval=0, feed_interval=0.01),
    )


def offsets(tail: Any, count: int) -> list[tuple[int, str]]:
    """The next ``count`` recorded events of a tail: (offset, type)."""
    found: list[tuple[int, str]] = []
    while len(found) < count:
        item = tail.get(timeout=WAIT)
        assert item is not None, f"only {found} arrived"
        if item["type"] == "event":
            found.append((item["offset"], item["event"]["type"]))
    return found


def test_a_tail_on_one_runtime_sees_an_append_made_through_another(
    pair: tuple[Runtime, Runtime],
) -> None:
    first, second = pair
    session_id = first.create()["id"]
    with second.tail(session_id, after=1) as tail:
        message = first.append(session_id, "from the other process")
        assert offsets(tail, 1) == [(message["offset"], "message_appended")]


def test_appends_through_both_runtimes_reach_a_tail_once_each_in_order(
    pair: tuple[Runtime, Runtime],
) -> None:
    first, second = pair
    session_id = first.create()["id"]
    with first.tail(session_id, after=1) as mine, second.tail(session_id) as theirs:
        for n in range(10):
            (first if n % 2 else second).append(session_id, f"m{n}")
        expected = list(range(2, 12))
        assert [o for o, _ in offsets(mine, 10)] == expected
        assert [o for o, _ in offsets(theirs, 11)] == [1, *expected]
        # Nothing more: no event came twice.
        assert mine.get(timeout=0.2) is None
        assert theirs.get(timeout=0.2) is None


def test_a_tail_that_receives_a_later_offset_first_reads_the_gap_from_the_log(
    pair: tuple[Runtime, Runtime],
) -> None:
    first, second = pair
    session_id = first.create()["id"]
    second.feed.stop()  # the other runtime's events will not come live
    with second.tail(session_id, after=1) as tail:
        second.append(session_id, "a")
        assert [o for o, _ in offsets(tail, 1)] == [2]  # caught up, live
        first.append(session_id, "b")  # offset 3: never published here
        second.append(session_id, "c")  # offset 4: published here live
        assert [o for o, _ in offsets(tail, 2)] == [3, 4]


def test_an_idle_feed_reads_no_events(pair: tuple[Runtime, Runtime]) -> None:
    first, second = pair
    session_id = first.create()["id"]
    for n in range(5):
        first.append(session_id, f"m{n}")
    assert second.feed.poll_once() == 0
    assert second.feed.position == first.app.recorder.max_notification_id()
    assert second.feed.published == 0


def test_the_feed_never_republishes_what_this_process_recorded(
    pair: tuple[Runtime, Runtime],
) -> None:
    first, second = pair
    session_id = first.create()["id"]
    first.append(session_id, "recorded before anyone listened")
    delivered: list[dict[str, Any]] = []
    unsubscribe = first.app.bus.subscribe(session_id, delivered.append)
    try:
        # The feed reads the log past both local events: it must hand out
        # neither (they were this process's own to publish).
        first.feed.poll_once()
        assert delivered == []
        second.append(session_id, "from the other process")
        first.feed.poll_once()
        assert [item["offset"] for item in delivered] == [3]
    finally:
        unsubscribe()


# SQLite only: the pace is how SQLite's feed finds other processes' events
# (PostgreSQL's is woken by NOTIFY), and a lone PostgreSQL write commits with its
# insert, so the feed may briefly take this process's event for another's.
@pytest.mark.sqlite_only
def test_the_feed_polls_fast_only_once_another_process_writes(
    pair: tuple[Runtime, Runtime],
) -> None:
    first, second = pair
    session_id = first.create()["id"]
    with first.tail(session_id, after=1):
        first.append(session_id, "mine")
        first.feed.poll_once()
        # Alone on the store: open streams do not make it poll fast.
        assert first.feed.pace() == first.feed.idle_interval
        second.append(session_id, "theirs")
        first.feed.poll_once()
        assert first.feed.pace() == first.feed.interval


@pytest.mark.postgres_only  # SQLite cannot signal a commit: its feed polls
def test_on_postgres_a_write_wakes_the_other_feed_long_before_its_poll(
    runtime_factory: RuntimeFactory,
) -> None:
    # Polls 60 s apart: only the NOTIFY of the write can bring the event in time.
    first = runtime_factory(supervisor_interval=0, feed_interval=60)
    second = runtime_factory(supervisor_interval=0, feed_interval=60)
    session_id = first.create()["id"]
    with second.tail(session_id, after=1) as tail:
        started = time.monotonic()
        message = first.append(session_id, "from the other process")
        assert offsets(tail, 1) == [(message["offset"], "message_appended")]
    assert time.monotonic() - started < WAIT


@pytest.mark.postgres_only
def test_a_postgres_change_source_wait_ends_at_a_commit_or_an_interrupt(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime = runtime_factory(supervisor_interval=0)
    datastore = runtime.app.factory.datastore  # type: ignore[attr-defined]
    source = PostgresChangeSource(datastore, "stored_events")
    try:
        source.wait(0)  # connects and listens
        session_id = runtime.create()["id"]  # a commit: its NOTIFY is queued
        started = time.monotonic()
        source.wait(60)
        assert source.notifications == 1
        assert time.monotonic() - started < WAIT
        assert source.changes_after(0, 10)[0].session_id == session_id

        waiting = threading.Thread(target=source.wait, args=(60,))
        waiting.start()
        source.interrupt()
        waiting.join(WAIT)
        assert not waiting.is_alive()
        # An interrupt with no wait in progress ends the next one at once.
        source.interrupt()
        started = time.monotonic()
        source.wait(60)
        assert time.monotonic() - started < WAIT
    finally:
        source.close()
    assert source.last_notification_id() == runtime.app.recorder.max_notification_id()


@pytest.mark.postgres_only
def test_a_postgres_change_source_sleeps_through_its_own_processs_writes(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime = runtime_factory(supervisor_interval=0)
    factory = runtime.app.factory
    datastore = factory.datastore  # type: ignore[attr-defined]
    own = PostgresChangeSource(
        datastore,
        "stored_events",
        own_payload=factory.writer_token,  # type: ignore[attr-defined]
    )
    other = PostgresChangeSource(datastore, "stored_events")
    try:
        own.wait(0)
        other.wait(0)  # both listening
        runtime.create()  # a write of this process

        started = time.monotonic()
        own.wait(0.5)
        assert own.notifications == 0  # published locally, not woken for it
        assert time.monotonic() - started >= 0.45
        other.wait(WAIT)
        assert other.notifications == 1  # any other process is woken
    finally:
        own.close()
        other.close()
