"""Issue 7's figure: one node on PostgreSQL against one node on SQLite, same load.

sessiond on PostgreSQL (``SESSIOND_DB=postgresql://...``, default pool) and
sessiond on SQLite (WAL, ``synchronous=FULL``), each appending 200-byte messages
with ``runtime.append`` (acknowledged once durable: fsynced by SQLite, committed
with ``synchronous_commit=on`` by PostgreSQL), in interleaved rounds:

- one session, one thread (figure 1's load);
- 16 threads each on its own session (group commit on both).

The ratio is PostgreSQL's throughput over SQLite's, the median of the per-round
ratios. Target: >= 0.5 for figure 1's load.

Also measured, for the operations docs' write ceiling: raw psycopg transactions
that do what eventsourcing's recorder does per transaction (``LOCK TABLE ... IN
EXCLUSIVE MODE``, ``INSERT`` of the events, ``COMMIT``) from 8 connections at
once: the lock serialises them, so this is the store's ceiling in transactions/s,
and in events/s at a given batch size.

The server is ``SESSIOND_BENCH_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``); a database is created for the
run and dropped after it. Without a reachable server the figure is skipped.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import Any

from bench.common import (
    MessagePool,
    Options,
    Result,
    interleaved,
    main,
    median,
    paired_ratio,
    runtime_settings,
    say,
    scratch,
)

ADMIN_DSN = os.environ.get(
    "SESSIOND_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
THREADS = 16


@contextmanager
def bench_database() -> Iterator[str]:
    """A fresh database on the server for this run (dropped afterwards)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"sessiond_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    params = conninfo_to_dict(ADMIN_DSN)
    params["dbname"] = name
    host, port = params.pop("host", "127.0.0.1"), params.pop("port", "5432")
    user = params.pop("user", "")
    params.pop("password", None)
    query = make_conninfo("", **params).replace(" ", "&")
    dsn = f"postgresql://{user + '@' if user else ''}{host}:{port}/{name}"
    try:
        yield dsn + (f"?{query}" if query else "")
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def reachable() -> str | None:
    """Why the server cannot be used, or ``None``."""
    try:
        import psycopg

        with psycopg.connect(ADMIN_DSN, connect_timeout=3):
            return None
    except Exception as error:
        return f"{type(error).__name__}"


def appender(runtime: Any, session_id: str, pool: MessagePool, n: int) -> float:
    """Append ``n`` messages to one session; messages per second."""
    start = perf_counter()
    for _ in range(n):
        runtime.append(session_id, pool.next())
    return n / (perf_counter() - start)


def concurrent_appender(
    runtime: Any, session_ids: list[str], pool: MessagePool, each: int
) -> float:
    """``len(session_ids)`` threads, each appending ``each`` messages to its own
    session; aggregate messages per second."""
    barrier = threading.Barrier(len(session_ids) + 1)
    texts = [[pool.next() for _ in range(each)] for _ in session_ids]

    def work(index: int) -> None:
        barrier.wait(60)
        for text in texts[index]:
            runtime.append(session_ids[index], text)

    threads = [
        threading.Thread(target=work, args=(i,)) for i in range(len(session_ids))
    ]
    for thread in threads:
        thread.start()
    barrier.wait(60)
    start = perf_counter()
    for thread in threads:
        thread.join(120)
    return len(session_ids) * each / (perf_counter() - start)


def lock_ceiling(dsn: str, batch: int, seconds: float, writers: int = 8) -> float:
    """Transactions per second of ``writers`` connections each looping
    LOCK stored_events IN EXCLUSIVE MODE; INSERT ``batch`` rows; COMMIT."""
    import psycopg

    payload = b"x" * 300
    stop = threading.Event()
    counts = [0] * writers

    def work(index: int) -> None:
        with psycopg.connect(dsn) as connection:
            version = 0
            originator = f"ceiling-{batch}-{index}"
            while not stop.is_set():
                with connection.transaction():
                    connection.execute("LOCK TABLE stored_events IN EXCLUSIVE MODE")
                    with connection.cursor() as cursor:
                        cursor.executemany(
                            "INSERT INTO stored_events (originator_id, "
                            "originator_version, topic, state) VALUES (%s, %s, %s, %s)",
                            [
                                (originator, version + k, "bench", payload)
                                for k in range(1, batch + 1)
                            ],
                        )
                version += batch
                counts[index] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    start = perf_counter()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
    return sum(counts) / (perf_counter() - start)


def run(options: Options) -> list[Result]:
    """Measure the PostgreSQL figure."""
    from runtime import Runtime

    reason = reachable()
    if reason is not None:
        say(f"[pg] skipped: PostgreSQL is not reachable at {ADMIN_DSN} ({reason})")
        return []
    per_round = options.pick(300, 100)
    each = options.pick(40, 15)
    n_rounds = options.n_rounds(full=9, quick=3)
    pool = MessagePool()
    say(
        f"[pg] durable append, PostgreSQL vs SQLite: {n_rounds} rounds x {per_round}"
        f" messages (1 session), and {THREADS} threads x {each} (own sessions)"
    )
    with scratch(options, "postgres") as directory, bench_database() as dsn:
        on_sqlite = Runtime(runtime_settings(directory / "sessiond.db"))
        on_postgres = Runtime(runtime_settings(dsn))  # type: ignore[arg-type]
        try:
            one = {rt: rt.create()["id"] for rt in (on_sqlite, on_postgres)}
            many = {
                rt: [rt.create()["id"] for _ in range(THREADS)]
                for rt in (on_sqlite, on_postgres)
            }
            for rt in (on_sqlite, on_postgres):  # warm up
                appender(rt, one[rt], pool, 20)
                concurrent_appender(rt, many[rt], pool, 3)
            measures: dict[str, Callable[[], float]] = {
                "sqlite": lambda: appender(on_sqlite, one[on_sqlite], pool, per_round),
                "postgres": lambda: appender(
                    on_postgres, one[on_postgres], pool, per_round
                ),
                "sqlite x16": lambda: concurrent_appender(
                    on_sqlite, many[on_sqlite], pool, each
                ),
                "postgres x16": lambda: concurrent_appender(
                    on_postgres, many[on_postgres], pool, each
                ),
            }
            found = interleaved(n_rounds, measures)
        finally:
            on_sqlite.close()
            on_postgres.close()
        ceiling_seconds = options.pick(3.0, 1.0)
        ceilings = {b: lock_ceiling(dsn, b, ceiling_seconds) for b in (1, 64)}
    for name, rates in found.items():
        say(f"    {name:>13}: " + "  ".join(f"{r:,.0f}" for r in rates) + " msg/s")
    for batch, rate in ceilings.items():
        say(
            f"    ceiling, {batch:>2} events/transaction: {rate:,.0f} transactions/s"
            f" = {rate * batch:,.0f} events/s"
        )
    ratio = paired_ratio(found["postgres"], found["sqlite"])
    ratio_many = paired_ratio(found["postgres x16"], found["sqlite x16"])
    ceiling_notes = [
        f"write ceiling (8 writers, LOCK TABLE stored_events IN EXCLUSIVE MODE + "
        f"INSERT + COMMIT): {ceilings[1]:,.0f} transactions/s at 1 event each, "
        f"{ceilings[64]:,.0f} transactions/s = {ceilings[64] * 64:,.0f} events/s "
        "at 64 events each",
    ]
    return [
        Result(
            "pg",
            "durable append, 1 session: PostgreSQL / SQLite",
            median(found["postgres"]),
            median(found["sqlite"]),
            "msg/s",
            ratio,
            ">= 0.5",
            notes=[
                f"median of {n_rounds} per-round ratios of interleaved rounds of "
                f"{per_round} appends; floor = sessiond on SQLite (WAL, "
                "synchronous=FULL), same disk, same load",
                *ceiling_notes,
            ],
        ),
        Result(
            "pg",
            f"  durable append, {THREADS} threads/sessions: PostgreSQL / SQLite",
            median(found["postgres x16"]),
            median(found["sqlite x16"]),
            "msg/s",
            ratio_many,
            "",
        ),
    ]


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__ or ""))
