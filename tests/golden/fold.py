"""Replaying a golden log: its stored events, through the mapper of today's
code, folded into a session; the state's canonical digest."""

from __future__ import annotations

import functools
import hashlib
import inspect
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from eventsourcing.persistence import StoredEvent

from aggregates.session import Session
from projections.codec import ALIAS_OF, encode_state
from runtime import Runtime, Settings
from runtime.mapper import SessionMapper

GOLDEN = Path(__file__).parent


@functools.cache
def mapper() -> SessionMapper:
    """Today's mapper, as the application builds it (from a runtime on a
    scratch file, closed at once: the mapper needs no store)."""
    with tempfile.TemporaryDirectory() as scratch:
        runtime = Runtime(Settings(db=str(Path(scratch) / "mapper.db")))
        try:
            found = runtime.app.mapper
        finally:
            runtime.close()
    assert isinstance(found, SessionMapper)
    return found


def read_log(path: Path) -> list[StoredEvent]:
    """A golden log's events, as the store holds them."""
    events = []
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line)
        events.append(
            StoredEvent(
                originator_id=record["id"],
                originator_version=record["offset"],
                topic=record["topic"],
                state=orjson.dumps(record["state"]),
            )
        )
    return events


def fold(events: Sequence[StoredEvent], start: Session | None = None) -> Session:
    """The session the events fold to (from ``start``, e.g. a snapshot)."""
    convert = mapper()
    session: Any = start
    for stored in events:
        session = convert.to_domain_event(stored).mutate(session)
    assert isinstance(session, Session)
    return session


def event_topics() -> set[str]:
    """The stored topic of every event class ``Session`` has (a class without
    a topic alias shows as its name)."""
    classes = [
        cls
        for _, cls in inspect.getmembers(Session, inspect.isclass)
        if issubclass(cls, Session.Event) and cls is not Session.Event
    ]
    return {ALIAS_OF.get(cls, cls.__qualname__) for cls in classes}


def canonical(session: Session) -> bytes:
    """The session's state (as a snapshot records it), keys sorted."""
    state = Session.Snapshot.take(session).state
    return orjson.dumps(orjson.loads(encode_state(state)), option=orjson.OPT_SORT_KEYS)


def digest(session: Session) -> str:
    """SHA-256 of the canonical state."""
    return hashlib.sha256(canonical(session)).hexdigest()
