"""Value types and pure rules of the session domain.

Everything here is deterministic: no clocks, no randomness, no I/O. Values held in
aggregate state are JSON-native (dicts, lists, strings, numbers) so that snapshots
round-trip exactly.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from aggregates.errors import InvalidRequestError

SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
NAME_MAX_LENGTH = 200


class Role(StrEnum):
    """Who wrote a message."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


def role_value(role: Any) -> str:
    """``role`` checked against :class:`Role` (``invalid_request`` otherwise)."""
    return _member(Role, role, "role")


def concurrency_value(policy: Any) -> str:
    """A concurrency policy checked against :class:`Concurrency`."""
    return _member(Concurrency, policy, "concurrency")


def _member(kind: type[StrEnum], value: Any, what: str) -> str:
    try:
        return kind(value).value
    except ValueError:
        names = ", ".join(member.value for member in kind)
        raise InvalidRequestError(f"{what} must be one of {names}") from None


class Status(StrEnum):
    """Where a session is in its life."""

    ACTIVE = "active"
    EXPIRED = "expired"
    ENDED = "ended"


class Concurrency(StrEnum):
    """What happens to a message that arrives while a turn runs."""

    ENQUEUE = "enqueue"
    REJECT = "reject"
    INTERRUPT = "interrupt"


class TurnStatus(StrEnum):
    """How an agent turn ended."""

    COMPLETED = "completed"
    """The agent gave its final answer (or the turn reached ``max_steps``)."""
    FAILED = "failed"
    """The agent or its model provider failed; ``error_code`` says how."""
    INTERRUPTED = "interrupted"
    """A newer message interrupted it (``interrupt`` policy), or a restart did
    and it could not be resumed."""
    CANCELLED = "cancelled"
    """Its caller's timeout passed, or its caller went away (``cancel``)."""


class Scope(StrEnum):
    """How get-or-create derives a session's key from who is talking."""

    MAIN = "main"
    PER_PEER = "per-peer"
    PER_CHANNEL_PEER = "per-channel-peer"


@dataclass(frozen=True)
class TimeoutLimits:
    """Global defaults and bounds for timeout policies (minutes)."""

    default_timeout_minutes: int = 30
    min_timeout_minutes: int = 5
    max_timeout_minutes: int = 1440
    max_duration_minutes: int = 720
    warning_threshold_minutes: int = 5


@dataclass(frozen=True)
class TimeoutPolicy:
    """How long a session lives without activity, and how it renews."""

    timeout_minutes: int
    auto_renew: bool
    max_duration_minutes: int
    warning_threshold_minutes: int

    @classmethod
    def resolve(
        cls,
        limits: TimeoutLimits,
        *layers: dict[str, Any] | None,
    ) -> TimeoutPolicy:
        """Merge layers (global < agent < session) and clamp into the limits.

        Creation clamps out-of-range values rather than refusing them, as the
        ElizaOS sessions API does.
        """
        merged: dict[str, Any] = {
            "timeout_minutes": limits.default_timeout_minutes,
            "auto_renew": True,
            "max_duration_minutes": limits.max_duration_minutes,
            "warning_threshold_minutes": limits.warning_threshold_minutes,
        }
        for layer in layers:
            for key, value in (layer or {}).items():
                if key in merged and value is not None:
                    merged[key] = value
        for key in ("timeout_minutes", "max_duration_minutes"):
            if not isinstance(merged[key], int) or isinstance(merged[key], bool):
                raise InvalidRequestError(f"timeout.{key} must be an integer")
        timeout = min(
            max(merged["timeout_minutes"], limits.min_timeout_minutes),
            limits.max_timeout_minutes,
        )
        duration = min(
            max(merged["max_duration_minutes"], timeout),
            limits.max_duration_minutes,
        )
        warning = merged["warning_threshold_minutes"]
        if not isinstance(warning, int) or isinstance(warning, bool):
            raise InvalidRequestError(
                "timeout.warning_threshold_minutes must be an integer"
            )
        if not isinstance(merged["auto_renew"], bool):
            raise InvalidRequestError("timeout.auto_renew must be a boolean")
        return cls(
            timeout_minutes=timeout,
            auto_renew=merged["auto_renew"],
            max_duration_minutes=duration,
            warning_threshold_minutes=max(0, min(warning, timeout)),
        )

    def as_dict(self) -> dict[str, Any]:
        """The policy as a JSON-native dict."""
        return asdict(self)

    @classmethod
    def changed(
        cls, limits: TimeoutLimits, current: dict[str, Any], changes: dict[str, Any]
    ) -> TimeoutPolicy:
        """The policy with only the named fields changed; out-of-range values are
        refused (unlike creation, which clamps)."""
        merged = dict(current)
        for key, value in changes.items():
            if key not in merged:
                raise InvalidRequestError(f"unknown timeout field {key!r}")
            if value is None:
                continue
            if key == "auto_renew":
                if not isinstance(value, bool):
                    raise InvalidRequestError("timeout.auto_renew must be a boolean")
            elif not isinstance(value, int) or isinstance(value, bool):
                raise InvalidRequestError(f"timeout.{key} must be an integer")
            merged[key] = value
        bounds = {
            "timeout_minutes": (limits.min_timeout_minutes, limits.max_timeout_minutes),
            "max_duration_minutes": (
                merged["timeout_minutes"],
                limits.max_duration_minutes,
            ),
            "warning_threshold_minutes": (0, merged["timeout_minutes"]),
        }
        for key, (low, high) in bounds.items():
            if (
                key in changes
                and changes[key] is not None
                and not low <= merged[key] <= high
            ):
                raise InvalidRequestError(f"timeout.{key} must be within {low}..{high}")
        return cls(**merged)


def deadline(
    policy: dict[str, Any], created_at: datetime, anchor: datetime
) -> datetime:
    """When a session expires: ``anchor`` (its last renewal, or creation without
    auto-renew) plus the timeout, capped at creation plus the maximum duration."""
    start = anchor if policy["auto_renew"] else created_at
    expires = start + timedelta(minutes=policy["timeout_minutes"])
    return min(expires, created_at + timedelta(minutes=policy["max_duration_minutes"]))


def max_end(policy: dict[str, Any], created_at: datetime) -> datetime:
    """The latest moment a session may live until, renewals included."""
    return created_at + timedelta(minutes=policy["max_duration_minutes"])


def validate_session_id(session_id: str) -> str:
    """Check a caller-chosen session id against ``^[A-Za-z0-9_-]{1,128}$``."""
    # fullmatch: with match, ``$`` would also accept a trailing newline.
    if not isinstance(session_id, str) or not SESSION_ID_PATTERN.fullmatch(session_id):
        raise InvalidRequestError("session_id must match ^[A-Za-z0-9_-]{1,128}$")
    return session_id


def normalize_name(name: str | None) -> str | None:
    """Validate a session name; ``None`` (or blank) clears it."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise InvalidRequestError("name must be a string or null")
    name = name.strip()
    if not name:
        return None
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidRequestError(f"name is longer than {NAME_MAX_LENGTH} characters")
    return name


def name_key(name: str | None) -> str | None:
    """The case-insensitive form under which names are unique per user."""
    return None if name is None else name.casefold()


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Merge ``patch`` into a copy of ``base``: dicts merge, ``None`` deletes."""
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict):
            # Into an empty object when there is none to merge into, so that the
            # patch's own nulls delete rather than being stored (RFC 7396).
            base_value = merged.get(key)
            merged[key] = deep_merge(
                base_value if isinstance(base_value, dict) else {}, value
            )
        else:
            merged[key] = value
    return merged


def scope_key(
    scope: Scope,
    *,
    owner_id: str,
    agent_id: str,
    user_id: str,
    channel_id: str | None,
    peer_id: str | None,
    group: bool = False,
) -> str:
    """The key get-or-create looks sessions up by.

    Follows OpenClaw's ``generateSessionKey``: group chats are always isolated per
    chat; direct messages share one session (``main``), one per user
    (``per-peer``) or one per user per chat (``per-channel-peer``). Keys are
    namespaced by the owning principal so tenants never share a session.
    """
    prefix = f"{owner_id}/agent:{agent_id}"
    channel = channel_id or "default"
    if group:
        if not peer_id:
            raise InvalidRequestError("a group session needs peer_id (the chat)")
        return f"{prefix}:{channel}:group:{peer_id}"
    if scope is Scope.MAIN:
        return f"{prefix}:dm:main"
    if scope is Scope.PER_PEER:
        return f"{prefix}:dm:peer:{user_id}"
    return f"{prefix}:{channel}:dm:{peer_id or user_id}:{user_id}"
