"""A session id names one log. A fork's log starts past offset 1, so the log's
primary key alone cannot tell that a fork's caller-chosen id is taken; the index
refuses it, and nothing is written (found by fuzzing the HTTP API: a fork into an
existing id appended a second creation event to that session's log, which then
failed to load)."""

from __future__ import annotations

import pytest

from runtime import Principal, Runtime, SessionExistsError
from tests.conftest import RuntimeFactory

ALICE = Principal("alice")
BOB = Principal("bob")


def log_offsets(runtime: Runtime, session_id: str) -> list[int]:
    events = runtime.events(session_id, limit=1000)["events"]
    return [e["offset"] for e in events]


def busy_session(runtime: Runtime, messages: int = 3) -> str:
    session_id = runtime.create()["id"]
    for i in range(messages):
        runtime.append(session_id, f"m{i}")
    return session_id


def test_a_fork_into_a_taken_id_is_refused_and_writes_nothing(
    runtime: Runtime,
) -> None:
    parent = busy_session(runtime, 5)
    taken = busy_session(runtime, 2)
    before = (log_offsets(runtime, parent), log_offsets(runtime, taken))

    with pytest.raises(SessionExistsError):
        runtime.fork(parent, session_id_for_fork=taken)

    assert (log_offsets(runtime, parent), log_offsets(runtime, taken)) == before
    runtime.directory.passivate(taken)  # it still loads from its log
    assert runtime.get(taken)["message_count"] == 2
    assert runtime.state_at(taken, 3)["offset"] == 3
    runtime.append(taken, "still writable")
    runtime.append(parent, "so is the parent")


def test_a_session_cannot_be_forked_into_its_own_id(runtime: Runtime) -> None:
    parent = busy_session(runtime)
    with pytest.raises(SessionExistsError):
        runtime.fork(parent, session_id_for_fork=parent)
    assert log_offsets(runtime, parent) == [1, 2, 3, 4]


def test_a_fork_into_a_taken_id_of_another_owner_is_refused(
    runtime: Runtime,
) -> None:
    parent = runtime.create(principal=ALICE)["id"]
    runtime.append(parent, "a", principal=ALICE)
    bobs = runtime.create(principal=BOB)["id"]
    with pytest.raises(SessionExistsError):
        runtime.fork(parent, principal=ALICE, session_id_for_fork=bobs)
    assert runtime.get(bobs, principal=BOB)["offset"] == 1


def test_a_creation_into_a_forks_id_is_refused(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime = runtime_factory()
    parent = runtime.create(principal=ALICE)["id"]
    for text in ("a", "b", "c"):
        runtime.append(parent, text, principal=ALICE)
    fork = runtime.fork(parent, principal=ALICE, session_id_for_fork="the-fork")
    assert fork["offset"] == 5  # its log starts at 5: nothing at offset 1

    with pytest.raises(SessionExistsError):
        runtime.create(principal=BOB, session_id="the-fork")

    assert [
        e["offset"] for e in runtime.events("the-fork", principal=ALICE)["events"]
    ] == [5]
    runtime.directory.passivate("the-fork")
    assert runtime.get("the-fork", principal=ALICE)["id"] == "the-fork"
