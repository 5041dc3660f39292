"""Who may run a turn on a session, and when: admission by the session's
concurrency policy, and cancellation.

Each session has a :class:`SessionTurns` queue. Turns are admitted one at a
time in strict arrival order (a ticket queue, not a bare lock, whose wake-up
order is not guaranteed). On arrival, a message follows its policy:

- ``enqueue``: waits its turn;
- ``reject``: refused with ``SessionBusyError`` while a turn runs or waits
  (nothing is recorded);
- ``interrupt``: cancels the running turn (and any waiting before it) with the
  reason ``interrupted``, then waits for it to wind down; an interrupted turn
  that had not started yet still records its message, then ends at once.

A :class:`CancelToken` cancels one turn from any thread: the turn notices it at
its next delta or tool boundary (or at once while it waits for its agent).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aggregates.values import Concurrency
from runtime.errors import (
    InvalidRequestError,
    SessionBusyError,
    TurnCancelledError,
    TurnTimeoutError,
)

INTERRUPTED = "interrupted"
TIMEOUT = "timeout"
DISCONNECTED = "disconnected"
CANCELLED = "cancelled"
DISCONNECT_POLICIES = ("cancel", "continue")


class CancelToken:
    """Cancels a turn: ``cancel(reason)`` from any thread; the first reason
    wins. Pass one to ``Runtime.stream``/``send``/``submit`` to keep a handle
    on the turn."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._event = threading.Event()
        self._wakers: list[Callable[[], None]] = []

    @property
    def reason(self) -> str | None:
        """Why the turn was cancelled (``None`` while it was not)."""
        return self._reason

    @property
    def cancelled(self) -> bool:
        """Whether the turn was cancelled."""
        return self._reason is not None

    @property
    def event(self) -> threading.Event:
        """Set once the token is cancelled (for tools that wait)."""
        return self._event

    def cancel(self, reason: str = CANCELLED) -> None:
        """Cancel the turn (``reason`` becomes its recorded ``error_code``)."""
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
            wakers = list(self._wakers)
        self._event.set()
        for wake in wakers:
            wake()

    def add_waker(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` when the token is cancelled (at once if it is)."""
        with self._lock:
            self._wakers.append(wake)
            cancelled = self._reason is not None
        if cancelled:
            wake()

    def remove_waker(self, wake: Callable[[], None]) -> None:
        """Stop calling ``wake``."""
        with self._lock:
            if wake in self._wakers:
                self._wakers.remove(wake)


@dataclass(eq=False)
class Ticket:
    """One turn's place in a session's queue."""

    token: CancelToken
    wake: Callable[[], None] = field(default=lambda: None)


def check_disconnect_policy(policy: str) -> str:
    """A disconnect policy name (``cancel`` or ``continue``), checked."""
    if policy not in DISCONNECT_POLICIES:
        raise InvalidRequestError("on_disconnect must be cancel or continue")
    return policy


class SessionTurns:
    """The turn queue of one session (see the module docstring)."""

    def __init__(self) -> None:
        # Reentrant: cancelling a token from inside enter() wakes this condition.
        self._condition = threading.Condition(threading.RLock())
        self._waiting: deque[Ticket] = deque()
        self._running: Ticket | None = None

    @property
    def busy(self) -> bool:
        """Whether a turn runs or waits."""
        with self._condition:
            return self._running is not None or bool(self._waiting)

    @property
    def waiting(self) -> int:
        """How many turns wait for their place."""
        with self._condition:
            return len(self._waiting)

    def wait_until(
        self, predicate: Callable[[SessionTurns], bool], timeout: float
    ) -> bool:
        """Block until ``predicate(self)`` holds (checked whenever the queue
        changes), at most ``timeout`` seconds; returns whether it held."""
        with self._condition:
            return self._condition.wait_for(lambda: predicate(self), timeout)

    def enter(self, policy: str, token: CancelToken, deadline: float | None) -> Ticket:
        """Wait for this turn's place (``deadline``: ``time.monotonic()`` at
        which to give up with ``TurnTimeoutError``). Raises
        ``SessionBusyError`` (``reject``) or ``TurnCancelledError`` (cancelled
        while waiting, other than by an interruption)."""
        ticket = Ticket(token)

        def wake() -> None:
            with self._condition:
                self._condition.notify_all()

        ticket.wake = wake
        with self._condition:
            if policy == Concurrency.REJECT.value and (
                self._running is not None or self._waiting
            ):
                msg = "the session is busy with another turn"
                raise SessionBusyError(msg)
            if policy == Concurrency.INTERRUPT.value:
                ahead = [*self._waiting]
                if self._running is not None:
                    ahead.insert(0, self._running)
                for other in ahead:
                    other.token.cancel(INTERRUPTED)
            self._waiting.append(ticket)
            self._condition.notify_all()
            token.add_waker(wake)
            try:
                while self._running is not None or self._waiting[0] is not ticket:
                    reason = token.reason
                    if reason is not None and reason != INTERRUPTED:
                        msg = "the turn was cancelled before it started"
                        raise TurnCancelledError(msg)
                    remaining = (
                        None if deadline is None else deadline - time.monotonic()
                    )
                    if remaining is not None and remaining <= 0:
                        msg = "the session's previous turn did not finish in time"
                        raise TurnTimeoutError(msg)
                    self._condition.wait(remaining)
            except BaseException:
                self._waiting.remove(ticket)
                self._condition.notify_all()
                token.remove_waker(wake)
                raise
            self._waiting.popleft()
            self._running = ticket
        token.remove_waker(wake)
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """The turn is over: let the next one in."""
        with self._condition:
            if self._running is ticket:
                self._running = None
            self._condition.notify_all()


class TurnQueues:
    """Every session's :class:`SessionTurns`, made on demand and dropped when no
    turn holds them."""

    def __init__(self) -> None:
        self._queues: weakref.WeakValueDictionary[str, SessionTurns] = (
            weakref.WeakValueDictionary()
        )
        self._guard = threading.Lock()

    def of(self, session_id: str) -> SessionTurns:
        """The session's queue."""
        with self._guard:
            queue = self._queues.get(session_id)
            if queue is None:
                queue = SessionTurns()
                self._queues[session_id] = queue
            return queue
