"""Two runtimes on one SQLite file (two connection pools, two sets of actors: what
two processes are to each other): a runtime whose actor holds state another
runtime has since changed never answers from it, never forks the log, never
resurrects a purged session (issue 7, item 2) and never writes into, nor lets its
old owner into, a new session that took a purged session's id.

Each test makes one runtime's actor stale on purpose (it loads the session, then
the other runtime writes), so every path is exercised deterministically.
"""

from __future__ import annotations

from typing import Any

import pytest

from runtime import (
    FakeClock,
    OffsetConflictError,
    Principal,
    Runtime,
    SessionNotFoundError,
)
from tests.conftest import RuntimeFactory
from tests.support.database import query

ALICE = Principal("alice")
BOB = Principal("bob")


@pytest.fixture
def pair(runtime_factory: RuntimeFactory) -> tuple[Runtime, Runtime]:
    """Two runtimes on the test's file; no background supervisor."""
    return (
        runtime_factory(supervisor_interval=0),
        runtime_factory(supervisor_interval=0),
    )


def stale_session(pair: tuple[Runtime, Runtime]) -> str:
    """A session whose actor in the first runtime is one write behind the log."""
    first, second = pair
    session_id = first.create()["id"]
    first.append(session_id, "a")  # first's actor now holds offset 2
    second.append(session_id, "b")  # the log is at offset 3
    return session_id


def log_rows(db: str, session_id: str) -> list[int]:
    rows = query(
        db,
        "SELECT originator_version FROM stored_events WHERE originator_id = ? "
        "ORDER BY originator_version",
        (session_id,),
    )
    return [int(row[0]) for row in rows]


def test_if_match_on_a_stale_actor_is_checked_against_the_log(
    pair: tuple[Runtime, Runtime],
) -> None:
    first, _ = pair
    session_id = stale_session(pair)
    # The client saw offset 3 on the other process: it holds, whatever the
    # stale actor thought.
    assert first.append(session_id, "c", expected_offset=3)["offset"] == 4
    assert first.directory.conflicts.stale_reads == 1
    # An offset that no longer holds is a conflict naming the real current one.
    with pytest.raises(OffsetConflictError) as raised:
        first.append(session_id, "d", expected_offset=3)
    assert raised.value.current_offset == 4


def test_an_out_of_date_if_match_on_a_stale_actor_reports_the_current_offset(
    pair: tuple[Runtime, Runtime],
) -> None:
    first, _ = pair
    session_id = stale_session(pair)
    with pytest.raises(OffsetConflictError) as raised:
        first.append(session_id, "c", expected_offset=2)
    # The stale actor agreed with the caller; the log refused the write; the
    # command ran again on the reloaded session and found the offset moved on.
    assert raised.value.current_offset == 3
    assert first.directory.conflicts.retries == 1


def test_an_idempotency_key_used_on_one_runtime_holds_on_the_other(
    pair: tuple[Runtime, Runtime], db: str
) -> None:
    first, second = pair
    session_id = first.create()["id"]
    first.append(session_id, "warm")  # first's actor is loaded at offset 2
    original = second.append(session_id, "once", idempotency_key="k-1")
    retried = first.append(session_id, "once", idempotency_key="k-1")
    assert retried["offset"] == original["offset"] == 3
    assert retried["id"] == original["id"]
    assert log_rows(db, session_id) == [1, 2, 3]
    # And back the other way, now that the first runtime has written last.
    third = first.append(session_id, "twice", idempotency_key="k-2")
    assert second.append(session_id, "twice", idempotency_key="k-2") == third
    assert log_rows(db, session_id) == [1, 2, 3, 4]


def test_reads_from_actor_state_see_what_the_other_runtime_wrote(
    pair: tuple[Runtime, Runtime],
) -> None:
    first, second = pair
    session_id = first.create()["id"]
    assert first.checkpoints(session_id) == []  # first's actor caches the state
    saved = second.checkpoint_save(session_id, "mark")
    assert [c["id"] for c in first.checkpoints(session_id)] == [saved["id"]]


def test_a_session_purged_by_one_runtime_cannot_be_written_by_the_others_stale_actor(
    pair: tuple[Runtime, Runtime], db: str
) -> None:
    first, second = pair
    session_id = first.create()["id"]
    first.append(session_id, "a")  # first's actor holds the live session
    second.delete(session_id, purge=True)
    assert log_rows(db, session_id) == []
    with pytest.raises(SessionNotFoundError):
        first.append(session_id, "after the purge")
    # Written around the checks a request makes first (the index row), straight
    # at the stale actor: the store refuses it; nothing comes back.
    with pytest.raises(SessionNotFoundError):
        first._execute(  # the stale actor itself, on purpose
            session_id,
            lambda s: s.append_message(
                timestamp=first.clock.now(),
                message_id="x",
                role="user",
                content="resurrected?",
            ),
        )
    assert log_rows(db, session_id) == []
    assert first.views.session_row(session_id) is None


def test_two_supervisors_ticking_at_once_expire_a_session_exactly_once(
    pair: tuple[Runtime, Runtime], clock: FakeClock
) -> None:
    first, second = pair
    session_id = first.create(timeout={"timeout_minutes": 5})["id"]
    for runtime in pair:  # both have a live actor with the active session
        runtime.checkpoints(session_id)
    clock.advance(6 * 60)
    asked = [first.run_lifecycle(), second.run_lifecycle()]
    assert session_id in asked[0]
    events: list[dict[str, Any]] = first.views.events(session_id, limit=100)[0]
    kinds = [e["type"] for e in events]
    assert kinds.count("expired") == 1
    assert kinds.count("expiry_warned") <= 1
    assert first.views.due(clock.now(), 10) == []
    assert first.views.session_row(session_id)["doc"]["status"] == "expired"  # type: ignore[index]


def test_a_one_write_turn_on_a_stale_actor_is_decided_again_on_the_log(
    pair: tuple[Runtime, Runtime],
) -> None:
    first, second = pair
    session_id = stale_session(pair)  # echo: its turns are one write each
    conflicts = first.metrics()["conflict_retries"]

    result = first.send(session_id, "hello")

    # The stale actor's write lost to the log; the command (with the turn's
    # step inside it) ran again on the reloaded session and wrote once.
    assert first.metrics()["conflict_retries"] == conflicts + 1
    assert result["user_message"]["offset"] == 4
    assert result["reply"]["offset"] == 5
    assert result["reply"]["content"] == "hello"
    db = first.settings.db
    assert log_rows(db, session_id) == [1, 2, 3, 4, 5, 6]
    contents = [m["content"] for m in second.messages(session_id)]
    assert contents == ["a", "b", "hello", "hello"]


def test_a_live_actor_of_a_purged_id_does_not_refuse_the_new_owner(
    pair: tuple[Runtime, Runtime],
) -> None:
    """Another process purged the session and a new owner took its id: this
    process's actor still holds the old state, and the index row decides."""
    here, there = pair
    here.create(principal=ALICE, session_id="shared")
    here.send("shared", "alice's", principal=ALICE)  # live here, owned by alice
    there.delete("shared", principal=ALICE, purge=True)
    there.create(principal=BOB, session_id="shared")

    reply = here.send("shared", "bob's", principal=BOB)

    assert reply["reply"]["content"] == "bob's"
    with pytest.raises(SessionNotFoundError):
        here.send("shared", "alice again", principal=ALICE)
    # bob's session's log, and nothing of alice's stale state written into it
    events = there.events("shared", principal=BOB, limit=100)["events"]
    assert [e["offset"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events][:2] == ["opened", "message_appended"]


def test_a_live_actor_of_a_purged_id_writes_nothing_into_its_new_session(
    pair: tuple[Runtime, Runtime],
) -> None:
    """The stale actor's state is alice's longer log: its next offset clashes
    with nothing in bob's new, shorter one, so only the index row (matched by
    owner and creation time too) can refuse the write."""
    here, there = pair
    here.create(principal=ALICE, session_id="shared")
    for text in ("one", "two", "three"):
        here.append("shared", text, principal=ALICE)
    there.delete("shared", principal=ALICE, purge=True)
    there.create(principal=BOB, session_id="shared")

    with pytest.raises(SessionNotFoundError):
        here.append("shared", "alice's, into bob's session", principal=ALICE)

    events = there.events("shared", principal=BOB, limit=100)["events"]
    assert [e["offset"] for e in events] == [1]
    assert here.append("shared", "bob's", principal=BOB)["offset"] == 2
