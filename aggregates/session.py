"""The ``Session`` aggregate: one conversation, as the fold of its event log.

Commands (public methods) validate and decide; the nested past-tense events only
evolve state in ``apply``, which is the only code replayed. Nothing here reads a
clock, draws a random number or does I/O: the runtime passes ``timestamp``, ids and
anything looked up elsewhere in as arguments, so replay is deterministic.

**Offsets.** The offset of an event is its aggregate version. A session opened
fresh starts at offset 1; a fork of ``parent@k`` starts at offset ``k + 1``, so that
offsets stay unique and increasing along every visible history, inherited part
included.

**Visible history as spans.** The messages a reader sees are a list of spans
``[session_id, after, upto]`` (exclusive ``after``, inclusive ``upto``, ``None`` for
"up to now") over message events in the log. Appending extends the open span.
Clearing, rewinding and forking start a new *segment* whose base is a span list;
nothing is copied or deleted, so abandoned branches stay in the log for audit and
every operation costs the same at 100 or 100,000 events. The state keeps one entry
per segment (not per message), so memory does not grow with history length.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, ClassVar

from eventsourcing.domain import (
    BaseAggregate,
    CanInitAggregate,
    CanMutateAggregate,
    CanSnapshotAggregate,
    MetaDomainEvent,
)

from aggregates.errors import (
    CheckpointNotFoundError,
    InvalidRequestError,
    OffsetConflictError,
    OffsetOutOfRangeError,
    RenewalRefusedError,
    SessionEndedError,
    SessionExpiredError,
    SummaryNotFoundError,
    TurnOpenError,
)
from aggregates.lifecycle import Due, next_deadline, validate_reset_policy
from aggregates.values import (
    Concurrency,
    Status,
    TimeoutLimits,
    TimeoutPolicy,
    TurnStatus,
    deadline,
    deep_merge,
    max_end,
    normalize_name,
    role_value,
)

Span = list[Any]  # [session_id: str, after: int, upto: int | None]

IDEMPOTENCY_WINDOW = 256
"""How many recent idempotency keys a session remembers (durably, in its state)."""

SUMMARY_WINDOW = 32
"""How many recent context summaries a session keeps track of (their offsets
only; the text stays in the log)."""


def truncate_spans(spans: list[Span], offset: int) -> list[Span]:
    """The part of a span list that lies at or before ``offset``."""
    kept: list[Span] = []
    for session_id, after, upto in spans:
        if after >= offset:
            break
        capped = offset if upto is None else min(upto, offset)
        kept.append([session_id, after, capped])
    return kept


class Session(BaseAggregate[str]):
    """A conversation between a user (or a peer on a channel) and an agent."""

    class Event(CanMutateAggregate[str], metaclass=MetaDomainEvent):
        """Base class of the session's events (frozen dataclasses, text ids)."""

        originator_id: str
        originator_version: int
        timestamp: datetime

    class Opened(CanInitAggregate[str], Event):
        """The session was created (or forked: ``parent`` is then set)."""

        originator_topic: str
        owner_id: str
        agent_id: str
        user_id: str
        channel_id: str | None
        peer_id: str | None
        scope_key: str | None
        name: str | None
        metadata: dict[str, Any]
        attributes: dict[str, Any]
        timeout: dict[str, Any]
        concurrency: str
        parent: dict[str, Any] | None
        base_spans: list[Span]
        base_count: int
        base_head: int
        reset_policy: dict[str, Any] | None = None
        # A fork's past: the segments of its ancestors' lives up to the fork point,
        # ``[session_id, start, base_spans]`` oldest first (``None`` when fresh).
        inherited: list[Any] | None = None

    class Renamed(Event):
        """The session's name changed (``None`` clears it)."""

        name: str | None

        def apply(self, session: Session) -> None:
            session.name = self.name
            session.updated_at = self.timestamp

    class Pinned(Event):
        """The session was pinned."""

        def apply(self, session: Session) -> None:
            session.pinned_at = self.timestamp
            session.updated_at = self.timestamp

    class Unpinned(Event):
        """The session was unpinned."""

        def apply(self, session: Session) -> None:
            session.pinned_at = None
            session.updated_at = self.timestamp

    class AttributesPatched(Event):
        """Attributes were deep-merged with ``patch`` (``None`` deletes a key)."""

        patch: dict[str, Any]

        def apply(self, session: Session) -> None:
            session.attributes = deep_merge(session.attributes, self.patch)
            session.updated_at = self.timestamp

    class MetadataReplaced(Event):
        """The session's metadata was replaced."""

        metadata: dict[str, Any]

        def apply(self, session: Session) -> None:
            session.metadata = self.metadata
            session.updated_at = self.timestamp

    class MessageAppended(Event):
        """A message joined the visible history.

        ``position`` is the visible message count after this message, which lets a
        rewind learn the count at any offset with one indexed lookup.
        """

        message_id: str
        role: str
        author_id: str | None
        content: str
        attachments: list[Any] | None = None
        metadata: dict[str, Any] | None = None
        usage: dict[str, int] | None = None
        idempotency_key: str | None = None
        reply_to: int | None = None
        position: int = 0
        expires_at: datetime | None = None
        # The message opens an agent turn (recorded before the agent runs); the
        # turn stays open until ``TurnEnded`` (a durable marker for recovery).
        # Added after release with a default: rows without it read the same.
        opens_turn: bool | None = None

        def apply(self, session: Session) -> None:
            offset = self.originator_version
            if self.opens_turn:
                session.open_turn = offset
            session.message_count = self.position
            session.head = offset
            session.last_message_id = self.message_id
            session.updated_at = self.timestamp
            session.last_activity_at = self.timestamp
            if self.expires_at is not None:
                # The message auto-renewed the session.
                session.expires_at = self.expires_at
                session.renewal_count += 1
            if self.usage:
                for key in ("input_tokens", "output_tokens"):
                    session.usage[key] = session.usage.get(key, 0) + int(
                        self.usage.get(key, 0)
                    )
            if self.idempotency_key is not None:
                keys = session.idempotency
                keys[self.idempotency_key] = offset
                while len(keys) > IDEMPOTENCY_WINDOW:
                    del keys[next(iter(keys))]

    class TurnEnded(Event):
        """The agent turn opened by the message at ``turn_offset`` ended.

        Carries no content: ``status`` (see ``TurnStatus``), the model's
        ``stop_reason`` when it gave one, a stable ``error_code`` when it did not
        complete, the turn's summed ``usage``, its ``steps`` and tool calls, and
        the offset of its reply (the final answer, or the partial answer an
        interrupted step left) when there is one.
        """

        turn_offset: int
        status: str
        stop_reason: str | None = None
        error_code: str | None = None
        usage: dict[str, int] | None = None
        steps: int = 0
        tool_calls: int = 0
        reply_offset: int | None = None

        def apply(self, session: Session) -> None:
            if getattr(session, "open_turn", None) == self.turn_offset:
                session.open_turn = None
            session.updated_at = self.timestamp

    class HistoryCleared(Event):
        """The visible history was emptied; the messages stay in the log."""

        def apply(self, session: Session) -> None:
            session._start_segment(self.originator_version, [], 0, 0)
            session.updated_at = self.timestamp

    class Rewound(Event):
        """The head moved back to ``to_offset``; later messages stay in the log.

        ``base_spans``, ``head`` and ``message_count`` describe the visible history
        as of ``to_offset``.
        """

        to_offset: int
        checkpoint_id: str | None
        base_spans: list[Span]
        head: int
        message_count: int

        def apply(self, session: Session) -> None:
            session._start_segment(
                self.originator_version, self.base_spans, self.message_count, self.head
            )
            session.updated_at = self.timestamp

    class CheckpointSaved(Event):
        """A named checkpoint now points at ``offset``; nothing is copied."""

        checkpoint_id: str
        name: str
        description: str | None
        offset: int
        head: int
        message_count: int

        def apply(self, session: Session) -> None:
            session.checkpoints[self.checkpoint_id] = {
                "id": self.checkpoint_id,
                "name": self.name,
                "description": self.description,
                "offset": self.offset,
                "head": self.head,
                "message_count": self.message_count,
                "created_at": self.timestamp.isoformat(),
            }
            session.updated_at = self.timestamp

    class CheckpointDeleted(Event):
        """A checkpoint was deleted."""

        checkpoint_id: str

        def apply(self, session: Session) -> None:
            session.checkpoints.pop(self.checkpoint_id, None)
            session.updated_at = self.timestamp

    class Renewed(Event):
        """The session's deadline moved to ``expires_at`` (manual renewal or an
        auto-renewing heartbeat)."""

        reason: str
        expires_at: datetime

        def apply(self, session: Session) -> None:
            session.expires_at = self.expires_at
            session.last_activity_at = self.timestamp
            session.renewal_count += 1
            session.updated_at = self.timestamp

    class TimeoutChanged(Event):
        """The timeout policy changed; the deadline was recomputed."""

        timeout: dict[str, Any]
        expires_at: datetime

        def apply(self, session: Session) -> None:
            session.timeout = self.timeout
            session.expires_at = self.expires_at
            session.updated_at = self.timestamp

    class ExpiryWarned(Event):
        """The session will expire at ``expires_at`` unless renewed."""

        expires_at: datetime

        def apply(self, session: Session) -> None:
            session.warned_for = self.expires_at

    class Expired(Event):
        """The session expired at ``expires_at``; it answers nothing but that
        until retention removes it."""

        expires_at: datetime

        def apply(self, session: Session) -> None:
            session.status = Status.EXPIRED.value
            session.updated_at = self.timestamp

    class ResetPolicyChanged(Event):
        """The opt-in daily/idle reset policy changed."""

        reset_policy: dict[str, Any]

        def apply(self, session: Session) -> None:
            session.reset_policy = self.reset_policy
            session.reset_policy_at = self.timestamp
            session.updated_at = self.timestamp

    class ScopeChanged(Event):
        """Get-or-create now finds this session under ``scope_key``."""

        scope_key: str | None

        def apply(self, session: Session) -> None:
            session.scope_key = self.scope_key
            session.updated_at = self.timestamp

    class WebhookSet(Event):
        """Lifecycle and message events are to be delivered to ``url`` (``None``
        removes the webhook)."""

        url: str | None
        headers: dict[str, str] | None
        events: list[str] | None
        format: str | None = None
        """The payload's shape, by the name of a registered format (``None``:
        the native ``{session_id, event}``)."""

        def apply(self, session: Session) -> None:
            session.webhook = (
                None
                if self.url is None
                else {
                    "url": self.url,
                    "headers": self.headers or {},
                    "events": self.events,
                    "format": self.format,
                }
            )
            session.updated_at = self.timestamp

    class Ended(Event):
        """The session was ended (deleted, or reset: ``successor_id`` then names
        the session that carries on); its log is kept for audit."""

        reason: str
        successor_id: str | None = None

        def apply(self, session: Session) -> None:
            session.status = Status.ENDED.value
            session.ended_reason = self.reason
            session.successor_id = self.successor_id
            session.updated_at = self.timestamp

    class SummaryRecorded(Event):
        """A summary of the visible history up to ``to_offset`` (its first
        message being at ``from_offset``), for agents' context windows.

        ``spans`` is the visible history it covers (the session's spans cut at
        ``to_offset``): the summary stands for those messages only while they
        are still what is visible up to ``to_offset`` (a rewind, clear or reset
        makes it stale). The messages themselves stay in the log. ``counter``
        and ``tokens`` say how its text was measured; ``model`` and ``usage``
        what produced it and what that cost (added to the session's usage).
        """

        from_offset: int
        to_offset: int
        text: str
        spans: list[Span]
        counter: str
        tokens: int
        model: str | None = None
        usage: dict[str, int] | None = None

        def apply(self, session: Session) -> None:
            # Snapshots taken before summaries existed do not hold the list.
            summaries = [*getattr(session, "summaries", [])]
            summaries.append(
                {
                    "offset": self.originator_version,
                    "from_offset": self.from_offset,
                    "to_offset": self.to_offset,
                    "spans": self.spans,
                    "tokens": self.tokens,
                }
            )
            session.summaries = summaries[-SUMMARY_WINDOW:]
            if self.usage:
                for key in ("input_tokens", "output_tokens"):
                    session.usage[key] = session.usage.get(key, 0) + int(
                        self.usage.get(key, 0)
                    )

    class SummaryDropped(Event):
        """The summary recorded at ``summary_offset`` is no longer used (its
        event and the messages it covered stay in the log)."""

        summary_offset: int

        def apply(self, session: Session) -> None:
            session.summaries = [
                entry
                for entry in getattr(session, "summaries", [])
                if entry["offset"] != self.summary_offset
            ]

    class Snapshot(CanSnapshotAggregate[str], metaclass=MetaDomainEvent):
        """The session's state at a version, so activation does not replay all."""

        originator_id: str
        originator_version: int
        timestamp: datetime
        topic: str
        state: dict[str, Any]

        @classmethod
        def take(cls, aggregate: Any) -> Session.Snapshot:
            """Snapshot a session's recorded state (pending events excluded).

            The state is deep-copied: ``apply`` mutates some of the session's
            dicts and lists in place, which must not change a snapshot already
            taken.
            """
            snapshot = super().take(aggregate)
            for private in ("_id", "_version", "_pending_events"):
                snapshot.state.pop(private, None)
            state = copy.deepcopy(snapshot.state)
            snapshot.state.clear()
            snapshot.state.update(state)
            return snapshot

    created_event_class: ClassVar[type[Opened]]

    def __init__(
        self,
        owner_id: str,
        agent_id: str,
        user_id: str,
        channel_id: str | None,
        peer_id: str | None,
        scope_key: str | None,
        name: str | None,
        metadata: dict[str, Any],
        attributes: dict[str, Any],
        timeout: dict[str, Any],
        concurrency: str,
        parent: dict[str, Any] | None,
        base_spans: list[Span],
        base_count: int,
        base_head: int,
        reset_policy: dict[str, Any] | None = None,
        inherited: list[Any] | None = None,
    ) -> None:
        self.owner_id = owner_id
        self.agent_id = agent_id
        self.user_id = user_id
        self.channel_id = channel_id
        self.peer_id = peer_id
        self.scope_key = scope_key
        self.name = name
        self.metadata = metadata
        self.attributes = attributes
        self.timeout = timeout
        self.concurrency = concurrency
        self.parent = parent
        self.status = Status.ACTIVE.value
        self.ended_reason: str | None = None
        self.successor_id: str | None = None
        self.pinned_at: datetime | None = None
        self.created_at: datetime = self.created_on
        self.updated_at: datetime = self.created_on
        self.last_activity_at: datetime = self.created_on
        self.last_message_id: str | None = None
        self.expires_at: datetime = deadline(timeout, self.created_on, self.created_on)
        self.renewal_count = 0
        self.warned_for: datetime | None = None
        self.webhook: dict[str, Any] | None = None
        self.reset_policy: dict[str, Any] = reset_policy or {
            "daily_at": None,
            "idle_minutes": None,
        }
        # When the reset policy took effect: the daily reset counts from here.
        self.reset_policy_at: datetime = self.created_on
        self.usage: dict[str, int] = {"input_tokens": 0, "output_tokens": 0}
        # The offset of the message whose agent turn has not ended yet, if any.
        self.open_turn: int | None = None
        self.checkpoints: dict[str, dict[str, Any]] = {}
        self.idempotency: dict[str, int] = {}
        # Context summaries: [{offset, from_offset, to_offset, spans, tokens}].
        self.summaries: list[dict[str, Any]] = []
        # One entry per segment: [start_offset, base_spans, base_count, base_head].
        self.segments: list[list[Any]] = []
        # A fork's past, one entry per segment: [session_id, start, base_spans].
        self.inherited: list[list[Any]] = inherited or []
        self.message_count = 0
        self.head = 0
        self._start_segment(self.version, base_spans, base_count, base_head)

    # --- opening

    @classmethod
    def open(
        cls,
        *,
        session_id: str,
        timestamp: datetime,
        owner_id: str,
        agent_id: str,
        user_id: str,
        channel_id: str | None = None,
        peer_id: str | None = None,
        scope_key: str | None = None,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
        timeout: dict[str, Any],
        concurrency: str = Concurrency.ENQUEUE.value,
        reset_policy: dict[str, Any] | None = None,
    ) -> Session:
        """Open a new, empty session at offset 1."""
        return cls._open(
            session_id=session_id,
            version=1,
            timestamp=timestamp,
            owner_id=owner_id,
            agent_id=agent_id,
            user_id=user_id,
            channel_id=channel_id,
            peer_id=peer_id,
            scope_key=scope_key,
            name=normalize_name(name),
            metadata=dict(metadata or {}),
            attributes=dict(attributes or {}),
            timeout=timeout,
            concurrency=Concurrency(concurrency).value,
            parent=None,
            base_spans=[],
            base_count=0,
            base_head=0,
            reset_policy=validate_reset_policy(reset_policy) if reset_policy else None,
        )

    def fork(
        self,
        *,
        session_id: str,
        timestamp: datetime,
        offset: int,
        head: int,
        message_count: int,
        owner_id: str | None = None,
    ) -> Session:
        """Open a new session whose history is this one's at ``offset``: no
        message is copied (the cost is one entry per segment of the lineage).

        ``head`` and ``message_count`` describe the visible history at ``offset``
        (see :meth:`spans_at`). The fork's own offsets start at ``offset + 1``;
        it inherits the segments of this session's life up to ``offset``, so
        that every inherited offset shows what the ancestor showed then.
        """
        spans = self.spans_at(offset)
        return type(self)._open(
            session_id=session_id,
            version=offset + 1,
            timestamp=timestamp,
            owner_id=owner_id or self.owner_id,
            agent_id=self.agent_id,
            user_id=self.user_id,
            channel_id=self.channel_id,
            peer_id=self.peer_id,
            scope_key=None,
            name=None,
            metadata=dict(self.metadata),
            attributes=dict(self.attributes),
            timeout=dict(self.timeout),
            concurrency=self.concurrency,
            parent={"session_id": self.id, "offset": offset},
            base_spans=spans,
            base_count=message_count,
            base_head=head,
            reset_policy=dict(self.reset_policy),
            inherited=self._lineage_at(offset),
        )

    @classmethod
    def _open(cls, *, session_id: str, version: int, **fields: Any) -> Session:
        # Like BaseAggregate._create, but a fork starts at its parent's offset + 1.
        opened = cls.Opened(  # type: ignore[call-arg] # fields of the dataclass bases
            originator_topic=f"{cls.__module__}:{cls.__qualname__}",
            originator_id=session_id,
            originator_version=version,
            **fields,
        )
        session = opened.mutate(None)
        assert isinstance(session, Session)
        session.pending_events.append(opened)
        return session

    # --- queries

    @property
    def first_offset(self) -> int:
        """The offset of the event that opened this session."""
        return int(self.segments[0][0])

    @property
    def spans(self) -> list[Span]:
        """The visible history now, as spans over message events."""
        start, base_spans, _, _ = self.segments[-1]
        return [*base_spans, [self.id, start, None]]

    def spans_at(self, offset: int) -> list[Span]:
        """The visible history as of ``offset``, as spans.

        Raises:
            OffsetOutOfRangeError: ``offset`` is not a point of this session's life.
        """
        if offset < 1 or offset > self.version:
            raise OffsetOutOfRangeError(f"offset {offset} is outside 1..{self.version}")
        if offset < self.first_offset:
            # Inherited: what the ancestor whose life this was showed then.
            found = None
            for entry in self.inherited:
                if entry[1] <= offset:
                    found = entry
                else:
                    break
            if found is None:
                # Opened without a lineage: cut the fork point's history.
                return truncate_spans(self.segments[0][1], offset)
            session_id, start, base_spans = found
            return [*base_spans, [session_id, start, offset]]
        segment = self._segment_at(offset)
        start, base_spans, _, _ = segment
        return [*base_spans, [self.id, start, offset]]

    def _lineage_at(self, offset: int) -> list[list[Any]]:
        """The segments of this session's life (inherited ones included) that
        began at or before ``offset``: what a fork at ``offset`` inherits."""
        lineage = [entry for entry in self.inherited if entry[1] <= offset]
        if offset >= self.first_offset:
            lineage += [
                [self.id, start, base_spans]
                for start, base_spans, _, _ in self.segments
                if start <= offset
            ]
        return lineage

    def _segment_at(self, offset: int) -> list[Any]:
        found = self.segments[0]
        for segment in self.segments:
            if segment[0] <= offset:
                found = segment
            else:
                break
        return found

    def seen_idempotency_key(self, key: str | None) -> int | None:
        """The offset of the message appended with ``key``, if still remembered."""
        if key is None:
            return None
        return self.idempotency.get(key)

    # --- commands

    def check_writable(self, expected_offset: int | None = None) -> None:
        """Refuse a write to an ended session or one that moved past ``expected``."""
        if self.status == Status.ENDED.value:
            raise SessionEndedError(f"session {self.id} has ended")
        if self.status == Status.EXPIRED.value:
            raise SessionExpiredError(self.id, self.expires_at)
        if expected_offset is not None and expected_offset != self.version:
            raise OffsetConflictError(expected_offset, self.version)

    def append_message(
        self,
        *,
        timestamp: datetime,
        message_id: str,
        role: str,
        content: str,
        author_id: str | None = None,
        attachments: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        usage: dict[str, int] | None = None,
        idempotency_key: str | None = None,
        reply_to: int | None = None,
        expected_offset: int | None = None,
        opens_turn: bool = False,
    ) -> int:
        """Append a message; returns its offset. ``opens_turn`` marks it as the
        message an agent turn answers (the turn is open until :meth:`end_turn`);
        a session holds at most one open turn."""
        self.check_writable(expected_offset)
        role = role_value(role)
        if not isinstance(content, str):
            raise InvalidRequestError("content must be a string")
        pending = self.pending_turn()
        if opens_turn and pending is not None:
            raise TurnOpenError(pending)
        self.trigger_event(
            self.MessageAppended,
            timestamp=timestamp,
            message_id=message_id,
            role=role,
            author_id=author_id,
            content=content,
            attachments=attachments or None,
            metadata=metadata or None,
            usage=usage or None,
            idempotency_key=idempotency_key,
            reply_to=reply_to,
            position=self.message_count + 1,
            expires_at=self._renewed_deadline(timestamp),
            opens_turn=True if opens_turn else None,
        )
        return self.version

    def pending_turn(self) -> int | None:
        """The offset of the message whose turn has not ended (a crash or a
        failed write left it open), if any."""
        # Snapshots taken before the field existed do not hold it.
        return getattr(self, "open_turn", None)

    def end_turn(
        self,
        *,
        timestamp: datetime,
        turn_offset: int,
        status: str,
        stop_reason: str | None = None,
        error_code: str | None = None,
        usage: dict[str, int] | None = None,
        steps: int = 0,
        tool_calls: int = 0,
        reply_offset: int | None = None,
    ) -> bool:
        """Record how the turn opened at ``turn_offset`` ended. Returns whether
        it was recorded: a session no longer active keeps its log as it is."""
        if self.status != Status.ACTIVE.value:
            return False
        try:
            status = TurnStatus(status).value
        except ValueError:
            raise InvalidRequestError(f"unknown turn status {status!r}") from None
        if self.pending_turn() != turn_offset:
            raise InvalidRequestError(f"no turn is open at offset {turn_offset}")
        self.trigger_event(
            self.TurnEnded,
            timestamp=timestamp,
            turn_offset=turn_offset,
            status=status,
            stop_reason=stop_reason,
            error_code=error_code,
            usage=usage or None,
            steps=steps,
            tool_calls=tool_calls,
            reply_offset=reply_offset,
        )
        return True

    def _renewed_deadline(self, timestamp: datetime) -> datetime | None:
        # Auto-renewal on activity, refused (silently) at the maximum duration.
        if not self.timeout["auto_renew"] or not self._can_extend(timestamp):
            return None
        return deadline(self.timeout, self.created_at, timestamp)

    def _can_extend(self, timestamp: datetime) -> bool:
        """Whether renewing at ``timestamp`` can still move the deadline: not once
        the maximum duration is reached, nor once the deadline sits at its cap."""
        cap = max_end(self.timeout, self.created_at)
        return timestamp < cap and self.expires_at < cap

    def rename(self, *, timestamp: datetime, name: str | None) -> None:
        """Rename (``None`` clears); uniqueness per user is checked by the runtime."""
        self.check_writable()
        name = normalize_name(name)
        if name != self.name:
            self.trigger_event(self.Renamed, timestamp=timestamp, name=name)

    def set_pinned(self, *, timestamp: datetime, pinned: bool) -> None:
        """Pin or unpin; pinning a pinned session changes nothing."""
        self.check_writable()
        if pinned and self.pinned_at is None:
            self.trigger_event(self.Pinned, timestamp=timestamp)
        elif not pinned and self.pinned_at is not None:
            self.trigger_event(self.Unpinned, timestamp=timestamp)

    def patch_attributes(self, *, timestamp: datetime, patch: dict[str, Any]) -> None:
        """Deep-merge ``patch`` into the attributes (``None`` deletes a key)."""
        self.check_writable()
        if not isinstance(patch, dict):
            raise InvalidRequestError("attributes must be an object")
        if patch:
            self.trigger_event(self.AttributesPatched, timestamp=timestamp, patch=patch)

    def replace_metadata(
        self, *, timestamp: datetime, metadata: dict[str, Any]
    ) -> None:
        """Replace the metadata object."""
        self.check_writable()
        if not isinstance(metadata, dict):
            raise InvalidRequestError("metadata must be an object")
        if metadata != self.metadata:
            self.trigger_event(
                self.MetadataReplaced, timestamp=timestamp, metadata=metadata
            )

    def clear_history(
        self, *, timestamp: datetime, expected_offset: int | None = None
    ) -> None:
        """Empty the visible history; the messages stay in the log."""
        self.check_writable(expected_offset)
        self.trigger_event(self.HistoryCleared, timestamp=timestamp)

    def rewind(
        self,
        *,
        timestamp: datetime,
        to_offset: int,
        head: int,
        message_count: int,
        checkpoint_id: str | None = None,
        expected_offset: int | None = None,
    ) -> None:
        """Move the head back to the visible history as of ``to_offset``.

        ``head`` and ``message_count`` are that history's last message offset and
        length, which the runtime reads from the log's index.
        """
        self.check_writable(expected_offset)
        spans = self.spans_at(to_offset)
        self.trigger_event(
            self.Rewound,
            timestamp=timestamp,
            to_offset=to_offset,
            checkpoint_id=checkpoint_id,
            base_spans=spans,
            head=head,
            message_count=message_count,
        )

    def restore_checkpoint(
        self,
        *,
        timestamp: datetime,
        checkpoint_id: str,
        expected_offset: int | None = None,
    ) -> None:
        """Rewind to a checkpoint (non-destructive)."""
        checkpoint = self.checkpoint(checkpoint_id)
        self.rewind(
            timestamp=timestamp,
            to_offset=checkpoint["offset"],
            head=checkpoint["head"],
            message_count=checkpoint["message_count"],
            checkpoint_id=checkpoint_id,
            expected_offset=expected_offset,
        )

    def checkpoint(self, checkpoint_id: str) -> dict[str, Any]:
        """One checkpoint by id."""
        try:
            return self.checkpoints[checkpoint_id]
        except KeyError:
            raise CheckpointNotFoundError(
                f"no checkpoint {checkpoint_id!r} in session {self.id}"
            ) from None

    def save_checkpoint(
        self,
        *,
        timestamp: datetime,
        checkpoint_id: str,
        name: str,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Record a named checkpoint at the current offset; copies nothing."""
        self.check_writable()
        if not isinstance(name, str) or not name.strip():
            raise InvalidRequestError("a checkpoint needs a non-empty name")
        if description is not None and not isinstance(description, str):
            raise InvalidRequestError("description must be a string")
        self.trigger_event(
            self.CheckpointSaved,
            timestamp=timestamp,
            checkpoint_id=checkpoint_id,
            name=name.strip(),
            description=description,
            offset=self.version,
            head=self.head,
            message_count=self.message_count,
        )
        return self.checkpoints[checkpoint_id]

    def delete_checkpoint(self, *, timestamp: datetime, checkpoint_id: str) -> None:
        """Delete a checkpoint."""
        self.check_writable()
        self.checkpoint(checkpoint_id)
        self.trigger_event(
            self.CheckpointDeleted, timestamp=timestamp, checkpoint_id=checkpoint_id
        )

    def record_summary(
        self,
        *,
        timestamp: datetime,
        from_offset: int,
        to_offset: int,
        text: str,
        counter: str,
        tokens: int,
        model: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> int:
        """Record a summary of the visible history from ``from_offset`` to
        ``to_offset`` (both message offsets, which the runtime reads from the
        history); returns the summary's offset, which names it."""
        self.check_writable()
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequestError("a summary needs a non-empty text")
        if not (
            isinstance(from_offset, int)
            and isinstance(to_offset, int)
            and 0 < from_offset <= to_offset <= self.head
        ):
            raise InvalidRequestError(
                f"a summary covers message offsets within 1..{self.head}, "
                "from_offset first"
            )
        self.trigger_event(
            self.SummaryRecorded,
            timestamp=timestamp,
            from_offset=from_offset,
            to_offset=to_offset,
            text=text,
            spans=truncate_spans(self.spans, to_offset),
            counter=counter,
            tokens=int(tokens),
            model=model,
            usage=usage or None,
        )
        return self.version

    def drop_summary(self, *, timestamp: datetime, summary_offset: int) -> None:
        """Stop using the summary recorded at ``summary_offset``."""
        self.check_writable()
        if not any(
            entry["offset"] == summary_offset
            for entry in getattr(self, "summaries", [])
        ):
            raise SummaryNotFoundError(
                f"no summary at offset {summary_offset} in session {self.id}"
            )
        self.trigger_event(
            self.SummaryDropped, timestamp=timestamp, summary_offset=summary_offset
        )

    def valid_summaries(self) -> list[dict[str, Any]]:
        """The summaries that still stand for the visible history, oldest first:
        those whose covered messages are still exactly what is visible up to
        their ``to_offset`` (a rewind before it, a clear or a fork leave the
        older ones stale)."""
        spans = self.spans
        return [
            dict(entry)
            for entry in getattr(self, "summaries", [])
            if truncate_spans(spans, entry["to_offset"]) == entry["spans"]
        ]

    def renew(self, *, timestamp: datetime, reason: str = "manual") -> None:
        """Move the deadline to ``timestamp`` + timeout (capped at the maximum
        duration), whatever ``auto_renew`` says.

        Raises:
            RenewalRefusedError: the session reached its maximum duration.
        """
        self.check_writable()
        if not self._can_extend(timestamp):
            raise RenewalRefusedError(
                f"session {self.id} reached its maximum duration and cannot be renewed"
            )
        policy = {**self.timeout, "auto_renew": True}
        self.trigger_event(
            self.Renewed,
            timestamp=timestamp,
            reason=reason,
            expires_at=deadline(policy, self.created_at, timestamp),
        )

    def heartbeat(self, *, timestamp: datetime) -> bool:
        """Record that the client is alive: renews when ``auto_renew`` is on and
        the maximum duration is not reached. Returns whether it renewed."""
        self.check_writable()
        if not self.timeout["auto_renew"] or not self._can_extend(timestamp):
            return False
        self.renew(timestamp=timestamp, reason="heartbeat")
        return True

    def change_timeout(
        self, *, timestamp: datetime, limits: TimeoutLimits, changes: dict[str, Any]
    ) -> None:
        """Change only the named policy fields; out-of-range values are refused."""
        self.check_writable()
        policy = TimeoutPolicy.changed(limits, self.timeout, changes).as_dict()
        if policy != self.timeout:
            self.trigger_event(
                self.TimeoutChanged,
                timestamp=timestamp,
                timeout=policy,
                expires_at=deadline(policy, self.created_at, self.last_activity_at),
            )

    def next_deadline(self) -> tuple[datetime, Due] | None:
        """The next lifecycle deadline and what it asks for (``None`` once the
        session is no longer active)."""
        return next_deadline(
            active=self.status == Status.ACTIVE.value,
            expires_at=self.expires_at,
            warned_for=self.warned_for,
            timeout=self.timeout,
            reset_policy=self.reset_policy,
            # Snapshots taken before this field existed do not hold it.
            daily_from=getattr(self, "reset_policy_at", self.created_at),
            last_activity_at=self.last_activity_at,
        )

    def act_on_deadlines(self, *, timestamp: datetime) -> Due | None:
        """Handle every deadline passed by ``timestamp``, once each, in order.

        Warnings and expiry are recorded here. A due reset is returned for the
        runtime to carry out (it opens the successor session); nothing after it
        is handled. Returns what ended the session's activity, if anything.
        """
        while True:
            found = self.next_deadline()
            if found is None or found[0] > timestamp:
                return None
            _, due = found
            if due is Due.WARN:
                self.trigger_event(
                    self.ExpiryWarned, timestamp=timestamp, expires_at=self.expires_at
                )
                continue
            if due is Due.EXPIRE:
                self.trigger_event(
                    self.Expired, timestamp=timestamp, expires_at=self.expires_at
                )
            return due

    def set_reset_policy(self, *, timestamp: datetime, policy: dict[str, Any]) -> None:
        """Change the opt-in resets: ``daily_at`` ("HH:MM" UTC) and
        ``idle_minutes``; fields not named keep their value."""
        self.check_writable()
        merged = validate_reset_policy({**self.reset_policy, **policy})
        if merged != self.reset_policy:
            self.trigger_event(
                self.ResetPolicyChanged, timestamp=timestamp, reset_policy=merged
            )

    def rescope(self, *, timestamp: datetime, scope_key: str | None) -> None:
        """Move the session to another scope key (uniqueness among live sessions
        is the runtime's to check)."""
        self.check_writable()
        if scope_key != self.scope_key:
            self.trigger_event(
                self.ScopeChanged, timestamp=timestamp, scope_key=scope_key
            )

    def set_webhook(
        self,
        *,
        timestamp: datetime,
        url: str | None,
        headers: dict[str, str] | None = None,
        events: list[str] | None = None,
        format: str | None = None,
    ) -> None:
        """Register (or with ``url=None`` remove) the session's webhook;
        ``format`` names the payload's shape (see ``WebhookSet.format``)."""
        self.check_writable()
        if url is not None and (
            not isinstance(url, str) or not url.startswith(("http://", "https://"))
        ):
            raise InvalidRequestError("webhook url must be an http:// or https:// URL")
        if headers is not None and not (
            isinstance(headers, dict)
            and all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
            )
        ):
            raise InvalidRequestError("webhook headers must map names to strings")
        if events is not None and not (
            isinstance(events, list) and all(isinstance(e, str) for e in events)
        ):
            raise InvalidRequestError("webhook events must be a list of event types")
        if format is not None and not (
            isinstance(format, str) and format.isidentifier() and len(format) <= 32
        ):
            raise InvalidRequestError("webhook format must be a format name")
        self.trigger_event(
            self.WebhookSet,
            timestamp=timestamp,
            url=url,
            headers=headers or None,
            events=events,
            format=format,
        )

    def end(
        self,
        *,
        timestamp: datetime,
        reason: str = "deleted",
        successor_id: str | None = None,
    ) -> None:
        """End the session (``successor_id``: the session a reset opened to carry
        on); ending an ended session changes nothing."""
        if self.status != Status.ENDED.value:
            self.trigger_event(
                self.Ended,
                timestamp=timestamp,
                reason=reason,
                successor_id=successor_id,
            )

    def successor(self) -> str | None:
        """The session a reset handed this one's conversation to, if any."""
        if self.status != Status.ENDED.value:
            return None
        # Snapshots taken before the field existed do not hold it.
        return getattr(self, "successor_id", None)

    # --- helpers

    def _start_segment(
        self, start: int, base_spans: list[Span], base_count: int, base_head: int
    ) -> None:
        self.segments.append([start, base_spans, base_count, base_head])
        self.message_count = base_count
        self.head = base_head
