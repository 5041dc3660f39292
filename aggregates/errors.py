"""Domain errors, each with a stable ``code`` that every surface reports.

::

    DomainError
    ├── InvalidRequestError        invalid_request
    ├── SessionEndedError          session_ended
    ├── SessionExpiredError        session_expired  (carries expires_at)
    ├── OffsetConflictError        conflict         (carries current_offset)
    ├── CheckpointNotFoundError    checkpoint_not_found
    ├── SummaryNotFoundError       summary_not_found
    ├── OffsetOutOfRangeError      offset_out_of_range
    ├── RenewalRefusedError        renewal_refused
    └── TurnOpenError              turn_open        (carries turn_offset)
"""

from __future__ import annotations

from datetime import datetime


class DomainError(Exception):
    """A command was refused by the session's rules; nothing was recorded."""

    code = "domain_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidRequestError(DomainError):
    """An argument breaks a rule of the domain (a bad role, name or offset)."""

    code = "invalid_request"


class SessionEndedError(DomainError):
    """The session was ended: it can be read (audit) but not changed."""

    code = "session_ended"


class SessionExpiredError(DomainError):
    """The session expired; every call on it answers this until retention
    removes it."""

    code = "session_expired"

    def __init__(self, session_id: str, expires_at: datetime) -> None:
        super().__init__(f"session {session_id} expired at {expires_at.isoformat()}")
        self.expires_at = expires_at


class OffsetConflictError(DomainError):
    """The caller expected another offset: someone wrote in between."""

    code = "conflict"

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"expected offset {expected}, the session is at {current}")
        self.expected_offset = expected
        self.current_offset = current


class CheckpointNotFoundError(DomainError):
    """No checkpoint with that id exists in the session."""

    code = "checkpoint_not_found"


class SummaryNotFoundError(DomainError):
    """No context summary was recorded at that offset (or it was dropped)."""

    code = "summary_not_found"


class OffsetOutOfRangeError(DomainError):
    """The offset does not name a point of this session's life."""

    code = "offset_out_of_range"


class RenewalRefusedError(DomainError):
    """The session reached its maximum duration and cannot be renewed."""

    code = "renewal_refused"


class TurnOpenError(DomainError):
    """A message would open an agent turn while the previous one never ended
    (a crash cut it short): the runtime closes that one first."""

    code = "turn_open"

    def __init__(self, turn_offset: int) -> None:
        super().__init__(f"the turn opened at offset {turn_offset} has not ended")
        self.turn_offset = turn_offset
