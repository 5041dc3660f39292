"""The pure domain of sessiond: the Session aggregate, its values and errors."""

from __future__ import annotations

from aggregates.errors import (
    CheckpointNotFoundError,
    DomainError,
    InvalidRequestError,
    OffsetConflictError,
    OffsetOutOfRangeError,
    RenewalRefusedError,
    SessionEndedError,
    SummaryNotFoundError,
)
from aggregates.session import IDEMPOTENCY_WINDOW, Session, Span, truncate_spans
from aggregates.values import (
    Concurrency,
    Role,
    Scope,
    Status,
    TimeoutLimits,
    TimeoutPolicy,
    TurnStatus,
    deep_merge,
    name_key,
    normalize_name,
    scope_key,
    validate_session_id,
)

__all__ = [
    "IDEMPOTENCY_WINDOW",
    "CheckpointNotFoundError",
    "Concurrency",
    "DomainError",
    "InvalidRequestError",
    "OffsetConflictError",
    "OffsetOutOfRangeError",
    "RenewalRefusedError",
    "Role",
    "Scope",
    "Session",
    "SessionEndedError",
    "Span",
    "Status",
    "SummaryNotFoundError",
    "TimeoutLimits",
    "TimeoutPolicy",
    "TurnStatus",
    "deep_merge",
    "name_key",
    "normalize_name",
    "scope_key",
    "truncate_spans",
    "validate_session_id",
]
