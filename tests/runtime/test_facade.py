"""``Runtime``, the in-process API, on a real SQLite file: creation and
get-or-create, ownership on every call, turns, idempotency, optimistic
concurrency, checkpoints, rewinds, forks, resets, exports, rebuilds, restarts,
passivation and the live-actor cap."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import reduce
from typing import Any

import pytest

from aggregates import IDEMPOTENCY_WINDOW, Session
from runtime import (
    AgentNotFoundError,
    CheckpointNotFoundError,
    FakeClock,
    InvalidRequestError,
    NameTakenError,
    OffsetConflictError,
    OffsetOutOfRangeError,
    Principal,
    Runtime,
    SessionEndedError,
    SessionExistsError,
    SessionNotFoundError,
)

RuntimeFactory = Callable[..., Runtime]
ALICE = Principal("alice")
BOB = Principal("bob")
ADMIN = Principal("root", admin=True)
WAIT = 30.0  # seconds any future or barrier may take before the test fails


def contents(
    runtime: Runtime, session_id: str, principal: Principal = ALICE
) -> list[str]:
    return [m["content"] for m in runtime.messages(session_id, principal=principal)]


def event_types(runtime: Runtime, session_id: str) -> list[str]:
    events = runtime.events(session_id, principal=ADMIN, limit=1000)["events"]
    return [e["type"] for e in events]


def run_together(count: int, action: Callable[[int], Any]) -> list[Any]:
    """Run ``action(i)`` on ``count`` threads released at once by a barrier;
    returns each result or the exception it raised."""
    barrier = threading.Barrier(count)

    def run(i: int) -> Any:
        barrier.wait(WAIT)
        try:
            return action(i)
        except Exception as error:
            return error

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(run, i) for i in range(count)]
        return [future.result(timeout=WAIT) for future in futures]


# --- create


def test_a_new_session_is_active_empty_and_owned_by_its_creator(
    runtime: Runtime,
) -> None:
    session = runtime.create(
        principal=ALICE,
        name="  Plans ",
        metadata={"source": "test"},
        attributes={"lang": "en"},
        timeout={"timeout_minutes": 60},
    )
    assert session["status"] == "active"
    assert session["agent_id"] == "echo"
    assert session["user_id"] == "alice"
    assert session["name"] == "Plans"
    assert session["metadata"] == {"source": "test"}
    assert session["attributes"] == {"lang": "en"}
    assert session["offset"] == 1
    assert session["message_count"] == 0
    assert session["timeout"]["timeout_minutes"] == 60
    assert session["time_remaining_ms"] == 60 * 60_000
    assert session["near_expiry"] is False
    assert session["created_at"] == "2026-01-01T00:00:00.000Z"
    assert runtime.get(session["id"], principal=ALICE) == session
    assert runtime.views.session_row(session["id"])["owner_id"] == "alice"  # type: ignore[index]


def test_a_caller_chosen_id_is_used_when_it_is_valid(runtime: Runtime) -> None:
    session = runtime.create(session_id="my-Session_1")
    assert session["id"] == "my-Session_1"
    for bad in ("", "has space", "x" * 129, "semi;colon", "new\nline", "trailing\n"):
        with pytest.raises(InvalidRequestError) as raised:
            runtime.create(session_id=bad)
        assert raised.value.code == "invalid_request"


def test_recreating_an_id_by_its_owner_returns_the_same_session_and_writes_nothing(
    runtime: Runtime,
) -> None:
    first, created = runtime.open(principal=ALICE, session_id="chosen", name="n")
    assert created is True
    assert first["id"] == "chosen"
    runtime.append("chosen", "hello", principal=ALICE)
    again, created_again = runtime.open(principal=ALICE, session_id="chosen", name="n")
    assert created_again is False
    assert again["id"] == "chosen"
    assert again["offset"] == 2
    assert runtime.create(principal=ALICE, session_id="chosen")["id"] == "chosen"
    assert event_types(runtime, "chosen") == ["opened", "message_appended"]


def test_an_id_taken_by_another_owner_or_agent_is_a_conflict(
    runtime_factory: RuntimeFactory,
) -> None:
    from runtime import AgentConfig

    runtime = runtime_factory(
        agents={"echo": AgentConfig(id="echo"), "other": AgentConfig(id="other")}
    )
    runtime.create(principal=ALICE, session_id="taken")
    with pytest.raises(SessionExistsError) as raised:
        runtime.open(principal=BOB, session_id="taken")
    assert raised.value.code == "conflict"
    with pytest.raises(SessionExistsError):
        runtime.open("other", principal=ALICE, session_id="taken")
    assert runtime.list(principal=BOB)["total"] == 0
    assert event_types(runtime, "taken") == ["opened"]


def test_an_unknown_agent_is_agent_not_found(runtime: Runtime) -> None:
    with pytest.raises(AgentNotFoundError) as raised:
        runtime.create("no-such-agent")
    assert raised.value.code == "agent_not_found"
    assert runtime.list()["total"] == 0


@pytest.mark.parametrize(
    "arguments",
    [
        {"scope": "everyone"},
        {"concurrency": "sometimes"},
        {"metadata": ["not", "an", "object"]},
        {"attributes": "nope"},
        {"name": "x" * 201},
        {"timeout": {"timeout_minutes": "ten"}},
        {"group": True},  # a group needs the chat id
    ],
)
def test_invalid_creation_arguments_are_refused(
    runtime: Runtime, arguments: dict[str, Any]
) -> None:
    with pytest.raises(InvalidRequestError):
        runtime.create(**arguments)
    assert runtime.list()["total"] == 0


def test_get_or_create_by_scope_returns_the_live_session(runtime: Runtime) -> None:
    first, created = runtime.open(principal=ALICE, scope="per-peer", channel_id="slack")
    again, created_again = runtime.open(
        principal=ALICE, scope="per-peer", channel_id="discord"
    )
    assert (created, created_again) == (True, False)
    assert again["id"] == first["id"]
    other_user, _ = runtime.open(principal=ALICE, scope="per-peer", user_id="carol")
    assert other_user["id"] != first["id"]
    other_owner, _ = runtime.open(principal=BOB, scope="per-peer", user_id="alice")
    assert other_owner["id"] != first["id"]
    group, _ = runtime.open(
        principal=ALICE, group=True, channel_id="slack", peer_id="room"
    )
    assert group["id"] not in {first["id"], other_user["id"]}
    assert group["scope_key"] == "alice/agent:echo:slack:group:room"


def test_get_or_create_from_sixteen_threads_at_once_makes_one_session(
    runtime: Runtime,
) -> None:
    results = run_together(16, lambda _: runtime.open(principal=ALICE, scope="main"))

    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    ids = {document["id"] for document, _ in results}
    assert len(ids) == 1
    assert sum(1 for _, created in results if created) == 1
    assert runtime.list(principal=ALICE)["total"] == 1
    assert runtime.views.session_ids() == list(ids)
    (session_id,) = ids
    assert runtime.get(session_id, principal=ALICE)["status"] == "active"


def test_names_are_unique_per_user_whatever_their_case(runtime: Runtime) -> None:
    first = runtime.create(principal=ALICE, name="Trip")
    with pytest.raises(NameTakenError) as raised:
        runtime.create(principal=ALICE, name="  TRIP ")
    assert raised.value.code == "name_taken"
    # Another user may use it.
    runtime.create(principal=ALICE, user_id="carol", name="trip")
    second = runtime.create(principal=ALICE, name="Other")
    with pytest.raises(NameTakenError):
        runtime.update(second["id"], principal=ALICE, name="trip")
    # Renaming a session to its own name in another case is fine.
    assert runtime.update(first["id"], principal=ALICE, name="TRIP")["name"] == "TRIP"
    # An ended session frees its name.
    runtime.delete(first["id"], principal=ALICE)
    assert runtime.update(second["id"], principal=ALICE, name="Trip")["name"] == "Trip"


def test_a_users_names_are_their_owners_business_only(runtime: Runtime) -> None:
    # Two tenants may both have a user "u1"; neither learns of the other's names.
    mine = runtime.create(principal=ALICE, user_id="u1", name="Trip")
    theirs = runtime.create(principal=BOB, user_id="u1", name="Trip")
    assert theirs["name"] == "Trip"
    other = runtime.create(principal=BOB, user_id="u1")
    with pytest.raises(NameTakenError):
        runtime.update(other["id"], principal=BOB, name="TRIP")
    renamed = runtime.create(principal=ALICE, user_id="u1")
    with pytest.raises(NameTakenError):
        runtime.update(renamed["id"], principal=ALICE, name="trip")
    assert runtime.get(mine["id"], principal=ALICE)["name"] == "Trip"


def test_racing_creates_with_one_name_make_exactly_one_session(
    runtime: Runtime,
) -> None:
    names = ["Same", "same", "SAME", " Same "]
    results = run_together(
        8, lambda i: runtime.create(principal=ALICE, name=names[i % len(names)])
    )

    made = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, NameTakenError)]
    assert len(made) == 1
    assert len(refused) == 7
    assert runtime.list(principal=ALICE)["total"] == 1
    assert runtime.get(made[0]["id"], principal=ALICE)["name"].casefold() == "same"


def test_racing_renames_to_one_name_leave_one_winner_and_every_session(
    runtime: Runtime,
) -> None:
    sessions = [runtime.create(principal=ALICE)["id"] for _ in range(8)]
    results = run_together(
        8,
        lambda i: runtime.update(
            sessions[i], principal=ALICE, name="Winner" if i % 2 else "WINNER"
        ),
    )

    renamed = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, NameTakenError)]
    assert (len(renamed), len(refused)) == (1, 7)
    names = [runtime.get(s, principal=ALICE)["name"] for s in sessions]
    assert sum(1 for name in names if name is not None) == 1
    assert runtime.list(principal=ALICE)["total"] == 8
    # The losers were reloaded and still take writes.
    for session_id in sessions:
        runtime.append(session_id, "still here", principal=ALICE)


# --- ownership


def prepared_session(runtime: Runtime, name: str = "private") -> tuple[str, str]:
    """Alice's session with two messages, a checkpoint and a context summary
    (at offset 5)."""
    session_id = runtime.create(principal=ALICE, name=name)["id"]
    runtime.append(session_id, "secret one", principal=ALICE)
    checkpoint = runtime.checkpoint_save(session_id, "cp", principal=ALICE)
    runtime.append(session_id, "secret two", principal=ALICE)
    summary = runtime.summarize(session_id, principal=ALICE, to_offset=2)
    assert summary["offset"] == 5
    return session_id, checkpoint["id"]


def session_calls(
    session_id: str, checkpoint_id: str
) -> dict[str, Callable[[Runtime, Principal], Any]]:
    """One valid call of every public method that takes a session id."""

    def tail(runtime: Runtime, principal: Principal) -> None:
        runtime.tail(session_id, principal=principal).close()

    return {
        "append": lambda r, p: r.append(session_id, "x", principal=p),
        "branches": lambda r, p: r.branches(session_id, principal=p),
        "checkpoint_delete": lambda r, p: r.checkpoint_delete(
            session_id, checkpoint_id, principal=p
        ),
        "checkpoint_restore": lambda r, p: r.checkpoint_restore(
            session_id, checkpoint_id, principal=p
        ),
        "checkpoint_save": lambda r, p: r.checkpoint_save(
            session_id, "mine now", principal=p
        ),
        "checkpoints": lambda r, p: r.checkpoints(session_id, principal=p),
        "clear": lambda r, p: r.clear(session_id, principal=p),
        "context": lambda r, p: r.context(session_id, principal=p),
        "drop_summary": lambda r, p: r.drop_summary(session_id, 5, principal=p),
        "delete": lambda r, p: r.delete(session_id, principal=p),
        "events": lambda r, p: r.events(session_id, principal=p),
        "export": lambda r, p: r.export(session_id, principal=p),
        "fork": lambda r, p: r.fork(session_id, principal=p),
        "get": lambda r, p: r.get(session_id, principal=p),
        "heartbeat": lambda r, p: r.heartbeat(session_id, principal=p),
        "history": lambda r, p: r.history(session_id, principal=p),
        "history_text": lambda r, p: r.history_text(session_id, principal=p),
        "messages": lambda r, p: r.messages(session_id, principal=p),
        "patch_attributes": lambda r, p: r.patch_attributes(
            session_id, {"a": 1}, principal=p
        ),
        "renew": lambda r, p: r.renew(session_id, principal=p),
        "rescope": lambda r, p: r.rescope(session_id, "main", principal=p),
        "reset": lambda r, p: r.reset(session_id, principal=p),
        "rewind": lambda r, p: r.rewind(session_id, 2, principal=p),
        "send": lambda r, p: r.send(session_id, "x", principal=p),
        "set_reset_policy": lambda r, p: r.set_reset_policy(
            session_id, principal=p, idle_minutes=60
        ),
        "set_webhook": lambda r, p: r.set_webhook(session_id, None, principal=p),
        "state_at": lambda r, p: r.state_at(session_id, 2, principal=p),
        "stream": lambda r, p: list(r.stream(session_id, "x", principal=p)),
        "summarize": lambda r, p: r.summarize(session_id, principal=p),
        "submit": lambda r, p: r.submit(session_id, "x", principal=p),
        "tail": tail,
        "update": lambda r, p: r.update(
            session_id, principal=p, name="renamed", pinned=True
        ),
        "update_timeout": lambda r, p: r.update_timeout(
            session_id, principal=p, timeout_minutes=60
        ),
        "webhook_deliveries": lambda r, p: r.webhook_deliveries(
            session_id, principal=p
        ),
    }


def methods_taking_a_session_id() -> set[str]:
    found = set()
    for name, function in inspect.getmembers(Runtime, inspect.isfunction):
        parameters = inspect.signature(function).parameters
        if not name.startswith("_") and "session_id" in parameters:
            found.add(name)
    return found


def test_the_ownership_walk_covers_every_public_method_that_takes_a_session_id() -> (
    None
):
    covered = set(session_calls("s", "c"))
    # create/open take a caller-chosen id for a *new* session (see the conflict
    # test); supervise is the lifecycle supervisor's own hook and takes no principal.
    assert methods_taking_a_session_id() - {"create", "open", "supervise"} == covered
    assert "principal" not in inspect.signature(Runtime.supervise).parameters


def test_another_principal_gets_not_found_from_every_call_and_changes_nothing(
    runtime: Runtime,
) -> None:
    session_id, checkpoint_id = prepared_session(runtime)
    before = runtime.get(session_id, principal=ALICE)

    for name, call in session_calls(session_id, checkpoint_id).items():
        with pytest.raises(SessionNotFoundError) as raised:
            call(runtime, BOB)
        assert raised.value.code == "not_found", name
        assert "secret" not in str(raised.value), name

    assert runtime.get(session_id, principal=ALICE) == before
    assert runtime.list(principal=BOB)["total"] == 0
    assert contents(runtime, session_id) == ["secret one", "secret two"]


def test_an_unknown_session_is_not_found_from_every_call(runtime: Runtime) -> None:
    for name, call in session_calls("no-such-session", "c").items():
        with pytest.raises(SessionNotFoundError):
            call(runtime, ALICE)
        assert name


def test_an_admin_principal_reaches_every_session(runtime: Runtime) -> None:
    for name in session_calls("unused", "unused"):
        session_id, checkpoint_id = prepared_session(runtime, name=name)
        call = session_calls(session_id, checkpoint_id)[name]
        call(runtime, ADMIN)  # raises if the admin were refused
    assert runtime.list(principal=ALICE)["total"] >= 1


def test_an_admins_reads_see_the_owners_data(runtime: Runtime) -> None:
    session_id, _ = prepared_session(runtime)
    assert runtime.get(session_id, principal=ADMIN)["name"] == "private"
    assert contents(runtime, session_id, ADMIN) == ["secret one", "secret two"]
    fork = runtime.fork(session_id, principal=ADMIN)
    # What an admin forks is the admin's, and not visible to the original owner.
    with pytest.raises(SessionNotFoundError):
        runtime.get(fork["id"], principal=ALICE)
    assert [
        f["session_id"] for f in runtime.branches(session_id, principal=ALICE)["forks"]
    ] == []


# --- turns


def test_send_records_the_message_and_the_agents_reply(runtime: Runtime) -> None:
    session_id = runtime.create()["id"]
    result = runtime.send(session_id, "hello big world")

    user, reply = result["user_message"], result["reply"]
    assert user["role"] == "user"
    assert user["content"] == "hello big world"
    assert user["author_id"] == "local"
    assert reply["role"] == "assistant"
    assert reply["content"] == "hello big world"
    assert reply["author_id"] == "echo"
    assert reply["offset"] == user["offset"] + 1
    assert result["usage"] == {"input_tokens": 3, "output_tokens": 3}
    assert reply["usage"] == result["usage"]
    assert result["steps"] == 1
    assert result["tool_calls"] == []
    # the turn_ended event follows the reply in the same write
    assert result["session"]["offset"] == reply["offset"] + 1
    assert result["session"]["usage"] == {"input_tokens": 3, "output_tokens": 3}
    assert runtime.messages(session_id) == [user, reply]
    recorded, ended = runtime.events(session_id)["events"][-2:]
    assert recorded["data"]["reply_to"] == user["offset"]
    assert ended["type"] == "turn_ended"
    assert ended["data"] == {
        "turn_offset": user["offset"],
        "status": "completed",
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 3},
        "steps": 1,
        "tool_calls": 0,
        "reply_offset": reply["offset"],
    }


def test_a_non_user_message_is_recorded_without_a_turn(runtime: Runtime) -> None:
    session_id = runtime.create()["id"]
    result = runtime.send(session_id, "be brief", role="system")
    assert result["reply"] is None
    assert result["steps"] == 0
    assert contents(runtime, session_id, Principal("local")) == ["be brief"]
    with pytest.raises(InvalidRequestError):
        runtime.send(session_id, "x", role="wizard")


def test_a_send_retried_with_its_idempotency_key_returns_the_first_result_only(
    runtime: Runtime,
) -> None:
    session_id = runtime.create()["id"]
    first = runtime.send(session_id, "only once", idempotency_key="key-1")
    offset = runtime.get(session_id)["offset"]

    retry = runtime.send(session_id, "only once", idempotency_key="key-1")

    assert retry["user_message"] == first["user_message"]
    assert retry["reply"] == first["reply"]
    assert retry["usage"] == first["usage"]
    assert runtime.get(session_id)["offset"] == offset
    assert len(runtime.messages(session_id)) == 2
    other = runtime.send(session_id, "again", idempotency_key="key-2")
    assert other["user_message"]["offset"] == offset + 1


def test_append_retried_with_an_idempotency_key_returns_the_first_message(
    runtime: Runtime,
) -> None:
    session_id = runtime.create()["id"]
    first = runtime.append(session_id, "note", idempotency_key="k")
    assert runtime.append(session_id, "note", idempotency_key="k") == first
    assert runtime.get(session_id)["offset"] == 2


def test_idempotency_keys_are_forgotten_beyond_the_window(runtime: Runtime) -> None:
    session_id = runtime.create()["id"]
    first = runtime.append(session_id, "first", idempotency_key="k-0")
    offsets = [first["offset"]]
    for i in range(1, IDEMPOTENCY_WINDOW + 1):
        offsets.append(
            runtime.append(session_id, f"m{i}", idempotency_key=f"k-{i}")["offset"]
        )
    # The oldest key fell out of the window; the newest is still remembered.
    last = runtime.append(
        session_id, "again", idempotency_key=f"k-{IDEMPOTENCY_WINDOW}"
    )
    assert last["offset"] == offsets[-1]
    again = runtime.append(session_id, "first", idempotency_key="k-0")
    assert again["offset"] == offsets[-1] + 1


def test_writes_expecting_another_offset_are_conflicts_naming_the_current_one(
    runtime: Runtime,
) -> None:
    session_id = runtime.create()["id"]
    runtime.append(session_id, "a")  # offset 2
    runtime.append(session_id, "b", expected_offset=2)  # offset 3
    writes: list[Callable[[int], Any]] = [
        lambda expected: runtime.append(session_id, "x", expected_offset=expected),
        lambda expected: runtime.send(session_id, "x", expected_offset=expected),
        lambda expected: list(
            runtime.stream(session_id, "x", expected_offset=expected)
        ),
        lambda expected: runtime.clear(session_id, expected_offset=expected),
        lambda expected: runtime.rewind(session_id, 2, expected_offset=expected),
    ]
    for write in writes:
        with pytest.raises(OffsetConflictError) as raised:
            write(2)
        assert raised.value.code == "conflict"
        assert raised.value.current_offset == 3
    assert runtime.get(session_id)["offset"] == 3
    assert contents(runtime, session_id, Principal("local")) == ["a", "b"]


def test_stream_yields_the_documented_events_in_order(runtime: Runtime) -> None:
    session_id = runtime.create()["id"]
    events = list(runtime.stream(session_id, "one two  three"))
    types = [e["type"] for e in events]

    deltas = [e for e in events if e["type"] == "text_delta"]
    assert types == [
        "message_start",
        "content_block_start",
        *["text_delta"] * len(deltas),
        "content_block_stop",
        "message_delta",
        "message_stop",
        "done",
    ]
    assert len(deltas) == 3
    text = "".join(d["text"] for d in deltas)
    assert text == "one two  three"
    assert events[0]["user_message"]["content"] == "one two  three"
    stop = events[-2]["message"]
    assert stop["content"] == text
    assert events[-3]["stop_reason"] == "end_turn"
    assert events[-3]["usage"] == {"input_tokens": 3, "output_tokens": 3}
    assert events[-1]["reply"] == stop
    assert runtime.messages(session_id)[-1] == stop


def test_the_agent_replies_to_the_latest_user_message_of_the_visible_history(
    runtime: Runtime,
) -> None:
    session_id = runtime.create()["id"]
    runtime.send(session_id, "first")
    runtime.append(session_id, "a note", role="system")
    assert runtime.send(session_id, "second")["reply"]["content"] == "second"


# --- reading


def test_history_text_renders_markdown_and_plain_text(runtime: Runtime) -> None:
    session_id = runtime.create(name="Notes")["id"]
    runtime.send(session_id, "hi there")
    markdown = runtime.history_text(session_id)
    assert markdown.startswith("# Notes\n")
    assert f"- Session: `{session_id}`" in markdown
    assert "- Messages: 2" in markdown
    assert "### User · 2026-01-01T00:00:00.000Z\n\nhi there" in markdown
    assert "### Assistant · " in markdown
    assert (
        runtime.history_text(session_id, format="text")
        == "user: hi there\n\nassistant: hi there"
    )
    with pytest.raises(InvalidRequestError):
        runtime.history_text(session_id, format="html")


def test_export_gives_json_markdown_or_text(runtime: Runtime) -> None:
    session_id = runtime.create(name="Export me")["id"]
    runtime.send(session_id, "hello")
    checkpoint = runtime.checkpoint_save(session_id, "cp")
    exported = runtime.export(session_id)
    assert isinstance(exported, dict)
    assert exported["format"] == "sessiond.export/v1"
    assert exported["session"]["id"] == session_id
    assert [m["content"] for m in exported["messages"]] == ["hello", "hello"]
    assert [c["id"] for c in exported["checkpoints"]] == [checkpoint["id"]]
    assert exported["exported_at"] == "2026-01-01T00:00:00.000Z"
    assert runtime.export(session_id, format="markdown") == runtime.history_text(
        session_id
    )
    assert (
        runtime.export(session_id, format="text") == "user: hello\n\nassistant: hello"
    )
    with pytest.raises(InvalidRequestError):
        runtime.export(session_id, format="pdf")


def test_reads_after_a_write_see_it_immediately(runtime: Runtime) -> None:
    session_id = runtime.create()["id"]
    for i in range(25):
        message = runtime.append(session_id, f"m{i}")
        assert runtime.history(session_id, limit=1)["messages"] == [message]
        assert runtime.get(session_id)["offset"] == message["offset"]
        assert runtime.get(session_id)["message_count"] == i + 1
    written = threading.Event()
    seen: list[dict[str, Any]] = []

    def writer() -> None:
        seen.append(runtime.append(session_id, "from another thread"))
        written.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert written.wait(WAIT)
    thread.join(WAIT)
    assert runtime.history(session_id, limit=1)["messages"] == seen


def test_updates_rename_pin_merge_attributes_and_replace_metadata_in_one_write(
    runtime: Runtime,
) -> None:
    session_id = runtime.create(
        attributes={"a": {"x": 1, "y": 2}}, metadata={"old": 1}
    )["id"]
    updated = runtime.update(
        session_id,
        name="Named",
        pinned=True,
        attributes={"a": {"y": None, "z": 3}},
        metadata={"new": 2},
    )
    assert updated["name"] == "Named"
    assert updated["pinned_at"] == "2026-01-01T00:00:00.000Z"
    assert updated["attributes"] == {"a": {"x": 1, "z": 3}}
    assert updated["metadata"] == {"new": 2}
    assert updated["offset"] == 5
    assert runtime.update(session_id, name=None)["name"] is None
    assert runtime.update(session_id, pinned=True)["offset"] == 6  # already pinned
    assert runtime.patch_attributes(session_id, {"b": 1})["attributes"] == {
        "a": {"x": 1, "z": 3},
        "b": 1,
    }
    with pytest.raises(InvalidRequestError):
        runtime.update(session_id, pinned="yes")  # type: ignore[arg-type]


# --- checkpoints, rewind, state_at


def test_checkpoints_are_listed_restored_and_deleted(runtime: Runtime) -> None:
    session_id = runtime.create()["id"]
    runtime.append(session_id, "a")
    first = runtime.checkpoint_save(session_id, "after a", description="the start")
    runtime.append(session_id, "b")
    second = runtime.checkpoint_save(session_id, "after b")
    runtime.append(session_id, "c")

    assert first == {
        "id": first["id"],
        "name": "after a",
        "description": "the start",
        "offset": 2,
        "message_count": 1,
        "created_at": "2026-01-01T00:00:00.000Z",
    }
    assert runtime.checkpoints(session_id) == [first, second]

    restored = runtime.checkpoint_restore(session_id, first["id"])
    assert restored["message_count"] == 1
    assert contents(runtime, session_id, Principal("local")) == ["a"]
    runtime.checkpoint_restore(session_id, second["id"])
    assert contents(runtime, session_id, Principal("local")) == ["a", "b"]

    runtime.checkpoint_delete(session_id, first["id"])
    assert runtime.checkpoints(session_id) == [second]
    for call in (
        lambda: runtime.checkpoint_restore(session_id, first["id"]),
        lambda: runtime.checkpoint_delete(session_id, first["id"]),
    ):
        with pytest.raises(CheckpointNotFoundError) as raised:
            call()
        assert raised.value.code == "checkpoint_not_found"


def test_rewinding_outside_the_sessions_life_is_out_of_range(runtime: Runtime) -> None:
    session_id = runtime.create()["id"]
    runtime.append(session_id, "a")
    for offset in (0, 3, -5):
        with pytest.raises(OffsetOutOfRangeError) as raised:
            runtime.rewind(session_id, offset)
        assert raised.value.code == "offset_out_of_range"
    with pytest.raises(InvalidRequestError):
        runtime.rewind(session_id, "2")  # type: ignore[arg-type]
    assert runtime.get(session_id)["offset"] == 2


def test_state_at_rebuilds_the_session_as_it_was(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime = runtime_factory(snapshot_interval=2)
    session_id = runtime.create(name="first")["id"]  # 1
    runtime.update(session_id, name="second")  # 2
    runtime.append(session_id, "a")  # 3
    runtime.append(session_id, "b")  # 4
    runtime.clear(session_id)  # 5

    assert runtime.state_at(session_id, 1)["name"] == "first"
    assert runtime.state_at(session_id, 2)["name"] == "second"
    at_four = runtime.state_at(session_id, 4)
    assert (at_four["offset"], at_four["message_count"], at_four["head"]) == (4, 2, 4)
    assert runtime.state_at(session_id, 5)["message_count"] == 0
    assert runtime.state_at(session_id, 5) == {
        k: v
        for k, v in runtime.get(session_id).items()
        if k not in ("time_remaining_ms", "near_expiry")
    }


def test_state_at_refuses_offsets_outside_the_sessions_own_life(
    runtime: Runtime,
) -> None:
    session_id = runtime.create()["id"]
    runtime.append(session_id, "a")
    fork_id = runtime.fork(session_id)["id"]  # opens at 3
    for target, offset in (
        (session_id, 0),
        (session_id, 3),
        (fork_id, 2),
        (fork_id, 4),
    ):
        with pytest.raises(OffsetOutOfRangeError) as raised:
            runtime.state_at(target, offset)
        assert raised.value.code == "offset_out_of_range"
    with pytest.raises(InvalidRequestError):
        runtime.state_at(session_id, "1")  # type: ignore[arg-type]
    assert runtime.state_at(fork_id, 3)["parent"] == {
        "session_id": session_id,
        "offset": 2,
    }


# --- clear, reset, delete


def test_clear_empties_the_history_and_keeps_the_session(runtime: Runtime) -> None:
    session_id = runtime.create(name="kept")["id"]
    runtime.send(session_id, "hello")
    cleared = runtime.clear(session_id)
    assert cleared["message_count"] == 0
    assert cleared["status"] == "active"
    assert cleared["name"] == "kept"
    assert runtime.messages(session_id) == []
    assert event_types(runtime, session_id).count("message_appended") == 2
    assert runtime.send(session_id, "again")["reply"]["content"] == "again"


def test_reset_ends_the_old_session_and_opens_a_fresh_one_on_the_same_scope_key(
    runtime: Runtime,
) -> None:
    old, _ = runtime.open(
        principal=ALICE, scope="main", name="Daily", attributes={"k": 1}
    )
    runtime.send(old["id"], "before", principal=ALICE)

    new = runtime.reset(old["id"], principal=ALICE)

    assert new["id"] != old["id"]
    assert new["status"] == "active"
    assert new["scope_key"] == old["scope_key"]
    assert new["name"] == "Daily"
    assert new["attributes"] == {"k": 1}
    assert new["message_count"] == 0
    ended = runtime.get(old["id"], principal=ALICE)
    assert ended["status"] == "ended"
    assert (
        runtime.events(old["id"], principal=ALICE)["events"][-1]["data"]["reason"]
        == "reset"
    )
    again, created = runtime.open(principal=ALICE, scope="main")
    assert (again["id"], created) == (new["id"], False)
    assert [s["id"] for s in runtime.list(principal=ALICE)["sessions"]] == [new["id"]]
    with pytest.raises(SessionEndedError):
        runtime.reset(old["id"], principal=ALICE)


def test_a_reset_whose_successor_cannot_be_recorded_changes_nothing(
    runtime: Runtime,
) -> None:
    old, _ = runtime.open(principal=ALICE, scope="main")
    other = runtime.create(principal=ALICE)
    # The successor's id clashes with an existing session: the one write fails.
    runtime._new_id = lambda: other["id"]  # type: ignore[method-assign]

    with pytest.raises(Exception):  # noqa: B017 - the store refuses the write
        runtime.reset(old["id"], principal=ALICE)

    assert runtime.get(old["id"], principal=ALICE)["status"] == "active"
    assert event_types(runtime, old["id"]) == ["opened"]
    assert event_types(runtime, other["id"]) == ["opened"]
    assert runtime.views.find_by_scope(old["scope_key"]) == old["id"]
    # The session's actor reloaded and takes writes.
    runtime.append(old["id"], "fine", principal=ALICE)


def test_delete_ends_the_session_and_later_writes_are_refused(runtime: Runtime) -> None:
    session_id = runtime.create()["id"]
    runtime.append(session_id, "kept for audit")
    deleted = runtime.delete(session_id)
    assert deleted["status"] == "ended"
    assert runtime.delete(session_id)["offset"] == deleted["offset"]  # idempotent
    for write in (
        lambda: runtime.append(session_id, "x"),
        lambda: runtime.send(session_id, "x"),
        lambda: runtime.clear(session_id),
        lambda: runtime.update(session_id, name="x"),
        lambda: runtime.checkpoint_save(session_id, "x"),
        lambda: runtime.rewind(session_id, 1),
    ):
        with pytest.raises(SessionEndedError) as raised:
            write()
        assert raised.value.code == "session_ended"
    assert contents(runtime, session_id, Principal("local")) == ["kept for audit"]
    assert runtime.list()["total"] == 0


# --- rebuild, restart


def build_a_varied_store(runtime: Runtime) -> list[str]:
    """Sessions with rewinds, forks, a fork of a fork, clears, resets, deletes."""
    plain = runtime.create(principal=ALICE, name="plain")["id"]
    for i in range(4):
        runtime.send(plain, f"plain {i}", principal=ALICE)
    rewound = runtime.create(principal=ALICE)["id"]
    for i in range(5):
        runtime.append(rewound, f"r{i}", principal=ALICE)
    checkpoint = runtime.checkpoint_save(rewound, "cp", principal=ALICE)
    runtime.append(rewound, "after cp", principal=ALICE)
    runtime.rewind(rewound, 3, principal=ALICE)
    runtime.append(rewound, "new branch", principal=ALICE)
    runtime.checkpoint_restore(rewound, checkpoint["id"], principal=ALICE)
    fork = runtime.fork(rewound, principal=ALICE)["id"]
    runtime.append(fork, "in fork", principal=ALICE)
    runtime.rewind(fork, 2, principal=ALICE)
    old_fork = runtime.fork(rewound, principal=ALICE, offset=4)["id"]
    grandchild = runtime.fork(fork, principal=ALICE)["id"]
    runtime.send(grandchild, "deep", principal=ALICE)
    cleared = runtime.create(principal=BOB, name="bob's")["id"]
    runtime.append(cleared, "gone", principal=BOB)
    runtime.clear(cleared, principal=BOB)
    runtime.update(cleared, principal=BOB, pinned=True, attributes={"x": {"y": 1}})
    scoped, _ = runtime.open(principal=BOB, scope="main")
    successor = runtime.reset(scoped["id"], principal=BOB)["id"]
    deleted = runtime.create(principal=ALICE)["id"]
    runtime.delete(deleted, principal=ALICE)
    return [
        plain,
        rewound,
        fork,
        old_fork,
        grandchild,
        cleared,
        scoped["id"],
        successor,
        deleted,
    ]


def view_state(runtime: Runtime, session_ids: list[str]) -> dict[str, Any]:
    with runtime.views.datastore.transaction(commit=False) as c:
        c.execute("SELECT * FROM session_index ORDER BY session_id")
        rows = [tuple(row) for row in c.fetchall()]
    state: dict[str, Any] = {"rows": rows}
    for session_id in session_ids:
        row = runtime.views.session_row(session_id)
        assert row is not None
        state[session_id] = (
            row,
            runtime.views.history(row["spans"], limit=1000),
            runtime.views.history(row["spans"], limit=2, descending=False),
        )
    state["lists"] = [
        runtime.list(principal=p, status=s)
        for p in (ALICE, BOB, ADMIN)
        for s in (None, "ended")
    ]
    state["counts"] = runtime.counts(principal=ADMIN)
    state["due"] = runtime.views.due(runtime.clock.now() + timedelta(days=400), 1000)
    return state


def test_rebuilding_the_projections_gives_identical_rows_and_histories(
    runtime: Runtime,
) -> None:
    session_ids = build_a_varied_store(runtime)
    before = view_state(runtime, session_ids)
    position = runtime.views.position()

    rebuilt = runtime.rebuild_projections()

    assert rebuilt == len(session_ids)
    assert view_state(runtime, session_ids) == before
    assert runtime.views.position() == position
    # And the rebuilt views keep working for new writes.
    runtime.append(session_ids[0], "after the rebuild", principal=ALICE)
    assert contents(runtime, session_ids[0])[-1] == "after the rebuild"


def test_everything_survives_closing_and_reopening_the_runtime(
    runtime_factory: RuntimeFactory,
) -> None:
    first = runtime_factory()
    session_ids = build_a_varied_store(first)
    before = view_state(first, session_ids)
    checkpoints = first.checkpoints(session_ids[1], principal=ALICE)
    first.close()

    second = runtime_factory()

    assert view_state(second, session_ids) == before
    assert second.checkpoints(session_ids[1], principal=ALICE) == checkpoints
    message = second.append(session_ids[1], "after restart", principal=ALICE)
    assert message["offset"] == before[session_ids[1]][0]["doc"]["offset"] + 1
    assert contents(second, session_ids[1])[-1] == "after restart"


# --- passivation


def replayed(runtime: Runtime, session_id: str) -> Session:
    """The session folded from every event of its log, without snapshots."""
    session = reduce(lambda s, e: e.mutate(s), runtime.app.events.get(session_id), None)
    assert isinstance(session, Session)
    return session


def actor_state(runtime: Runtime, session_id: str) -> Session:
    return runtime._read(session_id, lambda s: s)


def test_a_passivated_session_rehydrates_on_the_next_command(runtime: Runtime) -> None:
    session_id = runtime.create()["id"]
    runtime.send(session_id, "before")
    assert runtime.directory.live_count() == 1

    assert runtime.directory.passivate(session_id) is True
    assert runtime.directory.live_count() == 0

    result = runtime.send(session_id, "after")
    assert result["user_message"]["offset"] == 5  # after message, reply, turn_ended
    assert runtime.directory.live_count() == 1
    assert contents(runtime, session_id, Principal("local")) == [
        "before",
        "before",
        "after",
        "after",
    ]
    assert actor_state(runtime, session_id) == replayed(runtime, session_id)


def test_idle_sessions_are_passivated_after_the_idle_timeout(
    runtime_factory: RuntimeFactory, clock: FakeClock
) -> None:
    runtime = runtime_factory(actor_idle_seconds=60)
    idle = runtime.create()["id"]
    busy = runtime.create()["id"]
    runtime.append(idle, "x")
    clock.advance(45)
    runtime.append(busy, "y")
    clock.advance(30)  # idle: 75 s without a command, busy: 30 s

    runtime.directory.passivate_idle()

    assert runtime.directory.live_count() == 1
    runtime.append(idle, "z")
    assert contents(runtime, idle, Principal("local")) == ["x", "z"]
    assert runtime.get(idle)["offset"] == 3


def test_rehydration_from_a_snapshot_and_tail_is_correct(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime = runtime_factory(snapshot_interval=5)
    session_id = runtime.create()["id"]
    for i in range(6):
        # offsets 2..19: echo's turns are one write each (message, reply,
        # turn_ended), so a snapshot is taken at the end of the write that
        # crosses each multiple of 5
        runtime.send(session_id, f"m{i}")
    checkpoint = runtime.checkpoint_save(session_id, "cp")  # 20
    runtime.rewind(session_id, 8)  # 21
    runtime.append(session_id, "tail")  # 22
    snapshots = list(runtime.app.snapshots.get(session_id))  # type: ignore[union-attr]
    assert [s.originator_version for s in snapshots] == [7, 10, 16, 20]

    runtime.directory.passivate(session_id)
    message = runtime.append(session_id, "after")

    assert message["offset"] == 23
    assert actor_state(runtime, session_id) == replayed(runtime, session_id)
    assert contents(runtime, session_id, Principal("local")) == [
        "m0", "m0", "m1", "m1", "m2", "tail", "after",
    ]  # fmt: skip
    assert runtime.checkpoints(session_id)[0]["id"] == checkpoint["id"]


def test_the_live_actor_cap_holds_and_evicted_sessions_stay_correct(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime = runtime_factory(max_live_actors=3, snapshot_interval=4)
    sessions = [runtime.create()["id"] for _ in range(10)]
    for round_ in range(3):
        for i, session_id in enumerate(sessions):
            runtime.send(session_id, f"s{i} r{round_}")
            assert runtime.directory.live_count() <= 3
    for i, session_id in enumerate(sessions):
        expected = [text for r in range(3) for text in (f"s{i} r{r}",) * 2]
        assert contents(runtime, session_id, Principal("local")) == expected
        assert runtime.get(session_id)["offset"] == 10  # 3 turns of 3 events
        assert actor_state(runtime, session_id) == replayed(runtime, session_id)
        assert runtime.directory.live_count() <= 3
    assert runtime.directory.stats.activations >= 30


def test_a_session_rehydrated_after_its_expiry_warning_is_not_warned_again(
    runtime_factory: RuntimeFactory, clock: FakeClock
) -> None:
    runtime = runtime_factory(snapshot_interval=3, supervisor_interval=0)
    session_id = runtime.create()["id"]  # 1
    runtime.append(session_id, "hi")  # 2; expires 30 minutes later
    clock.advance(26 * 60)  # past the warning (5 minutes before expiry)
    runtime.run_lifecycle()  # 3: the warning, and a snapshot after it
    assert event_types(runtime, session_id).count("expiry_warned") == 1

    runtime.directory.passivate(session_id)
    runtime.append(session_id, "still here")

    assert event_types(runtime, session_id).count("expiry_warned") == 1
    assert runtime.get(session_id)["status"] == "active"
