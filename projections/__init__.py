"""Read models fed from the session log, each with a tracking position."""

from __future__ import annotations

from projections.codec import decode_state, encode_state
from projections.documents import (
    event_document,
    format_time,
    message_document,
    session_document,
    summary_message,
)
from projections.views import APPLICATION_NAME, SessionViews, index_row

__all__ = [
    "APPLICATION_NAME",
    "SessionViews",
    "decode_state",
    "encode_state",
    "event_document",
    "format_time",
    "index_row",
    "message_document",
    "session_document",
    "summary_message",
]
