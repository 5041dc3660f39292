"""``Sessions``: the eventsourcing Application that owns the session log."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from eventsourcing.application import Application, ProcessingEvent, Repository
from eventsourcing.persistence import ApplicationRecorder, Mapper, Recording
from eventsourcing.utils import strtobool

from aggregates.session import Session
from projections.views import SessionViews
from runtime.bus import EventBus
from runtime.feed import ChangeSource
from runtime.lease import LeaseStore
from runtime.mapper import SessionMapper
from runtime.persistence import SessionStoreFactory, eventsourcing_env
from runtime.settings import Settings

if TYPE_CHECKING:
    from eventsourcing.utils import EnvType


def project_session(aggregate: Any, domain_events: Iterable[Any]) -> Any:
    """eventsourcing's ``project_aggregate`` without its per-event ``assert
    isinstance(event, CanMutateProtocol)``: a runtime-checkable Protocol check
    that cost more than the rest of replaying the event (~10 us each)."""
    for domain_event in domain_events:
        aggregate = domain_event.mutate(aggregate)
    return aggregate


class SessionRepository(Repository[str]):
    """eventsourcing's repository, replaying with :func:`project_session`."""

    def get(
        self,
        aggregate_id: str,
        *,
        version: int | None = None,
        projector_func: Any = project_session,
        fastforward_skipping: bool = False,
        deepcopy_from_cache: bool = True,
    ) -> Any:
        """Rebuild a session from its latest snapshot and the events after it."""
        return super().get(
            aggregate_id,
            version=version,
            projector_func=projector_func,
            fastforward_skipping=fastforward_skipping,
            deepcopy_from_cache=deepcopy_from_cache,
        )


class Sessions(Application[str]):
    """Sessions stored as event logs, with snapshots and inline views.

    Saving records the events, the sessions' index rows and the views' tracking
    position in one transaction (see :class:`runtime.persistence.SessionsRecorder`).
    """

    name = "Sessions"
    snapshot_class = Session.Snapshot

    views: SessionViews
    bus: EventBus
    leases: LeaseStore
    changes: ChangeSource

    def __init__(
        self, settings: Settings | None = None, env: EnvType | None = None
    ) -> None:
        """Open the store ``settings`` name (eventsourcing's environment is derived
        from them; ``env`` may add to it)."""
        self.settings = settings or Settings()
        super().__init__(env={**eventsourcing_env(self.settings), **dict(env or {})})

    def construct_repository(self) -> Repository[str]:
        """eventsourcing's repository, as configured, replaying without its
        per-event Protocol assertion (see :func:`project_session`)."""
        maxsize = self.env.get(self.AGGREGATE_CACHE_MAXSIZE)
        return SessionRepository(
            event_store=self.events,
            snapshot_store=self.snapshots,
            cache_maxsize=int(maxsize) if maxsize else None,
            fastforward=strtobool(self.env.get(self.AGGREGATE_CACHE_FASTFORWARD, "y")),
            fastforward_skipping=strtobool(
                self.env.get(self.AGGREGATE_CACHE_FASTFORWARD_SKIPPING, "n")
            ),
            deepcopy_from_cache=strtobool(
                self.env.get(self.DEEPCOPY_FROM_AGGREGATE_CACHE, "y")
            ),
        )

    def construct_mapper(self) -> Mapper[str]:
        """The compact mapper (short topics, no default-valued keys)."""
        return SessionMapper(transcoder=self.construct_transcoder())

    def construct_recorder(self) -> ApplicationRecorder:
        """The group-committing recorder that also writes the views."""
        factory = cast("SessionStoreFactory", self.factory)
        self.bus = EventBus()
        recorder = factory.session_store(
            self.bus,
            clock=self.settings.clock,
            server_webhooks=self.settings.webhooks,
        )
        self.views = recorder.views
        # What several processes on one store need (see README "Running
        # several processes"): each backend provides its own.
        self.leases = factory.lease_store()
        self.changes = factory.change_source()
        return cast("ApplicationRecorder", recorder)

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[str]]:
        """``Application.save``, but a session's pending events are collected
        directly: eventsourcing's ``collect_events`` tests every object against
        two runtime-checkable Protocols, which costs ~50 us of CPU per save (a
        tenth of a durable append)."""
        processing_event: ProcessingEvent[str] = ProcessingEvent()
        for obj in objs:
            if isinstance(obj, Session):
                processing_event.events.extend(obj.collect_events())
                processing_event.aggregates[obj.id] = obj
            else:
                processing_event.collect_events(obj)
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # eventsourcing's deprecated hook
        return recordings

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
        with self.views.writing() as cursor:
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
