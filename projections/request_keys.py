"""Request keys: the ``Idempotency-Key`` records of writes that the session log
does not deduplicate itself (every write but a message), kept in the database so
that a retry is recognised by any process and after a restart.

A record is claimed (``pending``) before its write runs and holds the request's
fingerprint; it is completed (``done``) with the write's response, or released
if the write failed, so that a retry runs again. A claim that is never completed
(its process died) lapses after a while and may then be taken over. Records are
pruned once they are older than the retention period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from projections.sql import SQLDialect

ClaimOutcome = Literal["run", "replay", "reused", "busy"]

SQLITE_REQUEST_KEYS_DDL = (
    "CREATE TABLE IF NOT EXISTS request_keys ("
    "principal_id TEXT NOT NULL, request_key TEXT NOT NULL, "
    "fingerprint BLOB NOT NULL, state TEXT NOT NULL, status INTEGER, "
    "headers BLOB, body BLOB, claimed_ms INTEGER NOT NULL, "
    "PRIMARY KEY (principal_id, request_key)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS request_keys_age ON request_keys (claimed_ms)",
)
POSTGRES_REQUEST_KEYS_DDL = (
    "CREATE TABLE IF NOT EXISTS request_keys ("
    "principal_id text NOT NULL, request_key text NOT NULL, "
    "fingerprint bytea NOT NULL, state text NOT NULL, status integer, "
    "headers bytea, body bytea, claimed_ms bigint NOT NULL, "
    "PRIMARY KEY (principal_id, request_key))",
    "CREATE INDEX IF NOT EXISTS request_keys_age ON request_keys (claimed_ms)",
)


@dataclass(frozen=True)
class RequestClaim:
    """What a claim found: ``run`` (this caller runs the write), ``replay`` (it
    was done: its ``status``, ``headers`` and ``body``), ``reused`` (the key
    belongs to another request) or ``busy`` (another caller is running it)."""

    outcome: ClaimOutcome
    status: int | None = None
    headers: bytes | None = None
    body: bytes | None = None


class RequestKeys(SQLDialect):
    """Request-key records, in any dialect."""

    def claim_request_key(
        self,
        principal_id: str,
        key: str,
        fingerprint: bytes,
        *,
        now_ms: int,
        lapsed_before_ms: int,
    ) -> RequestClaim:
        """Claim ``key`` for a request with ``fingerprint``, atomically: a new key
        is claimed; a claim made before ``lapsed_before_ms`` and never completed
        is taken over."""
        with self.writing() as c:
            c.execute(
                self.q(
                    "INSERT INTO request_keys (principal_id, request_key, "
                    "fingerprint, state, claimed_ms) VALUES (?, ?, ?, 'pending', ?) "
                    "ON CONFLICT (principal_id, request_key) DO NOTHING RETURNING 1"
                ),
                (principal_id, key, fingerprint, now_ms),
            )
            if c.fetchone() is not None:
                return RequestClaim("run")
            c.execute(
                self.q(
                    "SELECT fingerprint, state, status, headers, body, claimed_ms "
                    "FROM request_keys WHERE principal_id = ? AND request_key = ?"
                ),
                (principal_id, key),
            )
            row = c.fetchone()
            if row is None:  # pruned in between: claim it afresh next time
                return RequestClaim("busy")
            stored_print, state, status, headers, body, claimed_ms = row
            if bytes(stored_print) != fingerprint:
                return RequestClaim("reused")
            if state == "done":
                return RequestClaim("replay", int(status), bytes(headers), bytes(body))
            if claimed_ms >= lapsed_before_ms:
                return RequestClaim("busy")
            c.execute(
                self.q(
                    "UPDATE request_keys SET claimed_ms = ? WHERE principal_id = ? "
                    "AND request_key = ? AND state = 'pending' AND claimed_ms = ? "
                    "RETURNING 1"
                ),
                (now_ms, principal_id, key, claimed_ms),
            )
            return RequestClaim("run" if c.fetchone() is not None else "busy")

    def complete_request_key(
        self, principal_id: str, key: str, status: int, headers: bytes, body: bytes
    ) -> None:
        """Record the response of a claimed request, for its retries."""
        with self.writing() as c:
            c.execute(
                self.q(
                    "UPDATE request_keys SET state = 'done', status = ?, headers = ?, "
                    "body = ? WHERE principal_id = ? AND request_key = ? "
                    "AND state = 'pending'"
                ),
                (status, headers, body, principal_id, key),
            )

    def release_request_key(self, principal_id: str, key: str) -> None:
        """Forget a claim whose request failed (its retry runs again)."""
        with self.writing() as c:
            c.execute(
                self.q(
                    "DELETE FROM request_keys WHERE principal_id = ? "
                    "AND request_key = ? AND state = 'pending'"
                ),
                (principal_id, key),
            )

    def prune_request_keys(self, before_ms: int) -> None:
        """Drop the records claimed before ``before_ms``."""
        with self.writing() as c:
            c.execute(
                self.q("DELETE FROM request_keys WHERE claimed_ms < ?"), (before_ms,)
            )
