"""The JSON documents sessions, messages and events are shown as.

Pure functions of aggregate state and stored event state, shared by the views (which
store a session's document with its index row) and by every read path, so that the
in-process API, the HTTP API and the dialects show one shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from aggregates.session import Session
from projections.codec import TOPIC_ALIASES


def format_time(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with milliseconds, e.g. ``2026-11-21T16:20:00.123Z``."""
    if moment is None:
        return None
    text = moment.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def session_document(session: Session) -> dict[str, Any]:
    """The ``Session`` resource of the native API."""
    return {
        "id": session.id,
        "agent_id": session.agent_id,
        "user_id": session.user_id,
        "channel_id": session.channel_id,
        "peer_id": session.peer_id,
        "scope_key": session.scope_key,
        "name": session.name,
        "pinned_at": format_time(session.pinned_at),
        "metadata": session.metadata,
        "attributes": session.attributes,
        "status": session.status,
        "offset": session.version,
        "head": session.head,
        "message_count": session.message_count,
        "created_at": format_time(session.created_at),
        "updated_at": format_time(session.updated_at),
        "last_activity_at": format_time(session.last_activity_at),
        "expires_at": format_time(session.expires_at),
        "renewal_count": session.renewal_count,
        "timeout": session.timeout,
        "concurrency": session.concurrency,
        "reset_policy": dict(session.reset_policy),
        "webhook": None
        if session.webhook is None
        else {
            "url": session.webhook["url"],
            "events": session.webhook["events"],
            "headers": {name: "***" for name in session.webhook["headers"]},
        },
        "parent": session.parent,
        "usage": dict(session.usage),
    }


def stored_session_document(session: Session) -> dict[str, Any]:
    """:func:`session_document` as the index stores it: plain JSON that shares
    nothing with the aggregate (for a write to hand back without a read)."""
    document: dict[str, Any] = orjson.loads(orjson.dumps(session_document(session)))
    return document


def stored_time(text: str) -> str:
    """:func:`format_time` of a timestamp as the codec stores it (RFC 3339 text),
    without parsing it in the usual case (UTC, with microseconds; written with
    ``Z``, or ``+00:00`` by earlier versions)."""
    if text[19:20] == "." and (
        (len(text) == 27 and text[26] == "Z")
        or (len(text) == 32 and text.endswith("+00:00"))
    ):
        return text[:23] + "Z"
    formatted = format_time(datetime.fromisoformat(text))
    assert formatted is not None
    return formatted


def message_document(
    session_id: str, offset: int, state: dict[str, Any]
) -> dict[str, Any]:
    """The ``Message`` resource, from a stored ``MessageAppended`` state (its
    ``timestamp`` either a datetime or the stored text: reading history skips
    parsing it)."""
    usage = state.get("usage")
    timestamp = state["timestamp"]
    return {
        "id": state["message_id"],
        "session_id": session_id,
        "offset": offset,
        "role": state["role"],
        "author_id": state.get("author_id"),
        "content": state["content"],
        "attachments": state.get("attachments") or [],
        "metadata": state.get("metadata") or {},
        "reply_to": state.get("reply_to"),
        "usage": {
            "input_tokens": int(usage.get("input_tokens", 0)),
            "output_tokens": int(usage.get("output_tokens", 0)),
        }
        if usage
        else None,
        "created_at": stored_time(timestamp)
        if isinstance(timestamp, str)
        else format_time(timestamp),
    }


def summary_message(
    session_id: str,
    offset: int,
    state: dict[str, Any],
) -> dict[str, Any]:
    """A context summary as the ``Message`` an agent is handed: ``role: system``
    with ``metadata.summary = {"from_offset", "to_offset"}``, from a stored
    ``SummaryRecorded`` state (or its event document's ``data``). ``offset`` is
    the summary's own offset in the log, which names it."""
    timestamp = state.get("timestamp") or state.get("at")
    return {
        "id": f"summary-{offset}",
        "session_id": session_id,
        "offset": offset,
        "role": "system",
        "author_id": None,
        "content": state["text"],
        "attachments": [],
        "metadata": {
            "summary": {
                "from_offset": state["from_offset"],
                "to_offset": state["to_offset"],
            }
        },
        "usage": None,
        "created_at": stored_time(timestamp)
        if isinstance(timestamp, str)
        else format_time(timestamp),
    }


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


EVENT_TYPE_NAMES: dict[str, str] = {
    alias: _snake(cls.__name__) for alias, cls in TOPIC_ALIASES.items()
}


def event_type_name(topic: str) -> str:
    """The public name of a stored topic, e.g. ``message_appended``."""
    return EVENT_TYPE_NAMES.get(topic, topic)


_HIDDEN_EVENT_FIELDS = frozenset({"timestamp", "originator_topic", "owner_id"})
"""Stored fields an event's public data leaves out (``owner_id`` is internal)."""


def event_document(offset: int, topic: str, state: dict[str, Any]) -> dict[str, Any]:
    """The ``Event`` resource: one entry of a session's log (the audit view)."""
    data: dict[str, Any] = {
        key: format_time(value) if isinstance(value, datetime) else value
        for key, value in state.items()
        if key not in _HIDDEN_EVENT_FIELDS
    }
    headers = data.get("headers")
    if isinstance(headers, dict):
        # Webhook headers often carry credentials: show their names only.
        data["headers"] = dict.fromkeys(headers, "***")
    return {
        "offset": offset,
        "type": event_type_name(topic),
        "at": format_time(state["timestamp"]),
        "data": data,
    }
