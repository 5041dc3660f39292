"""Injectable time: wall-clock ``now()`` for what is recorded, ``monotonic()`` for
waiting and idle timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Where the runtime gets the time from."""

    def now(self) -> datetime:
        """Timezone-aware UTC wall-clock time."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...


class SystemClock:
    """The real clocks."""

    def now(self) -> datetime:
        """Timezone-aware UTC wall-clock time."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to; for tests and simulations."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._monotonic = 1000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The fake wall-clock time."""
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        """The fake monotonic time."""
        with self._lock:
            return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._monotonic += seconds


class ScaledClock:
    """Real time running ``speed`` times faster from the moment it was made (or
    from ``origin``, a Unix time, so that several processes given the same
    origin agree on the time): to watch whole lifecycles (timeouts are minutes)
    in seconds, e.g. in an end to end test of the real server. Never for
    production."""

    def __init__(self, speed: float, origin: float | None = None) -> None:
        if speed <= 0:
            msg = "clock speed must be positive"
            raise ValueError(msg)
        self.speed = speed
        if origin is None:
            self._start_wall = datetime.now(UTC)
            self._start_monotonic = time.monotonic()
        else:
            self._start_wall = datetime.fromtimestamp(origin, UTC)
            self._start_monotonic = time.monotonic() - (time.time() - origin)

    def now(self) -> datetime:
        """The scaled wall-clock time."""
        elapsed = time.monotonic() - self._start_monotonic
        return self._start_wall + timedelta(seconds=elapsed * self.speed)

    def monotonic(self) -> float:
        """Real monotonic time (waits and idle timeouts are not scaled)."""
        return time.monotonic()


class PinnedClock:
    """Wraps a clock so that, on a thread inside :meth:`pinned`, ``now()`` keeps
    answering one reading: a session command and the deadline check that runs
    before it in the actor then see the same moment, so a command can never be
    recorded after a deadline that the check found not yet passed."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._local = threading.local()

    def now(self) -> datetime:
        """The pinned moment on this thread, else the wrapped clock's time."""
        pinned: datetime | None = getattr(self._local, "now", None)
        return self.clock.now() if pinned is None else pinned

    def monotonic(self) -> float:
        """The wrapped clock's monotonic time (never pinned)."""
        return self.clock.monotonic()

    @contextmanager
    def pinned(self) -> Iterator[datetime]:
        """Read the time once; ``now()`` on this thread answers it until exit."""
        previous: datetime | None = getattr(self._local, "now", None)
        moment = self.now()
        self._local.now = moment
        try:
            yield moment
        finally:
            self._local.now = previous
