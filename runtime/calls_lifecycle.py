"""Runtime calls on the lifecycle and operations: renewal, timeouts, resets,
webhooks, the supervisor, retention, health, metrics and view rebuilds."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import PersistenceError

from aggregates.errors import InvalidRequestError
from projections.documents import format_time
from runtime.actor import Read
from runtime.core import (
    _UNSET,
    VERSION,
    AnyList,
    DocumentList,
    RuntimeCore,
)
from runtime.persistence import SessionsRecorder
from runtime.principal import LOCAL_PRINCIPAL, Principal
from runtime.webhook_formats import WebhookFormat

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


class LifecycleCalls(RuntimeCore):
    """Lifecycle, webhooks and operations."""

    def heartbeat(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
    ) -> dict[str, Any]:
        """Record that the client is alive; renews when the policy auto-renews."""
        return self._write(
            session_id,
            principal,
            expected_offset,
            lambda s: s.heartbeat(timestamp=self.clock.now()),
        )

    def renew(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
    ) -> dict[str, Any]:
        """Renew now (``RenewalRefusedError`` past the maximum duration)."""
        return self._write(
            session_id,
            principal,
            expected_offset,
            lambda s: s.renew(timestamp=self.clock.now()),
        )

    def update_timeout(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
        timeout_minutes: int | None = None,
        auto_renew: bool | None = None,
        max_duration_minutes: int | None = None,
        warning_threshold_minutes: int | None = None,
    ) -> dict[str, Any]:
        """Change only the named policy fields (out-of-range values are refused)."""
        changes = {
            "timeout_minutes": timeout_minutes,
            "auto_renew": auto_renew,
            "max_duration_minutes": max_duration_minutes,
            "warning_threshold_minutes": warning_threshold_minutes,
        }
        return self._write(
            session_id,
            principal,
            expected_offset,
            lambda s: s.change_timeout(
                timestamp=self.clock.now(),
                limits=self.settings.timeout_limits,
                changes={k: v for k, v in changes.items() if v is not None},
            ),
        )

    def set_reset_policy(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
        daily_at: str | None = _UNSET,
        idle_minutes: int | None = _UNSET,
    ) -> dict[str, Any]:
        """Opt in to (or out of, with ``None``) a daily reset at ``daily_at``
        ("HH:MM" UTC) and an idle reset after ``idle_minutes``; a reset ends the
        session and opens its successor on the same scope key."""
        changes = {
            key: value
            for key, value in (("daily_at", daily_at), ("idle_minutes", idle_minutes))
            if value is not _UNSET
        }
        return self._write(
            session_id,
            principal,
            expected_offset,
            lambda s: s.set_reset_policy(timestamp=self.clock.now(), policy=changes),
        )

    def set_webhook(
        self,
        session_id: str,
        url: str | None,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
        headers: Mapping[str, str] | None = None,
        events: AnyList | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Deliver the session's events (all, or the ``events`` types named) to
        ``url`` from the durable outbox; ``url=None`` removes the webhook.
        ``format`` names a registered payload format
        (:meth:`register_webhook_format`); the default is ``{session_id,
        event}``."""
        if format is not None and format not in self._webhook_formats():
            raise InvalidRequestError(f"no webhook format {format!r} is registered")
        return self._write(
            session_id,
            principal,
            expected_offset,
            lambda s: s.set_webhook(
                timestamp=self.clock.now(),
                url=url,
                headers=dict(headers) if headers is not None else None,
                events=events,
                format=format,
            ),
        )

    def register_webhook_format(self, name: str, render: WebhookFormat) -> None:
        """Make ``render`` the payload format ``name`` webhooks may ask for
        (see :mod:`runtime.webhook_formats`)."""
        self._webhook_formats()[name] = render

    def _webhook_formats(self) -> dict[str, WebhookFormat]:
        recorder = self.app.recorder
        assert isinstance(recorder, SessionsRecorder)
        return recorder.webhook_formats

    def webhook_deliveries(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        limit: int = 100,
    ) -> DocumentList:
        """The session's webhook deliveries, newest first, with every attempt's
        outcome."""
        self._row(session_id, principal, allow_expired=True)
        return self.views.deliveries(session_id, limit)

    def deliver_webhooks(self) -> int:
        """One delivery round, waited for: an attempt at every due delivery
        (tests and operators; the service delivers by itself)."""
        return self.webhooks.deliver_due()

    def run_lifecycle(self) -> list[str]:
        """One supervisor tick, waited for: every passed deadline is handled
        before this returns (tests and operators; the service ticks by itself).
        Returns the sessions that had something due."""
        asked: list[str] = self.supervisor.tick().get(
            timeout=self.settings.actor_timeout
        )
        for session_id in asked:
            # The session's mailbox is FIFO: this read runs after the lifecycle work.
            self._ask(session_id, Read(lambda _: None))
        return asked

    def cleanup(
        self,
        *,
        older_than: timedelta,
        keep_checkpoints: bool = False,
        principal: Principal = LOCAL_PRINCIPAL,
    ) -> int:
        """Purge the caller's ended or expired sessions last changed more than
        ``older_than`` ago (all owners' for an admin): their logs, snapshots and
        views are deleted for good. Returns how many were purged."""
        cutoff = format_time(self.clock.now() - older_than)
        assert cutoff is not None
        purged = 0
        while True:
            found = self.views.retention_candidates(
                cutoff,
                keep_checkpoints=keep_checkpoints,
                limit=500,
                owner_id=None if principal.admin else principal.id,
            )
            for session_id in found:
                self._purge(session_id)
            purged += len(found)
            if len(found) < 500:
                return purged

    def health(self) -> dict[str, Any]:
        """Whether the store answers, with a few live figures."""
        try:
            counts = self.views.counts(None)
        except PersistenceError:
            return {
                "status": "unavailable",
                "store": "unreachable",
                "live_actors": self.directory.live_count(),
                "sessions_active": 0,
                "version": VERSION,
            }
        return {
            "status": "ok",
            "store": "ok",
            "live_actors": self.directory.live_count(),
            "sessions_active": counts.get("active", 0),
            "sessions_expiring_soon": self.views.expiring_soon(),
            "sessions_expired": counts.get("expired", 0),
            "node": self.node_id,
            "supervisor": self._supervisor_role(),
            "version": VERSION,
        }

    def _supervisor_role(self) -> str:
        """``active`` (this process holds the supervisor lease and runs the
        lifecycle and webhooks), ``standby``, or ``manual`` (no background
        supervisor: the caller runs it)."""
        if self.settings.supervisor_interval <= 0:
            return "manual"
        return "active" if self.lease.held() else "standby"

    def metrics(self) -> dict[str, int]:
        """Counters and gauges of the runtime, for the metrics endpoint."""
        recorder = self.app.recorder
        assert isinstance(recorder, SessionsRecorder)
        counts = self.views.counts(None)
        return {
            "live_actors": self.directory.live_count(),
            "activations": self.directory.stats.activations,
            "passivations": self.directory.stats.passivations,
            "conflict_retries": self.directory.conflicts.retries,
            "stale_reloads": self.directory.conflicts.stale_reads,
            "appends": recorder.events_recorded,
            "commits": recorder.committer.batches,
            "committed_writes": recorder.committer.writes,
            "projection_lag": max(
                0, (recorder.max_notification_id() or 0) - self.views.position()
            ),
            "open_streams": self.app.bus.subscriber_count(),
            "sessions_active": counts.get("active", 0),
            "sessions_expiring_soon": self.views.expiring_soon(),
            "sessions_expired": counts.get("expired", 0),
            "sessions_ended": counts.get("ended", 0),
            "webhooks_pending": self.views.pending_deliveries(),
        }

    def rebuild_projections(self) -> int:
        """Drop the views and rebuild them from the log; returns sessions rebuilt.

        Stop other writers first: the rebuild reads a consistent log prefix and
        sets the tracking position to its end.
        """
        return self.app.rebuild_views()
