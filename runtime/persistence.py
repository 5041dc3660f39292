"""Persistence wiring: which store ``Settings.db`` selects, and eventsourcing's
environment derived from the settings (never from the ambient environment).

``SESSIOND_DB`` is a SQLite file path (the embedded default) or a
``postgresql://`` DSN. Either way the application gets a factory with a
``session_store`` method that returns the sessions recorder (events, views,
outbox and tracking in one transaction) with its tables created:
:mod:`runtime.sqlite_store` and :mod:`runtime.postgres_store`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from runtime.postgres_store import postgres_env
from runtime.recording import SessionsRecorder
from runtime.sqlite_store import check_durability

if TYPE_CHECKING:
    from runtime.bus import EventBus
    from runtime.clock import Clock
    from runtime.feed import ChangeSource
    from runtime.lease import LeaseStore
    from runtime.settings import Settings

__all__ = [
    "SessionStoreFactory",
    "SessionsRecorder",
    "check_durability",
    "eventsourcing_env",
    "is_postgres",
]

PERSISTENCE_MODULE = "PERSISTENCE_MODULE"
SQLITE_DBNAME = "SQLITE_DBNAME"
SQLITE_LOCK_TIMEOUT = "SQLITE_LOCK_TIMEOUT"
ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"
IS_SNAPSHOTTING_ENABLED = "IS_SNAPSHOTTING_ENABLED"
POSTGRES_DSN_PREFIXES = ("postgresql://", "postgres://")


class SessionStoreFactory(Protocol):
    """What :class:`runtime.sessions.Sessions` needs of its persistence factory."""

    def session_store(
        self,
        bus: EventBus,
        *,
        clock: Clock,
        server_webhooks: tuple[Mapping[str, Any], ...],
    ) -> SessionsRecorder: ...

    def lease_store(self) -> LeaseStore:
        """The store's leases (:mod:`runtime.lease`), their table created."""
        ...

    def change_source(self) -> ChangeSource:
        """The store's notification log for the change feed (:mod:`runtime.feed`)."""
        ...


def is_postgres(db: str) -> bool:
    """Whether ``db`` names a PostgreSQL database rather than a SQLite file."""
    return db.startswith(POSTGRES_DSN_PREFIXES)


def eventsourcing_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing environment for ``settings`` (never the ambient one)."""
    common = {ORIGINATOR_ID_TYPE: "text", IS_SNAPSHOTTING_ENABLED: "y"}
    if is_postgres(settings.db):
        return {
            PERSISTENCE_MODULE: "runtime.postgres_store:PostgresSessionsFactory",
            **postgres_env(settings),
            **common,
        }
    return {
        PERSISTENCE_MODULE: "runtime.sqlite_store:DurableSQLiteFactory",
        SQLITE_DBNAME: settings.db,
        SQLITE_LOCK_TIMEOUT: str(settings.sqlite_lock_timeout),
        **common,
    }
