"""Group commit: concurrent sessions' writes share one transaction and one fsync.

Every write is acknowledged only after the transaction holding it has committed
(and, with ``synchronous=FULL``, been fsynced). There is no committer thread: a
writer that finds nobody committing becomes the leader, takes every write queued
so far (its own included) and commits them together. Writers that queue while a
leader is busy wait on their own latch, which is released exactly once: when their
write is done, or when the leader that finished hands them the lead for the next
batch (the oldest waiting write leads it). Nobody waits on a shared lock, so a
commit wakes only the writers it finished and one successor; an uncontended
write costs no thread hop at all.

A batch is written together: one statement per table for all its writes, not
one per write. Should one write break a constraint (another writer took its
offset, a name is taken: rare), the batch is rolled back and written again with
each write inside its own SAVEPOINT, so that write alone fails and the rest of
the batch still commits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class Cursor(Protocol):
    """What the committer needs of a DB-API cursor."""

    def execute(self, *args: Any, **kwargs: Any) -> None: ...


Transaction = Callable[[], AbstractContextManager[Any]]
"""Opens a write transaction (committed when its block ends) and yields its cursor."""

BeforeBatch = Callable[[Any], None]
"""Runs first in a batch's transaction (e.g. to take the log's insert lock)."""

WriteFunction = Callable[[Any, Sequence[Any]], list[Sequence[int]]]
"""Writes payloads together on a cursor; returns the notification ids each took."""

AfterBatch = Callable[[Any, int], None]
"""Runs last in a batch's transaction with the highest notification id written."""

AfterCommit = Callable[[list[tuple[Any, Sequence[int]]]], None]
"""Runs once a batch has committed, with each successful payload and its ids."""


def _held(lock: threading.Lock) -> threading.Lock:
    lock.acquire()
    return lock


@dataclass
class _Write:
    payload: Any
    latch: threading.Lock = field(default_factory=lambda: _held(threading.Lock()))
    """Released once: the write is done, or its writer is to lead the next batch.
    (A held lock, not an ``Event``: a leader wakes dozens of writers per batch,
    and an ``Event`` wakes through a Python-level ``Condition``.)"""
    woken: bool = False
    finished: bool = False
    result: Sequence[int] | None = None
    error: BaseException | None = None

    def wake(self) -> None:
        """Let the writer go on (once; later calls do nothing)."""
        if not self.woken:
            self.woken = True
            self.latch.release()


class GroupCommitter:
    """Commits writes in batches; see the module docstring."""

    def __init__(
        self,
        transaction: Transaction,
        write: WriteFunction,
        integrity_errors: tuple[type[BaseException], ...],
        before_batch: BeforeBatch | None = None,
        after_batch: AfterBatch | None = None,
        after_commit: AfterCommit | None = None,
        max_batch: int = 512,
    ) -> None:
        self._transaction = transaction
        self._before_batch = before_batch
        self._write = write
        self._integrity_errors = integrity_errors
        self._after_batch = after_batch
        self._after_commit = after_commit
        self._max_batch = max_batch
        self._queue_lock = threading.Lock()
        self._pending: list[_Write] = []
        self._leading = False  # a leader is committing (guarded by _queue_lock)
        self.batches = 0
        self.writes = 0

    def write(self, payload: Any) -> Sequence[int]:
        """Write ``payload`` durably and return its notification ids.

        Runs on the caller's thread. Raises what the write raised: an integrity
        error for this write alone, or the batch's storage error.
        """
        item = _Write(payload)
        with self._queue_lock:
            self._pending.append(item)
            lead = not self._leading
            self._leading = True
        if not lead:
            item.latch.acquire()
        if not item.finished:  # this writer leads the next batch
            self._lead()
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def _lead(self) -> None:
        """Commit the oldest queued writes (the leader's own among them), then
        hand the lead to the oldest write still waiting, if any."""
        with self._queue_lock:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
        try:
            self._commit(batch)
        finally:
            with self._queue_lock:
                successor = self._pending[0] if self._pending else None
                self._leading = successor is not None
            if successor is not None:
                successor.wake()

    def _commit(self, batch: list[_Write]) -> None:
        committed = False
        alone = len(batch) == 1
        try:
            try:
                self._run(batch, apart=False)
            except self._integrity_errors:
                if alone:
                    raise
                # One write broke a constraint; writing each in a savepoint
                # finds which (the others commit).
                for item in batch:
                    item.result = None
                self._run(batch, apart=True)
            committed = True
        except BaseException as error:
            # Nothing of this batch is committed: every write in it failed.
            for item in batch:
                item.result = None
                if item.error is None:
                    item.error = error
            if not (alone and isinstance(error, self._integrity_errors)):
                logger.warning(
                    "group commit failed",
                    extra={"writes": len(batch), "error": type(error).__name__},
                )
        finally:
            if committed and self._after_commit is not None:
                self._publish(batch)
            self.batches += 1
            self.writes += len(batch)
            for item in batch:
                item.finished = True
                item.wake()

    def _run(self, batch: list[_Write], *, apart: bool) -> None:
        """One transaction writing ``batch``: together, or each write in its own
        savepoint (a lone write needs none: its failure is the transaction's)."""
        with self._transaction() as cursor:
            if self._before_batch is not None:
                self._before_batch(cursor)
            if apart:
                for item in batch:
                    self._write_in_savepoint(cursor, item)
            else:
                results = self._write(cursor, [item.payload for item in batch])
                for item, result in zip(batch, results, strict=True):
                    item.result = result
            highest = max(
                (max(item.result) for item in batch if item.result), default=0
            )
            if highest and self._after_batch is not None:
                self._after_batch(cursor, highest)

    def _write_in_savepoint(self, cursor: Any, item: _Write) -> None:
        cursor.execute("SAVEPOINT write")
        try:
            item.result = self._write(cursor, [item.payload])[0]
        except self._integrity_errors as error:
            cursor.execute("ROLLBACK TO write")
            item.error = error
        cursor.execute("RELEASE write")

    def _publish(self, batch: list[_Write]) -> None:
        assert self._after_commit is not None
        try:
            self._after_commit(
                [(item.payload, item.result) for item in batch if item.result]
            )
        except Exception:  # publishing must never undo an acknowledged write
            logger.exception("after-commit hook failed")
