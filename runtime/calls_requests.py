"""Runtime calls on request keys: the durable ``Idempotency-Key`` records of the
writes the session log does not deduplicate itself (see
:mod:`projections.request_keys`), shared by every process on the database."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

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

    _last_prune_ms = 0  # (a race only prunes twice: the delete is idempotent)

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
        lapsed_before_ms = now_ms - int(self.settings.request_claim_seconds * 1000)
        with _stored("the store failed to claim the key"):
            return self.views.claim_request_key(
                principal.id,
                key,
                fingerprint,
                now_ms=now_ms,
                lapsed_before_ms=lapsed_before_ms,
            )

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
        with _stored("the store failed to keep the response"):
            self.views.complete_request_key(principal.id, key, status, headers, body)

    def release_request(
        self, key: str, *, principal: Principal = LOCAL_PRINCIPAL
    ) -> None:
        """Drop the claim of a request that failed, so that its retry runs."""
        with _stored("the store failed to release the key"):
            self.views.release_request_key(principal.id, key)

    def _prune_request_keys(self, now_ms: int) -> None:
        if now_ms - self._last_prune_ms < PRUNE_EVERY_MS:
            return
        self._last_prune_ms = now_ms
        retention_ms = int(self.settings.request_key_hours * 3_600_000)
        try:
            self.views.prune_request_keys(now_ms - retention_ms)
        except PersistenceError:
            # Only housekeeping: the next claim tries again a minute later.
            logger.warning("pruning request keys failed")


@contextmanager
def _stored(detail: str) -> Iterator[None]:
    """The store's errors as the runtime's (``storage_full`` or
    ``storage_unavailable`` with ``detail``)."""
    try:
        yield
    except PersistenceError as error:
        raise storage_error(error, detail) from error
