"""``Runtime``: the in-process API of sessiond, and the only one the gateway uses.

Every call carries a :class:`Principal` (a local one by default) and the facade
enforces ownership: a session owned by another principal does not exist for the
caller (``SessionNotFoundError``), whatever the call. Writes go to the session's
actor (the single writer); reads come from the views, which are written in the
same transaction as the events, so a read that follows an acknowledged write
always sees it.

``AsyncRuntime`` offers the same calls as coroutines that never block the event
loop (each call hops to a worker thread).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import anyio
import orjson
import pykka
from eventsourcing.persistence import IntegrityError, PersistenceError

from aggregates.errors import (
    InvalidRequestError,
    OffsetConflictError,
    OffsetOutOfRangeError,
    SessionExpiredError,
)
from aggregates.lifecycle import Due
from aggregates.session import Session
from aggregates.values import (
    Concurrency,
    Role,
    Scope,
    Status,
    TimeoutPolicy,
    name_key,
    normalize_name,
    scope_key,
    validate_session_id,
)
from projections.codec import ALIAS_OF, encode_state
from projections.documents import format_time, message_document, session_document
from runtime.actor import Execute, Outcome, Read
from runtime.agents import (
    AgentOutput,
    AgentRegistry,
    FinalMessage,
    TextDelta,
    ToolCallDelta,
    split_words,
)
from runtime.commands import ChatCommands, CommandResult, is_command
from runtime.clock import PinnedClock
from runtime.directory import ActorDirectory
from runtime.errors import (
    ActorUnavailableError,
    NameTakenError,
    SessionExistsError,
    SessionNotFoundError,
    StorageUnavailableError,
    TurnTimeoutError,
)
from runtime.export import export_document, render_markdown, render_text
from runtime.tail import AsyncSessionTail, SessionTail
from runtime.persistence import SessionsRecorder
from runtime.sessions import Sessions
from runtime.supervisor import LifecycleSupervisor, Ticker
from runtime.webhooks import WebhookDeliverer
from runtime.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Runtime.list shadows the builtin inside the class body, where annotations live.
DocumentList = list[dict[str, Any]]
AnyList = list[Any]
HISTORY_MAX_LIMIT = 1000
VERSION = "0.1.0"
AGENT_HISTORY_LIMIT = 50
_UNSET: Any = object()


@dataclass(frozen=True)
class Principal:
    """Who is calling: sessions belong to the principal that created them."""

    id: str
    admin: bool = False


LOCAL_PRINCIPAL = Principal("local")


@dataclass(frozen=True)
class _Expired:
    expires_at: datetime


@dataclass(frozen=True)
class _ResetTo:
    successor_id: str


def command_outputs(result: CommandResult) -> Iterator[AgentOutput]:
    """A chat command's answer, streamed like an agent's reply."""
    for word in split_words(result.text):
        yield TextDelta(word)
    yield FinalMessage(content=result.text, metadata={"command": result.name}, steps=0)


def _no_command(_: Session) -> None:
    """A command that only lets the session's passed deadlines be handled."""


class _TurnLock:
    # threading.Lock cannot be weakly referenced; this wrapper can.
    def __init__(self) -> None:
        self.lock = threading.Lock()


def checkpoint_document(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The ``Checkpoint`` resource."""
    return {
        "id": checkpoint["id"],
        "name": checkpoint["name"],
        "description": checkpoint.get("description"),
        "offset": checkpoint["offset"],
        "message_count": checkpoint["message_count"],
        "created_at": format_time(datetime.fromisoformat(checkpoint["created_at"])),
    }


class Runtime:
    """The synchronous in-process API; thread-safe. Use as a context manager, or
    call :meth:`close`."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        # Commands read the time through this: inside an actor command it is
        # pinned to the reading the deadline check used (see _after_deadlines).
        self.clock = PinnedClock(self.settings.clock)
        self.app = Sessions(self.settings)
        self.views = self.app.views
        self.agents = AgentRegistry(self.settings.agents)
        self.commands = ChatCommands(self)
        self.directory = ActorDirectory(
            self.app,
            self.clock,
            max_live=self.settings.max_live_actors,
            idle_seconds=self.settings.actor_idle_seconds,
            snapshot_interval=self.settings.snapshot_interval,
        )
        self._turn_locks: weakref.WeakValueDictionary[str, _TurnLock] = (
            weakref.WeakValueDictionary()
        )
        self._turn_locks_guard = threading.Lock()
        self._closed = threading.Event()
        self._background: set[threading.Thread] = set()
        self._background_guard = threading.Lock()
        self._reaper = threading.Thread(
            target=self._reap_idle, name="sessiond-passivation", daemon=True
        )
        self._reaper.start()
        retention = self.settings.retention_days
        self.supervisor: Any = LifecycleSupervisor.start(
            self.views,
            self.clock,
            self.supervise,
            self._purge,
            retention=None if retention is None else timedelta(days=retention),
            keep_checkpoints=self.settings.retention_keep_checkpoints,
        ).proxy()
        self.webhooks = WebhookDeliverer(
            self.views,
            self.clock,
            max_attempts=self.settings.webhook_max_attempts,
            backoff=self.settings.webhook_backoff_seconds,
            backoff_cap=self.settings.webhook_backoff_cap_seconds,
            timeout=self.settings.webhook_timeout_seconds,
        )
        self._ticker: Ticker | None = None
        if self.settings.supervisor_interval > 0:
            # Background lifecycle work; with an interval of 0 the caller drives it
            # (run_lifecycle, deliver_webhooks), as tests do.
            self._ticker = Ticker(self.supervisor, self.settings.supervisor_interval)
            self._ticker.start()
            recorder = self.app.recorder
            assert isinstance(recorder, SessionsRecorder)
            recorder.on_outbox = self.webhooks.wake
            self.webhooks.start()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop every actor (each finishes its queued commands) and the store."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._background_guard:
            turns = list(self._background)
        for turn in turns:
            turn.join(self.settings.actor_timeout)
        if self._ticker is not None:
            self._ticker.stop()
        self.webhooks.stop()
        self.supervisor.actor_ref.stop()
        self.directory.stop_all()
        self.app.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _reap_idle(self) -> None:
        interval = max(0.05, min(self.settings.actor_idle_seconds / 4, 30.0))
        while not self._closed.wait(interval):
            self.directory.passivate_idle()

    # ------------------------------------------------------------------ plumbing

    def _row(
        self, session_id: str, principal: Principal, *, allow_expired: bool = False
    ) -> dict[str, Any]:
        """The caller's session's index row; another owner's is not found.

        An expired session answers ``SessionExpiredError`` (unless
        ``allow_expired``); one whose deadline passed before the supervisor got
        to it is expired on the spot, through its actor.
        """
        row = self.views.session_row(session_id) if isinstance(session_id, str) else None
        return self._checked(row, session_id, principal, allow_expired=allow_expired)

    def _checked(
        self,
        row: dict[str, Any] | None,
        session_id: str,
        principal: Principal,
        *,
        allow_expired: bool = False,
    ) -> dict[str, Any]:
        """:meth:`_row`'s checks on a row already read."""
        if row is None or not (principal.admin or row["owner_id"] == principal.id):
            msg = f"session {session_id} not found"
            raise SessionNotFoundError(msg)
        if allow_expired:
            return row
        document = row["doc"]
        if document["status"] == Status.ACTIVE.value and (
            datetime.fromisoformat(document["expires_at"]) <= self.clock.now()
        ):
            self._execute(session_id, _no_command)
            row = self.views.session_row(session_id) or row
            document = row["doc"]
        if document["status"] == Status.EXPIRED.value:
            raise SessionExpiredError(
                session_id, datetime.fromisoformat(document["expires_at"])
            )
        return row

    def _ask(self, session_id: str, message: Execute | Read) -> Any:
        # The message is queued under the directory's lock, so passivation and
        # the live-actor cap never refuse it. An actor that stopped by itself (a
        # storage error) refuses it with ActorDeadError without having run it;
        # it is then safe to resend it to the successor.
        for _ in range(8):
            future = self.directory.get_or_start(
                session_id, lambda ref: ref.ask(message, block=False)
            )
            try:
                return future.get(timeout=self.settings.actor_timeout)
            except pykka.ActorDeadError:
                continue
            except pykka.Timeout:
                msg = f"session {session_id} did not answer in time"
                raise ActorUnavailableError(msg) from None
        msg = f"session {session_id} kept restarting"
        raise ActorUnavailableError(msg)

    def _execute(
        self, session_id: str, command: Callable[[Session], T | Outcome[T]]
    ) -> T:
        return self._execute_on(session_id, command)[0]

    def _execute_expecting(
        self,
        expected_offset: int | None,
        session_id: str,
        command: Callable[[Session], T | Outcome[T]],
    ) -> T:
        """:meth:`_execute`, refused with ``OffsetConflictError`` unless the
        session is at ``expected_offset`` (checked in the actor: atomic)."""
        if expected_offset is None:
            return self._execute(session_id, command)

        def checked(session: Session) -> T | Outcome[T]:
            if session.version != expected_offset:
                raise OffsetConflictError(expected_offset, session.version)
            return command(session)

        return self._execute(session_id, checked)

    def _execute_on(
        self, session_id: str, command: Callable[[Session], T | Outcome[T]]
    ) -> tuple[T, str]:
        """Run a command through the session's actor, after its lifecycle
        deadlines: returns the result and the session it ran on, which is the
        successor when a due daily or idle reset came first."""
        for _ in range(4):
            outcome = self._ask(session_id, Execute(self._after_deadlines(command)))
            if isinstance(outcome, _Expired):
                raise SessionExpiredError(session_id, outcome.expires_at)
            if isinstance(outcome, _ResetTo):
                session_id = outcome.successor_id
                continue
            return outcome, session_id
        msg = f"session {session_id} kept resetting"
        raise ActorUnavailableError(msg)

    def _after_deadlines(
        self, command: Callable[[Session], Any]
    ) -> Callable[[Session], Any]:
        # Deadlines that passed are handled before the command, in the actor, so a
        # message and an expiry can never both win: the one that comes first in
        # the session's mailbox decides, by the clock it carries.
        # The command runs at the moment the check read: were the clock read again,
        # a command could be recorded just after a deadline found not yet passed.
        def run(session: Session) -> Any:
            with self.clock.pinned() as now:
                if session.status == Status.ACTIVE.value:
                    due = session.act_on_deadlines(timestamp=now)
                    if due is Due.EXPIRE:
                        return _Expired(session.expires_at)
                    if due is not None:
                        successor = self._successor(session, now, reason=due.value)
                        return Outcome(_ResetTo(successor.id), (successor,))
                return command(session)

        return run

    def _successor(self, session: Session, now: datetime, *, reason: str) -> Session:
        """End ``session`` and open its successor on the same scope key (saved in
        the same transaction by the caller)."""
        session.check_writable()
        successor_id = self._new_id()
        session.end(timestamp=now, reason=reason, successor_id=successor_id)
        return Session.open(
            session_id=successor_id,
            timestamp=now,
            owner_id=session.owner_id,
            agent_id=session.agent_id,
            user_id=session.user_id,
            channel_id=session.channel_id,
            peer_id=session.peer_id,
            scope_key=session.scope_key,
            name=session.name,
            metadata=dict(session.metadata),
            attributes=dict(session.attributes),
            timeout=dict(session.timeout),
            concurrency=session.concurrency,
            reset_policy=dict(session.reset_policy),
        )

    def run_lifecycle(self) -> list[str]:
        """One supervisor tick, waited for: every passed deadline is handled
        before this returns (tests and operators; the service ticks by itself).
        Returns the sessions that had something due."""
        asked: list[str] = self.supervisor.tick().get(timeout=self.settings.actor_timeout)
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

    def _purge(self, session_id: str) -> None:
        self.directory.passivate(session_id, wait=False)
        self.views.purge(session_id)
        logger.info("session purged", extra={"session_id": session_id})

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
        self._row(session_id, principal)
        changes = {
            key: value
            for key, value in (("daily_at", daily_at), ("idle_minutes", idle_minutes))
            if value is not _UNSET
        }
        self._execute_expecting(expected_offset, 
            session_id,
            lambda s: s.set_reset_policy(timestamp=self.clock.now(), policy=changes),
        )
        return self._document(session_id)

    def rescope(
        self, session_id: str, scope: str, *, principal: Principal = LOCAL_PRINCIPAL
    ) -> dict[str, Any]:
        """Make this the session get-or-create finds for ``scope`` (``main``,
        ``per-peer``, ``per-channel-peer``) of its agent, user, channel and peer;
        refused while another live session holds that key."""
        row = self._row(session_id, principal)
        doc = row["doc"]
        try:
            scope_value = Scope(scope)
        except ValueError:
            raise InvalidRequestError(
                "scope must be one of main, per-peer, per-channel-peer"
            ) from None
        key = scope_key(
            scope_value,
            owner_id=row["owner_id"],
            agent_id=doc["agent_id"],
            user_id=doc["user_id"],
            channel_id=doc["channel_id"],
            peer_id=doc["peer_id"],
        )
        holder = self.views.find_by_scope(key)
        if holder is not None and holder != session_id:
            msg = f"session {holder} already holds that scope"
            raise SessionExistsError(msg)
        self._execute(session_id, lambda s: s.rescope(timestamp=self.clock.now(), scope_key=key))
        return self._document(session_id)

    def set_webhook(
        self,
        session_id: str,
        url: str | None,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
        headers: Mapping[str, str] | None = None,
        events: AnyList | None = None,
    ) -> dict[str, Any]:
        """Deliver the session's events (all, or the ``events`` types named) to
        ``url`` from the durable outbox; ``url=None`` removes the webhook."""
        self._row(session_id, principal)
        self._execute_expecting(expected_offset, 
            session_id,
            lambda s: s.set_webhook(
                timestamp=self.clock.now(),
                url=url,
                headers=dict(headers) if headers is not None else None,
                events=events,
            ),
        )
        return self._document(session_id)

    def webhook_deliveries(
        self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL, limit: int = 100
    ) -> DocumentList:
        """The session's webhook deliveries, newest first, with every attempt's
        outcome."""
        self._row(session_id, principal, allow_expired=True)
        return self.views.deliveries(session_id, limit)

    def deliver_webhooks(self) -> int:
        """One delivery round, waited for: an attempt at every due delivery
        (tests and operators; the service delivers by itself)."""
        return self.webhooks.deliver_due()

    def supervise(self, session_id: str) -> Any:
        """Ask a session to act on its passed deadlines, without waiting (for the
        supervisor, which must not block on an actor): returns the pykka future."""
        command = Execute(self._after_deadlines(_no_command))
        return self.directory.get_or_start(
            session_id, lambda ref: ref.ask(command, block=False)
        )

    def _read(self, session_id: str, query: Callable[[Session], T]) -> T:
        result: T = self._ask(session_id, Read(query))
        return result

    def _document(self, session_id: str) -> dict[str, Any]:
        row = self.views.session_row(session_id)
        assert row is not None
        return self._decorate(row["doc"])

    def _decorate(self, document: Mapping[str, Any]) -> dict[str, Any]:
        # What depends on the time of reading, not of writing.
        shown = dict(document)
        expires = datetime.fromisoformat(shown["expires_at"])
        remaining = max(0, int((expires - self.clock.now()).total_seconds() * 1000))
        threshold = shown["timeout"]["warning_threshold_minutes"] * 60_000
        shown["time_remaining_ms"] = remaining
        shown["near_expiry"] = 0 < remaining <= threshold
        return shown

    def _new_id(self) -> str:
        return uuid.uuid4().hex

    def _turn_lock(self, session_id: str) -> _TurnLock:
        with self._turn_locks_guard:
            lock = self._turn_locks.get(session_id)
            if lock is None:
                lock = _TurnLock()
                self._turn_locks[session_id] = lock
            return lock

    # ------------------------------------------------------------------ sessions

    def create(  # noqa: PLR0913 - the fields of a new session
        self,
        agent_id: str = "echo",
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        user_id: str | None = None,
        channel_id: str | None = None,
        peer_id: str | None = None,
        scope: str | None = None,
        group: bool = False,
        session_id: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
        timeout: Mapping[str, Any] | None = None,
        concurrency: str = "enqueue",
    ) -> dict[str, Any]:
        """Create a session (or, with ``scope``, get the live one for its key)."""
        document, _ = self.open(
            agent_id,
            principal=principal,
            user_id=user_id,
            channel_id=channel_id,
            peer_id=peer_id,
            scope=scope,
            group=group,
            session_id=session_id,
            name=name,
            metadata=metadata,
            attributes=attributes,
            timeout=timeout,
            concurrency=concurrency,
        )
        return document

    def open(  # noqa: PLR0913 - the fields of a new session
        self,
        agent_id: str = "echo",
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        user_id: str | None = None,
        channel_id: str | None = None,
        peer_id: str | None = None,
        scope: str | None = None,
        group: bool = False,
        session_id: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
        timeout: Mapping[str, Any] | None = None,
        concurrency: str = "enqueue",
    ) -> tuple[dict[str, Any], bool]:
        """Like :meth:`create`, also saying whether a session was created
        (``False`` when get-or-create or an idempotent re-create found one)."""
        agent = self.agents.config(agent_id)
        user_id = user_id or principal.id
        for label, value in (("metadata", metadata), ("attributes", attributes)):
            if value is not None and not isinstance(value, Mapping):
                raise InvalidRequestError(f"{label} must be an object")
        key = None
        if scope is not None or group:
            try:
                scope_value = Scope(scope or "per-channel-peer")
            except ValueError:
                raise InvalidRequestError(
                    "scope must be one of main, per-peer, per-channel-peer"
                ) from None
            key = scope_key(
                scope_value,
                owner_id=principal.id,
                agent_id=agent_id,
                user_id=user_id,
                channel_id=channel_id,
                peer_id=peer_id,
                group=group,
            )
            found = self.views.find_by_scope(key)
            if found is not None:
                return self._document(found), False
        if session_id is not None:
            validate_session_id(session_id)
            existing = self._existing_for_recreate(session_id, principal, agent_id)
            if existing is not None:
                return existing, False
        name = normalize_name(name)
        if name is not None and self.views.name_taken(
            principal.id, user_id, name, session_id or ""
        ):
            raise NameTakenError(f"another session of {user_id} is named {name!r}")
        policy = TimeoutPolicy.resolve(
            self.settings.timeout_limits, dict(agent.timeout), dict(timeout or {})
        )
        session = Session.open(
            session_id=session_id or self._new_id(),
            timestamp=self.clock.now(),
            owner_id=principal.id,
            agent_id=agent_id,
            user_id=user_id,
            channel_id=channel_id,
            peer_id=peer_id,
            scope_key=key,
            name=name,
            metadata=dict(metadata or {}),
            attributes=dict(attributes or {}),
            timeout=policy.as_dict(),
            concurrency=_concurrency(concurrency),
        )
        try:
            self.app.save(session)
        except IntegrityError as error:
            return self._resolve_create_clash(error, session, principal, key)
        except PersistenceError as error:
            raise StorageUnavailableError("the store failed to record the session") from error
        return self._document(session.id), True

    def _existing_for_recreate(
        self, session_id: str, principal: Principal, agent_id: str
    ) -> dict[str, Any] | None:
        row = self.views.session_row(session_id)
        if row is None:
            return None
        if row["owner_id"] == principal.id and row["doc"]["agent_id"] == agent_id:
            return self._decorate(row["doc"])
        msg = f"session id {session_id} is taken"
        raise SessionExistsError(msg)

    def _resolve_create_clash(
        self,
        error: IntegrityError,
        session: Session,
        principal: Principal,
        key: str | None,
    ) -> tuple[dict[str, Any], bool]:
        # Another thread created the same id, scope key or name first.
        text = str(error)
        if key is not None and "scope" in text:
            found = self.views.find_by_scope(key)
            if found is not None:
                return self._document(found), False
        if "name" in text:
            raise NameTakenError("another session of this user has that name") from None
        existing = self._existing_for_recreate(session.id, principal, session.agent_id)
        if existing is not None:
            return existing, False
        raise SessionExistsError(f"session id {session.id} is taken") from None

    def get(self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL) -> dict[str, Any]:
        """One session."""
        return self._decorate(self._row(session_id, principal)["doc"])

    def list(  # noqa: A003, PLR0913 - the list filters
        self,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        user_id: str | None = None,
        agent_id: str | None = None,
        status: str | None = None,
        pinned: bool | None = None,
        q: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """A page of the caller's sessions, newest first: ``{sessions,
        next_cursor, total}``. Ended sessions are listed only when asked for by
        ``status``."""
        if not 1 <= limit <= HISTORY_MAX_LIMIT:
            raise InvalidRequestError(f"limit must be within 1..{HISTORY_MAX_LIMIT}")
        if status is not None and status not in ("active", "expired", "ended"):
            raise InvalidRequestError("status must be one of active, expired, ended")
        sessions, next_cursor, total = self.views.list_sessions(
            owner_id=None if principal.admin else principal.id,
            user_id=user_id,
            agent_id=agent_id,
            status=status,
            pinned=pinned,
            q=q,
            limit=limit,
            cursor=_decode_cursor(cursor),
        )
        return {
            "sessions": [self._decorate(s) for s in sessions],
            "next_cursor": _encode_cursor(next_cursor),
            "total": total,
        }

    def counts(self, *, principal: Principal = LOCAL_PRINCIPAL) -> dict[str, int]:
        """How many of the caller's sessions there are, by status."""
        return self.views.counts(None if principal.admin else principal.id)

    def update(  # noqa: PLR0913
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
        name: str | None = _UNSET,
        pinned: bool | None = None,
        attributes: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Rename (``None`` clears), pin/unpin, deep-merge attributes, replace
        metadata; all in one atomic write."""
        row = self._row(session_id, principal)
        if name is not _UNSET:
            name = normalize_name(name)
            user_id = row["doc"]["user_id"]
            if name is not None and name_key(name) != name_key(row["doc"]["name"]) and (
                self.views.name_taken(row["owner_id"], user_id, name, session_id)
            ):
                raise NameTakenError(f"another session of {user_id} is named {name!r}")
        if pinned is not None and not isinstance(pinned, bool):
            raise InvalidRequestError("pinned must be a boolean")

        def command(session: Session) -> None:
            now = self.clock.now()
            if name is not _UNSET:
                session.rename(timestamp=now, name=name)
            if pinned is not None:
                session.set_pinned(timestamp=now, pinned=pinned)
            if attributes is not None:
                session.patch_attributes(timestamp=now, patch=dict(attributes))
            if metadata is not None:
                session.replace_metadata(timestamp=now, metadata=dict(metadata))

        self._execute_expecting(expected_offset, session_id, command)
        return self._document(session_id)

    def patch_attributes(
        self,
        session_id: str,
        patch: Mapping[str, Any],
        *,
        principal: Principal = LOCAL_PRINCIPAL,
    ) -> dict[str, Any]:
        """Deep-merge ``patch`` into the attributes (``None`` deletes a key)."""
        return self.update(session_id, principal=principal, attributes=patch)

    def delete(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
        purge: bool = False,
    ) -> dict[str, Any]:
        """End the session; its log stays readable for audit (works on an expired
        session too). With ``purge`` its log, snapshots, views and pending
        webhooks are deleted for good: nothing of it comes back from any call.
        Returns the ended session."""
        self._row(session_id, principal, allow_expired=True)
        self._execute_expecting(
            expected_offset, session_id, lambda s: s.end(timestamp=self.clock.now())
        )
        document = self._document(session_id)
        if purge:
            self._purge(session_id)
        return document

    # ------------------------------------------------------------------ messages

    def append(  # noqa: PLR0913
        self,
        session_id: str,
        content: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        role: str = "user",
        author_id: str | None = None,
        attachments: AnyList | None = None,
        metadata: Mapping[str, Any] | None = None,
        usage: Mapping[str, int] | None = None,
        idempotency_key: str | None = None,
        expected_offset: int | None = None,
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """Append one message without running a turn; returns the ``Message``.

        With ``idempotency_key``, a retry returns the first message and appends
        nothing (keys are remembered for the session's last
        ``IDEMPOTENCY_WINDOW`` keyed messages). ``expected_offset`` must equal
        the session's offset (else ``OffsetConflictError`` with the current one).
        """
        self._row(session_id, principal)
        recorded: DocumentList = []
        offset, duplicate, session_id = self._append(
            session_id,
            content,
            role=role,
            author_id=author_id or (principal.id if role == "user" else None),
            attachments=attachments,
            metadata=metadata,
            usage=usage,
            idempotency_key=idempotency_key,
            expected_offset=expected_offset,
            reply_to=reply_to,
            recorded=recorded,
        )
        if recorded and not duplicate:
            message = recorded[-1]
            if message["session_id"] == session_id and message["offset"] == offset:
                return message
        # A retry (idempotency key) answers the message recorded the first time.
        found = self.views.message_at(session_id, offset)
        assert found is not None
        return found

    def _append(  # noqa: PLR0913
        self,
        session_id: str,
        content: str,
        *,
        role: str,
        author_id: str | None,
        attachments: AnyList | None,
        metadata: Mapping[str, Any] | None,
        usage: Mapping[str, int] | None,
        idempotency_key: str | None,
        expected_offset: int | None,
        reply_to: int | None,
        recorded: DocumentList | None = None,
    ) -> tuple[int, bool, str]:
        """Append on the session's actor; returns (offset, whether it was a
        retry, the session it went to). ``recorded`` receives the new message's
        document, made from the very bytes the log stores, so that the caller
        need not read it back (reading after a write costs ~100 us: every write
        empties the other connections' page caches)."""
        if attachments is not None and not isinstance(attachments, list):
            raise InvalidRequestError("attachments must be a list")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidRequestError("metadata must be an object")
        message_id = self._new_id()

        def command(session: Session) -> Any:  # (offset, duplicate), or _ResetTo
            seen = session.seen_idempotency_key(idempotency_key)
            if seen is not None:
                return seen, True
            successor = session.successor()
            if successor is not None:
                # Reset (e.g. by the supervisor at an idle or daily reset point)
                # before this message came: it belongs to the session carrying on.
                return _ResetTo(successor)
            offset = session.append_message(
                timestamp=self.clock.now(),
                message_id=message_id,
                role=role,
                content=content,
                author_id=author_id,
                attachments=attachments,
                metadata=dict(metadata) if metadata else None,
                usage=dict(usage) if usage else None,
                idempotency_key=idempotency_key,
                reply_to=reply_to,
                expected_offset=expected_offset,
            )
            if recorded is not None:
                state = vars(session.pending_events[-1])
                stored = orjson.loads(encode_state(state))  # as the log stores it
                recorded.append(message_document(session.id, offset, stored))
            return offset, False

        (offset, duplicate), session_id = self._execute_on(session_id, command)
        return offset, duplicate, session_id

    def send(  # noqa: PLR0913
        self,
        session_id: str,
        content: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        role: str = "user",
        attachments: AnyList | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        expected_offset: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Append the message, run the agent's turn, append its reply.

        Returns ``{user_message, reply, tool_calls, usage, steps, session}``. A
        retry with the same ``idempotency_key`` returns the first result and
        runs nothing.
        """
        result: dict[str, Any] = {}
        for event in self.stream(
            session_id,
            content,
            principal=principal,
            role=role,
            attachments=attachments,
            metadata=metadata,
            idempotency_key=idempotency_key,
            expected_offset=expected_offset,
            timeout=timeout,
        ):
            if event["type"] == "done":
                result = {k: v for k, v in event.items() if k != "type"}
        return result

    def stream(  # noqa: PLR0913
        self,
        session_id: str,
        content: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        role: str = "user",
        attachments: AnyList | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        expected_offset: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Send a message and iterate the turn as it happens.

        Yields dicts whose ``type`` is ``message_start`` (with the recorded
        ``user_message``), ``content_block_start``, ``text_delta``,
        ``input_json_delta``, ``content_block_stop``, ``message_delta``,
        ``message_stop`` (with the recorded ``message``) and finally ``done``
        (the same result :meth:`send` returns). Turns of one session run one at a
        time, in arrival order. Every event is also published live to the
        session's tails as a ``delta``.
        """
        bus = self.app.bus
        for event in self._turn(
            session_id,
            content,
            principal=principal,
            role=role,
            attachments=attachments,
            metadata=metadata,
            idempotency_key=idempotency_key,
            expected_offset=expected_offset,
            timeout=timeout,
        ):
            if bus.has_subscribers(session_id):
                bus.publish(session_id, {"type": "delta", "event": event})
            yield event

    def _turn(  # noqa: PLR0913
        self,
        session_id: str,
        content: str,
        *,
        principal: Principal,
        role: str,
        attachments: AnyList | None,
        metadata: Mapping[str, Any] | None,
        idempotency_key: str | None,
        expected_offset: int | None,
        timeout: float | None,
    ) -> Iterator[dict[str, Any]]:
        """The turn behind :meth:`stream`: holds the session's turn lock, records
        the message, runs the agent and records its reply."""
        row = self._row(session_id, principal)
        try:
            role = Role(role).value
        except ValueError:
            raise InvalidRequestError(
                "role must be one of user, assistant, system, tool"
            ) from None
        agent = self.agents.get(row["doc"]["agent_id"]) if role == "user" else None
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        turn = self._turn_lock(session_id)
        if not turn.lock.acquire(timeout=-1 if timeout is None else timeout):
            msg = "the session's previous turn did not finish in time"
            raise TurnTimeoutError(msg)
        try:
            offset, duplicate, session_id = self._append(
                session_id,
                content,
                role=role,
                author_id=principal.id if role == "user" else None,
                attachments=attachments,
                metadata=metadata,
                usage=None,
                idempotency_key=idempotency_key,
                expected_offset=expected_offset,
                reply_to=None,
            )
            user_message = self.views.message_at(session_id, offset)
            yield {"type": "message_start", "user_message": user_message}
            if duplicate or agent is None:
                reply = self.views.reply_to(session_id, offset) if duplicate else None
                yield self._done(session_id, user_message, reply)
                return
            command = (
                self.commands.run(session_id, content, principal) if is_command(content) else None
            )
            if command is not None:
                outputs: Iterator[AgentOutput] = command_outputs(command)
            else:
                spans = self._row(session_id, principal)["spans"]
                history, _ = self.views.history(
                    spans, limit=AGENT_HISTORY_LIMIT, descending=True
                )
                history.reverse()
                outputs = iter(agent.run(history))
            final: FinalMessage | None = None
            yield {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}
            for output in outputs:
                if deadline is not None and self.clock.monotonic() > deadline:
                    msg = "the agent's turn did not finish in time"
                    raise TurnTimeoutError(msg)
                if isinstance(output, TextDelta):
                    yield {"type": "text_delta", "index": 0, "text": output.text}
                elif isinstance(output, ToolCallDelta):
                    yield {
                        "type": "input_json_delta",
                        "index": 0,
                        "id": output.call_id,
                        "name": output.name,
                        "partial_json": output.partial_json,
                    }
                else:
                    final = output
            yield {"type": "content_block_stop", "index": 0}
            if final is None:
                msg = "the agent ended its turn without a final message"
                raise RuntimeError(msg)
            reply_offset, _, session_id = self._append(
                session_id,
                final.content,
                role="assistant",
                author_id=row["doc"]["agent_id"],
                attachments=None,
                metadata=dict(final.metadata) or None,
                usage=dict(final.usage),
                idempotency_key=None,
                expected_offset=None,
                reply_to=offset,
            )
            reply = self.views.message_at(session_id, reply_offset)
            if command is not None and command.reset:
                # The answer stays with the session it speaks of; the
                # conversation carries on in the successor.
                session_id = self.reset(session_id, principal=principal)["id"]
            yield {
                "type": "message_delta",
                "stop_reason": final.stop_reason,
                "usage": dict(final.usage),
            }
            yield {"type": "message_stop", "message": reply}
            yield self._done(
                session_id,
                user_message,
                reply,
                tool_calls=list(final.tool_calls),
                steps=final.steps,
            )
        finally:
            turn.lock.release()

    def submit(  # noqa: PLR0913
        self,
        session_id: str,
        content: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        role: str = "user",
        attachments: AnyList | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        expected_offset: int | None = None,
    ) -> dict[str, Any]:
        """Record the message and run the turn in the background; returns the
        recorded user ``Message`` as soon as it is durable. The reply arrives on
        the session's tail (and in its history)."""
        self._row(session_id, principal)
        recorded = threading.Event()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                for event in self.stream(
                    session_id,
                    content,
                    principal=principal,
                    role=role,
                    attachments=attachments,
                    metadata=metadata,
                    idempotency_key=idempotency_key,
                    expected_offset=expected_offset,
                ):
                    if event["type"] == "message_start":
                        outcome["message"] = event["user_message"]
                        recorded.set()
            except BaseException as error:  # noqa: BLE001 - reported to the caller or logged
                outcome.setdefault("error", error)
                if recorded.is_set():
                    logger.warning(
                        "background turn failed",
                        extra={"session_id": session_id, "error": type(error).__name__},
                    )
            finally:
                recorded.set()
                with self._background_guard:
                    self._background.discard(threading.current_thread())

        worker = threading.Thread(target=run, name=f"turn-{session_id}", daemon=True)
        with self._background_guard:
            self._background.add(worker)
        worker.start()
        if not recorded.wait(self.settings.actor_timeout):
            msg = f"session {session_id} did not record the message in time"
            raise ActorUnavailableError(msg)
        if "message" not in outcome:
            raise outcome["error"]
        return dict(outcome["message"])

    def _done(
        self,
        session_id: str,
        user_message: dict[str, Any] | None,
        reply: dict[str, Any] | None,
        *,
        tool_calls: AnyList | None = None,
        steps: int | None = None,
    ) -> dict[str, Any]:
        usage = (reply or {}).get("usage") or {"input_tokens": 0, "output_tokens": 0}
        return {
            "type": "done",
            "user_message": user_message,
            "reply": reply,
            "tool_calls": tool_calls or [],
            "usage": usage,
            "steps": steps if steps is not None else (1 if reply else 0),
            "session": self._document(session_id),
        }

    def history(  # noqa: PLR0913
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        limit: int = 50,
        before: int | None = None,
        after: int | None = None,
        order: str = "desc",
    ) -> dict[str, Any]:
        """A page of the visible history: ``{messages, has_more}``.

        ``before``/``after`` are exclusive offsets; ``order`` is ``desc``
        (newest first, the default) or ``asc``. ``has_more`` is exact.
        """
        if not 1 <= limit <= HISTORY_MAX_LIMIT:
            raise InvalidRequestError(f"limit must be within 1..{HISTORY_MAX_LIMIT}")
        if order not in ("asc", "desc"):
            raise InvalidRequestError("order must be asc or desc")
        for label, value in (("before", before), ("after", after)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InvalidRequestError(f"{label} must be a non-negative offset")
        if not isinstance(session_id, str):
            self._checked(None, session_id, principal)
        # The index row and the page come from one read transaction.
        row, messages, has_more = self.views.session_history(
            session_id, limit=limit, before=before, after=after, descending=order == "desc"
        )
        checked = self._checked(row, session_id, principal)
        if checked is not row:  # it changed meanwhile (expired on the spot)
            messages, has_more = self.views.history(
                checked["spans"],
                limit=limit,
                before=before,
                after=after,
                descending=order == "desc",
            )
        return {"messages": messages, "has_more": has_more}

    def messages(
        self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL
    ) -> DocumentList:
        """The whole visible history, oldest first."""
        row = self._row(session_id, principal)
        found: DocumentList = []
        after: int | None = None
        while True:
            page, has_more = self.views.history(
                row["spans"], limit=HISTORY_MAX_LIMIT, after=after, descending=False
            )
            found.extend(page)
            if not has_more:
                return found
            after = page[-1]["offset"]

    def history_text(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        format: str = "markdown",  # noqa: A002 - the public name of the option
    ) -> str:
        """The visible history rendered as ``markdown`` or ``text``."""
        messages = self.messages(session_id, principal=principal)
        if format == "markdown":
            return render_markdown(self.get(session_id, principal=principal), messages)
        if format == "text":
            return render_text(messages)
        raise InvalidRequestError("format must be markdown or text")

    def events(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        after: int = 0,
        limit: int = 100,
        include_expired: bool = False,
    ) -> dict[str, Any]:
        """A page of the session's own log after offset ``after``: ``{events,
        has_more}`` (the audit view; abandoned branches included). An admin may
        pass ``include_expired`` to read an expired session's log."""
        if not 1 <= limit <= HISTORY_MAX_LIMIT:
            raise InvalidRequestError(f"limit must be within 1..{HISTORY_MAX_LIMIT}")
        if not isinstance(after, int) or after < 0:
            raise InvalidRequestError("after must be a non-negative offset")
        self._row(session_id, principal, allow_expired=include_expired and principal.admin)
        events, has_more = self.views.events(session_id, after=after, limit=limit)
        return {"events": events, "has_more": has_more}

    # ------------------------------------------------------------------ checkpoints, branches

    def checkpoint_save(
        self,
        session_id: str,
        name: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Save a named checkpoint at the current offset (copies nothing)."""
        self._row(session_id, principal)
        checkpoint_id = self._new_id()
        checkpoint = self._execute_expecting(expected_offset, 
            session_id,
            lambda s: s.save_checkpoint(
                timestamp=self.clock.now(),
                checkpoint_id=checkpoint_id,
                name=name,
                description=description,
            ),
        )
        return checkpoint_document(checkpoint)

    def checkpoints(
        self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL
    ) -> DocumentList:
        """The session's checkpoints, oldest first."""
        self._row(session_id, principal)
        found = self._read(session_id, lambda s: list(s.checkpoints.values()))
        return [checkpoint_document(c) for c in sorted(found, key=lambda c: c["offset"])]

    def checkpoint_restore(
        self,
        session_id: str,
        checkpoint_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
    ) -> dict[str, Any]:
        """Move the head back to a checkpoint; later messages stay in the log."""
        self._row(session_id, principal)
        self._execute(
            session_id,
            lambda s: s.restore_checkpoint(
                timestamp=self.clock.now(),
                checkpoint_id=checkpoint_id,
                expected_offset=expected_offset,
            ),
        )
        return self._document(session_id)

    def checkpoint_delete(
        self, session_id: str, checkpoint_id: str, *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
    ) -> None:
        """Delete a checkpoint (the history it pointed at is untouched)."""
        self._row(session_id, principal)
        self._execute_expecting(expected_offset, 
            session_id,
            lambda s: s.delete_checkpoint(timestamp=self.clock.now(), checkpoint_id=checkpoint_id),
        )

    def rewind(
        self,
        session_id: str,
        offset: int,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
    ) -> dict[str, Any]:
        """Move the head back to the visible history as of ``offset``."""
        self._row(session_id, principal)
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise InvalidRequestError("offset must be an integer")

        def command(session: Session) -> None:
            head, count = self.views.last_message(session.spans_at(offset))
            session.rewind(
                timestamp=self.clock.now(),
                to_offset=offset,
                head=head,
                message_count=count,
                expected_offset=expected_offset,
            )

        self._execute(session_id, command)
        return self._document(session_id)

    def fork(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        offset: int | None = None,
        session_id_for_fork: str | None = None,
    ) -> dict[str, Any]:
        """A new session whose history is this one's at ``offset`` (default: now)
        plus its own; O(1), nothing is copied."""
        self._row(session_id, principal)
        if offset is not None and (not isinstance(offset, int) or isinstance(offset, bool)):
            raise InvalidRequestError("offset must be an integer")
        new_id = (
            validate_session_id(session_id_for_fork) if session_id_for_fork else self._new_id()
        )

        def command(session: Session) -> str | Outcome[str]:
            at = session.version if offset is None else offset
            if at == session.version:
                head, count = session.head, session.message_count
            else:
                head, count = self.views.last_message(session.spans_at(at))
            fork = session.fork(
                session_id=new_id,
                timestamp=self.clock.now(),
                offset=at,
                head=head,
                message_count=count,
                owner_id=principal.id,
            )
            return Outcome(fork.id, (fork,))

        self._execute(session_id, command)
        return self._document(new_id)

    def state_at(
        self, session_id: str, offset: int, *, principal: Principal = LOCAL_PRINCIPAL
    ) -> dict[str, Any]:
        """The session as it was at ``offset`` (rebuilt from snapshot and log)."""
        row = self._row(session_id, principal)
        doc = row["doc"]
        first = (doc["parent"] or {}).get("offset", 0) + 1
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise InvalidRequestError("offset must be an integer")
        if not first <= offset <= doc["offset"]:
            # The same condition and code as a rewind to such an offset.
            raise OffsetOutOfRangeError(
                f"offset must be within {first}..{doc['offset']} for this session"
            )
        session: Session = self.app.repository.get(session_id, version=offset)
        return session_document(session)

    def clear(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
    ) -> dict[str, Any]:
        """Empty the visible history; the session and its log remain."""
        self._row(session_id, principal)
        self._execute(
            session_id,
            lambda s: s.clear_history(timestamp=self.clock.now(), expected_offset=expected_offset),
        )
        return self._document(session_id)

    def reset(self, session_id: str, *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
    ) -> dict[str, Any]:
        """End the session and open a fresh one on the same scope key, in one
        atomic write; returns the new session."""
        self._row(session_id, principal)

        def command(session: Session) -> str | Outcome[str]:
            successor = self._successor(session, self.clock.now(), reason="reset")
            return Outcome(successor.id, (successor,))

        return self._document(self._execute_expecting(expected_offset, session_id, command))

    def export(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        format: str = "json",  # noqa: A002 - the public name of the option
    ) -> dict[str, Any] | str:
        """The session with its metadata: ``json`` (a dict), ``markdown`` or ``text``."""
        if format in ("markdown", "text"):
            return self.history_text(session_id, principal=principal, format=format)
        if format != "json":
            raise InvalidRequestError("format must be json, markdown or text")
        return export_document(
            self.get(session_id, principal=principal),
            self.messages(session_id, principal=principal),
            self.checkpoints(session_id, principal=principal),
            format_time(self.clock.now()),
        )

    # ------------------------------------------------------------------ tails

    def tail(
        self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL, after: int = 0
    ) -> SessionTail:
        """Follow the session's log from offset ``after``: the backlog, then live
        events and turn deltas (see :mod:`runtime.tail`)."""
        self._row(session_id, principal)
        if not isinstance(after, int) or after < 0:
            raise InvalidRequestError("after must be a non-negative offset")
        return SessionTail(self.views, self.app.bus, session_id, after)

    def branches(
        self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL
    ) -> dict[str, Any]:
        """The session's branch points: where it came from (``parent``), the
        restores and rewinds in its log, and the sessions forked from it."""
        document = self._row(session_id, principal)["doc"]
        restores = [
            {
                "offset": event["offset"],
                "to_offset": event["data"]["to_offset"],
                "checkpoint_id": event["data"].get("checkpoint_id"),
                "message_count": event["data"]["message_count"],
                "at": event["at"],
            }
            for event in self.views.events_of_type(session_id, ALIAS_OF[Session.Rewound])
        ]
        forks = [
            {
                "session_id": fork["id"],
                "offset": fork["parent"]["offset"],
                "created_at": fork["created_at"],
            }
            for fork in self.views.forks_of(session_id)
            if principal.admin or self._owned(fork["id"], principal)
        ]
        return {
            "session_id": session_id,
            "parent": document["parent"],
            "restores": restores,
            "forks": forks,
        }

    def _owned(self, session_id: str, principal: Principal) -> bool:
        row = self.views.session_row(session_id)
        return row is not None and row["owner_id"] == principal.id

    # ------------------------------------------------------------------ lifecycle

    def heartbeat(
        self, session_id: str, *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
    ) -> dict[str, Any]:
        """Record that the client is alive; renews when the policy auto-renews."""
        self._row(session_id, principal)
        self._execute_expecting(expected_offset, session_id, lambda s: s.heartbeat(timestamp=self.clock.now()))
        return self._document(session_id)

    def renew(self, session_id: str, *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
    ) -> dict[str, Any]:
        """Renew now (``RenewalRefusedError`` past the maximum duration)."""
        self._row(session_id, principal)
        self._execute_expecting(expected_offset, session_id, lambda s: s.renew(timestamp=self.clock.now()))
        return self._document(session_id)

    def update_timeout(  # noqa: PLR0913
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
        self._row(session_id, principal)
        changes = {
            "timeout_minutes": timeout_minutes,
            "auto_renew": auto_renew,
            "max_duration_minutes": max_duration_minutes,
            "warning_threshold_minutes": warning_threshold_minutes,
        }
        self._execute_expecting(expected_offset, 
            session_id,
            lambda s: s.change_timeout(
                timestamp=self.clock.now(),
                limits=self.settings.timeout_limits,
                changes={k: v for k, v in changes.items() if v is not None},
            ),
        )
        return self._document(session_id)

    # ------------------------------------------------------------------ operations

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
            "version": VERSION,
        }

    def metrics(self) -> dict[str, int]:
        """Counters and gauges of the runtime, for the metrics endpoint."""
        recorder = self.app.recorder
        assert isinstance(recorder, SessionsRecorder)
        counts = self.views.counts(None)
        return {
            "live_actors": self.directory.live_count(),
            "activations": self.directory.stats.activations,
            "passivations": self.directory.stats.passivations,
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


def _concurrency(value: str) -> str:
    try:
        return Concurrency(value).value
    except ValueError:
        raise InvalidRequestError(
            "concurrency must be one of enqueue, reject, interrupt"
        ) from None


def _encode_cursor(cursor: tuple[str, str] | None) -> str | None:
    if cursor is None:
        return None
    return base64.urlsafe_b64encode(orjson.dumps(list(cursor))).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[str, str] | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, session_id = orjson.loads(base64.urlsafe_b64decode(padded))
        return str(created_at), str(session_id)
    except (ValueError, binascii.Error, orjson.JSONDecodeError, TypeError):
        raise InvalidRequestError("cursor is not valid") from None


class AsyncRuntime:
    """The same API as :class:`Runtime`, as coroutines that run each call on a
    worker thread, so the event loop never blocks on an actor or the store."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(partial(function, *args, **kwargs))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        # Every public call of Runtime, made awaitable; stream has its own bridge.
        attribute = getattr(self.runtime, name)
        if name.startswith("_") or not callable(attribute):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._call(attribute, *args, **kwargs)

        call.__name__ = name
        call.__doc__ = attribute.__doc__
        return call

    async def tail(
        self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL, after: int = 0
    ) -> AsyncSessionTail:
        """:meth:`Runtime.tail` for asyncio: waiting for items costs no CPU."""
        if not isinstance(after, int) or after < 0:
            raise InvalidRequestError("after must be a non-negative offset")
        await self._call(self.runtime.get, session_id, principal=principal)
        return AsyncSessionTail(self.runtime.views, self.runtime.app.bus, session_id, after)

    async def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        """:meth:`Runtime.stream` as an async iterator; the turn runs on a worker
        thread and hands each event to the loop as it happens. Leaving the loop
        early stops the worker at its next event."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        done = object()

        def produce() -> None:
            item: Any = done
            try:
                for event in self.runtime.stream(*args, **kwargs):
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except BaseException as error:  # noqa: BLE001 - re-raised by the consumer
                item = error
            if not stop.is_set():
                loop.call_soon_threadsafe(queue.put_nowait, item)

        worker = loop.run_in_executor(None, produce)
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
            await worker
        finally:
            stop.set()
