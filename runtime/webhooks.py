"""``WebhookDeliverer``: delivers the durable webhook outbox, at least once.

Deliveries are written to the outbox in the same transaction as the events they
announce, so none is lost on a crash; one stays pending until an attempt is
recorded as delivered, so a crash between sending and recording re-sends it
(at least once — receivers deduplicate by ``session_id`` and ``event.offset``).
Each attempt's outcome (status code or error, duration) is recorded.

Retries back off exponentially with full jitter, up to a cap, for at most
``max_attempts`` attempts. A 4xx answer other than 408 and 429 means the receiver
refused the payload: it is not retried. A session's deliveries go out in order:
the next one waits until the previous one was delivered or gave up.

When several processes share a store, only the one holding the supervisor lease
delivers (``may_run``); it checks before every attempt, so a process that lost
the lease stops within one attempt.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from projections.views import SessionViews
    from runtime.clock import Clock

logger = logging.getLogger(__name__)

RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})
USER_AGENT = "sessiond-webhooks/0.1"


def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (1-based)."""
    return rng.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def is_retryable(status_code: int | None) -> bool:
    """Whether an attempt that got ``status_code`` (``None``: no answer) may be
    tried again."""
    if status_code is None or status_code >= 500:
        return True
    return status_code in RETRYABLE_CLIENT_ERRORS


class WebhookDeliverer:
    """Sends due deliveries from the outbox on a background thread."""

    def __init__(
        self,
        views: SessionViews,
        clock: Clock,
        *,
        max_attempts: int,
        backoff: float,
        backoff_cap: float,
        timeout: float,
        interval: float = 0.5,
        batch: int = 50,
    ) -> None:
        self._may_run: Callable[[], bool] = lambda: True
        self._views = views
        self._clock = clock
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._backoff_cap = backoff_cap
        self._interval = interval
        self._batch = batch
        self._rng = random.Random()  # noqa: S311 - jitter, not security
        self._timeout = timeout
        # Made on first use: building one loads the CA bundle (~30 ms), which
        # every runtime would pay at start-up, webhooks or not.
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Deliver in the background until :meth:`stop`."""
        self._thread = threading.Thread(
            target=self._run, name="sessiond-webhooks", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop after the delivery in progress (pending ones stay in the outbox)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._client_lock:
            if self._client is not None:
                self._client.close()

    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    timeout=self._timeout, headers={"user-agent": USER_AGENT}
                )
            return self._client

    def gate(self, may_run: Callable[[], bool]) -> None:
        """Deliver only while ``may_run()`` (this process holds the lease)."""
        self._may_run = may_run

    def wake(self) -> None:
        """Look at the outbox now (new deliveries were written)."""
        self._wake.set()

    def deliver_due(self) -> int:
        """Make one attempt at every delivery due now; returns how many."""
        now_ms = int(self._clock.now().timestamp() * 1000)
        due = self._views.due_deliveries(now_ms, self._batch)
        for delivery in due:
            if self._stop.is_set() or not self._may_run():
                break
            self._attempt(delivery)
        return len(due)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while (
                    self._may_run() and self.deliver_due() and not self._stop.is_set()
                ):
                    pass
            except Exception:  # the outbox keeps everything; the next round retries
                logger.exception("webhook delivery round failed")
            self._wake.wait(self._interval)
            self._wake.clear()

    def _attempt(self, delivery: dict[str, Any]) -> None:
        attempt = delivery["attempts"] + 1
        started = time.monotonic()
        at_ms = int(self._clock.now().timestamp() * 1000)
        status_code: int | None = None
        error: str | None = None
        headers = {
            **delivery["headers"],
            "content-type": "application/json",
            "x-sessiond-delivery": str(delivery["id"]),
            "x-sessiond-attempt": str(attempt),
        }
        try:
            response = self._http().post(
                delivery["url"], content=delivery["payload"], headers=headers
            )
            status_code = response.status_code
        except httpx.HTTPError as failure:
            error = type(failure).__name__
        duration_ms = int((time.monotonic() - started) * 1000)
        if status_code is not None and 200 <= status_code < 300:
            outcome, next_ms = "delivered", at_ms
        elif is_retryable(status_code) and attempt < self._max_attempts:
            delay = backoff_seconds(
                attempt, self._backoff, self._backoff_cap, self._rng
            )
            outcome, next_ms = "pending", at_ms + int(delay * 1000)
        else:
            outcome, next_ms = "failed", at_ms
        self._views.record_attempt(
            delivery["id"],
            attempt=attempt,
            at_ms=at_ms,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
            outcome=outcome,
            next_attempt_ms=next_ms,
        )
        logger.info(
            "webhook attempt",
            extra={
                "session_id": delivery["session_id"],
                "delivery": delivery["id"],
                "attempt": attempt,
                "status_code": status_code,
                "outcome": outcome,
            },
        )
