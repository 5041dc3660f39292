"""``Sessions``: the eventsourcing Application that owns the session log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.persistence import ApplicationRecorder, Mapper, Recording

from aggregates.session import Session
from projections.views import SQLiteSessionViews
from runtime.bus import EventBus
from runtime.mapper import SessionMapper
from runtime.persistence import DurableSQLiteFactory, SessionsRecorder, eventsourcing_env
from runtime.settings import Settings

if TYPE_CHECKING:
    from eventsourcing.utils import EnvType


class Sessions(Application[str]):
    """Sessions stored as event logs, with snapshots and inline views.

    Saving records the events, the sessions' index rows and the views' tracking
    position in one transaction (see :class:`runtime.persistence.SessionsRecorder`).
    """

    name = "Sessions"
    snapshot_class = Session.Snapshot

    views: SQLiteSessionViews
    bus: EventBus

    def __init__(self, settings: Settings | None = None, env: EnvType | None = None) -> None:
        """Open the store ``settings`` name (eventsourcing's environment is derived
        from them; ``env`` may add to it)."""
        self.settings = settings or Settings()
        super().__init__(env={**eventsourcing_env(self.settings), **dict(env or {})})

    def construct_mapper(self) -> Mapper[str]:
        """The compact mapper (short topics, no default-valued keys)."""
        return SessionMapper(transcoder=self.construct_transcoder())

    def construct_recorder(self) -> ApplicationRecorder:
        """The group-committing recorder that also writes the views."""
        factory = self.factory
        assert isinstance(factory, DurableSQLiteFactory)
        self.views = SQLiteSessionViews(factory.datastore)
        self.views.create_table()
        self.bus = EventBus()
        recorder = SessionsRecorder(
            factory.datastore,
            self.views,
            self.bus,
            clock=self.settings.clock,
            server_webhooks=self.settings.webhooks,
        )
        recorder.create_table()
        return recorder

    def _record(self, processing_event: ProcessingEvent[str]) -> list[Recording[str]]:
        # Hand the saved aggregates to the recorder, which writes their view rows
        # in the same transaction as their events.
        return self.events.put(
            processing_event.events,
            tracking=processing_event.tracking,
            sessions=list(processing_event.aggregates.values()),
            **processing_event.saved_kwargs,
        )

    def rebuild_views(self, batch_size: int = 500) -> int:
        """Drop the views and rebuild them from the log; returns sessions rebuilt.

        Other writers must be stopped: the rebuild reads the log up to its end and
        sets the tracking position there.
        """
        self.views.drop()
        self.views.create_table()
        position = self.recorder.max_notification_id() or 0
        rebuilt = 0
        batch: list[Session] = []
        for session_id in self.views.session_ids():
            batch.append(self.repository.get(session_id))
            if len(batch) >= batch_size:
                rebuilt += self._write_views(batch, None)
                batch = []
        return rebuilt + self._write_views(batch, position)

    def _write_views(self, sessions: list[Session], position: int | None) -> int:
        factory = self.factory
        assert isinstance(factory, DurableSQLiteFactory)
        with factory.datastore.transaction(commit=True) as cursor:
            self.views.project(cursor, sessions, position or None)
        return len(sessions)

    def take_session_snapshot(self, session: Session) -> None:
        """Store a snapshot of a session's saved state."""
        assert self.snapshots is not None
        self.snapshots.put([Session.Snapshot.take(session)])

    def close(self) -> None:
        """Close the database connections."""
        self.factory.close()

    def __enter__(self) -> Sessions:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()
