"""The ceiling of figures 1 and 2: sessiond's own statements with no sessiond
code around them.

For one message ``Runtime.append`` runs, in one transaction: the event's INSERT
into the log, the session's index row UPDATE (its ~1 KB document), the schedule
upsert, the open-turn DELETE and the tracking upsert. :class:`BareAppends` runs
exactly those statements (imported from ``projections.views``, with the bytes
sessiond stored for a real message) from a plain loop, or through sessiond's
own :class:`~runtime.committer.GroupCommitter` from many threads. Nothing else:
no actor, aggregate, mapper, document building or eventsourcing layer.

It answers "how close to the floor could any Python code writing these rows
get on this machine": a figure above this line needs fewer or smaller writes,
not leaner code.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    MessagePool,
    Result,
    connect_floor,
    ratio_of,
    runtime_settings,
)
from projections.sql import EVENTS_TABLE
from projections.views import (
    _ADVANCE,
    _CHANGING_AT,
    _INCARNATION,
    _UPDATE_INDEX,
    _UPSERT_SCHEDULE,
    APPLICATION_NAME,
    INDEX_COLUMNS,
)
from runtime.committer import GroupCommitter

_INSERT_EVENT = f"INSERT INTO {EVENTS_TABLE} VALUES (?, ?, ?, ?)"
_CLOSE_TURN = "DELETE FROM session_open_turns WHERE session_id = ?"


def ceiling_result(
    figure: str, what: str, rate: float, floor_rate: float, note: str
) -> Result:
    """The ceiling's line in a figure's table (a reference, no target)."""
    return Result(
        figure,
        f"  ceiling: sessiond's statements, {what}",
        rate,
        floor_rate,
        "msg/s",
        ratio_of(rate, floor_rate),
        "",
        notes=[f"ceiling: {note} (bench/bare.py)"],
    )


def bare_appends(path: Path, sessions: int, pool: MessagePool) -> BareAppends:
    """A sessiond file at ``path`` with ``sessions`` sessions of one message
    each (written by a ``Runtime``, then closed), appended to bare."""
    from runtime import Runtime

    runtime = Runtime(runtime_settings(path))
    try:
        session_ids = [runtime.create()["id"] for _ in range(sessions)]
        for session_id in session_ids:
            runtime.append(session_id, pool.next())
    finally:
        runtime.close()
    return BareAppends(path, session_ids)


class BareAppends:
    """Appends sessiond's rows for a message to sessions of a sessiond file.

    The sessions must exist (made by a ``Runtime`` on ``path``, each with at
    least one message); each append repeats its session's last message event at
    the next offset, with its current index row, schedule row and tracking.
    """

    def __init__(self, path: Path, session_ids: Sequence[str]) -> None:
        self.session_ids = tuple(session_ids)
        self.connection = connect_floor(path)
        self._rows: dict[str, tuple[list[Any], str, bytes, tuple[Any, ...]]] = {}
        columns = ", ".join(INDEX_COLUMNS)
        for session_id in session_ids:
            version, topic, state = self.connection.execute(
                f"SELECT originator_version, topic, state FROM {EVENTS_TABLE} "
                "WHERE originator_id = ? ORDER BY originator_version DESC LIMIT 1",
                (session_id,),
            ).fetchone()
            row = self.connection.execute(
                f"SELECT {columns} FROM session_index WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            schedule = self.connection.execute(
                "SELECT session_id, due_ms, due FROM session_schedule "
                "WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            update = (
                *(row[i] for i in _CHANGING_AT),
                *(row[i] for i in _INCARNATION),
            )
            self._rows[session_id] = ([version, update], topic, state, schedule)
        self._notification_id = int(
            self.connection.execute(
                f"SELECT max(rowid) FROM {EVENTS_TABLE}"
            ).fetchone()[0]
        )
        self.committer = GroupCommitter(
            self._transaction, self._write, (sqlite3.IntegrityError,)
        )

    def append(self, session_id: str) -> None:
        """One message in its own transaction (as figure 1's appends)."""
        with self._transaction() as cursor:
            self._write(cursor, [session_id])

    def append_grouped(self, session_id: str) -> None:
        """One message through the group committer (as figure 2's appends)."""
        self.committer.write(session_id)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cursor = self.connection.cursor()
        cursor.execute("BEGIN")
        try:
            yield cursor
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def _write(self, cursor: sqlite3.Cursor, session_ids: Sequence[str]) -> list[Any]:
        events, updates, schedules = [], [], []
        for session_id in session_ids:
            state, topic, data, schedule = self._rows[session_id]
            state[0] += 1
            events.append((session_id, state[0], topic, data))
            updates.append(state[1])
            schedules.append(schedule)
        cursor.executemany(_INSERT_EVENT, events)
        cursor.executemany(_UPDATE_INDEX, updates)
        cursor.executemany(_UPSERT_SCHEDULE, schedules)
        cursor.executemany(_CLOSE_TURN, [(s,) for s in session_ids])
        first = self._notification_id + 1
        self._notification_id += len(session_ids)
        cursor.execute(_ADVANCE, (APPLICATION_NAME, self._notification_id))
        return [[first + i] for i in range(len(session_ids))]

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()
