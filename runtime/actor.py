"""``SessionActor``: the single writer of one session.

A pykka ``ThreadingActor`` holds the session aggregate in memory and runs commands
on it one at a time: a command is a function of the aggregate that validates and
triggers events; the actor then saves the pending events (group-committed, fsynced)
before answering. Commands are always sent with ``ask`` and a timeout, never
``tell``, so a failing command reports to its caller instead of killing the actor.

An idle actor lends its session to the caller: :meth:`SessionActor.run_here`
runs a command on the caller's own thread when the actor is alive, has nothing
queued and is not running anything, holding the same lock the actor's thread
holds for each message (the group committer's leader works the same way). The
session still has one writer at a time, in one order; what it saves is two
thread hand-overs per command (~60 us each here, more under load). A stop waits
for a lent command to finish before the actor reports itself gone, so the
directory never starts a successor while one runs.

Failures follow Akka's persistence rules:

- a domain error leaves nothing recorded; any half-applied events are discarded by
  reloading the aggregate on the next command;
- a view constraint such as a name clash firing on save discards the in-memory
  state, which is reloaded from the log on the next command;
- any other storage error stops the actor: whether the write landed is unknown,
  so the next command goes to a new actor rebuilt from the log.

Other writers (processes sharing the store, see README "Running several
processes") are detected without a per-command query on the write path:

- a write proves the cached state was current, because the store refuses an
  event at an offset already taken (the log's primary key). When it refuses, the
  actor reloads the session from the log and runs the command again on the
  fresh state (commands are functions of the state), up to
  ``CONFLICT_RETRIES`` times; a command whose precondition no longer holds (an
  ``If-Match`` offset, a status) then fails as it would have on fresh state;
- an answer that writes nothing (a read, a duplicate idempotency key, a domain
  error) is given from cached state only after one indexed lookup confirms the
  log has nothing newer; otherwise the actor reloads and answers again. State
  loaded for this very command is not checked again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pykka
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, PersistenceError

from aggregates.session import Session
from projections.views import SESSION_GONE
from runtime.errors import (
    ConcurrencyConflictError,
    NameTakenError,
    SessionExistsError,
    SessionNotFoundError,
    storage_error,
)

if TYPE_CHECKING:
    from runtime.sessions import Sessions

logger = logging.getLogger(__name__)

T = TypeVar("T")

CONFLICT_RETRIES = 16
"""How many times a command is re-run on fresh state after another writer took
its offset before the conflict is reported."""


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What a command returns when other sessions must be saved with it (a fork,
    the successor of a reset): ``also_save`` goes into the same transaction and
    the caller receives ``value``."""

    value: T
    also_save: tuple[Session, ...] = ()


def translate_integrity_error(error: IntegrityError, session_id: str) -> Exception:
    """Say which rule an integrity error on save broke."""
    text = str(error)
    if "session_index.user_id" in text or "session_index.name_key" in text:
        return NameTakenError("another session of this user already has that name")
    if "session_index.scope_key" in text or "session_index_scope" in text:
        return SessionExistsError("a live session already holds this scope key")
    if "session_index.session_id" in text or "session_index_pkey" in text:
        # A new session (a fork, a caller-chosen id) whose id is taken.
        return SessionExistsError("a session with this id already exists")
    if SESSION_GONE in text:
        return SessionNotFoundError(f"session {session_id} not found")
    return ConcurrencyConflictError(
        f"another writer appended to session {session_id} first"
    )


class ConflictCounter:
    """Counts commands re-run after another writer took their offset (metrics);
    shared by a runtime's actors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.retries = 0
        self.stale_reads = 0

    def retried(self) -> None:
        """One command re-run on fresh state after a conflict."""
        with self._lock:
            self.retries += 1

    def refreshed(self) -> None:
        """One answer that was about to come from stale state, reloaded first."""
        with self._lock:
            self.stale_reads += 1


@dataclass(frozen=True)
class Execute:
    """Message: run a command (see :meth:`SessionActor.execute`)."""

    command: Callable[[Session], Any]


@dataclass(frozen=True)
class Read:
    """Message: answer a query (see :meth:`SessionActor.read`)."""

    query: Callable[[Session], Any]


BUSY: Any = object()
"""What :meth:`SessionActor.run_here` answers when the actor is not idle."""


class SessionActor(pykka.ThreadingActor):
    """Owns one session's aggregate; see the module docstring."""

    use_daemon_thread = True

    def __init__(
        self,
        session_id: str,
        app: Sessions,
        *,
        snapshot_interval: int,
        on_stop: Callable[[str, pykka.ActorRef[Any]], None] | None = None,
        conflicts: ConflictCounter | None = None,
        made: Callable[[SessionActor], None] | None = None,
    ) -> None:
        super().__init__()
        if made is not None:  # hands the instance to the directory (run_here)
            made(self)
        # Held while a message runs, on the actor's thread or a caller's.
        self._exclusive = threading.Lock()
        self.session_id = session_id
        self.app = app
        self.snapshot_interval = snapshot_interval
        self._on_stop = on_stop
        self._conflicts = conflicts or ConflictCounter()
        self._session: Session | None = None

    @property
    def loaded_state(self) -> Session | None:
        """The session state this actor holds, if loaded (see
        :meth:`ActorDirectory.loaded`: only what never changes may be read from
        it on another thread)."""
        return self._session

    def on_receive(self, message: Any) -> Any:
        """Handle an :class:`Execute` or :class:`Read` message (actor thread)."""
        with self._exclusive:
            return self._handle(message)

    def run_here(self, message: Execute | Read) -> Any:
        """Handle ``message`` on the calling thread if the actor is idle (alive,
        nothing queued, nothing running); :data:`BUSY` otherwise, and the caller
        sends it instead. Raises what the command raises, as ``ask`` would."""
        if not self._exclusive.acquire(blocking=False):
            return BUSY
        try:
            if self.actor_stopped.is_set() or not self.actor_inbox.empty():
                return BUSY
            return self._handle(message)
        finally:
            self._exclusive.release()

    def _handle(self, message: Any) -> Any:
        if isinstance(message, Execute):
            return self.execute(message.command)
        if isinstance(message, Read):
            return self.read(message.query)
        msg = f"a session actor does not understand {type(message).__name__}"
        raise TypeError(msg)

    def on_stop(self) -> None:
        """Tell the directory (runs on the actor's thread as it stops), once a
        command lent to a caller has finished (pykka marked the actor stopped
        first, so no new one starts)."""
        with self._exclusive:
            pass
        if self._on_stop is not None:
            self._on_stop(self.session_id, self.actor_ref)

    def on_failure(self, *_: Any) -> None:
        """An unexpected crash: let the directory forget this actor."""
        self.on_stop()

    def _load(self) -> Session:
        if self._session is None:
            try:
                session: Session = self.app.repository.get(self.session_id)
            except AggregateNotFoundError:
                # Nothing to keep live: leave the directory (a command for an
                # unknown id must not hold an actor until it idles out).
                self.actor_ref.stop(block=False)
                msg = f"session {self.session_id} not found"
                raise SessionNotFoundError(msg) from None
            except PersistenceError as error:
                self._fail(error)
            self._session = session
        return self._session

    def read(self, query: Callable[[Session], T]) -> T:
        """Answer a query from the in-memory state once it is known to be current
        (actor thread; no write)."""
        fresh = self._session is None
        session = self._load()
        if not fresh and self._stale(session.version):
            session = self._load()
        return query(session)

    def execute(self, command: Callable[[Session], T | Outcome[T]]) -> T:
        """Run ``command`` on the session and save what it decided.

        Runs on the actor's thread. A command that returns an :class:`Outcome`
        has its ``also_save`` sessions saved in the same transaction and its
        ``value`` returned. When another writer took the offset first, the
        session is reloaded and the command run again (see the module
        docstring). Raises the command's domain error (nothing saved),
        :class:`ConcurrencyConflictError` (after ``CONFLICT_RETRIES`` re-runs),
        :class:`NameTakenError` (nothing saved, state reloaded next time) or
        :class:`StorageUnavailableError` (actor stopped; outcome unknown).
        """
        for attempt in range(CONFLICT_RETRIES + 1):
            fresh = self._session is None
            session = self._load()
            version_before = session.version
            try:
                result = command(session)
            except Exception:
                if session.pending_events:
                    self._session = None  # half-applied: reload from the log
                if not fresh and self._stale(version_before):
                    continue  # decided on stale state: decide again on fresh
                raise
            except BaseException:
                if session.pending_events:
                    self._session = None
                raise
            others: tuple[Session, ...] = ()
            if isinstance(result, Outcome):
                others = result.also_save
                value: T = result.value
            else:
                value = result
            if not session.pending_events and not others:
                if not fresh and self._stale(version_before):
                    continue
                return value
            try:
                self.app.save(session, *others)
            except IntegrityError as error:
                self._session = None
                translated = translate_integrity_error(error, self.session_id)
                if (
                    isinstance(
                        translated, ConcurrencyConflictError | SessionNotFoundError
                    )
                    and attempt < CONFLICT_RETRIES
                ):
                    # Another writer (another process) took the offset, or purged
                    # the session (and maybe another took its id): the log is
                    # intact and decides; run the command again on it (a purged
                    # session is then not found).
                    self._conflicts.retried()
                    logger.info(
                        "version conflict; reloading and retrying",
                        extra={"session_id": self.session_id, "attempt": attempt},
                    )
                    continue
                raise translated from None
            except PersistenceError as error:
                self._fail(error)
            self._maybe_snapshot(session, version_before)
            return value
        msg = f"another writer appended to session {self.session_id} first"
        raise ConcurrencyConflictError(msg)

    def _stale(self, cached_version: int) -> bool:
        """Whether the log holds events the cached state lacks (one indexed
        lookup); if so, forget the cached state so the next load is fresh."""
        try:
            stored = self.app.views.stored_version(self.session_id)
        except PersistenceError as error:
            self._fail(error)
        if stored == cached_version:
            return False
        self._session = None
        self._conflicts.refreshed()
        logger.info(
            "stale session state; reloading",
            extra={"session_id": self.session_id, "cached": cached_version},
        )
        return True

    def _maybe_snapshot(self, session: Session, version_before: int) -> None:
        interval = self.snapshot_interval
        if interval and session.version // interval > version_before // interval:
            try:
                self.app.take_session_snapshot(session)
            except PersistenceError:
                # A snapshot only saves replay time; the log is intact without it.
                logger.warning("snapshot failed", extra={"session_id": self.session_id})

    def _fail(self, error: PersistenceError) -> Any:
        failure = storage_error(
            error, "the store failed; the outcome of this write is unknown"
        )
        logger.error(
            "storage error; stopping session actor",
            extra={
                "session_id": self.session_id,
                "error": type(error).__name__,
                "code": failure.code,
            },
        )
        self._session = None
        self.actor_ref.stop(block=False)
        raise failure from error
