"""The recorder both backends share: events, the views they imply, the webhook
outbox rows they announce and the tracking position, in one group-committed
transaction; subscribers are told only after the commit.

A backend supplies the batch's transaction, how stored events are inserted on
its cursor (and their notification ids got back once the write's statements are
all sent: PostgreSQL pipelines them, one round trip per write), what runs first
in each batch (PostgreSQL takes the log's insert lock there), which driver errors
are integrity errors, and how driver errors become eventsourcing's.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import orjson

from projections.codec import OPENED_TOPIC, decode_state
from projections.documents import event_document, session_document
from runtime.committer import AfterBatch, GroupCommitter
from runtime.feed import LocalPublications
from runtime.webhook_formats import WebhookEvent, WebhookFormat

if TYPE_CHECKING:
    from eventsourcing.persistence import StoredEvent

    from aggregates.session import Session
    from projections.sql import Cursor
    from projections.views import SessionViews
    from runtime.bus import EventBus
    from runtime.clock import Clock


_VIEWS_ADVANCE: Any = object()


class SessionsRecorder:
    """Records session events together with the view rows, outbox rows and
    tracking position they imply, through a :class:`GroupCommitter`.

    A mixin: each backend's recorder puts it before eventsourcing's application
    recorder of that backend (whose reads it keeps) and calls
    :meth:`_init_sessions_recorder` from its constructor.
    """

    views: SessionViews
    committer: GroupCommitter

    def _init_sessions_recorder(
        self,
        views: SessionViews,
        bus: EventBus,
        *,
        clock: Clock,
        server_webhooks: tuple[Mapping[str, Any], ...],
        integrity_errors: tuple[type[BaseException], ...],
        advance: AfterBatch | None = _VIEWS_ADVANCE,
    ) -> None:
        """Set up the shared state; ``advance`` moves the views' tracking position
        last in each batch (by default the views' own ``advance``; ``None`` when
        the backend does it within each write)."""
        self.views = views
        self.bus = bus
        self.clock = clock
        self.server_webhooks = server_webhooks
        self.webhook_formats: dict[str, WebhookFormat] = {}
        """Registered payload formats, by name (see runtime.webhook_formats)."""
        self.on_outbox: Callable[[], None] | None = None
        self.local = LocalPublications()
        self._outbox_written = False
        self.events_recorded = 0
        self.committer = GroupCommitter(
            self._transaction,
            self._write,
            integrity_errors=integrity_errors,
            before_batch=self._before_batch,
            after_batch=views.advance if advance is _VIEWS_ADVANCE else advance,
            after_commit=self._published,
        )

    # --- what a backend supplies

    @abstractmethod
    def _insert_rows(
        self, cursor: Cursor, stored_events: Sequence[StoredEvent]
    ) -> Callable[[], Sequence[int]]:
        """Insert ``stored_events`` on ``cursor``'s transaction. Returns what to
        call once the rest of the write is sent: it waits for the write's
        statements (raising the first one's error) and returns the events'
        notification ids."""

    def _transaction(self) -> AbstractContextManager[Cursor]:
        """A batch's transaction (the views' write transaction by default)."""
        return self.views.writing()

    @abstractmethod
    def _translate(self, error: BaseException) -> BaseException:
        """The eventsourcing error (``IntegrityError``, ``PersistenceError``...)
        a driver error stands for; other errors as they are."""

    def _before_batch(self, cursor: Cursor) -> None:
        """Runs first in every batch's transaction (nothing by default)."""

    # --- shared

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Record events (and their sessions' view rows) durably."""
        sessions: Sequence[Session] = kwargs.get("sessions", ())
        taken: list[int] = []  # the ids this write took, once it took them
        try:
            return self.committer.write((stored_events, sessions, taken))
        except Exception as error:
            # Not committed: those ids may be given to another process's events.
            self.local.discard(taken)
            translated = self._translate(error)
            if translated is error:
                raise
            raise translated from error

    def _write(self, cursor: Cursor, payloads: Sequence[Any]) -> list[Sequence[int]]:
        # Every payload's rows go in together: one statement per table. Each
        # session has one writer at a time, so no session is in two payloads.
        stored_events = [e for events, _, _ in payloads for e in events]
        sessions = [s for _, written, _ in payloads for s in written]
        inserted = self._insert_rows(cursor, stored_events)
        # Sessions opened by this write get their index row; every other one
        # must still have its own (see SessionViews.project).
        opened = {
            str(e.originator_id) for e in stored_events if e.topic == OPENED_TOPIC
        }
        self.views.project(cursor, sessions, None, new_ids=opened)
        self._enqueue_webhooks(cursor, stored_events, sessions)
        ids = inserted()
        # Marked as this process's own before the commit, so the change feed
        # (which reads only committed rows) can never take them for another
        # process's events, nor publish them a second time.
        self.local.add(ids)
        results: list[Sequence[int]] = []
        start = 0
        for events, _, taken in payloads:
            mine = ids[start : start + len(events)]
            start += len(events)
            taken.extend(mine)
            results.append(mine)
        return results

    def _enqueue_webhooks(
        self,
        cursor: Cursor,
        stored_events: Sequence[StoredEvent],
        sessions: Sequence[Session],
    ) -> None:
        # The outbox rows are written in the same transaction as the events they
        # announce: a delivery exists exactly when its event does.
        targets = {
            s.id: [*self.server_webhooks, *([s.webhook] if s.webhook else [])]
            for s in sessions
        }
        if not any(targets.values()):
            return
        now_ms = int(self.clock.now().timestamp() * 1000)
        by_id = {s.id: s for s in sessions}
        # (decoded only for the sessions with a webhook: a batch holds others')
        documents = [
            (
                str(stored.originator_id),
                event_document(
                    stored.originator_version, stored.topic, decode_state(stored.state)
                ),
            )
            for stored in stored_events
            if targets.get(str(stored.originator_id))
        ]
        rows = []
        for session_id, document in documents:
            hooks = targets[session_id]
            kind = document["type"]
            native = orjson.dumps({"session_id": session_id, "event": document})
            for hook in hooks:
                wanted = hook.get("events")
                if wanted and kind not in wanted:
                    continue
                payload = self._payload(
                    hook, native, by_id[session_id], document, documents
                )
                if payload is None:
                    continue
                rows.append(
                    (
                        session_id,
                        document["offset"],
                        hook["url"],
                        orjson.dumps(hook.get("headers") or {}),
                        payload,
                        now_ms,
                    )
                )
        if rows:
            self.views.enqueue_webhooks(cursor, rows)
            self._outbox_written = True

    def _payload(
        self,
        hook: Mapping[str, Any],
        native: bytes,
        session: Session,
        document: dict[str, Any],
        documents: list[tuple[str, dict[str, Any]]],
    ) -> bytes | None:
        """The delivery's bytes: the native payload, or the hook's format's."""
        render = self.webhook_formats.get(hook.get("format") or "")
        if render is None:
            return native

        def read(after: int, upto: int) -> list[dict[str, Any]]:
            found, _ = self.views.events(
                session.id, after=after, limit=max(1, min(upto - after, 1000))
            )
            return [e for e in found if e["offset"] <= upto]

        return render(
            WebhookEvent(
                session=session_document(session),
                event=document,
                batch=[d for sid, d in documents if sid == session.id],
                read=read,
            )
        )

    def _published(self, written: list[tuple[Any, Sequence[int]]]) -> None:
        # Runs after the commit: subscribers only ever see durable events.
        if self._outbox_written and self.on_outbox is not None:
            self._outbox_written = False
            self.on_outbox()
        bus = self.bus
        for (stored_events, _, _), _ids in written:
            self.events_recorded += len(stored_events)
            # Every event recorded here is this process's to publish (or not, if
            # nobody listens now; see _write for why the feed skips them).
            for stored in stored_events:
                session_id = str(stored.originator_id)
                if bus.has_subscribers(session_id):
                    offset = stored.originator_version
                    document = event_document(
                        offset, stored.topic, decode_state(stored.state)
                    )
                    bus.publish(
                        session_id,
                        {"type": "event", "offset": offset, "event": document},
                    )
