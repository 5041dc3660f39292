"""The core every group of ``Runtime`` calls is built on: construction,
shutdown, ownership checks, and commands through the session actors."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pykka

from aggregates.errors import (
    OffsetConflictError,
    SessionExpiredError,
)
from aggregates.lifecycle import Due
from aggregates.session import Session
from aggregates.values import (
    Status,
)
from runtime.actor import BUSY, Execute, Outcome, Read
from runtime.agents import (
    AgentRegistry,
)
from runtime.clock import PinnedClock
from runtime.commands import ChatCommands
from runtime.directory import ActorDirectory
from runtime.errors import (
    ActorUnavailableError,
    SessionNotFoundError,
)
from runtime.feed import ChangeFeed
from runtime.history_cache import HistoryPageCache
from runtime.lease import LeaseKeeper, node_id
from runtime.persistence import SessionsRecorder
from runtime.principal import Principal
from runtime.sessions import Sessions
from runtime.settings import Settings
from runtime.supervisor import LifecycleSupervisor, Ticker
from runtime.tools import builtin_registry
from runtime.turn_control import TurnQueues
from runtime.turn_metrics import TurnMetrics
from runtime.webhooks import WebhookDeliverer

if TYPE_CHECKING:
    from runtime.facade import Runtime

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Runtime.list shadows the builtin inside the class body, where annotations live.
DocumentList = list[dict[str, Any]]
AnyList = list[Any]
HISTORY_MAX_LIMIT = 1000
VERSION = "0.1.0"
AGENT_HISTORY_LIMIT = 50
MAX_RESET_HOPS = 32
"""How many reset sessions a message follows (a chain without a scope key;
one with a scope key is crossed in one jump)."""
_UNSET: Any = object()


@dataclass(frozen=True)
class _Expired:
    expires_at: datetime


@dataclass(frozen=True)
class _ResetTo:
    successor_id: str


def _no_command(_: Session) -> None:
    """A command that only lets the session's passed deadlines be handled."""


class RuntimeCore:
    """What every group of runtime calls shares: the store, the actors and the
    plumbing that enforces ownership and runs commands in a session's actor."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        # Commands read the time through this: inside an actor command it is
        # pinned to the reading the deadline check used (see _after_deadlines).
        self.clock = PinnedClock(self.settings.clock)
        self.app = Sessions(self.settings)
        self.views = self.app.views
        self.history_cache = HistoryPageCache(self.settings.history_cache_bytes)
        self.agents = AgentRegistry(self.settings.agents)
        self.commands = ChatCommands(self.api)
        self.directory = ActorDirectory(
            self.app,
            self.clock,
            max_live=self.settings.max_live_actors,
            idle_seconds=self.settings.actor_idle_seconds,
            snapshot_interval=self.settings.snapshot_interval,
        )
        self.tools = builtin_registry()
        self.turn_queues = TurnQueues()
        self.turn_metrics = TurnMetrics()
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
        recorder = self.app.recorder
        assert isinstance(recorder, SessionsRecorder)
        # Events other processes sharing the store record, to this one's tails.
        self.feed = ChangeFeed(
            self.app.changes,
            self.app.bus,
            recorder.local,
            interval=self.settings.feed_interval,
        )
        self.feed.start()
        self.node_id = self.settings.node_id or node_id()
        self.lease = LeaseKeeper(
            self.app.leases,
            self.settings.lease_clock,
            holder=self.node_id,
            ttl=self.settings.lease_seconds,
            renew_every=self.settings.lease_renew_seconds,
            on_acquired=self.webhooks.wake,
        )
        self._ticker: Ticker | None = None
        if self.settings.supervisor_interval > 0:
            # Background lifecycle work, on the one process holding the lease;
            # with an interval of 0 the caller drives it (run_lifecycle,
            # deliver_webhooks), as tests do.
            self.webhooks.gate(self.lease.held)
            self._ticker = Ticker(
                self.supervisor,
                self.settings.supervisor_interval,
                may_run=self.lease.held,
            )
            self.lease.start()
            self._ticker.start()
            recorder.on_outbox = self.webhooks.wake
            self.webhooks.start()

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
        self.lease.stop()
        self.feed.stop()
        self.supervisor.actor_ref.stop()
        self.directory.stop_all()
        self.agents.close()
        self.app.close()

    def __enter__(self) -> Runtime:
        return self.api

    def __exit__(self, *_: object) -> None:
        self.close()

    def _reap_idle(self) -> None:
        interval = max(0.05, min(self.settings.actor_idle_seconds / 4, 30.0))
        while not self._closed.wait(interval):
            self.directory.passivate_idle()

    def _row(
        self, session_id: str, principal: Principal, *, allow_expired: bool = False
    ) -> dict[str, Any]:
        """The caller's session's index row; another owner's is not found.

        An expired session answers ``SessionExpiredError`` (unless
        ``allow_expired``); one whose deadline passed before the supervisor got
        to it is expired on the spot, through its actor.
        """
        row = (
            self.views.session_row(session_id) if isinstance(session_id, str) else None
        )
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
        if row is None or not principal.sees(row["owner_id"]):
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
        # An idle actor runs the message on this thread (see SessionActor);
        # otherwise it is queued under the directory's lock, so passivation and
        # the live-actor cap never refuse it. An actor that stopped by itself (a
        # storage error) refuses it with ActorDeadError without having run it;
        # it is then safe to resend it to the successor.
        answer = self.directory.actor(session_id).run_here(message)
        if answer is not BUSY:
            return answer
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

    def _write(
        self,
        session_id: str,
        principal: Principal,
        expected_offset: int | None,
        command: Callable[[Session], Any],
    ) -> dict[str, Any]:
        """The shape of most writes: on a session ``principal`` sees, run
        ``command`` (at ``expected_offset`` when given, atomically) and answer
        the session's document."""
        self._row(session_id, principal)
        self._execute_expecting(expected_offset, session_id, command)
        return self._document(session_id)

    def _execute_on(
        self,
        session_id: str,
        command: Callable[[Session], T | Outcome[T]],
        *,
        principal: Principal | None = None,
    ) -> tuple[T, str]:
        """Run a command through the session's actor, after its lifecycle
        deadlines: returns the result and the session it ran on, which is the
        successor when a due daily or idle reset came first. With
        ``principal``, the actor first checks that it sees the session (another
        owner's is not found), instead of the caller reading the index."""
        run = self._after_deadlines(command)
        if principal is not None:
            run = _seen_by(principal, run)
        for _ in range(MAX_RESET_HOPS):
            outcome = self._ask(session_id, Execute(run))
            if isinstance(outcome, _Expired):
                raise SessionExpiredError(session_id, outcome.expires_at)
            if isinstance(outcome, _ResetTo):
                session_id = self._carried_on(outcome.successor_id)
                continue
            return outcome, session_id
        msg = f"session {session_id} kept resetting"
        raise ActorUnavailableError(msg)

    def _carried_on(self, successor_id: str) -> str:
        """Where a message for a reset session goes: its successor, or, when
        that was reset too (a daily reset makes a chain a day long), straight
        to the live session on their scope key instead of one hop a reset."""
        row = self.views.session_row(successor_id)
        if row is None or row["doc"]["status"] != Status.ENDED.value:
            return successor_id
        scope_key = row["doc"]["scope_key"]
        live = self.views.find_by_scope(scope_key) if scope_key else None
        return live or successor_id

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

    def _purge(self, session_id: str) -> None:
        self.directory.passivate(session_id, wait=False)
        self.views.purge(session_id)
        logger.info("session purged", extra={"session_id": session_id})

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

    @property
    def api(self) -> Runtime:
        """This runtime with every group of calls (for calls across groups)."""
        return cast("Runtime", self)


def _seen_by(
    principal: Principal, command: Callable[[Session], Any]
) -> Callable[[Session], Any]:
    """``command``, run only on a session ``principal`` sees: another owner's is
    not found, before anything (deadlines included) can tell it exists."""

    def run(session: Session) -> Any:
        if not principal.sees(session.owner_id):
            msg = f"session {session.id} not found"
            raise SessionNotFoundError(msg)
        return command(session)

    return run
