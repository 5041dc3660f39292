"""The ``Session`` aggregate on its own: every command and event, offsets, spans,
rewinds, forks, the idempotency window, error codes, replay and snapshots.

The aggregate never reads the log, so these tests keep a tiny in-memory log of
the collected events and compute, as the runtime's view does, the head and count
of the visible history at an offset.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import reduce
from typing import Any

import pytest

from aggregates import (
    IDEMPOTENCY_WINDOW,
    CheckpointNotFoundError,
    DomainError,
    InvalidRequestError,
    OffsetConflictError,
    OffsetOutOfRangeError,
    RenewalRefusedError,
    Session,
    SessionEndedError,
    TimeoutLimits,
    TimeoutPolicy,
)
from aggregates.errors import SessionExpiredError

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIMITS = TimeoutLimits()
POLICY = TimeoutPolicy.resolve(LIMITS).as_dict()


def at(seconds: float) -> datetime:
    """``seconds`` after the start of the test's day."""
    return T0 + timedelta(seconds=seconds)


class Log:
    """The collected events of every session, as the store would hold them."""

    def __init__(self) -> None:
        self.events: dict[str, list[Any]] = {}

    def commit(self, *sessions: Session) -> None:
        for session in sessions:
            self.events.setdefault(session.id, []).extend(session.collect_events())

    def messages(self, spans: list[Any]) -> list[Session.MessageAppended]:
        """The message events the spans cover, in order."""
        found = []
        for session_id, after, upto in spans:
            for event in self.events.get(session_id, []):
                version = event.originator_version
                if (
                    isinstance(event, Session.MessageAppended)
                    and version > after
                    and (upto is None or version <= upto)
                ):
                    found.append(event)
        return found

    def contents(self, spans: list[Any]) -> list[str]:
        return [event.content for event in self.messages(spans)]

    def last_message(self, spans: list[Any]) -> tuple[int, int]:
        """Offset and position of the last message in the spans, like the view."""
        messages = self.messages(spans)
        if not messages:
            return 0, 0
        return messages[-1].originator_version, messages[-1].position

    def replay(self, session_id: str, upto: int | None = None) -> Session:
        events = [
            e
            for e in self.events[session_id]
            if upto is None or e.originator_version <= upto
        ]
        session = reduce(lambda s, e: e.mutate(s), events, None)
        assert isinstance(session, Session)
        return session


def new_session(session_id: str = "s1", **fields: Any) -> Session:
    fields.setdefault("owner_id", "owner-a")
    fields.setdefault("agent_id", "echo")
    fields.setdefault("user_id", "user-a")
    fields.setdefault("timeout", dict(POLICY))
    return Session.open(session_id=session_id, timestamp=T0, **fields)


def append(session: Session, content: str, seconds: float = 1, **fields: Any) -> int:
    fields.setdefault("role", "user")
    return session.append_message(
        timestamp=at(seconds), message_id=f"m-{content}", content=content, **fields
    )


def rewind(log: Log, session: Session, offset: int, **fields: Any) -> None:
    log.commit(session)
    head, count = log.last_message(session.spans_at(offset))
    session.rewind(
        timestamp=at(50), to_offset=offset, head=head, message_count=count, **fields
    )
    log.commit(session)


def fork(log: Log, session: Session, new_id: str, offset: int | None = None) -> Session:
    log.commit(session)
    offset = session.version if offset is None else offset
    head, count = log.last_message(session.spans_at(offset))
    forked = session.fork(
        session_id=new_id,
        timestamp=at(60),
        offset=offset,
        head=head,
        message_count=count,
        owner_id="owner-b",
    )
    log.commit(forked)
    return forked


def pending_types(session: Session) -> list[str]:
    return [type(e).__name__ for e in session.pending_events]


# --- opening


def test_opening_a_session_records_one_opened_event_at_offset_one() -> None:
    session = new_session(
        channel_id="chan",
        peer_id="peer",
        scope_key="key",
        name="  Plans  ",
        metadata={"m": 1},
        attributes={"a": {"b": 2}},
        concurrency="reject",
    )

    assert pending_types(session) == ["Opened"]
    assert session.version == 1
    assert session.first_offset == 1
    assert session.id == "s1"
    assert (session.owner_id, session.agent_id, session.user_id) == (
        "owner-a",
        "echo",
        "user-a",
    )
    assert (session.channel_id, session.peer_id, session.scope_key) == (
        "chan",
        "peer",
        "key",
    )
    assert session.name == "Plans"
    assert session.metadata == {"m": 1}
    assert session.attributes == {"a": {"b": 2}}
    assert session.concurrency == "reject"
    assert session.status == "active"
    assert session.parent is None
    assert session.created_at == session.updated_at == session.last_activity_at == T0
    assert session.expires_at == T0 + timedelta(minutes=POLICY["timeout_minutes"])
    assert session.message_count == 0
    assert session.head == 0
    assert session.spans == [["s1", 1, None]]
    assert session.usage == {"input_tokens": 0, "output_tokens": 0}
    assert session.checkpoints == {}


def test_opening_copies_the_callers_metadata_and_attributes() -> None:
    metadata = {"m": 1}
    attributes = {"a": 1}
    session = new_session(metadata=metadata, attributes=attributes)

    metadata["m"] = 2
    attributes["a"] = 2

    assert session.metadata == {"m": 1}
    assert session.attributes == {"a": 1}


def test_opening_with_an_overlong_name_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequestError) as raised:
        new_session(name="x" * 201)
    assert raised.value.code == "invalid_request"


# --- rename, pin, attributes, metadata


def test_rename_records_the_trimmed_name_and_a_null_clears_it() -> None:
    session = new_session()
    session.rename(timestamp=at(1), name="  First  ")
    assert session.name == "First"
    assert session.updated_at == at(1)

    session.rename(timestamp=at(2), name=None)
    assert session.name is None

    session.rename(timestamp=at(3), name="Second")
    session.rename(timestamp=at(4), name="   ")
    assert session.name is None
    assert pending_types(session) == [
        "Opened",
        "Renamed",
        "Renamed",
        "Renamed",
        "Renamed",
    ]


def test_renaming_to_the_current_name_records_nothing() -> None:
    session = new_session(name="Same")
    session.rename(timestamp=at(1), name=" Same ")
    session.rename(timestamp=at(1), name="Same")
    assert session.version == 1


def test_pinning_and_unpinning_are_idempotent() -> None:
    session = new_session()
    session.set_pinned(timestamp=at(1), pinned=False)
    assert session.version == 1

    session.set_pinned(timestamp=at(2), pinned=True)
    session.set_pinned(timestamp=at(3), pinned=True)
    assert session.pinned_at == at(2)

    session.set_pinned(timestamp=at(4), pinned=False)
    session.set_pinned(timestamp=at(5), pinned=False)
    assert session.pinned_at is None
    assert pending_types(session) == ["Opened", "Pinned", "Unpinned"]


def test_attribute_patches_deep_merge_and_a_null_deletes_a_key() -> None:
    session = new_session(attributes={"a": {"x": 1, "y": 2}, "b": 1, "c": "keep"})
    session.patch_attributes(
        timestamp=at(1), patch={"a": {"y": None, "z": 3}, "b": None, "d": [1, 2]}
    )
    assert session.attributes == {"a": {"x": 1, "z": 3}, "c": "keep", "d": [1, 2]}

    session.patch_attributes(timestamp=at(2), patch={"a": "flat"})
    assert session.attributes == {"a": "flat", "c": "keep", "d": [1, 2]}
    assert pending_types(session) == [
        "Opened",
        "AttributesPatched",
        "AttributesPatched",
    ]


def test_an_empty_attribute_patch_records_nothing_and_a_non_object_is_refused() -> None:
    session = new_session()
    session.patch_attributes(timestamp=at(1), patch={})
    assert session.version == 1
    with pytest.raises(InvalidRequestError):
        session.patch_attributes(timestamp=at(1), patch=["not", "an", "object"])  # type: ignore[arg-type]
    assert session.version == 1


def test_metadata_is_replaced_not_merged() -> None:
    session = new_session(metadata={"a": 1, "b": 2})
    session.replace_metadata(timestamp=at(1), metadata={"c": 3})
    assert session.metadata == {"c": 3}

    session.replace_metadata(timestamp=at(2), metadata={"c": 3})
    assert pending_types(session) == ["Opened", "MetadataReplaced"]
    with pytest.raises(InvalidRequestError):
        session.replace_metadata(timestamp=at(3), metadata="x")  # type: ignore[arg-type]


# --- messages


def test_appending_messages_advances_offset_position_head_and_usage() -> None:
    session = new_session()
    first = append(session, "hello", 10)
    second = session.append_message(
        timestamp=at(20),
        message_id="reply",
        role="assistant",
        content="hi there",
        usage={"input_tokens": 3, "output_tokens": 5},
        reply_to=first,
    )
    third = session.append_message(
        timestamp=at(30),
        message_id="r2",
        role="assistant",
        content="more",
        usage={"input_tokens": 1, "output_tokens": 2},
    )

    assert (first, second, third) == (2, 3, 4)
    assert session.version == 4
    assert session.head == 4
    assert session.message_count == 3
    assert session.last_message_id == "r2"
    assert session.usage == {"input_tokens": 4, "output_tokens": 7}
    assert session.last_activity_at == at(30)
    # auto_renew moves the deadline with every message.
    assert session.expires_at == at(30) + timedelta(minutes=POLICY["timeout_minutes"])
    events = session.pending_events
    assert [e.position for e in events[1:]] == [1, 2, 3]
    assert events[2].reply_to == 2


@pytest.mark.parametrize("role", ["user", "assistant", "system", "tool"])
def test_every_role_can_append(role: str) -> None:
    session = new_session()
    append(session, "x", role=role)
    assert session.pending_events[-1].role == role


def test_an_unknown_role_is_refused_and_records_nothing() -> None:
    session = new_session()
    with pytest.raises(InvalidRequestError) as raised:
        append(session, "x", role="wizard")
    assert raised.value.code == "invalid_request"
    assert session.version == 1
    assert session.message_count == 0


def test_non_text_content_is_refused() -> None:
    session = new_session()
    with pytest.raises(InvalidRequestError):
        session.append_message(
            timestamp=at(1),
            message_id="m",
            role="user",
            content=42,  # type: ignore[arg-type]
        )
    assert session.version == 1


def test_empty_attachments_metadata_and_usage_are_stored_as_absent() -> None:
    session = new_session()
    append(session, "x", attachments=[], metadata={}, usage={})
    event = session.pending_events[-1]
    assert (event.attachments, event.metadata, event.usage) == (None, None, None)


def test_without_auto_renew_messages_do_not_move_the_deadline() -> None:
    session = new_session(timeout={**POLICY, "auto_renew": False})
    deadline = session.expires_at
    append(session, "x", 600)
    assert session.expires_at == deadline


# --- clear


def test_clearing_empties_the_visible_history_but_keeps_the_log() -> None:
    log = Log()
    session = new_session()
    append(session, "a")
    append(session, "b")
    session.clear_history(timestamp=at(5))
    log.commit(session)

    assert session.message_count == 0
    assert session.head == 0
    assert session.spans == [["s1", 4, None]]
    assert log.contents(session.spans) == []
    assert log.contents([["s1", 0, None]]) == ["a", "b"]

    append(session, "c")
    log.commit(session)
    assert session.pending_events == []
    assert log.messages(session.spans)[-1].position == 1
    assert log.contents(session.spans) == ["c"]
    assert log.contents(session.spans_at(3)) == ["a", "b"]
    assert log.contents(session.spans_at(4)) == []


# --- rewind


def test_rewinding_shows_the_history_as_of_the_offset_and_keeps_later_messages() -> (
    None
):
    log = Log()
    session = new_session()
    for content in "abcd":
        append(session, content)  # offsets 2..5
    rewind(log, session, 3)

    assert session.version == 6
    assert session.message_count == 2
    assert session.head == 3
    assert log.contents(session.spans) == ["a", "b"]
    rewound = log.events["s1"][-1]
    assert isinstance(rewound, Session.Rewound)
    assert (rewound.to_offset, rewound.head, rewound.message_count) == (3, 3, 2)
    assert rewound.checkpoint_id is None

    append(session, "e")  # offset 7
    log.commit(session)
    assert log.contents(session.spans) == ["a", "b", "e"]
    assert log.messages(session.spans)[-1].position == 3
    # The abandoned messages stay in the log.
    assert log.contents([["s1", 0, None]]) == ["a", "b", "c", "d", "e"]


def test_rewind_into_an_abandoned_branch_shows_that_branch() -> None:
    log = Log()
    session = new_session()
    for content in "abc":
        append(session, content)  # 2, 3, 4
    rewind(log, session, 2)  # 5: [a]
    append(session, "x")  # 6: [a, x]
    rewind(log, session, 4)  # 7: back to [a, b, c]

    assert log.contents(session.spans) == ["a", "b", "c"]
    assert (session.head, session.message_count) == (4, 3)
    append(session, "y")
    log.commit(session)
    assert log.contents(session.spans) == ["a", "b", "c", "y"]
    # Every earlier point of the session's life is still addressable.
    assert log.contents(session.spans_at(6)) == ["a", "x"]
    assert log.contents(session.spans_at(5)) == ["a"]
    assert log.contents(session.spans_at(3)) == ["a", "b"]


def test_rewind_to_the_rewind_event_itself_shows_the_rewound_history() -> None:
    log = Log()
    session = new_session()
    for content in "abc":
        append(session, content)
    rewind(log, session, 3)  # offset 5
    append(session, "z")
    rewind(log, session, 5)
    assert log.contents(session.spans) == ["a", "b"]


def test_rewind_to_an_offset_outside_the_sessions_life_is_out_of_range() -> None:
    log = Log()
    session = new_session()
    append(session, "a")
    log.commit(session)
    for offset in (0, -1, session.version + 1):
        with pytest.raises(OffsetOutOfRangeError) as raised:
            session.spans_at(offset)
        assert raised.value.code == "offset_out_of_range"
        with pytest.raises(OffsetOutOfRangeError):
            session.rewind(timestamp=at(9), to_offset=offset, head=0, message_count=0)
    assert session.version == 2


# --- checkpoints


def test_a_checkpoint_names_the_current_offset_and_copies_nothing() -> None:
    session = new_session()
    append(session, "a")
    append(session, "b")
    checkpoint = session.save_checkpoint(
        timestamp=at(7), checkpoint_id="c1", name="  before  ", description="why"
    )
    assert checkpoint == {
        "id": "c1",
        "name": "before",
        "description": "why",
        "offset": 3,
        "head": 3,
        "message_count": 2,
        "created_at": at(7).isoformat(),
    }
    assert session.version == 4
    assert session.checkpoint("c1") == checkpoint


def test_a_checkpoint_needs_a_name_and_a_text_description() -> None:
    session = new_session()
    with pytest.raises(InvalidRequestError):
        session.save_checkpoint(timestamp=at(1), checkpoint_id="c", name="  ")
    with pytest.raises(InvalidRequestError):
        session.save_checkpoint(
            timestamp=at(1),
            checkpoint_id="c",
            name="n",
            description=5,  # type: ignore[arg-type]
        )
    assert session.version == 1


def test_restoring_a_checkpoint_rewinds_to_it_and_records_which() -> None:
    log = Log()
    session = new_session()
    append(session, "a")
    session.save_checkpoint(timestamp=at(2), checkpoint_id="c1", name="one")
    append(session, "b")
    append(session, "c")
    session.restore_checkpoint(timestamp=at(9), checkpoint_id="c1")
    log.commit(session)

    assert log.contents(session.spans) == ["a"]
    assert (session.head, session.message_count) == (2, 1)
    rewound = log.events["s1"][-1]
    assert isinstance(rewound, Session.Rewound)
    assert (rewound.checkpoint_id, rewound.to_offset) == ("c1", 2)


def test_deleting_a_checkpoint_removes_it_and_unknown_ones_are_not_found() -> None:
    session = new_session()
    session.save_checkpoint(timestamp=at(1), checkpoint_id="c1", name="one")
    session.delete_checkpoint(timestamp=at(2), checkpoint_id="c1")
    assert session.checkpoints == {}
    version = session.version
    for attempt in (
        lambda: session.delete_checkpoint(timestamp=at(3), checkpoint_id="c1"),
        lambda: session.restore_checkpoint(timestamp=at(3), checkpoint_id="c1"),
        lambda: session.checkpoint("nope"),
    ):
        with pytest.raises(CheckpointNotFoundError) as raised:
            attempt()
        assert raised.value.code == "checkpoint_not_found"
    assert session.version == version


# --- forks


def test_a_fork_at_head_starts_after_the_parents_offset_and_inherits_its_history() -> (
    None
):
    log = Log()
    parent = new_session(
        name="P", scope_key="scope", metadata={"m": 1}, attributes={"a": 1}
    )
    append(parent, "a")
    append(parent, "b")  # offset 3
    child = fork(log, parent, "child")

    assert child.version == 4
    assert child.first_offset == 4
    assert child.parent == {"session_id": "s1", "offset": 3}
    assert child.owner_id == "owner-b"
    assert (child.agent_id, child.user_id) == ("echo", "user-a")
    assert child.name is None
    assert child.scope_key is None
    assert child.metadata == {"m": 1}
    assert child.attributes == {"a": 1}
    assert (child.head, child.message_count) == (3, 2)
    assert child.spans == [["s1", 1, 3], ["child", 4, None]]
    assert log.contents(child.spans) == ["a", "b"]

    append(child, "c")  # offset 5 of the child
    append(parent, "p")  # offset 4 of the parent: not in the child
    log.commit(child, parent)
    assert log.contents(child.spans) == ["a", "b", "c"]
    assert log.messages(child.spans)[-1].position == 3
    assert [m.originator_version for m in log.messages(child.spans)] == [2, 3, 5]
    assert log.contents(parent.spans) == ["a", "b", "p"]


def test_a_fork_at_an_older_offset_sees_only_what_was_visible_then() -> None:
    log = Log()
    parent = new_session()
    for content in "abcd":
        append(parent, content)  # 2..5
    child = fork(log, parent, "child", offset=3)

    assert child.version == 4
    assert child.parent == {"session_id": "s1", "offset": 3}
    assert (child.head, child.message_count) == (3, 2)
    assert log.contents(child.spans) == ["a", "b"]


def test_a_fork_after_a_parent_rewind_inherits_the_rewound_history() -> None:
    log = Log()
    parent = new_session()
    for content in "abc":
        append(parent, content)  # 2, 3, 4
    rewind(log, parent, 2)  # 5: [a]
    append(parent, "d")  # 6
    child = fork(log, parent, "child")
    assert log.contents(child.spans) == ["a", "d"]
    assert child.message_count == 2


def test_rewind_inside_a_fork_into_the_inherited_part() -> None:
    log = Log()
    parent = new_session()
    for content in "abc":
        append(parent, content)  # 2, 3, 4
    child = fork(log, parent, "child")  # opens at 5
    append(child, "x")  # 6
    append(child, "y")  # 7
    rewind(log, child, 3)  # 8

    assert log.contents(child.spans) == ["a", "b"]
    assert (child.head, child.message_count) == (3, 2)
    assert child.spans == [["s1", 1, 3], ["child", 8, None]]
    append(child, "z")
    log.commit(child)
    assert log.contents(child.spans) == ["a", "b", "z"]
    offsets = [m.originator_version for m in log.messages(child.spans)]
    assert offsets == sorted(set(offsets))


def test_a_fork_sees_every_inherited_offset_as_its_parent_saw_it() -> None:
    log = Log()
    parent = new_session()
    for content in "abc":
        append(parent, content)  # 2, 3, 4
    rewind(log, parent, 2)  # 5: [a]
    append(parent, "d")  # 6: [a, d]
    parent.clear_history(timestamp=at(7))  # 7: []
    append(parent, "e")  # 8: [e]
    child = fork(log, parent, "child")  # opens at 9
    append(child, "x")
    log.commit(child)

    for offset in range(1, 9):
        assert log.contents(child.spans_at(offset)) == log.contents(
            parent.spans_at(offset)
        ), offset


def test_rewinding_a_fork_into_an_inherited_point_the_parent_later_rewound() -> None:
    log = Log()
    parent = new_session()
    for content in "abc":
        append(parent, content)  # 2, 3, 4
    rewind(log, parent, 2)  # 5: [a]
    append(parent, "d")  # 6: [a, d]
    child = fork(log, parent, "child")  # opens at 7
    append(child, "x")  # 8
    rewind(log, child, 4)  # the parent showed [a, b, c] at offset 4

    assert log.contents(child.spans) == ["a", "b", "c"]
    assert (child.head, child.message_count) == (4, 3)
    append(child, "y")
    log.commit(child)
    assert log.contents(child.spans) == ["a", "b", "c", "y"]
    assert log.messages(child.spans)[-1].position == 4
    grandchild = fork(log, child, "grandchild", offset=3)
    assert log.contents(grandchild.spans) == ["a", "b"]


def test_a_fork_of_a_fork_reaches_back_to_the_grandparent() -> None:
    log = Log()
    grandparent = new_session("g")
    append(grandparent, "a")  # 2
    append(grandparent, "b")  # 3
    parent = fork(log, grandparent, "p")  # 4
    append(parent, "c")  # 5
    child = fork(log, parent, "c", offset=5)  # 6
    append(child, "d")  # 7
    log.commit(child)

    assert child.first_offset == 6
    assert log.contents(child.spans) == ["a", "b", "c", "d"]
    assert child.spans == [["g", 1, 3], ["p", 4, 5], ["c", 6, None]]
    # Into the grandparent's part, through two forks.
    assert log.contents(child.spans_at(2)) == ["a"]
    younger = fork(log, parent, "y", offset=2)
    assert younger.first_offset == 3
    assert log.contents(younger.spans) == ["a"]


def test_forking_at_an_offset_outside_the_parents_life_is_out_of_range() -> None:
    parent = new_session()
    for offset in (0, 2):
        with pytest.raises(OffsetOutOfRangeError):
            parent.fork(
                session_id="f", timestamp=at(1), offset=offset, head=0, message_count=0
            )


# --- lifecycle


def test_renewal_moves_the_deadline_and_is_refused_past_the_maximum_duration() -> None:
    session = new_session(timeout={**POLICY, "auto_renew": False})
    session.renew(timestamp=at(600))
    assert session.expires_at == at(600) + timedelta(minutes=POLICY["timeout_minutes"])
    assert session.renewal_count == 1
    assert session.last_activity_at == at(600)

    late = T0 + timedelta(minutes=POLICY["max_duration_minutes"])
    with pytest.raises(RenewalRefusedError) as raised:
        session.renew(timestamp=late)
    assert raised.value.code == "renewal_refused"
    assert session.renewal_count == 1


def test_a_heartbeat_renews_only_when_the_policy_auto_renews() -> None:
    manual = new_session("manual", timeout={**POLICY, "auto_renew": False})
    assert manual.heartbeat(timestamp=at(60)) is False
    assert manual.version == 1

    auto = new_session("auto")
    assert auto.heartbeat(timestamp=at(60)) is True
    renewed = auto.pending_events[-1]
    assert isinstance(renewed, Session.Renewed)
    assert renewed.reason == "heartbeat"


def test_changing_the_timeout_records_only_real_changes_and_refuses_out_of_range() -> (
    None
):
    session = new_session()
    session.change_timeout(
        timestamp=at(1), limits=LIMITS, changes={"timeout_minutes": 60}
    )
    assert session.timeout["timeout_minutes"] == 60
    assert session.expires_at == T0 + timedelta(minutes=60)
    session.change_timeout(
        timestamp=at(2), limits=LIMITS, changes={"timeout_minutes": 60}
    )
    assert pending_types(session) == ["Opened", "TimeoutChanged"]
    with pytest.raises(InvalidRequestError):
        session.change_timeout(
            timestamp=at(3), limits=LIMITS, changes={"timeout_minutes": 1}
        )
    with pytest.raises(InvalidRequestError):
        session.change_timeout(timestamp=at(3), limits=LIMITS, changes={"bogus": 1})


def test_ending_a_session_is_recorded_once() -> None:
    session = new_session()
    session.end(timestamp=at(5), reason="deleted")
    session.end(timestamp=at(6), reason="again")
    assert session.status == "ended"
    assert session.ended_reason == "deleted"
    assert pending_types(session) == ["Opened", "Ended"]


def test_every_write_after_the_end_raises_session_ended() -> None:
    session = new_session()
    session.save_checkpoint(timestamp=at(1), checkpoint_id="c1", name="one")
    session.end(timestamp=at(2))
    version = session.version
    writes = [
        lambda: append(session, "x"),
        lambda: session.rename(timestamp=at(3), name="n"),
        lambda: session.set_pinned(timestamp=at(3), pinned=True),
        lambda: session.patch_attributes(timestamp=at(3), patch={"a": 1}),
        lambda: session.replace_metadata(timestamp=at(3), metadata={"a": 1}),
        lambda: session.clear_history(timestamp=at(3)),
        lambda: session.rewind(timestamp=at(3), to_offset=1, head=0, message_count=0),
        lambda: session.restore_checkpoint(timestamp=at(3), checkpoint_id="c1"),
        lambda: session.save_checkpoint(
            timestamp=at(3), checkpoint_id="c2", name="two"
        ),
        lambda: session.delete_checkpoint(timestamp=at(3), checkpoint_id="c1"),
        lambda: session.renew(timestamp=at(3)),
        lambda: session.heartbeat(timestamp=at(3)),
        lambda: session.change_timeout(
            timestamp=at(3), limits=LIMITS, changes={"timeout_minutes": 60}
        ),
        lambda: session.set_reset_policy(timestamp=at(3), policy={"idle_minutes": 5}),
        lambda: session.rescope(timestamp=at(3), scope_key="elsewhere"),
        lambda: session.set_webhook(timestamp=at(3), url="https://example.invalid/h"),
    ]
    for write in writes:
        with pytest.raises(SessionEndedError) as raised:
            write()
        assert raised.value.code == "session_ended"
    assert session.version == version


def test_a_session_past_its_deadline_is_warned_then_expired_and_refuses_writes() -> (
    None
):
    session = new_session()
    append(session, "a", 0)
    expires_at = session.expires_at
    session.act_on_deadlines(timestamp=expires_at + timedelta(seconds=1))
    assert pending_types(session)[-2:] == ["ExpiryWarned", "Expired"]
    assert session.status == "expired"
    version = session.version
    with pytest.raises(SessionExpiredError) as raised:
        append(session, "b")
    assert raised.value.code == "session_expired"
    assert raised.value.expires_at == expires_at
    assert session.version == version
    # Ending an expired session is still possible (delete works on it).
    session.end(timestamp=expires_at + timedelta(minutes=1))
    assert session.status == "ended"


# --- expected offsets


def test_a_write_expecting_another_offset_is_a_conflict_carrying_the_current_one() -> (
    None
):
    session = new_session()
    append(session, "a")
    session.save_checkpoint(timestamp=at(1), checkpoint_id="c1", name="one")
    writes = [
        lambda expected: append(session, "x", expected_offset=expected),
        lambda expected: session.clear_history(
            timestamp=at(3), expected_offset=expected
        ),
        lambda expected: session.rewind(
            timestamp=at(3),
            to_offset=2,
            head=2,
            message_count=1,
            expected_offset=expected,
        ),
        lambda expected: session.restore_checkpoint(
            timestamp=at(3), checkpoint_id="c1", expected_offset=expected
        ),
    ]
    for write in writes:
        version = session.version
        with pytest.raises(OffsetConflictError) as raised:
            write(version - 1)
        assert raised.value.code == "conflict"
        assert raised.value.current_offset == version
        assert raised.value.expected_offset == version - 1
        assert session.version == version
        write(version)
        assert session.version == version + 1


# --- idempotency


def test_idempotency_keys_are_remembered_for_a_window_of_the_latest_keys() -> None:
    session = new_session()
    assert session.seen_idempotency_key(None) is None
    offsets = [
        append(session, f"m{i}", idempotency_key=f"k{i}")
        for i in range(IDEMPOTENCY_WINDOW + 1)
    ]
    assert len(session.idempotency) == IDEMPOTENCY_WINDOW
    assert session.seen_idempotency_key("k0") is None
    assert session.seen_idempotency_key("k1") == offsets[1]
    last = f"k{IDEMPOTENCY_WINDOW}"
    assert session.seen_idempotency_key(last) == offsets[-1]
    # Unkeyed messages do not push keys out of the window.
    append(session, "plain")
    assert session.seen_idempotency_key("k1") == offsets[1]


# --- error codes


def test_domain_error_codes_are_stable() -> None:
    codes = {
        InvalidRequestError: "invalid_request",
        SessionEndedError: "session_ended",
        OffsetConflictError: "conflict",
        CheckpointNotFoundError: "checkpoint_not_found",
        OffsetOutOfRangeError: "offset_out_of_range",
        RenewalRefusedError: "renewal_refused",
        SessionExpiredError: "session_expired",
    }
    for cls, code in codes.items():
        assert issubclass(cls, DomainError)
        assert cls.code == code
    assert OffsetConflictError(3, 4).detail == "expected offset 3, the session is at 4"


# --- replay and snapshots


def busy_session(log: Log) -> Session:
    """A session that has been through every kind of event."""
    session = new_session(name="busy", metadata={"k": "v"}, attributes={"a": {"b": 1}})
    session.rename(timestamp=at(1), name="renamed")
    session.set_pinned(timestamp=at(2), pinned=True)
    session.patch_attributes(timestamp=at(3), patch={"a": {"c": 2}})
    session.replace_metadata(timestamp=at(4), metadata={"new": True})
    append(session, "one", 5, idempotency_key="k1")
    session.append_message(
        timestamp=at(6),
        message_id="r1",
        role="assistant",
        content="two",
        usage={"input_tokens": 2, "output_tokens": 3},
        attachments=[{"kind": "file"}],
        metadata={"model": "echo"},
        reply_to=6,
    )
    session.save_checkpoint(timestamp=at(7), checkpoint_id="c1", name="cp")
    append(session, "three", 8)
    session.clear_history(timestamp=at(9))
    append(session, "four", 10)
    log.commit(session)
    rewind(log, session, 10)
    session.restore_checkpoint(timestamp=at(11), checkpoint_id="c1")
    session.delete_checkpoint(timestamp=at(12), checkpoint_id="c1")
    session.renew(timestamp=at(13))
    session.change_timeout(
        timestamp=at(14), limits=LIMITS, changes={"timeout_minutes": 90}
    )
    session.set_pinned(timestamp=at(15), pinned=False)
    session.end(timestamp=at(16), reason="done")
    log.commit(session)
    return session


def test_replaying_the_collected_events_rebuilds_an_equal_aggregate() -> None:
    log = Log()
    session = busy_session(log)
    names = {type(e).__name__ for e in log.events["s1"]}
    assert names == {
        "Opened", "Renamed", "Pinned", "Unpinned", "AttributesPatched",
        "MetadataReplaced", "MessageAppended", "CheckpointSaved", "CheckpointDeleted",
        "HistoryCleared", "Rewound", "Renewed", "TimeoutChanged", "Ended",
    }  # fmt: skip

    replayed = log.replay("s1")

    assert replayed == session
    assert replayed.version == session.version
    assert replayed.spans == session.spans


def test_replaying_a_prefix_gives_the_state_at_that_offset() -> None:
    log = Log()
    session = busy_session(log)
    at_seven = log.replay("s1", upto=7)
    assert at_seven.version == 7
    assert at_seven.message_count == 2
    assert at_seven.status == "active"
    assert at_seven.name == "renamed"
    assert session.status == "ended"


def test_a_fork_replays_from_its_own_events() -> None:
    log = Log()
    parent = new_session()
    append(parent, "a")
    child = fork(log, parent, "child")
    append(child, "b")
    log.commit(child)
    assert log.replay("child") == child
    assert log.replay("child").first_offset == 3


def test_a_snapshot_taken_and_mutated_back_equals_the_aggregate() -> None:
    log = Log()
    session = busy_session(log)
    snapshot = Session.Snapshot.take(session)
    assert snapshot.originator_id == "s1"
    assert snapshot.originator_version == session.version
    assert not {"_id", "_version", "_pending_events"} & set(snapshot.state)

    restored = snapshot.mutate(None)

    assert restored == session
    assert restored.id == "s1"
    assert restored.version == session.version
    assert restored.pending_events == []


def test_a_snapshot_plus_the_later_events_equals_a_full_replay() -> None:
    log = Log()
    session = new_session()
    append(session, "a")
    append(session, "b")
    log.commit(session)
    snapshot = Session.Snapshot.take(session)
    restored = snapshot.mutate(None)
    # The snapshot must not be affected by later changes to the live aggregate.
    append(session, "c", usage={"input_tokens": 1, "output_tokens": 1})
    session.save_checkpoint(timestamp=at(4), checkpoint_id="c", name="c")
    session.clear_history(timestamp=at(5))
    log.commit(session)

    tail = [
        e
        for e in log.events["s1"]
        if e.originator_version > snapshot.originator_version
    ]
    rebuilt = reduce(lambda s, e: e.mutate(s), tail, restored)

    assert rebuilt == log.replay("s1") == session
