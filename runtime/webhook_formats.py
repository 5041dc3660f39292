"""Webhook payload formats: a webhook may name the shape of its payloads.

The native payload is ``{"session_id", "event"}`` for every event the webhook
takes. A surface that promises another shape (the assistant plugin's completion
callback) registers a :data:`WebhookFormat` under a name
(``Runtime.register_webhook_format``) and sets its webhooks with that
``format``. The payload is rendered when the event is recorded, in the same
transaction (the outbox row holds the exact bytes to deliver), from plain
documents: nothing of the runtime leaks into a format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WebhookEvent:
    """What a format renders one delivery from."""

    session: Mapping[str, Any]
    """The session's document as this write leaves it."""
    event: Mapping[str, Any]
    """The recorded event's document (``offset``, ``type``, ``at``, ``data``)."""
    batch: Sequence[Mapping[str, Any]]
    """Every event document this write records for the session, in order."""
    read: Callable[[int, int], list[dict[str, Any]]]
    """``read(after, upto)``: the session's committed event documents with
    offsets in ``(after, upto]``, in order (this write's own events are not
    committed yet: they are in :attr:`batch`)."""


WebhookFormat = Callable[[WebhookEvent], bytes | None]
"""Renders a delivery's payload, or ``None`` when this event is not delivered."""
