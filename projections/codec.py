"""How session events are stored: compact JSON with short topics.

The log is the only copy of message content, so its rows are kept small: topics
are short aliases, keys that hold their default (``None``) are left out, and
timestamps are RFC 3339 strings. The history view reads message rows straight
from the log with :func:`decode_state`, without building event objects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from aggregates.session import Session

# Short, stable names for the stored topics. Never change or reuse a value: stored
# rows name their class by it. A new event class gets a new alias.
TOPIC_ALIASES: dict[str, type[Any]] = {
    "s.open": Session.Opened,
    "s.msg": Session.MessageAppended,
    "s.rename": Session.Renamed,
    "s.pin": Session.Pinned,
    "s.unpin": Session.Unpinned,
    "s.attrs": Session.AttributesPatched,
    "s.meta": Session.MetadataReplaced,
    "s.clear": Session.HistoryCleared,
    "s.rewind": Session.Rewound,
    "s.ckpt": Session.CheckpointSaved,
    "s.ckpt_del": Session.CheckpointDeleted,
    "s.end": Session.Ended,
    "s.renew": Session.Renewed,
    "s.timeout": Session.TimeoutChanged,
    "s.warn": Session.ExpiryWarned,
    "s.expire": Session.Expired,
    "s.reset_policy": Session.ResetPolicyChanged,
    "s.webhook": Session.WebhookSet,
    "s.scope": Session.ScopeChanged,
    "s.summary": Session.SummaryRecorded,
    "s.summary_drop": Session.SummaryDropped,
    "s.turn_end": Session.TurnEnded,
    "s.snap": Session.Snapshot,
}
ALIAS_OF: dict[type[Any], str] = {cls: alias for alias, cls in TOPIC_ALIASES.items()}
MESSAGE_TOPIC = ALIAS_OF[Session.MessageAppended]
OPENED_TOPIC = ALIAS_OF[Session.Opened]
TURN_ENDED_TOPIC = ALIAS_OF[Session.TurnEnded]
AGGREGATE_TOPICS: dict[str, type[Any]] = {"s": Session}
AGGREGATE_ALIAS: dict[str, str] = {
    f"{cls.__module__}:{cls.__qualname__}": alias
    for alias, cls in AGGREGATE_TOPICS.items()
}

_DATETIME_KEYS_SUFFIXES = ("_at", "_on")
# Datetime-valued keys whose names do not follow the suffix convention (the
# session's ``warned_for`` is the deadline its expiry warning was given for).
_DATETIME_KEYS = frozenset({"timestamp", "warned_for"})


def _is_datetime_key(key: str) -> bool:
    return key in _DATETIME_KEYS or key.endswith(_DATETIME_KEYS_SUFFIXES)


def encode_state(state: dict[str, Any]) -> bytes:
    """Serialise an event's (or snapshot's) state, leaving out ``None`` values.

    UTC datetimes are written with ``Z`` rather than ``+00:00`` (5 bytes less
    each; ``datetime.fromisoformat`` reads both, so older rows read the same).
    """
    return orjson.dumps(
        {k: v for k, v in state.items() if v is not None}, option=orjson.OPT_UTC_Z
    )


def restore_datetimes(state: dict[str, Any]) -> dict[str, Any]:
    """Turn top-level ``*_at``/``*_on``/``timestamp``/``warned_for`` strings back
    into datetimes."""
    for key, value in state.items():
        if isinstance(value, str) and _is_datetime_key(key):
            state[key] = datetime.fromisoformat(value)
    return state


def decode_state(data: bytes) -> dict[str, Any]:
    """Parse stored state, restoring its datetimes."""
    return restore_datetimes(orjson.loads(data))
