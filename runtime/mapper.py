"""``SessionMapper``: turns session events into compact stored rows and back."""

from __future__ import annotations

import dataclasses
from typing import Any

from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

from aggregates.session import Session
from projections.codec import (
    AGGREGATE_ALIAS,
    AGGREGATE_TOPICS,
    ALIAS_OF,
    TOPIC_ALIASES,
    decode_state,
    encode_state,
    restore_datetimes,
)

_TOPIC_FIELDS = ("originator_topic", "topic")


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _aggregate_topic(alias: str) -> str:
    cls = AGGREGATE_TOPICS.get(alias)
    return alias if cls is None else f"{cls.__module__}:{cls.__qualname__}"


class SessionMapper(Mapper[str]):
    """Maps events with short topic aliases and compact JSON (see
    :mod:`projections.codec`); the optional cipher and compressor of
    eventsourcing still apply on top."""

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        """Serialise one domain event."""
        cls = type(domain_event)
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        for key in _TOPIC_FIELDS:
            if isinstance(state.get(key), str):
                state[key] = AGGREGATE_ALIAS.get(state[key], state[key])
        class_version = getattr(cls, "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        data = encode_state(state)
        if self.compressor:
            data = self.compressor.compress(data)
        if self.cipher:
            data = self.cipher.encrypt(data)
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=ALIAS_OF.get(cls) or get_topic(cls),
            state=data,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        """Deserialise one stored event."""
        cls: type[Any] = TOPIC_ALIASES.get(stored_event.topic) or resolve_topic(
            stored_event.topic
        )
        data = stored_event.state
        try:
            if self.cipher:
                data = self.cipher.decrypt(data)
            if self.compressor:
                data = self.compressor.decompress(data)
            state = decode_state(data)
        except Exception as error:
            msg = (
                f"cannot read event {stored_event.originator_id}"
                f"@{stored_event.originator_version}: {type(error).__name__}"
            )
            raise MapperDeserialisationError(msg) from error
        for key in _TOPIC_FIELDS:
            if isinstance(state.get(key), str):
                state[key] = _aggregate_topic(state[key])
        if cls is Session.Snapshot:
            # The aggregate's own datetimes sit one level down.
            state["state"] = restore_datetimes(state["state"])
        for name in _field_names(cls):
            state.setdefault(name, None)
        state["originator_id"] = stored_event.originator_id
        state["originator_version"] = stored_event.originator_version
        class_version = getattr(cls, "class_version", 1)
        from_version = state.pop("class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
            from_version += 1
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return event
