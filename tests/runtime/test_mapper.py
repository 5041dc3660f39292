"""``SessionMapper``: every session event (and the snapshot) survives the trip to a
stored row and back, rows are compact, and topics are the short aliases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from eventsourcing.persistence import (
    JSONTranscoder,
    MapperDeserialisationError,
    StoredEvent,
)

from aggregates import Session, TimeoutLimits, TimeoutPolicy
from projections.codec import ALIAS_OF, TOPIC_ALIASES
from runtime import Runtime
from runtime.mapper import SessionMapper
from tests.support.database import query

T0 = datetime(2026, 5, 17, 9, 30, 15, 123456, tzinfo=UTC)
LIMITS = TimeoutLimits()
POLICY = TimeoutPolicy.resolve(LIMITS).as_dict()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds, microseconds=7)


def mapper() -> SessionMapper:
    return SessionMapper(transcoder=JSONTranscoder())


def every_event() -> tuple[Session, Session, list[Any]]:
    """A session and a fork whose events cover every event class."""
    session = Session.open(
        session_id="s1",
        timestamp=T0,
        owner_id="o",
        agent_id="echo",
        user_id="u",
        channel_id="c",
        scope_key="o/agent:echo:dm:main",
        name="n",
        metadata={"nested": {"when_at": "not a date"}},
        attributes={"a": [1, 2]},
        timeout=dict(POLICY),
    )
    session.rename(timestamp=at(1), name=None)
    session.set_pinned(timestamp=at(2), pinned=True)
    session.set_pinned(timestamp=at(3), pinned=False)
    session.patch_attributes(timestamp=at(4), patch={"a": None, "b": {"c": 1}})
    session.replace_metadata(timestamp=at(5), metadata={"x": "y"})
    session.append_message(timestamp=at(6), message_id="m1", role="user", content="hi")
    session.append_message(
        timestamp=at(7),
        message_id="m2",
        role="assistant",
        content="hello ☃",
        author_id="echo",
        attachments=[{"kind": "image", "url": "http://x"}],
        metadata={"model": "m"},
        usage={"input_tokens": 1, "output_tokens": 2},
        idempotency_key="key",
        reply_to=7,
    )
    session.save_checkpoint(
        timestamp=at(8), checkpoint_id="c1", name="cp", description="d"
    )
    session.clear_history(timestamp=at(9))
    session.rewind(timestamp=at(10), to_offset=8, head=8, message_count=2)
    session.delete_checkpoint(timestamp=at(11), checkpoint_id="c1")
    session.renew(timestamp=at(12))
    session.change_timeout(
        timestamp=at(13), limits=LIMITS, changes={"timeout_minutes": 45}
    )
    session.set_reset_policy(timestamp=at(14), policy={"idle_minutes": 60})
    session.rescope(timestamp=at(14), scope_key="o/agent:echo:dm:peer:u")
    session.set_webhook(
        timestamp=at(15),
        url="https://hooks.example/x",
        headers={"X-Key": "k"},
        events=None,
    )
    summary = session.record_summary(
        timestamp=at(15),
        from_offset=7,
        to_offset=8,
        text="a summary ☃",
        counter="heuristic",
        tokens=4,
        model="m",
        usage={"input_tokens": 3, "output_tokens": 1},
    )
    session.drop_summary(timestamp=at(15), summary_offset=summary)
    session.rescope(timestamp=at(15), scope_key="local/agent:echo:dm:main")
    fork = session.fork(
        session_id="f1", timestamp=at(16), offset=8, head=8, message_count=2
    )
    # Far past every deadline: first the warning, then the expiry.
    turn = session.append_message(
        timestamp=at(16), message_id="m4", role="user", content="go", opens_turn=True
    )
    session.end_turn(timestamp=at(16), turn_offset=turn, status="completed")
    session.act_on_deadlines(timestamp=at(10**6))
    session.end(timestamp=at(10**6 + 1), reason="deleted")
    events = [*session.pending_events, *fork.pending_events]
    return session, fork, events


def test_every_event_class_has_a_short_alias() -> None:
    _, _, events = every_event()
    classes = {type(e) for e in events}
    assert classes | {Session.Snapshot} == set(TOPIC_ALIASES.values())
    assert all(alias.startswith("s.") for alias in TOPIC_ALIASES)


def test_every_event_round_trips_through_a_stored_row() -> None:
    the_mapper = mapper()
    _, _, events = every_event()
    for event in events:
        stored = the_mapper.to_stored_event(event)
        assert stored.topic == ALIAS_OF[type(event)]
        assert stored.originator_id == event.originator_id
        assert stored.originator_version == event.originator_version

        restored = the_mapper.to_domain_event(stored)

        assert type(restored) is type(event)
        assert restored == event
        assert restored.timestamp == event.timestamp
        assert restored.timestamp.tzinfo is not None


def test_datetimes_keep_microseconds_and_nested_strings_stay_strings() -> None:
    the_mapper = mapper()
    _, _, events = every_event()
    renewed = next(e for e in events if isinstance(e, Session.Renewed))
    restored = the_mapper.to_domain_event(the_mapper.to_stored_event(renewed))
    assert restored.expires_at == renewed.expires_at
    assert isinstance(restored.expires_at, datetime)
    assert restored.timestamp.microsecond == at(12).microsecond

    opened = events[0]
    restored_opened = the_mapper.to_domain_event(the_mapper.to_stored_event(opened))
    assert restored_opened.metadata == {"nested": {"when_at": "not a date"}}


def test_none_valued_fields_are_left_out_of_storage() -> None:
    the_mapper = mapper()
    _, _, events = every_event()
    plain = next(e for e in events if isinstance(e, Session.MessageAppended))
    assert plain.author_id is None
    stored = orjson.loads(the_mapper.to_stored_event(plain).state)
    for absent in (
        "author_id",
        "attachments",
        "metadata",
        "usage",
        "idempotency_key",
        "reply_to",
    ):
        assert absent not in stored
    assert stored["content"] == "hi"
    assert "originator_id" not in stored
    assert "originator_version" not in stored

    renamed = next(e for e in events if isinstance(e, Session.Renamed))
    assert "name" not in orjson.loads(the_mapper.to_stored_event(renamed).state)
    assert the_mapper.to_domain_event(the_mapper.to_stored_event(renamed)).name is None


def test_aggregate_topics_are_stored_as_their_alias() -> None:
    the_mapper = mapper()
    _, fork, _ = every_event()
    opened = orjson.loads(the_mapper.to_stored_event(fork.pending_events[0]).state)
    assert opened["originator_topic"] == "s"
    assert opened["parent"] == {"session_id": "s1", "offset": 8}
    restored = the_mapper.to_domain_event(
        the_mapper.to_stored_event(fork.pending_events[0])
    )
    assert restored.originator_topic == "aggregates.session:Session"
    assert restored.mutate(None) == fork.pending_events[0].mutate(None)


def test_a_snapshot_round_trips_and_rebuilds_an_equal_session() -> None:
    the_mapper = mapper()
    session, _, _ = every_event()
    session.collect_events()
    snapshot = Session.Snapshot.take(session)
    stored = the_mapper.to_stored_event(snapshot)
    assert stored.topic == "s.snap"
    assert orjson.loads(stored.state)["topic"] == "s"

    restored = the_mapper.to_domain_event(stored)

    assert restored == snapshot
    rebuilt = restored.mutate(None)
    assert rebuilt == session
    assert isinstance(rebuilt.created_at, datetime)
    assert isinstance(rebuilt.expires_at, datetime)
    # Not named *_at, but a datetime all the same: the deadline that was warned for.
    assert isinstance(rebuilt.warned_for, datetime)
    assert rebuilt.next_deadline() == session.next_deadline()


def test_an_unreadable_row_is_a_deserialisation_error_naming_the_event() -> None:
    stored = StoredEvent(
        originator_id="s1", originator_version=3, topic="s.msg", state=b"{nope"
    )
    with pytest.raises(MapperDeserialisationError, match="s1@3"):
        mapper().to_domain_event(stored)


def test_the_database_holds_only_short_topics(runtime_factory: Any, db: str) -> None:
    runtime: Runtime = runtime_factory(snapshot_interval=3)
    session = runtime.create(name="x")
    for i in range(4):
        runtime.append(session["id"], f"m{i}")
    runtime.checkpoint_save(session["id"], "cp")
    runtime.fork(session["id"])
    runtime.delete(session["id"])
    runtime.close()

    topics = {row[0] for row in query(db, "SELECT topic FROM stored_events")}
    snapshot_topics = {
        row[0] for row in query(db, "SELECT topic FROM stored_snapshots")
    }
    [(first,)] = query(
        db, "SELECT state FROM stored_events WHERE originator_version = 1"
    )
    assert topics == {"s.open", "s.msg", "s.ckpt", "s.end"}
    assert snapshot_topics == {"s.snap"}
    assert orjson.loads(first)["originator_topic"] == "s"
