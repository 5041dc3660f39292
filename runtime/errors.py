"""Runtime errors, each with a stable ``code``. Domain errors
(:mod:`aggregates.errors`) pass through the runtime unchanged.

::

    RuntimeFault
    ├── SessionNotFoundError        not_found
    ├── SessionExistsError          conflict       (caller-chosen id, other owner/agent)
    ├── NameTakenError              name_taken
    ├── ConcurrencyConflictError    conflict       (another writer won; reloaded)
    ├── AgentNotFoundError          agent_not_found
    ├── StorageUnavailableError     storage_unavailable
    │   └── StorageFullError        storage_full   (out of space; nothing written)
    ├── ActorUnavailableError       unavailable
    ├── SessionBusyError            busy            (concurrency reject)
    ├── TurnTimeoutError            timeout
    ├── TurnCancelledError          cancelled
    ├── TurnFailedError             agent_error, provider_error, ... (the agent's
    │                               failure, recorded as a failed turn)
    └── ProviderError               provider_error  (the model server failed)
        ├── ProviderTimeoutError    provider_timeout
        └── ProviderRateLimitedError provider_rate_limited

A ``ProviderError`` carries the agent id and the upstream HTTP ``status`` (when
there was one), never the request's or the response's content: upstream error
bodies may quote the prompt. Raised inside a turn, it ends the turn as failed
with its code (a ``TurnFailedError`` reaches the caller).
"""

from __future__ import annotations

import errno
import sqlite3

from aggregates.errors import (
    CheckpointNotFoundError,
    DomainError,
    InvalidRequestError,
    OffsetConflictError,
    OffsetOutOfRangeError,
    RenewalRefusedError,
    SessionEndedError,
    SessionExpiredError,
    SummaryNotFoundError,
)

__all__ = [
    "ActorUnavailableError",
    "AgentNotFoundError",
    "CheckpointNotFoundError",
    "ConcurrencyConflictError",
    "DomainError",
    "InvalidRequestError",
    "NameTakenError",
    "OffsetConflictError",
    "OffsetOutOfRangeError",
    "ProviderError",
    "ProviderRateLimitedError",
    "ProviderTimeoutError",
    "RenewalRefusedError",
    "RuntimeFault",
    "SessionBusyError",
    "SessionEndedError",
    "SessionExistsError",
    "SessionExpiredError",
    "SessionNotFoundError",
    "StorageUnavailableError",
    "SummaryNotFoundError",
    "TurnCancelledError",
    "TurnFailedError",
    "TurnTimeoutError",
]


class RuntimeFault(Exception):
    """A runtime call could not be carried out."""

    code = "runtime_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class SessionNotFoundError(RuntimeFault):
    """No session with that id is visible to the caller."""

    code = "not_found"


class SessionExistsError(RuntimeFault):
    """A caller-chosen session id is already taken by a different session."""

    code = "conflict"


class NameTakenError(RuntimeFault):
    """Another live session of the same user already has that name."""

    code = "name_taken"


class ConcurrencyConflictError(RuntimeFault):
    """Another writer appended first; the session was reloaded, nothing written."""

    code = "conflict"

    def __init__(self, detail: str, current_offset: int | None = None) -> None:
        super().__init__(detail)
        self.current_offset = current_offset


class AgentNotFoundError(RuntimeFault):
    """The agent id is not configured."""

    code = "agent_not_found"


class StorageUnavailableError(RuntimeFault):
    """The store failed; whether the write landed is unknown (the actor restarts)."""

    code = "storage_unavailable"


class StorageFullError(StorageUnavailableError):
    """The disk or the database is full: the write was refused whole (SQLite
    and PostgreSQL roll back a transaction that cannot get space), so nothing
    of it was recorded and it may be retried once space is freed. Reads go on."""

    code = "storage_full"


POSTGRES_DISK_FULL = "53100"


def is_out_of_space(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, says the store ran
    out of space: SQLite's ``SQLITE_FULL`` ("database or disk is full", which
    a full disk and ``max_page_count`` both give), PostgreSQL's ``disk_full``
    (SQLSTATE 53100), or ``ENOSPC``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        if getattr(current, "sqlstate", None) == POSTGRES_DISK_FULL:
            return True
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        current = current.__cause__ or current.__context__
    return False


def storage_error(error: BaseException, detail: str) -> StorageUnavailableError:
    """The runtime's error for a store operation that failed with ``error``:
    :class:`StorageFullError` when the store is out of space, else
    :class:`StorageUnavailableError` with ``detail``."""
    if is_out_of_space(error):
        return StorageFullError(
            "the store is out of space; this write was not recorded "
            "(retry once space is freed)"
        )
    return StorageUnavailableError(detail)


class ActorUnavailableError(RuntimeFault):
    """The session's actor did not answer in time."""

    code = "unavailable"


class TurnTimeoutError(RuntimeFault):
    """The agent's turn did not finish within the caller's timeout."""

    code = "timeout"


class ProviderError(RuntimeFault):
    """The agent's model server failed or answered with an error.

    ``status`` is the upstream HTTP status (``None`` for a transport failure);
    ``retry_after`` the seconds the server asked to wait, when it said.
    """

    code = "provider_error"

    def __init__(
        self,
        detail: str,
        *,
        agent_id: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.agent_id = agent_id
        self.status = status
        self.retry_after = retry_after


class ProviderTimeoutError(ProviderError):
    """The model server did not connect or answer within the configured time."""

    code = "provider_timeout"


class ProviderRateLimitedError(ProviderError):
    """The model server kept refusing with 429 (or asked to wait too long)."""

    code = "provider_rate_limited"


class SessionBusyError(RuntimeFault):
    """A turn runs on the session and its policy (``reject``) refuses another;
    nothing was recorded."""

    code = "busy"


class TurnCancelledError(RuntimeFault):
    """The turn was cancelled (by its caller) before it finished."""

    code = "cancelled"


class TurnFailedError(RuntimeFault):
    """The agent (or its model provider) failed; the turn was recorded as
    failed with this ``code`` and the user message kept."""

    code = "agent_error"

    def __init__(self, detail: str, code: str = "agent_error") -> None:
        super().__init__(detail)
        self.code = code
