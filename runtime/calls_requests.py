"""Runtime calls on request keys: the durable ``Idempotency-Key`` records of the
writes the session log does not deduplicate itself (see
:mod:`projections.request_keys`), shared by every process on the database."""

from __future__ import annotations

import logging
import threading

from eventsourcing.persistence import PersistenceError

from aggregates.errors import InvalidRequestError
from projections.request_keys import RequestClaim
from runtime.core import RuntimeCore
from runtime.errors import storage_error
from runtime.principal import LOCAL_PRINCIPAL, Principal

logger = logging.getLogger(__name__)

PRUNE_EVERY_MS = 60_000
"""How often (at most) a process drops request keys past their retention."""


class RequestCalls(RuntimeCore):
    """Claim, complete and release request keys."""

    _last_prune_ms = 0
    _prune_guard = threading.Lock()

    def claim_request(
        self,
        key: str,
        fingerprint: bytes,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
    ) -> RequestClaim:
        """Claim ``key`` for the request ``fingerprint`` stands for, before
        running it: ``run`` (run it, then :meth:`complete_request` or
        :meth:`release_request`), ``replay`` (it was done; its response),
        ``reused`` (the key names another request) or ``busy`` (it is running
        elsewhere; a claim not completed within ``request_claim_seconds`` lapses
        and may be taken over)."""
        if not key or not isinstance(fingerprint, bytes):
            raise InvalidRequestError("a request key and a fingerprint are needed")
        now_ms = int(self.settings.lease_clock.now().timestamp() * 1000)
        self._prune_request_keys(now_ms)
        try:
            return self.views.claim_request_key(
                principal.id,
                key,
                fingerprint,
                now_ms=now_ms,
                lapsed_before_ms=now_ms
                - int(self.settings.request_claim_seconds * 1000),
            )
        except PersistenceError as error:
            raise storage_error(error, "the store failed to claim the key") from error

    def complete_request(
        self,
        key: str,
        status: int,
        headers: bytes,
        body: bytes,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
    ) -> None:
        """Keep the response of a request claimed with :meth:`claim_request`."""
        try:
            self.views.complete_request_key(principal.id, key, status, headers, body)
        except PersistenceError as error:
            raise storage_error(
                error, "the store failed to keep the response"
            ) from error

    def release_request(
        self, key: str, *, principal: Principal = LOCAL_PRINCIPAL
    ) -> None:
        """Drop the claim of a request that failed, so that its retry runs."""
        try:
            self.views.release_request_key(principal.id, key)
        except PersistenceError as error:
            raise storage_error(error, "the store failed to release the key") from error

    def _prune_request_keys(self, now_ms: int) -> None:
        with self._prune_guard:
            if now_ms - self._last_prune_ms < PRUNE_EVERY_MS:
                return
            self._last_prune_ms = now_ms
        retention_ms = int(self.settings.request_key_hours * 3_600_000)
        try:
            self.views.prune_request_keys(now_ms - retention_ms)
        except PersistenceError:
            # Only housekeeping: the next claim tries again a minute later.
            logger.warning("pruning request keys failed")
