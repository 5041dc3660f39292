"""The SQLite views' write transaction (``SQLiteSessionViews.writing``): it
commits what its block wrote, writes nothing when the block raises, and reports
driver errors as eventsourcing's. Every connection goes back to the pool
outside any transaction, even when the ``COMMIT`` itself failed, whichever
transaction (ours, eventsourcing's) it ran."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from eventsourcing.persistence import IntegrityError

from runtime import Runtime
from runtime.settings import Settings


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(Settings(db=str(tmp_path / "sessiond.db")))
    views = runtime.app.views
    with views.writing() as c:
        c.execute("CREATE TABLE parents (id INTEGER PRIMARY KEY)")
        c.execute(
            "CREATE TABLE children (parent INTEGER REFERENCES parents (id) "
            "DEFERRABLE INITIALLY DEFERRED)"
        )
    yield runtime
    runtime.close()


def write(runtime: Runtime, *statements: str, then: Exception | None = None) -> None:
    """Run ``statements`` in one write transaction, then raise ``then``."""
    with runtime.app.views.writing() as c:
        for statement in statements:
            c.execute(statement)
        if then is not None:
            raise then


def count(runtime: Runtime, table: str) -> int:
    with runtime.app.views.reading() as c:
        c.execute(f"SELECT count(*) FROM {table}")
        return int(c.fetchone()[0])


def writer_is_idle(runtime: Runtime) -> bool:
    """The pool hands out a writer connection that is not inside a transaction
    (a connection given back inside one would hold SQLite's write lock)."""
    pool = runtime.app.views.datastore.pool
    connection = pool.get_connection(timeout=1.0, is_writer=True)
    try:
        return not connection._sqlite_conn.in_transaction  # type: ignore[attr-defined]
    finally:
        pool.put_connection(connection)


def test_a_block_that_ends_commits(runtime: Runtime) -> None:
    write(runtime, "INSERT INTO parents VALUES (1)")
    assert count(runtime, "parents") == 1
    assert writer_is_idle(runtime)


def test_a_block_that_raises_writes_nothing_and_its_error_is_reported(
    runtime: Runtime,
) -> None:
    class Refused(Exception):
        pass

    with pytest.raises(Refused):
        write(runtime, "INSERT INTO parents VALUES (1)", then=Refused())
    assert count(runtime, "parents") == 0
    assert writer_is_idle(runtime)


def test_a_driver_error_in_the_block_is_eventsourcings(runtime: Runtime) -> None:
    write(runtime, "INSERT INTO parents VALUES (1)")
    with pytest.raises(IntegrityError):
        write(
            runtime, "INSERT INTO parents VALUES (2)", "INSERT INTO parents VALUES (1)"
        )
    assert count(runtime, "parents") == 1  # the first insert was rolled back too
    assert writer_is_idle(runtime)


@pytest.mark.parametrize("transaction", ["views", "eventsourcing"])
def test_a_failed_commit_writes_nothing_and_leaves_no_transaction_open(
    runtime: Runtime, transaction: str
) -> None:
    # A deferred foreign key is checked at COMMIT: the COMMIT itself fails.
    pool = runtime.app.views.datastore.pool
    connection = pool.get_connection(timeout=1.0, is_writer=True)
    connection._sqlite_conn.execute("PRAGMA foreign_keys = ON")  # type: ignore[attr-defined]
    pool.put_connection(connection)  # the next writer takes this one (a stack)

    def orphan() -> None:
        if transaction == "views":
            write(runtime, "INSERT INTO children VALUES (7)")  # no parent 7
        else:
            with runtime.app.views.datastore.transaction(commit=True) as c:
                c.execute("INSERT INTO children VALUES (7)")

    with pytest.raises(IntegrityError):
        orphan()
    assert count(runtime, "children") == 0
    assert writer_is_idle(runtime)
    # and the next write goes through
    write(runtime, "INSERT INTO parents VALUES (7)", "INSERT INTO children VALUES (7)")
    assert count(runtime, "children") == 1
