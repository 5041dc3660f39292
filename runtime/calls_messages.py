"""Runtime calls on messages: append, history, the log and its tails (turns are
in :mod:`runtime.turns`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from aggregates.errors import (
    InvalidRequestError,
)
from aggregates.session import Session
from projections.codec import encode_state
from projections.documents import message_document
from runtime.core import (
    HISTORY_MAX_LIMIT,
    AnyList,
    DocumentList,
    RuntimeCore,
    _ResetTo,
)
from runtime.export import render_markdown, render_text
from runtime.principal import LOCAL_PRINCIPAL, Principal
from runtime.tail import SessionTail

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


class MessageCalls(RuntimeCore):
    """Messages, history and the event log."""

    def append(
        self,
        session_id: str,
        content: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        role: str = "user",
        author_id: str | None = None,
        attachments: AnyList | None = None,
        metadata: Mapping[str, Any] | None = None,
        usage: Mapping[str, int] | None = None,
        idempotency_key: str | None = None,
        expected_offset: int | None = None,
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """Append one message without running a turn; returns the ``Message``.

        With ``idempotency_key``, a retry returns the first message and appends
        nothing (keys are remembered for the session's last
        ``IDEMPOTENCY_WINDOW`` keyed messages). ``expected_offset`` must equal
        the session's offset (else ``OffsetConflictError`` with the current one).
        """
        # The actor checks the principal sees the session (no index read).
        recorded: DocumentList = []
        offset, duplicate, session_id = self._append(
            session_id,
            content,
            principal=principal,
            role=role,
            author_id=author_id or (principal.id if role == "user" else None),
            attachments=attachments,
            metadata=metadata,
            usage=usage,
            idempotency_key=idempotency_key,
            expected_offset=expected_offset,
            reply_to=reply_to,
            recorded=recorded,
        )
        if recorded and not duplicate:
            message = recorded[-1]
            if message["session_id"] == session_id and message["offset"] == offset:
                return message
        # A retry (idempotency key) answers the message recorded the first time.
        found = self.views.message_at(session_id, offset)
        assert found is not None
        return found

    def _append(
        self,
        session_id: str,
        content: str,
        *,
        role: str,
        author_id: str | None,
        attachments: AnyList | None,
        metadata: Mapping[str, Any] | None,
        usage: Mapping[str, int] | None,
        idempotency_key: str | None,
        expected_offset: int | None,
        reply_to: int | None,
        recorded: DocumentList | None = None,
        opens_turn: bool = False,
        principal: Principal | None = None,
        then: Callable[[Session, dict[str, Any]], None] | None = None,
    ) -> tuple[int, bool, str]:
        """Append on the session's actor; returns (offset, whether it was a
        retry, the session it went to). ``recorded`` receives the new message's
        document, made from the very bytes the log stores, so that the caller
        need not read it back (reading after a write costs ~100 us: every write
        empties the other connections' page caches). With ``principal``, the
        actor checks that it sees the session. ``then`` runs in the same
        command once the message is applied (not for a retry), with the
        session and the message's document: what it applies is written in the
        message's own transaction."""
        if attachments is not None and not isinstance(attachments, list):
            raise InvalidRequestError("attachments must be a list")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidRequestError("metadata must be an object")
        message_id = self._new_id()

        def command(session: Session) -> Any:  # (offset, duplicate), or _ResetTo
            seen = session.seen_idempotency_key(idempotency_key)
            if seen is not None:
                return seen, True
            successor = session.successor()
            if successor is not None:
                # Reset (e.g. by the supervisor at an idle or daily reset point)
                # before this message came: it belongs to the session carrying on.
                return _ResetTo(successor)
            offset = session.append_message(
                timestamp=self.clock.now(),
                message_id=message_id,
                role=role,
                content=content,
                author_id=author_id,
                attachments=attachments,
                metadata=dict(metadata) if metadata else None,
                usage=dict(usage) if usage else None,
                idempotency_key=idempotency_key,
                reply_to=reply_to,
                expected_offset=expected_offset,
                opens_turn=opens_turn,
            )
            if recorded is not None or then is not None:
                state = vars(session.pending_events[-1])
                stored = orjson.loads(encode_state(state))  # as the log stores it
                document = message_document(session.id, offset, stored)
                if recorded is not None:
                    recorded.append(document)
                if then is not None:
                    then(session, document)
            return offset, False

        (offset, duplicate), session_id = self._execute_on(
            session_id, command, principal=principal
        )
        return offset, duplicate, session_id

    def history(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        limit: int = 50,
        before: int | None = None,
        after: int | None = None,
        order: str = "desc",
    ) -> dict[str, Any]:
        """A page of the visible history: ``{messages, has_more}``.

        ``before``/``after`` are exclusive offsets; ``order`` is ``desc``
        (newest first, the default) or ``asc``. ``has_more`` is exact.
        """
        if not 1 <= limit <= HISTORY_MAX_LIMIT:
            raise InvalidRequestError(f"limit must be within 1..{HISTORY_MAX_LIMIT}")
        if order not in ("asc", "desc"):
            raise InvalidRequestError("order must be asc or desc")
        for label, value in (("before", before), ("after", after)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InvalidRequestError(f"{label} must be a non-negative offset")
        if not isinstance(session_id, str):
            self._checked(None, session_id, principal)
        shape = (session_id, limit, before, after, order == "desc")
        cache = self.history_cache
        if cache.max_bytes:
            # A page kept from an earlier read under the same index row is what
            # the log would answer (see runtime.history_cache).
            row = self.views.session_row(session_id)
            if self._checked(row, session_id, principal) is row:
                assert row is not None
                kept = cache.get(shape, row["token"])
                if kept is not None:
                    return {"messages": kept[0], "has_more": kept[1]}
        # The index row and the page come from one read transaction.
        row, messages, has_more = self.views.session_history(
            session_id,
            limit=limit,
            before=before,
            after=after,
            descending=order == "desc",
        )
        checked = self._checked(row, session_id, principal)
        if checked is not row:  # it changed meanwhile (expired on the spot)
            messages, has_more = self.views.history(
                checked["spans"],
                limit=limit,
                before=before,
                after=after,
                descending=order == "desc",
            )
        else:
            cache.put(shape, checked["token"], messages, has_more)
        return {"messages": messages, "has_more": has_more}

    def messages(
        self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL
    ) -> DocumentList:
        """The whole visible history, oldest first."""
        row = self._row(session_id, principal)
        found: DocumentList = []
        after: int | None = None
        while True:
            page, has_more = self.views.history(
                row["spans"], limit=HISTORY_MAX_LIMIT, after=after, descending=False
            )
            found.extend(page)
            if not has_more:
                return found
            after = page[-1]["offset"]

    def history_text(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        format: str = "markdown",
    ) -> str:
        """The visible history rendered as ``markdown`` or ``text``."""
        messages = self.messages(session_id, principal=principal)
        if format == "markdown":
            return render_markdown(
                self.api.get(session_id, principal=principal), messages
            )
        if format == "text":
            return render_text(messages)
        raise InvalidRequestError("format must be markdown or text")

    def events(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        after: int = 0,
        limit: int = 100,
        include_expired: bool = False,
    ) -> dict[str, Any]:
        """A page of the session's own log after offset ``after``: ``{events,
        has_more}`` (the audit view; abandoned branches included). An admin may
        pass ``include_expired`` to read an expired session's log."""
        if not 1 <= limit <= HISTORY_MAX_LIMIT:
            raise InvalidRequestError(f"limit must be within 1..{HISTORY_MAX_LIMIT}")
        if not isinstance(after, int) or after < 0:
            raise InvalidRequestError("after must be a non-negative offset")
        self._row(
            session_id, principal, allow_expired=include_expired and principal.admin
        )
        events, has_more = self.views.events(session_id, after=after, limit=limit)
        return {"events": events, "has_more": has_more}

    def tail(
        self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL, after: int = 0
    ) -> SessionTail:
        """Follow the session's log from offset ``after``: the backlog, then live
        events and turn deltas (see :mod:`runtime.tail`)."""
        self._row(session_id, principal)
        if not isinstance(after, int) or after < 0:
            raise InvalidRequestError("after must be a non-negative offset")
        return SessionTail(self.views, self.app.bus, session_id, after)
