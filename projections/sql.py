"""What the views need of a database, whatever its dialect.

The views' statements are written once, with ``?`` placeholders and SQL that
SQLite and PostgreSQL both accept (``ON CONFLICT`` upserts, row values, partial
indexes). A dialect supplies the rest: how to get a cursor for reading or for a
committed write, how its placeholders are spelled, a substring test, and its DDL.
Rows are read by position, never by name, on both dialects.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any, Protocol

APPLICATION_NAME = "Sessions"
EVENTS_TABLE = "stored_events"
SNAPSHOTS_TABLE = "stored_snapshots"
TRACKING_TABLE = "tracking"


class Cursor(Protocol):
    """The DB-API cursor methods the views use (``sqlite3`` and ``psycopg``)."""

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...

    def executemany(self, query: Any, params_seq: Any, /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class SQLDialect(ABC):
    """The dialect hooks every view module builds on."""

    @abstractmethod
    def q(self, statement: str) -> str:
        """``statement`` (written with ``?`` placeholders) in this dialect."""

    @abstractmethod
    def contains(self, column: str) -> str:
        """A condition: ``column`` contains the (bound) text."""

    @abstractmethod
    def reading(self) -> AbstractContextManager[Cursor]:
        """A cursor for reads (nothing is committed)."""

    def snapshot(self) -> AbstractContextManager[Cursor]:
        """A cursor for several reads that must see one state of the database."""
        return self.reading()

    @abstractmethod
    def writing(self) -> AbstractContextManager[Cursor]:
        """A cursor whose transaction commits when the block ends without error."""
