"""Figure 6: bytes on disk per message.

sessiond: 100,000 messages of 200 characters (``--quick``: 10,000), 1,000 per
session over 100 sessions, written through ``Runtime.append`` from 16 threads
(each owning a few sessions and writing to them in turn), so the store holds
what the runtime really writes: events, snapshots, index rows, schedule,
tracking.

Floor: the same messages, in the same sessions, interleaved the same way, in the
openai-agents-style ``agent_messages`` table (raw sqlite3, WAL).

Both files are measured after ``PRAGMA wal_checkpoint(TRUNCATE)`` as
``page_count * page_size``; ``dbstat`` says which table or index holds the bytes.
Target: sessiond's bytes per message <= 1.5x the floor's.
"""

from __future__ import annotations

import threading
from pathlib import Path
from time import perf_counter
from typing import Any

from bench.common import (
    FloorStore,
    MessagePool,
    Options,
    Result,
    database_bytes,
    main,
    ratio_of,
    runtime_settings,
    say,
    scratch,
)

SESSIONS = 100
THREADS = 16


def fill_sessiond(path: Path, per_session: int, messages: list[str]) -> float:
    """Write the messages through ``Runtime.append``; returns seconds taken."""
    from runtime import Runtime

    runtime = Runtime(runtime_settings(path))
    try:
        session_ids = [runtime.create()["id"] for _ in range(SESSIONS)]
        errors: list[BaseException] = []

        def work(thread: int) -> None:
            mine = session_ids[thread::THREADS]
            try:
                for round_number in range(per_session):
                    for index, session_id in enumerate(mine):
                        number = round_number * SESSIONS + thread + index * THREADS
                        runtime.append(session_id, messages[number % len(messages)])
            except BaseException as error:
                errors.append(error)

        start = perf_counter()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        took = perf_counter() - start
        if errors:
            raise errors[0]
        total = sum(runtime.get(sid)["message_count"] for sid in session_ids)
        assert total == SESSIONS * per_session, total
        return took
    finally:
        runtime.close()


def fill_floor(path: Path, per_session: int, messages: list[str]) -> None:
    """The same messages in the floor table, interleaved across sessions."""
    store = FloorStore(path)
    try:
        rows: list[tuple[str, str]] = []
        for round_number in range(per_session):
            for session in range(SESSIONS):
                number = round_number * SESSIONS + session
                rows.append((f"{session:032x}", messages[number % len(messages)]))
            if len(rows) >= 1000:
                store.bulk(rows)
                rows = []
        if rows:
            store.bulk(rows)
    finally:
        store.close()


def run(options: Options) -> list[Result]:
    """Measure figure 6."""
    total = options.pick(100_000, 10_000)
    per_session = total // SESSIONS
    pool = MessagePool(4096)
    messages = [pool.next() for _ in range(4096)]
    say(
        f"[6] storage: {total:,} messages of 200 chars, {SESSIONS} sessions, "
        f"through Runtime.append from {THREADS} threads"
    )
    with scratch(options, "storage") as directory:
        took = fill_sessiond(directory / "sessiond.db", per_session, messages)
        say(f"    wrote {total:,} messages through the runtime in {took:.0f} s")
        fill_floor(directory / "floor.db", per_session, messages)
        sessiond_bytes, sessiond_parts = database_bytes(directory / "sessiond.db")
        floor_bytes, floor_parts = database_bytes(directory / "floor.db")
    _show_parts("sessiond", sessiond_parts, total)
    _show_parts("floor", floor_parts, total)
    sessiond_per = sessiond_bytes / total
    floor_per = floor_bytes / total
    return [
        Result(
            "6",
            "bytes per 200-char message on disk",
            sessiond_per,
            floor_per,
            "B/msg",
            ratio_of(sessiond_per, floor_per),
            "<= 1.5",
            notes=[
                f"sessiond file {sessiond_bytes / 2**20:.1f} MiB, floor file "
                f"{floor_bytes / 2**20:.1f} MiB, {total:,} messages each "
                "(page_count * page_size after wal_checkpoint(TRUNCATE))"
            ],
        )
    ]


def _show_parts(label: str, parts: dict[str, Any], total: int) -> None:
    say(f"    {label} by table/index (bytes per message):")
    for name, size in parts.items():
        if size / total >= 1:
            say(f"      {name:<36} {size / total:8.1f}")


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__ or ""))
