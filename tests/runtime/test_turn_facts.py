"""A turn on a session whose actor is live reads its agent and concurrency
policy from the actor's state, not from the store (a read after a write costs
~100 us under load), and every check still holds: another owner finds nothing,
an expired or ended session is refused, and nothing is written."""

from __future__ import annotations

from typing import Any

import pytest

from runtime import (
    FakeClock,
    Principal,
    Runtime,
    SessionEndedError,
    SessionExpiredError,
    SessionNotFoundError,
)
from tests.conftest import RuntimeFactory

ALICE = Principal("alice")
BOB = Principal("bob")


def counting_row_reads(runtime: Runtime) -> list[str]:
    """Count the index-row reads the runtime makes from now on."""
    reads: list[str] = []
    read = runtime.views.session_row

    def counted(session_id: str) -> dict[str, Any] | None:
        reads.append(session_id)
        return read(session_id)

    runtime.views.session_row = counted  # type: ignore[method-assign]
    return reads


def offsets(runtime: Runtime, session_id: str) -> list[int]:
    events = runtime.events(session_id, principal=ALICE, limit=1000)["events"]
    return [e["offset"] for e in events]


def test_a_turn_on_a_live_session_reads_no_index_row(runtime: Runtime) -> None:
    sid = runtime.create(principal=ALICE)["id"]
    runtime.send(sid, "warm", principal=ALICE)
    reads = counting_row_reads(runtime)

    reply = runtime.send(sid, "hello there", principal=ALICE)

    assert reply["reply"]["content"] == "hello there"
    assert reads == []


def test_a_turn_on_a_passivated_session_reads_its_row(runtime: Runtime) -> None:
    sid = runtime.create(principal=ALICE)["id"]
    runtime.directory.passivate(sid)
    reads = counting_row_reads(runtime)
    runtime.send(sid, "hello", principal=ALICE)
    assert reads == [sid]


def test_another_owner_finds_nothing_on_a_live_session(runtime: Runtime) -> None:
    sid = runtime.create(principal=ALICE)["id"]
    runtime.send(sid, "mine", principal=ALICE)
    before = offsets(runtime, sid)
    with pytest.raises(SessionNotFoundError):
        runtime.send(sid, "theirs", principal=BOB)
    assert offsets(runtime, sid) == before


def test_a_live_session_past_its_deadline_is_refused_as_expired(
    runtime_factory: RuntimeFactory, clock: FakeClock
) -> None:
    runtime = runtime_factory(supervisor_interval=0)
    sid = runtime.create(principal=ALICE)["id"]
    runtime.send(sid, "before", principal=ALICE)
    clock.advance(31 * 60)  # past the 30-minute default; no supervisor ran
    with pytest.raises(SessionExpiredError):
        runtime.send(sid, "after", principal=ALICE)
    session = runtime.app.repository.get(sid)
    assert (session.status, session.message_count) == ("expired", 2)


def test_an_ended_live_session_is_refused(runtime: Runtime) -> None:
    sid = runtime.create(principal=ALICE)["id"]
    runtime.send(sid, "before", principal=ALICE)
    runtime.delete(sid, principal=ALICE)
    with pytest.raises(SessionEndedError):
        runtime.send(sid, "after", principal=ALICE)
    assert runtime.app.repository.get(sid).message_count == 2
