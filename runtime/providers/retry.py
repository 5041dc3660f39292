"""When to try a model request again, and how long to wait first."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def retry_after_seconds(
    headers: Mapping[str, str], now: Callable[[], datetime] | None = None
) -> float | None:
    """The wait a response asks for: ``retry-after-ms``, else ``Retry-After`` in
    seconds or as an HTTP date; ``None`` when it asks for none (or says nonsense).
    """
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(float(milliseconds) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    current = now() if now is not None else datetime.now(UTC)
    return max((moment - current).total_seconds(), 0.0)


def backoff_delay(
    failures: int, base: float, cap: float, random: Callable[[], float]
) -> float:
    """The wait after the ``failures``-th failed attempt: exponential from
    ``base``, at most ``cap``, with jitter (half fixed, half random) so that
    many turns failing together do not retry together."""
    delay = min(cap, base * 2.0 ** (failures - 1))
    return delay / 2 + random() * delay / 2
