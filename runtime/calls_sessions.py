"""Runtime calls on sessions themselves: create (and get-or-create by scope), read,
list, update, end, rescope."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from eventsourcing.persistence import IntegrityError, PersistenceError

from aggregates.errors import (
    InvalidRequestError,
)
from aggregates.session import Session
from aggregates.values import (
    Scope,
    TimeoutPolicy,
    concurrency_value,
    name_key,
    normalize_name,
    scope_key,
    validate_session_id,
)
from runtime.core import (
    _UNSET,
    HISTORY_MAX_LIMIT,
    RuntimeCore,
)
from runtime.errors import (
    NameTakenError,
    SessionExistsError,
    storage_error,
)
from runtime.principal import LOCAL_PRINCIPAL, Principal

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


class SessionCalls(RuntimeCore):
    """Creating, reading, listing, updating and ending sessions."""

    def create(
        self,
        agent_id: str = "echo",
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        user_id: str | None = None,
        channel_id: str | None = None,
        peer_id: str | None = None,
        scope: str | None = None,
        group: bool = False,
        session_id: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
        timeout: Mapping[str, Any] | None = None,
        concurrency: str = "enqueue",
    ) -> dict[str, Any]:
        """Create a session (or, with ``scope``, get the live one for its key)."""
        document, _ = self.open(
            agent_id,
            principal=principal,
            user_id=user_id,
            channel_id=channel_id,
            peer_id=peer_id,
            scope=scope,
            group=group,
            session_id=session_id,
            name=name,
            metadata=metadata,
            attributes=attributes,
            timeout=timeout,
            concurrency=concurrency,
        )
        return document

    def open(
        self,
        agent_id: str = "echo",
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        user_id: str | None = None,
        channel_id: str | None = None,
        peer_id: str | None = None,
        scope: str | None = None,
        group: bool = False,
        session_id: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
        timeout: Mapping[str, Any] | None = None,
        concurrency: str = "enqueue",
    ) -> tuple[dict[str, Any], bool]:
        """Like :meth:`create`, also saying whether a session was created
        (``False`` when get-or-create or an idempotent re-create found one)."""
        agent = self.agents.config(agent_id)
        user_id = user_id or principal.id
        for label, value in (("metadata", metadata), ("attributes", attributes)):
            if value is not None and not isinstance(value, Mapping):
                raise InvalidRequestError(f"{label} must be an object")
        key = None
        if scope is not None or group:
            try:
                scope_value = Scope(scope or "per-channel-peer")
            except ValueError:
                raise InvalidRequestError(
                    "scope must be one of main, per-peer, per-channel-peer"
                ) from None
            key = scope_key(
                scope_value,
                owner_id=principal.id,
                agent_id=agent_id,
                user_id=user_id,
                channel_id=channel_id,
                peer_id=peer_id,
                group=group,
            )
            found = self.views.find_by_scope(key)
            if found is not None:
                return self._document(found), False
        if session_id is not None:
            validate_session_id(session_id)
            existing = self._existing_for_recreate(session_id, principal, agent_id)
            if existing is not None:
                return existing, False
        name = normalize_name(name)
        if name is not None and self.views.name_taken(
            principal.id, user_id, name, session_id or ""
        ):
            raise NameTakenError(f"another session of {user_id} is named {name!r}")
        policy = TimeoutPolicy.resolve(
            self.settings.timeout_limits, dict(agent.timeout), dict(timeout or {})
        )
        session = Session.open(
            session_id=session_id or self._new_id(),
            timestamp=self.clock.now(),
            owner_id=principal.id,
            agent_id=agent_id,
            user_id=user_id,
            channel_id=channel_id,
            peer_id=peer_id,
            scope_key=key,
            name=name,
            metadata=dict(metadata or {}),
            attributes=dict(attributes or {}),
            timeout=policy.as_dict(),
            concurrency=concurrency_value(concurrency),
        )
        try:
            self.app.save(session)
        except IntegrityError as error:
            return self._resolve_create_clash(error, session, principal, key)
        except PersistenceError as error:
            raise storage_error(
                error, "the store failed to record the session"
            ) from error
        return self._document(session.id), True

    def _existing_for_recreate(
        self, session_id: str, principal: Principal, agent_id: str
    ) -> dict[str, Any] | None:
        row = self.views.session_row(session_id)
        if row is None:
            return None
        if row["owner_id"] == principal.id and row["doc"]["agent_id"] == agent_id:
            return self._decorate(row["doc"])
        msg = f"session id {session_id} is taken"
        raise SessionExistsError(msg)

    def _resolve_create_clash(
        self,
        error: IntegrityError,
        session: Session,
        principal: Principal,
        key: str | None,
    ) -> tuple[dict[str, Any], bool]:
        # Another thread created the same id, scope key or name first.
        text = str(error)
        if key is not None and "scope" in text:
            found = self.views.find_by_scope(key)
            if found is not None:
                return self._document(found), False
        if "name" in text:
            raise NameTakenError("another session of this user has that name") from None
        existing = self._existing_for_recreate(session.id, principal, session.agent_id)
        if existing is not None:
            return existing, False
        raise SessionExistsError(f"session id {session.id} is taken") from None

    def get(
        self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL
    ) -> dict[str, Any]:
        """One session."""
        return self._decorate(self._row(session_id, principal)["doc"])

    def list(
        self,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        user_id: str | None = None,
        agent_id: str | None = None,
        status: str | None = None,
        pinned: bool | None = None,
        q: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """A page of the caller's sessions, newest first: ``{sessions,
        next_cursor, total}``. Ended sessions are listed only when asked for by
        ``status``."""
        if not 1 <= limit <= HISTORY_MAX_LIMIT:
            raise InvalidRequestError(f"limit must be within 1..{HISTORY_MAX_LIMIT}")
        if status is not None and status not in ("active", "expired", "ended"):
            raise InvalidRequestError("status must be one of active, expired, ended")
        sessions, next_cursor, total = self.views.list_sessions(
            owner_id=None if principal.admin else principal.id,
            user_id=user_id,
            agent_id=agent_id,
            status=status,
            pinned=pinned,
            q=q,
            limit=limit,
            cursor=_decode_cursor(cursor),
        )
        return {
            "sessions": [self._decorate(s) for s in sessions],
            "next_cursor": _encode_cursor(next_cursor),
            "total": total,
        }

    def counts(self, *, principal: Principal = LOCAL_PRINCIPAL) -> dict[str, int]:
        """How many of the caller's sessions there are, by status."""
        return self.views.counts(None if principal.admin else principal.id)

    def update(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
        name: str | None = _UNSET,
        pinned: bool | None = None,
        attributes: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Rename (``None`` clears), pin/unpin, deep-merge attributes, replace
        metadata; all in one atomic write."""
        row = self._row(session_id, principal)
        if name is not _UNSET:
            name = normalize_name(name)
            user_id = row["doc"]["user_id"]
            if (
                name is not None
                and name_key(name) != name_key(row["doc"]["name"])
                and (self.views.name_taken(row["owner_id"], user_id, name, session_id))
            ):
                raise NameTakenError(f"another session of {user_id} is named {name!r}")
        if pinned is not None and not isinstance(pinned, bool):
            raise InvalidRequestError("pinned must be a boolean")

        def command(session: Session) -> None:
            now = self.clock.now()
            if name is not _UNSET:
                session.rename(timestamp=now, name=name)
            if pinned is not None:
                session.set_pinned(timestamp=now, pinned=pinned)
            if attributes is not None:
                session.patch_attributes(timestamp=now, patch=dict(attributes))
            if metadata is not None:
                session.replace_metadata(timestamp=now, metadata=dict(metadata))

        self._execute_expecting(expected_offset, session_id, command)
        return self._document(session_id)

    def patch_attributes(
        self,
        session_id: str,
        patch: Mapping[str, Any],
        *,
        principal: Principal = LOCAL_PRINCIPAL,
    ) -> dict[str, Any]:
        """Deep-merge ``patch`` into the attributes (``None`` deletes a key)."""
        return self.update(session_id, principal=principal, attributes=patch)

    def delete(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
        purge: bool = False,
    ) -> dict[str, Any]:
        """End the session; its log stays readable for audit (works on an expired
        session too). With ``purge`` its log, snapshots, views and pending
        webhooks are deleted for good: nothing of it comes back from any call.
        Returns the ended session."""
        self._row(session_id, principal, allow_expired=True)
        self._execute_expecting(
            expected_offset, session_id, lambda s: s.end(timestamp=self.clock.now())
        )
        document = self._document(session_id)
        if purge:
            self._purge(session_id)
        return document

    def rescope(
        self, session_id: str, scope: str, *, principal: Principal = LOCAL_PRINCIPAL
    ) -> dict[str, Any]:
        """Make this the session get-or-create finds for ``scope`` (``main``,
        ``per-peer``, ``per-channel-peer``) of its agent, user, channel and peer;
        refused while another live session holds that key."""
        row = self._row(session_id, principal)
        doc = row["doc"]
        try:
            scope_value = Scope(scope)
        except ValueError:
            raise InvalidRequestError(
                "scope must be one of main, per-peer, per-channel-peer"
            ) from None
        key = scope_key(
            scope_value,
            owner_id=row["owner_id"],
            agent_id=doc["agent_id"],
            user_id=doc["user_id"],
            channel_id=doc["channel_id"],
            peer_id=doc["peer_id"],
        )
        holder = self.views.find_by_scope(key)
        if holder is not None and holder != session_id:
            msg = f"session {holder} already holds that scope"
            raise SessionExistsError(msg)
        self._execute(
            session_id, lambda s: s.rescope(timestamp=self.clock.now(), scope_key=key)
        )
        return self._document(session_id)


def _encode_cursor(cursor: tuple[str, str] | None) -> str | None:
    if cursor is None:
        return None
    return base64.urlsafe_b64encode(orjson.dumps(list(cursor))).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[str, str] | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, session_id = orjson.loads(base64.urlsafe_b64decode(padded))
        return str(created_at), str(session_id)
    except (ValueError, binascii.Error, orjson.JSONDecodeError, TypeError):
        raise InvalidRequestError("cursor is not valid") from None
