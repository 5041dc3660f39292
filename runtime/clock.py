"""Injectable time: wall-clock ``now()`` for what is recorded, ``monotonic()`` for
waiting and idle timeouts."""

from __future__ import annotations

import threading
import time
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
    """Real time running ``speed`` times faster from the moment it was made: to
    watch whole lifecycles (timeouts are minutes) in seconds, e.g. in an end to
    end test of the real server. Never for production."""

    def __init__(self, speed: float) -> None:
        if speed <= 0:
            msg = "clock speed must be positive"
            raise ValueError(msg)
        self.speed = speed
        self._start_wall = datetime.now(UTC)
        self._start_monotonic = time.monotonic()

    def now(self) -> datetime:
        """The scaled wall-clock time."""
        elapsed = time.monotonic() - self._start_monotonic
        return self._start_wall + timedelta(seconds=elapsed * self.speed)

    def monotonic(self) -> float:
        """Real monotonic time (waits and idle timeouts are not scaled)."""
        return time.monotonic()
