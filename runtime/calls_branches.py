"""Runtime calls on a session's history as a tree: checkpoints, rewinds, forks,
state at an offset, clear, reset, export and the branch listing."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aggregates.errors import (
    InvalidRequestError,
    OffsetOutOfRangeError,
)
from aggregates.session import Session
from aggregates.values import (
    validate_session_id,
)
from projections.codec import ALIAS_OF
from projections.documents import format_time, session_document
from runtime.actor import Outcome
from runtime.core import (
    DocumentList,
    RuntimeCore,
)
from runtime.export import export_document
from runtime.principal import LOCAL_PRINCIPAL, Principal

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


def checkpoint_document(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The ``Checkpoint`` resource."""
    return {
        "id": checkpoint["id"],
        "name": checkpoint["name"],
        "description": checkpoint.get("description"),
        "offset": checkpoint["offset"],
        "message_count": checkpoint["message_count"],
        "created_at": format_time(datetime.fromisoformat(checkpoint["created_at"])),
    }


class BranchCalls(RuntimeCore):
    """Checkpoints, rewinds, forks, clears, resets and exports."""

    def checkpoint_save(
        self,
        session_id: str,
        name: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Save a named checkpoint at the current offset (copies nothing)."""
        self._row(session_id, principal)
        checkpoint_id = self._new_id()
        checkpoint = self._execute_expecting(
            expected_offset,
            session_id,
            lambda s: s.save_checkpoint(
                timestamp=self.clock.now(),
                checkpoint_id=checkpoint_id,
                name=name,
                description=description,
            ),
        )
        return checkpoint_document(checkpoint)

    def checkpoints(
        self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL
    ) -> DocumentList:
        """The session's checkpoints, oldest first."""
        self._row(session_id, principal)
        found = self._read(session_id, lambda s: list(s.checkpoints.values()))
        return [
            checkpoint_document(c) for c in sorted(found, key=lambda c: c["offset"])
        ]

    def checkpoint_restore(
        self,
        session_id: str,
        checkpoint_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
    ) -> dict[str, Any]:
        """Move the head back to a checkpoint; later messages stay in the log."""
        self._row(session_id, principal)
        self._execute(
            session_id,
            lambda s: s.restore_checkpoint(
                timestamp=self.clock.now(),
                checkpoint_id=checkpoint_id,
                expected_offset=expected_offset,
            ),
        )
        return self._document(session_id)

    def checkpoint_delete(
        self,
        session_id: str,
        checkpoint_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
    ) -> None:
        """Delete a checkpoint (the history it pointed at is untouched)."""
        self._row(session_id, principal)
        self._execute_expecting(
            expected_offset,
            session_id,
            lambda s: s.delete_checkpoint(
                timestamp=self.clock.now(), checkpoint_id=checkpoint_id
            ),
        )

    def rewind(
        self,
        session_id: str,
        offset: int,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
    ) -> dict[str, Any]:
        """Move the head back to the visible history as of ``offset``."""
        self._row(session_id, principal)
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise InvalidRequestError("offset must be an integer")

        def command(session: Session) -> None:
            head, count = self.views.last_message(session.spans_at(offset))
            session.rewind(
                timestamp=self.clock.now(),
                to_offset=offset,
                head=head,
                message_count=count,
                expected_offset=expected_offset,
            )

        self._execute(session_id, command)
        return self._document(session_id)

    def fork(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        offset: int | None = None,
        session_id_for_fork: str | None = None,
    ) -> dict[str, Any]:
        """A new session whose history is this one's at ``offset`` (default: now)
        plus its own; O(1), nothing is copied."""
        self._row(session_id, principal)
        if offset is not None and (
            not isinstance(offset, int) or isinstance(offset, bool)
        ):
            raise InvalidRequestError("offset must be an integer")
        new_id = (
            validate_session_id(session_id_for_fork)
            if session_id_for_fork
            else self._new_id()
        )

        def command(session: Session) -> str | Outcome[str]:
            at = session.version if offset is None else offset
            if at == session.version:
                head, count = session.head, session.message_count
            else:
                head, count = self.views.last_message(session.spans_at(at))
            fork = session.fork(
                session_id=new_id,
                timestamp=self.clock.now(),
                offset=at,
                head=head,
                message_count=count,
                owner_id=principal.id,
            )
            return Outcome(fork.id, (fork,))

        self._execute(session_id, command)
        return self._document(new_id)

    def state_at(
        self, session_id: str, offset: int, *, principal: Principal = LOCAL_PRINCIPAL
    ) -> dict[str, Any]:
        """The session as it was at ``offset`` (rebuilt from snapshot and log)."""
        row = self._row(session_id, principal)
        doc = row["doc"]
        first = (doc["parent"] or {}).get("offset", 0) + 1
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise InvalidRequestError("offset must be an integer")
        if not first <= offset <= doc["offset"]:
            # The same condition and code as a rewind to such an offset.
            raise OffsetOutOfRangeError(
                f"offset must be within {first}..{doc['offset']} for this session"
            )
        session: Session = self.app.repository.get(session_id, version=offset)
        return session_document(session)

    def clear(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
    ) -> dict[str, Any]:
        """Empty the visible history; the session and its log remain."""
        self._row(session_id, principal)
        self._execute(
            session_id,
            lambda s: s.clear_history(
                timestamp=self.clock.now(), expected_offset=expected_offset
            ),
        )
        return self._document(session_id)

    def reset(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        expected_offset: int | None = None,
    ) -> dict[str, Any]:
        """End the session and open a fresh one on the same scope key, in one
        atomic write; returns the new session."""
        self._row(session_id, principal)

        def command(session: Session) -> str | Outcome[str]:
            successor = self._successor(session, self.clock.now(), reason="reset")
            return Outcome(successor.id, (successor,))

        return self._document(
            self._execute_expecting(expected_offset, session_id, command)
        )

    def export(
        self,
        session_id: str,
        *,
        principal: Principal = LOCAL_PRINCIPAL,
        format: str = "json",
    ) -> dict[str, Any] | str:
        """The session with its metadata: ``json`` (a dict), ``markdown`` or
        ``text``."""
        if format in ("markdown", "text"):
            return self.api.history_text(session_id, principal=principal, format=format)
        if format != "json":
            raise InvalidRequestError("format must be json, markdown or text")
        return export_document(
            self.api.get(session_id, principal=principal),
            self.api.messages(session_id, principal=principal),
            self.checkpoints(session_id, principal=principal),
            format_time(self.clock.now()),
        )

    def branches(
        self, session_id: str, *, principal: Principal = LOCAL_PRINCIPAL
    ) -> dict[str, Any]:
        """The session's branch points: where it came from (``parent``), the
        restores and rewinds in its log, and the sessions forked from it."""
        document = self._row(session_id, principal)["doc"]
        restores = [
            {
                "offset": event["offset"],
                "to_offset": event["data"]["to_offset"],
                "checkpoint_id": event["data"].get("checkpoint_id"),
                "message_count": event["data"]["message_count"],
                "at": event["at"],
            }
            for event in self.views.events_of_type(
                session_id, ALIAS_OF[Session.Rewound]
            )
        ]
        forks = [
            {
                "session_id": fork["id"],
                "offset": fork["parent"]["offset"],
                "created_at": fork["created_at"],
            }
            for fork in self.views.forks_of(session_id)
            if principal.admin or self._owned(fork["id"], principal)
        ]
        return {
            "session_id": session_id,
            "parent": document["parent"],
            "restores": restores,
            "forks": forks,
        }

    def _owned(self, session_id: str, principal: Principal) -> bool:
        row = self.views.session_row(session_id)
        return row is not None and row["owner_id"] == principal.id
