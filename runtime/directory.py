"""``ActorDirectory``: exactly one live ``SessionActor`` per session.

``get_or_start`` is the only way actors are created, under one lock, so many
threads asking for the same session at once get the same actor. Idle actors are
passivated (stopped) after ``idle_seconds``, and the least recently used ones when
more than ``max_live`` are live; the next command rehydrates the session from its
snapshot and the tail of its log.

A session being passivated is marked *stopping* until its actor has fully stopped;
``get_or_start`` waits for that before starting a successor, so two actors of one
session never run at the same time. Commands already queued on the old actor run
before it stops; one sent after the stop fails with ``ActorDeadError``. The
runtime queues its commands through ``get_or_start(…, send=…)``, under the lock,
so only an actor that stopped by itself (a storage error) refuses one, and the
runtime then retries it on the successor. Before queueing, the runtime offers
the command to the actor itself (:meth:`ActorDirectory.actor`,
``SessionActor.run_here``): an idle actor runs it on the caller's thread.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pykka

from runtime.actor import ConflictCounter, SessionActor

if TYPE_CHECKING:
    from aggregates.session import Session
    from runtime.clock import Clock
    from runtime.sessions import Sessions

logger = logging.getLogger(__name__)


@dataclass
class _Entry:
    ref: pykka.ActorRef[Any]
    actor: SessionActor
    last_used: float
    stopped: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False
    _proxy: Any = None

    @property
    def proxy(self) -> Any:
        # Built on first use only: a pykka proxy costs about a millisecond to
        # make, and the runtime talks to actors with plain messages.
        if self._proxy is None:
            self._proxy = self.ref.proxy()
        return self._proxy


@dataclass
class DirectoryStats:
    """Counters for metrics."""

    activations: int = 0
    passivations: int = 0


class ActorDirectory:
    """Starts, finds and passivates session actors."""

    def __init__(
        self,
        app: Sessions,
        clock: Clock,
        *,
        max_live: int,
        idle_seconds: float,
        snapshot_interval: int,
        stop_timeout: float = 30.0,
    ) -> None:
        self._app = app
        self._clock = clock
        self.max_live = max_live
        self.idle_seconds = idle_seconds
        self._snapshot_interval = snapshot_interval
        self._stop_timeout = stop_timeout
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.stats = DirectoryStats()
        self.conflicts = ConflictCounter()

    def get_or_start(
        self, session_id: str, send: Callable[[Any], Any] | None = None
    ) -> Any:
        """The live actor proxy of a session, starting one if there is none.

        With ``send``, returns ``send(actor_ref)`` called under the directory's
        lock: a message it queues is ahead of any stop the directory sends later
        (passivation, the live-actor cap), so that actor always handles it.
        """
        while True:
            evicted: list[tuple[str, _Entry]] = []
            with self._lock:
                entry = self._entries.get(session_id)
                if entry is not None and (entry.stopping or not entry.ref.is_alive()):
                    # Being passivated, or stopped by itself after a storage
                    # error and not yet forgotten (pykka marks an actor dead
                    # before its on_stop tells us): wait for it to be gone.
                    waiting_for, waited_ref = entry.stopped, entry.ref
                else:
                    waiting_for = None
                    if entry is None:
                        entry = self._start(session_id)
                        evicted = self._over_cap()
                    entry.last_used = self._clock.monotonic()
                    self._entries.move_to_end(session_id)
                    proxy = entry.proxy if send is None else send(entry.ref)
            if waiting_for is not None:
                stopped = waiting_for.wait(self._stop_timeout)
                if not stopped and not waited_ref.is_alive():
                    self.forget(session_id, waited_ref)  # died without an on_stop
                continue
            for victim_id, victim in evicted:
                self._stop(victim_id, victim)
            return proxy

    def actor(self, session_id: str) -> SessionActor:
        """The session's live actor itself (started if need be), for a caller
        to run a command on its own thread (:meth:`SessionActor.run_here`);
        counts as a use, like :meth:`get_or_start`."""
        actor: SessionActor = self.get_or_start(
            session_id, lambda ref: self._entries[session_id].actor
        )
        return actor

    def loaded(self, session_id: str) -> Session | None:
        """The state a live actor holds for the session, if it holds any, for
        reading what never changes (owner, agent, concurrency policy) without a
        read of the store; commands still go through the actor."""
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None or entry.stopping:
                return None
            return entry.actor.loaded_state

    def live_count(self) -> int:
        """How many session actors are live."""
        with self._lock:
            return sum(1 for e in self._entries.values() if not e.stopping)

    def passivate_idle(self) -> int:
        """Stop actors idle for longer than ``idle_seconds``; returns how many."""
        deadline = self._clock.monotonic() - self.idle_seconds
        with self._lock:
            victims = [
                (sid, e)
                for sid, e in self._entries.items()
                if not e.stopping and e.last_used <= deadline
            ]
            for _, victim in victims:
                victim.stopping = True
        for sid, victim in victims:
            self._stop(sid, victim)
        return len(victims)

    def passivate(self, session_id: str, *, wait: bool = True) -> bool:
        """Stop one session's actor now (it rehydrates on the next command).

        With ``wait=False`` the stop is only requested (for callers that must not
        block on an actor, like the supervisor).
        """
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None or entry.stopping:
                return False
            entry.stopping = True
        if wait:
            self._stop(session_id, entry)
        else:
            entry.ref.stop(block=False)
            self.stats.passivations += 1
        return True

    def stop_all(self) -> None:
        """Stop every actor (shutdown); each finishes what it has queued first."""
        with self._lock:
            entries = [(sid, e) for sid, e in self._entries.items() if not e.stopping]
            for _, entry in entries:
                entry.stopping = True
        for sid, entry in entries:
            self._stop(sid, entry)

    def forget(self, session_id: str, ref: pykka.ActorRef[Any]) -> None:
        """Called from an actor's ``on_stop``: drop its entry if it is still ours."""
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is not None and entry.ref is ref:
                del self._entries[session_id]
                entry.stopped.set()

    def _start(self, session_id: str) -> _Entry:
        made: list[SessionActor] = []
        ref = SessionActor.start(
            session_id,
            self._app,
            snapshot_interval=self._snapshot_interval,
            on_stop=self.forget,
            conflicts=self.conflicts,
            made=made.append,
        )
        entry = _Entry(ref=ref, actor=made[0], last_used=self._clock.monotonic())
        self._entries[session_id] = entry
        self.stats.activations += 1
        return entry

    def _over_cap(self) -> list[tuple[str, _Entry]]:
        # Called with the lock held: mark the least recently used for stopping.
        live = [(sid, e) for sid, e in self._entries.items() if not e.stopping]
        excess = len(live) - self.max_live
        victims = live[: max(0, excess)]
        for _, victim in victims:
            victim.stopping = True
        return victims

    def _stop(self, session_id: str, entry: _Entry) -> None:
        try:
            entry.ref.stop(block=True, timeout=self._stop_timeout)
        except pykka.ActorDeadError:
            pass
        except pykka.Timeout:
            logger.warning(
                "session actor slow to stop", extra={"session_id": session_id}
            )
        finally:
            self.forget(session_id, entry.ref)
            self.stats.passivations += 1
