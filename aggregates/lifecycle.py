"""The lifecycle schedule of a session, as pure functions of its state.

A live session has at most one next deadline: its expiry warning, its expiry, or
an opt-in reset (daily at a time of day, or after an idle period). The supervisor
reads these from a durable schedule view and asks the session to act on them; the
session decides with the same functions, so the two can never disagree.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from aggregates.errors import InvalidRequestError

_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class Due(StrEnum):
    """What a deadline asks the session to do."""

    WARN = "warn"
    EXPIRE = "expire"
    DAILY_RESET = "daily_reset"
    IDLE_RESET = "idle_reset"


MAX_IDLE_MINUTES = 366 * 24 * 60
"""The longest idle reset: a year (a longer one would never come, and a date
that far out overflows)."""


def validate_reset_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """Check ``{"daily_at": "HH:MM" | None, "idle_minutes": int | None}``."""
    unknown = set(policy) - {"daily_at", "idle_minutes"}
    if unknown:
        raise InvalidRequestError(f"unknown reset policy field {sorted(unknown)[0]!r}")
    daily_at = policy.get("daily_at")
    if daily_at is not None and (
        not isinstance(daily_at, str) or not _TIME_OF_DAY.match(daily_at)
    ):
        raise InvalidRequestError("daily_at must be a time of day HH:MM (UTC)")
    idle = policy.get("idle_minutes")
    if idle is not None and (
        not isinstance(idle, int)
        or isinstance(idle, bool)
        or not 1 <= idle <= MAX_IDLE_MINUTES
    ):
        raise InvalidRequestError(
            f"idle_minutes must be a whole number of minutes, 1..{MAX_IDLE_MINUTES}"
        )
    return {"daily_at": daily_at, "idle_minutes": idle}


def next_daily(after: datetime, time_of_day: str) -> datetime:
    """The first moment strictly after ``after`` whose UTC time is ``HH:MM``."""
    hour, minute = (int(part) for part in time_of_day.split(":"))
    candidate = after.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= after:
        candidate += timedelta(days=1)
    return candidate


def warning_at(expires_at: datetime, policy: dict[str, Any]) -> datetime | None:
    """When the expiry warning is due (``None`` with a zero threshold)."""
    threshold = policy["warning_threshold_minutes"]
    if threshold <= 0:
        return None
    return expires_at - timedelta(minutes=threshold)


def next_deadline(
    *,
    active: bool,
    expires_at: datetime,
    warned_for: datetime | None,
    timeout: dict[str, Any],
    reset_policy: dict[str, Any],
    daily_from: datetime,
    last_activity_at: datetime,
) -> tuple[datetime, Due] | None:
    """The session's next deadline and what it asks for, earliest first; on a tie
    the warning comes before the expiry, and the expiry before a reset.

    The daily reset is the first ``daily_at`` strictly after ``daily_from``: when
    the session was opened, or when its reset policy last changed (opting in at
    05:00 to a reset at 03:00 means tomorrow at 03:00, not at once)."""
    if not active:
        return None
    candidates: list[tuple[datetime, int, Due]] = []
    warn = warning_at(expires_at, timeout)
    if warn is not None and warned_for != expires_at:
        candidates.append((warn, 0, Due.WARN))
    candidates.append((expires_at, 1, Due.EXPIRE))
    if reset_policy.get("daily_at"):
        candidates.append(
            (next_daily(daily_from, reset_policy["daily_at"]), 2, Due.DAILY_RESET)
        )
    if reset_policy.get("idle_minutes"):
        idle_at = last_activity_at + timedelta(minutes=reset_policy["idle_minutes"])
        candidates.append((idle_at, 3, Due.IDLE_RESET))
    at, _, due = min(candidates)
    return at, due
