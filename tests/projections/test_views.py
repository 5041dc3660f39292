"""The SQLite views: visible history read from the log by spans, the session
index with its filters and cursor, and the constraints the index enforces.

Expected histories are written out by hand (by message content) and checked
against offsets the appends returned, never against the view itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from aggregates import Session, TimeoutLimits, TimeoutPolicy
from runtime import (
    AgentConfig,
    FakeClock,
    InvalidRequestError,
    Principal,
    Runtime,
)

RuntimeFactory = Callable[..., Runtime]
ALICE = Principal("alice")
BOB = Principal("bob")


class Conversation:
    """Appends messages with unique contents and remembers their offsets."""

    def __init__(self, runtime: Runtime, session_id: str) -> None:
        self.runtime = runtime
        self.id = session_id
        self.offsets: dict[str, int] = {}

    def say(self, *contents: str) -> None:
        for content in contents:
            message = self.runtime.append(self.id, content)
            assert message["content"] == content
            self.offsets[content] = message["offset"]

    def offset(self) -> int:
        return int(self.runtime.get(self.id)["offset"])


def offsets_of(conversations: list[Conversation], contents: list[str]) -> list[int]:
    found = []
    for content in contents:
        owners = [c.offsets[content] for c in conversations if content in c.offsets]
        assert len(owners) == 1, content
        found.append(owners[0])
    return found


def assert_history(
    runtime: Runtime,
    session_id: str,
    contents: list[str],
    conversations: list[Conversation],
    *,
    limits: tuple[int, ...] = (1, 2, 3),
) -> None:
    """The visible history is exactly ``contents`` and every page of it, in both
    orders and with every ``before``/``after`` bound, is right to the message,
    with an exact ``has_more``."""
    offsets = offsets_of(conversations, contents)
    assert offsets == sorted(set(offsets)), "offsets must strictly increase"
    whole = runtime.messages(session_id)
    assert [m["content"] for m in whole] == contents
    assert [m["offset"] for m in whole] == offsets
    assert runtime.get(session_id)["message_count"] == len(contents)

    spans = runtime.views.session_row(session_id)["spans"]  # type: ignore[index]
    top = (offsets[-1] if offsets else 0) + 2
    bounds: list[int | None] = [None, *range(top)]
    for limit in (*limits, len(contents), len(contents) + 1):
        if limit < 1:
            continue
        for descending, before, after in itertools.product(
            (True, False), bounds, bounds
        ):
            expected = [
                o
                for o in offsets
                if (after is None or o > after) and (before is None or o < before)
            ]
            if descending:
                expected.reverse()
            page, has_more = runtime.views.history(
                spans, limit=limit, before=before, after=after, descending=descending
            )
            where = (limit, descending, before, after)
            assert [m["offset"] for m in page] == expected[:limit], where
            assert has_more == (len(expected) > limit), where


# --- paging


def test_paging_newest_first_by_before_visits_every_message_once(
    runtime: Runtime,
) -> None:
    chat = Conversation(runtime, runtime.create()["id"])
    chat.say(*[f"m{i}" for i in range(10)])

    seen: list[str] = []
    before = None
    pages = 0
    while True:
        page = runtime.history(chat.id, limit=3, before=before)
        seen.extend(m["content"] for m in page["messages"])
        pages += 1
        if not page["has_more"]:
            break
        before = page["messages"][-1]["offset"]
    assert seen == [f"m{i}" for i in reversed(range(10))]
    assert pages == 4


def test_paging_oldest_first_by_after_visits_every_message_once(
    runtime: Runtime,
) -> None:
    chat = Conversation(runtime, runtime.create()["id"])
    chat.say(*[f"m{i}" for i in range(9)])

    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = runtime.history(chat.id, limit=3, after=after, order="asc")
        seen.extend(m["content"] for m in page["messages"])
        pages += 1
        if not page["has_more"]:
            break
        after = page["messages"][-1]["offset"]
    assert seen == [f"m{i}" for i in range(9)]
    # 9 messages in pages of 3: has_more is exact, so there is no empty 4th page.
    assert pages == 3


def test_has_more_is_exact_at_the_boundaries(runtime: Runtime) -> None:
    chat = Conversation(runtime, runtime.create()["id"])
    assert runtime.history(chat.id, limit=1) == {"messages": [], "has_more": False}
    chat.say("a", "b", "c")
    assert runtime.history(chat.id, limit=3)["has_more"] is False
    assert runtime.history(chat.id, limit=2)["has_more"] is True
    assert runtime.history(chat.id, limit=4)["has_more"] is False
    c = chat.offsets["c"]
    a = chat.offsets["a"]
    # Exactly the page size remains before "c": no more.
    page = runtime.history(chat.id, limit=2, before=c)
    assert [m["content"] for m in page["messages"]] == ["b", "a"]
    assert page["has_more"] is False
    page = runtime.history(chat.id, limit=2, after=a, order="asc")
    assert [m["content"] for m in page["messages"]] == ["b", "c"]
    assert page["has_more"] is False
    page = runtime.history(chat.id, limit=1, after=a, order="asc")
    assert page["has_more"] is True


def test_before_and_after_are_exclusive_and_combine(runtime: Runtime) -> None:
    chat = Conversation(runtime, runtime.create()["id"])
    chat.say("a", "b", "c", "d")
    a, d = chat.offsets["a"], chat.offsets["d"]
    page = runtime.history(chat.id, after=a, before=d, order="asc")
    assert [m["content"] for m in page["messages"]] == ["b", "c"]
    assert runtime.history(chat.id, after=d)["messages"] == []
    assert runtime.history(chat.id, before=a)["messages"] == []


def test_every_page_of_a_plain_history_is_right(runtime: Runtime) -> None:
    chat = Conversation(runtime, runtime.create()["id"])
    chat.say("a", "b", "c", "d", "e")
    runtime.checkpoint_save(chat.id, "not a message")  # a non-message event between
    chat.say("f")
    assert_history(runtime, chat.id, ["a", "b", "c", "d", "e", "f"], [chat])


def test_history_arguments_are_validated(runtime: Runtime) -> None:
    session_id = runtime.create()["id"]
    for arguments in (
        {"limit": 0},
        {"limit": 1001},
        {"order": "sideways"},
        {"before": -1},
        {"after": "3"},
    ):
        with pytest.raises(InvalidRequestError):
            runtime.history(session_id, **arguments)


def test_messages_are_shown_with_every_recorded_field(
    runtime: Runtime, clock: FakeClock
) -> None:
    session_id = runtime.create()["id"]
    message = runtime.append(
        session_id,
        "look",
        attachments=[{"kind": "image"}],
        metadata={"lang": "en"},
    )
    reply = runtime.append(
        session_id,
        "seen",
        role="assistant",
        usage={"input_tokens": 2, "output_tokens": 1},
        reply_to=message["offset"],
    )
    page = runtime.history(session_id, order="asc")["messages"]
    assert page == [message, reply]
    assert message["session_id"] == session_id
    assert message["role"] == "user"
    assert message["author_id"] == "local"
    assert message["attachments"] == [{"kind": "image"}]
    assert message["metadata"] == {"lang": "en"}
    assert message["usage"] is None
    assert message["created_at"] == "2026-01-01T00:00:00.000Z"
    assert reply["author_id"] is None
    assert reply["usage"] == {"input_tokens": 2, "output_tokens": 1}
    assert runtime.views.reply_to(session_id, message["offset"]) == reply


# --- clear, rewind, fork


def test_history_after_a_clear_shows_only_later_messages(runtime: Runtime) -> None:
    chat = Conversation(runtime, runtime.create()["id"])
    chat.say("a", "b")
    runtime.clear(chat.id)
    assert_history(runtime, chat.id, [], [chat])
    chat.say("c", "d")
    assert_history(runtime, chat.id, ["c", "d"], [chat])
    events = runtime.events(chat.id)["events"]
    assert [
        e["data"]["content"] for e in events if e["type"] == "message_appended"
    ] == [
        "a",
        "b",
        "c",
        "d",
    ]


def test_a_rewound_history_excludes_abandoned_messages_but_events_keep_them(
    runtime: Runtime,
) -> None:
    chat = Conversation(runtime, runtime.create()["id"])
    chat.say("a", "b", "c", "d")
    runtime.rewind(chat.id, chat.offsets["b"])
    chat.say("e")
    assert_history(runtime, chat.id, ["a", "b", "e"], [chat])
    types = [e["type"] for e in runtime.events(chat.id)["events"]]
    assert types.count("message_appended") == 5
    assert "rewound" in types


def test_rewind_into_an_abandoned_branch_shows_that_branch(runtime: Runtime) -> None:
    chat = Conversation(runtime, runtime.create()["id"])
    chat.say("a", "b", "c")
    runtime.rewind(chat.id, chat.offsets["a"])
    chat.say("x", "y")
    runtime.rewind(chat.id, chat.offsets["c"])
    assert_history(runtime, chat.id, ["a", "b", "c"], [chat])
    chat.say("z")
    assert_history(runtime, chat.id, ["a", "b", "c", "z"], [chat])
    runtime.rewind(chat.id, chat.offsets["x"])
    assert_history(runtime, chat.id, ["a", "x"], [chat])


def test_rewinding_to_before_a_clear_brings_the_cleared_messages_back(
    runtime: Runtime,
) -> None:
    chat = Conversation(runtime, runtime.create()["id"])
    chat.say("a", "b")
    runtime.clear(chat.id)
    chat.say("c")
    runtime.rewind(chat.id, chat.offsets["b"])
    assert_history(runtime, chat.id, ["a", "b"], [chat])


def test_a_fork_shows_inherited_and_own_messages_in_increasing_offsets(
    runtime: Runtime,
) -> None:
    parent = Conversation(runtime, runtime.create()["id"])
    parent.say("a", "b", "c")
    child = Conversation(runtime, runtime.fork(parent.id)["id"])
    child.say("x", "y")
    parent.say("p")  # after the fork point: not the child's
    assert_history(runtime, child.id, ["a", "b", "c", "x", "y"], [parent, child])
    assert_history(runtime, parent.id, ["a", "b", "c", "p"], [parent, child])
    inherited = runtime.messages(child.id)[0]
    assert inherited["session_id"] == parent.id


def test_a_fork_at_an_older_offset_shows_the_history_of_that_moment(
    runtime: Runtime,
) -> None:
    parent = Conversation(runtime, runtime.create()["id"])
    parent.say("a", "b", "c")
    child = Conversation(
        runtime, runtime.fork(parent.id, offset=parent.offsets["b"])["id"]
    )
    child.say("x")
    assert_history(runtime, child.id, ["a", "b", "x"], [parent, child])
    assert runtime.get(child.id)["parent"] == {
        "session_id": parent.id,
        "offset": parent.offsets["b"],
    }


def test_a_fork_of_a_fork_shows_three_generations(runtime: Runtime) -> None:
    grandparent = Conversation(runtime, runtime.create()["id"])
    grandparent.say("a", "b")
    parent = Conversation(runtime, runtime.fork(grandparent.id)["id"])
    parent.say("c", "d")
    child = Conversation(
        runtime, runtime.fork(parent.id, offset=parent.offsets["c"])["id"]
    )
    child.say("e")
    everyone = [grandparent, parent, child]
    assert_history(runtime, child.id, ["a", "b", "c", "e"], everyone)
    assert_history(runtime, parent.id, ["a", "b", "c", "d"], everyone)
    young = Conversation(
        runtime, runtime.fork(parent.id, offset=grandparent.offsets["a"])["id"]
    )
    young.say("f")
    assert_history(runtime, young.id, ["a", "f"], [*everyone, young])


def test_rewind_inside_a_fork_into_the_inherited_part(runtime: Runtime) -> None:
    parent = Conversation(runtime, runtime.create()["id"])
    parent.say("a", "b", "c")
    child = Conversation(runtime, runtime.fork(parent.id)["id"])
    child.say("x", "y")
    runtime.rewind(child.id, parent.offsets["b"])
    assert_history(runtime, child.id, ["a", "b"], [parent, child])
    child.say("z")
    assert_history(runtime, child.id, ["a", "b", "z"], [parent, child])
    # And back into the fork's own abandoned messages.
    runtime.rewind(child.id, child.offsets["x"])
    assert_history(runtime, child.id, ["a", "b", "c", "x"], [parent, child])


def test_rewinding_a_fork_to_an_inherited_offset_the_parent_later_rewound(
    runtime: Runtime,
) -> None:
    parent = Conversation(runtime, runtime.create()["id"])
    parent.say("a", "b", "c")
    runtime.rewind(parent.id, parent.offsets["a"])
    parent.say("d")
    child = Conversation(runtime, runtime.fork(parent.id)["id"])
    child.say("x")
    # At the offset of "c" the parent (and so the fork's past) showed a, b, c.
    runtime.rewind(child.id, parent.offsets["c"])
    assert_history(runtime, child.id, ["a", "b", "c"], [parent, child])
    child.say("y")
    assert_history(runtime, child.id, ["a", "b", "c", "y"], [parent, child])


def test_a_forks_offsets_continue_after_the_fork_point(runtime: Runtime) -> None:
    parent = Conversation(runtime, runtime.create()["id"])
    parent.say("a", "b")
    at = parent.offsets["a"]
    fork = runtime.fork(parent.id, offset=at)
    assert fork["offset"] == at + 1
    events = runtime.events(fork["id"])["events"]
    assert [e["offset"] for e in events] == [at + 1]
    assert events[0]["type"] == "opened"


# --- events


def test_the_events_page_by_offset_with_an_exact_has_more(runtime: Runtime) -> None:
    chat = Conversation(runtime, runtime.create()["id"])
    chat.say("a", "b", "c", "d")  # offsets 2..5
    first = runtime.events(chat.id, limit=2)
    assert [e["offset"] for e in first["events"]] == [1, 2]
    assert first["has_more"] is True
    last = runtime.events(chat.id, after=3, limit=2)
    assert [e["offset"] for e in last["events"]] == [4, 5]
    assert last["has_more"] is False
    assert runtime.events(chat.id, after=5) == {"events": [], "has_more": False}
    event = last["events"][0]
    assert event["type"] == "message_appended"
    assert event["data"]["content"] == "c"
    assert event["at"] == "2026-01-01T00:00:00.000Z"


# --- the session index


@pytest.fixture
def two_agent_runtime(runtime_factory: RuntimeFactory) -> Runtime:
    return runtime_factory(
        agents={"echo": AgentConfig(id="echo"), "helper": AgentConfig(id="helper")}
    )


def test_lists_filter_by_user_agent_status_pinned_and_name(
    two_agent_runtime: Runtime, clock: FakeClock
) -> None:
    runtime = two_agent_runtime
    trip = runtime.create(principal=ALICE, name="Trip to Rome")
    work = runtime.create(principal=ALICE, name="Work notes", user_id="alice-work")
    helper = runtime.create("helper", principal=ALICE, name="ROME trip, again")
    ended = runtime.create(principal=ALICE, name="old")
    runtime.create(principal=BOB, name="Bob's Rome")
    runtime.update(work["id"], principal=ALICE, pinned=True)
    runtime.delete(ended["id"], principal=ALICE)

    def ids(**filters: Any) -> set[str]:
        page = runtime.list(principal=ALICE, **filters)
        assert page["total"] == len(page["sessions"])
        return {s["id"] for s in page["sessions"]}

    assert ids() == {trip["id"], work["id"], helper["id"]}
    assert ids(user_id="alice-work") == {work["id"]}
    assert ids(agent_id="helper") == {helper["id"]}
    assert ids(pinned=True) == {work["id"]}
    assert ids(pinned=False) == {trip["id"], helper["id"]}
    assert ids(q="rome") == {trip["id"], helper["id"]}
    assert ids(q="ROME TRIP") == {helper["id"]}
    assert ids(q="nothing like it") == set()
    assert ids(status="ended") == {ended["id"]}
    assert ids(status="active") == {trip["id"], work["id"], helper["id"]}
    assert ids(status="expired") == set()
    assert ids(agent_id="helper", q="rome", pinned=False) == {helper["id"]}


def test_ended_sessions_are_hidden_unless_asked_for(runtime: Runtime) -> None:
    kept = runtime.create()
    gone = runtime.create()
    runtime.delete(gone["id"])
    listed = runtime.list()
    assert [s["id"] for s in listed["sessions"]] == [kept["id"]]
    assert listed["total"] == 1
    assert [s["id"] for s in runtime.list(status="ended")["sessions"]] == [gone["id"]]
    # Still readable for audit.
    assert runtime.get(gone["id"])["status"] == "ended"


def test_lists_are_newest_first(runtime: Runtime, clock: FakeClock) -> None:
    made = []
    for _ in range(4):
        made.append(runtime.create()["id"])
        clock.advance(1)
    assert [s["id"] for s in runtime.list()["sessions"]] == list(reversed(made))


@pytest.mark.parametrize("spread", [0.0, 0.5, 0.0005])
def test_cursor_pagination_visits_every_session_exactly_once(
    runtime: Runtime, clock: FakeClock, spread: float
) -> None:
    # With spread 0 every session has the same created_at: the id breaks ties.
    made = set()
    for _ in range(11):
        made.add(runtime.create()["id"])
        clock.advance(spread)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = runtime.list(limit=3, cursor=cursor)
        assert page["total"] == 11
        seen.extend(s["id"] for s in page["sessions"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 11
    assert set(seen) == made
    assert pages == 4


def test_the_last_full_page_has_no_next_cursor(runtime: Runtime) -> None:
    for _ in range(6):
        runtime.create()
    first = runtime.list(limit=3)
    assert first["next_cursor"] is not None
    second = runtime.list(limit=3, cursor=first["next_cursor"])
    assert len(second["sessions"]) == 3
    assert second["next_cursor"] is None


def test_a_bad_cursor_or_filter_is_an_invalid_request(runtime: Runtime) -> None:
    for arguments in (
        {"cursor": "!!!"},
        {"cursor": "bm90IGpzb24"},
        {"limit": 0},
        {"status": "x"},
    ):
        with pytest.raises(InvalidRequestError):
            runtime.list(**arguments)


def test_lists_and_counts_are_per_owner_and_an_admin_sees_all(runtime: Runtime) -> None:
    for _ in range(2):
        runtime.create(principal=ALICE)
    bobs = runtime.create(principal=BOB)
    runtime.create(principal=BOB)
    runtime.delete(bobs["id"], principal=BOB)

    assert runtime.list(principal=ALICE)["total"] == 2
    assert runtime.list(principal=BOB)["total"] == 1
    admin = Principal("root", admin=True)
    assert runtime.list(principal=admin)["total"] == 3
    assert runtime.counts(principal=ALICE) == {"active": 2}
    assert runtime.counts(principal=BOB) == {"active": 1, "ended": 1}
    assert runtime.counts(principal=admin) == {"active": 3, "ended": 1}


def test_the_index_row_is_written_with_the_events(runtime: Runtime) -> None:
    session_id = runtime.create(name="n")["id"]
    recorder = runtime.app.recorder
    for i in range(3):
        runtime.append(session_id, f"m{i}")
        # The views are exactly as current as the log.
        assert runtime.views.position() == recorder.max_notification_id()
        row = runtime.views.session_row(session_id)
        assert row is not None
        assert row["doc"]["message_count"] == i + 1
        assert row["doc"]["offset"] == i + 2
    assert row["owner_id"] == "local"
    assert row["spans"] == [[session_id, 1, None]]


def test_the_branch_tree_lists_forks_and_restores(
    runtime: Runtime, clock: FakeClock
) -> None:
    chat = Conversation(runtime, runtime.create()["id"])
    chat.say("a", "b")
    checkpoint = runtime.checkpoint_save(chat.id, "cp")
    chat.say("c")
    first = runtime.fork(chat.id)
    clock.advance(1)  # forks are listed by creation time
    second = runtime.fork(chat.id, offset=chat.offsets["a"])
    runtime.checkpoint_restore(chat.id, checkpoint["id"])
    branches = runtime.branches(chat.id)
    assert branches["parent"] is None
    assert [f["session_id"] for f in branches["forks"]] == [first["id"], second["id"]]
    assert [f["offset"] for f in branches["forks"]] == [
        chat.offsets["c"],
        chat.offsets["a"],
    ]
    assert [r["checkpoint_id"] for r in branches["restores"]] == [checkpoint["id"]]
    assert branches["restores"][0]["to_offset"] == checkpoint["offset"]
    assert runtime.branches(first["id"])["parent"] == {
        "session_id": chat.id,
        "offset": chat.offsets["c"],
    }


# --- constraints the index enforces


def stray_session(runtime: Runtime, session_id: str, **fields: Any) -> Session:
    """A session opened straight on the aggregate, past the facade's checks."""
    return Session.open(
        session_id=session_id,
        timestamp=runtime.clock.now(),
        owner_id="local",
        agent_id="echo",
        user_id="local",
        timeout=TimeoutPolicy.resolve(TimeoutLimits()).as_dict(),
        **fields,
    )


def test_a_second_live_session_on_a_scope_key_is_refused_and_the_first_survives(
    runtime: Runtime,
) -> None:
    first = runtime.create(scope="main")
    # Both backends name the constraint in the same words (callers tell the
    # clashes apart by them) and never quote the clashing values.
    with pytest.raises(IntegrityError, match=r"session_index\.scope_key") as raised:
        runtime.app.save(stray_session(runtime, "stray", scope_key=first["scope_key"]))
    assert first["scope_key"] not in str(raised.value)
    assert runtime.views.session_row(first["id"]) is not None
    assert runtime.views.session_row("stray") is None
    assert runtime.views.find_by_scope(first["scope_key"]) == first["id"]
    assert runtime.views.session_ids() == [first["id"]]


def test_a_second_live_session_with_a_users_name_is_refused_and_the_first_survives(
    runtime: Runtime,
) -> None:
    first = runtime.create(name="Plans")
    with pytest.raises(IntegrityError, match=r"session_index\.name_key") as raised:
        runtime.app.save(stray_session(runtime, "stray", name="PLANS"))
    assert "plans" not in str(raised.value).lower()
    assert runtime.get(first["id"])["name"] == "Plans"
    assert runtime.list()["total"] == 1
