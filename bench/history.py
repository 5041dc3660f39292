"""Figure 3: reading the latest 50 messages.

sessiond: ``runtime.history(session_id, limit=50)``: the ownership check's read of
the session's index row, then the page kept from an earlier read under the same
row (``runtime.history_cache``), else one indexed range query on the log per span
and the message documents. The cold path (no page kept, as the first read after a
write) is measured too and reported as a reference line.

Floor: the raw indexed query on the openai-agents-style table, on the same disk:
``SELECT id, message_data FROM agent_messages WHERE session_id = ? ORDER BY
created_at DESC, id DESC LIMIT 50`` + ``fetchall()``. That order walks the
``(session_id, created_at)`` index backwards and stops after 50 entries; the
literal ``ORDER BY id DESC`` is also timed and the faster of the two is the floor.

Two stores of each kind: 1,000 messages (one session), and 1,000,000 (``--quick``:
100,000): half of them in one long session, the rest in sessions of 1,000
messages, written in interleaved batches. The sessiond stores are bulk-built
through the runtime's own application (see :func:`bench.common.bulk_append`); the
floor stores with ``executemany`` in large transactions.

Targets: sessiond <= 2x the floor at each store size, and sessiond's cost at
1,000,000 messages within 1.5x of its cost at 1,000 (for a 1,000-message session
and for the long session).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

from bench.common import (
    FLOOR_LATEST,
    FLOOR_LATEST_LITERAL,
    FloorStore,
    MessagePool,
    Options,
    Result,
    bulk_append,
    interleaved,
    main,
    median,
    per_call,
    ratio_of,
    runtime_settings,
    say,
    scratch,
)

LIMIT = 50
SESSION_LENGTH = 1000


def build_floor(
    path: Path, layout: list[tuple[str, int]], pool: MessagePool
) -> FloorStore:
    """A floor store holding ``layout``'s sessions, written in interleaved chunks."""
    store = FloorStore(path)
    rows: list[tuple[str, str]] = []
    for session_id, count in _interleave(layout):
        rows.extend((session_id, pool.next()) for _ in range(count))
        if len(rows) >= 20_000:
            store.bulk(rows)
            rows = []
    if rows:
        store.bulk(rows)
    store.connection.execute("ANALYZE")
    return store


def _interleave(
    layout: list[tuple[str, int]], chunk: int = 20
) -> list[tuple[str, int]]:
    """The order writes arrive in: ``chunk`` messages per session in turn."""
    remaining = dict(layout)
    order: list[tuple[str, int]] = []
    while remaining:
        for session_id in list(remaining):
            step = min(chunk, remaining[session_id])
            order.append((session_id, step))
            remaining[session_id] -= step
            if not remaining[session_id]:
                del remaining[session_id]
    return order


def build_sessiond(
    runtime: Any, long_length: int, short_sessions: int, pool: MessagePool
) -> tuple[str, str]:
    """Bulk-build a sessiond store: one long session and ``short_sessions`` of
    1,000 messages. Returns (a short session's id, the long session's id)."""
    long_id = runtime.create()["id"]
    short_ids = [runtime.create()["id"] for _ in range(short_sessions)]
    # The long session is written in the same interleaved rhythm as the others:
    # a slice of it with every transaction of short sessions.
    slices = max(1, short_sessions // 50)
    per_slice = long_length // slices
    for index in range(slices):
        group = short_ids[index * 50 : (index + 1) * 50]
        bulk_append(runtime, group, SESSION_LENGTH, pool, per_save=20)
        length = (
            per_slice if index < slices - 1 else long_length - per_slice * (slices - 1)
        )
        bulk_append(
            runtime,
            [long_id],
            length,
            pool,
            per_save=10_000,
            sessions_per_transaction=1,
        )
    return short_ids[len(short_ids) // 2], long_id


def run(options: Options) -> list[Result]:
    """Measure figure 3."""
    from runtime import Runtime

    large = options.pick(1_000_000, 100_000)
    calls = options.pick(300, 100)
    n_rounds = options.n_rounds()
    pool = MessagePool()
    long_length = large // 2
    short_sessions = (large - long_length) // SESSION_LENGTH
    say(
        f"[3] history(limit={LIMIT}): stores of {SESSION_LENGTH:,} and "
        f"{large:,} messages "
        f"(long session {long_length:,} + {short_sessions} x {SESSION_LENGTH:,}); "
        f"{n_rounds} rounds x {calls} calls"
    )
    with scratch(options, "history") as directory:
        small_rt = Runtime(runtime_settings(directory / "small.db"))
        large_rt = Runtime(runtime_settings(directory / "large.db"))
        try:
            start = perf_counter()
            small_id = small_rt.create()["id"]
            bulk_append(small_rt, [small_id], SESSION_LENGTH, pool, per_save=20)
            small_floor = build_floor(
                directory / "small-floor.db", [("small", SESSION_LENGTH)], pool
            )
            start = perf_counter()
            short_id, long_id = build_sessiond(
                large_rt, long_length, short_sessions, pool
            )
            took = perf_counter() - start
            say(
                f"    built the sessiond {large:,}-message store in {took:.0f} s "
                "(bulk, see doc)"
            )
            start = perf_counter()
            layout = [("long", long_length)] + [
                (f"short-{i}", SESSION_LENGTH) for i in range(short_sessions)
            ]
            large_floor = build_floor(directory / "large-floor.db", layout, pool)
            short_floor_id = f"short-{short_sessions // 2}"
            took = perf_counter() - start
            say(f"    built the floor {large:,}-message store in {took:.0f} s")
            _check(small_rt, large_rt, small_id, short_id, long_id)
            plans = {
                "floor": _plan(large_floor.connection, FLOOR_LATEST, short_floor_id),
                "literal": _plan(
                    large_floor.connection, FLOOR_LATEST_LITERAL, short_floor_id
                ),
            }
            for name, plan in plans.items():
                say(f"    floor plan ({name}): {plan}")

            def sessiond(runtime: Any, session_id: str) -> Callable[[], float]:
                return lambda: per_call(
                    lambda: runtime.history(session_id, limit=LIMIT), calls
                )

            def sessiond_cold(runtime: Any, session_id: str) -> Callable[[], float]:
                # As the first read after a write: no page kept from before.
                cache = runtime.history_cache

                def measure() -> float:
                    kept, cache.max_bytes = cache.max_bytes, 0
                    try:
                        return per_call(
                            lambda: runtime.history(session_id, limit=LIMIT), calls
                        )
                    finally:
                        cache.max_bytes = kept

                return measure

            def floor(
                store: FloorStore, session_id: str, statement: str
            ) -> Callable[[], float]:
                connection = store.connection
                return lambda: per_call(
                    lambda: connection.execute(
                        statement, (session_id, LIMIT)
                    ).fetchall(),
                    calls,
                )

            def decoded(store: FloorStore, session_id: str) -> Callable[[], float]:
                # What openai-agents' SQLiteSession.get_items does with the rows.
                connection = store.connection

                def read() -> list[Any]:
                    rows = connection.execute(FLOOR_LATEST, (session_id, LIMIT))
                    return [json.loads(data) for _, data in rows.fetchall()]

                return lambda: per_call(read, calls)

            measures = {
                "sessiond 1k": sessiond(small_rt, small_id),
                "sessiond large/short": sessiond(large_rt, short_id),
                "sessiond large/long": sessiond(large_rt, long_id),
                "cold large/short": sessiond_cold(large_rt, short_id),
                "floor 1k": floor(small_floor, "small", FLOOR_LATEST),
                "floor large/short": floor(large_floor, short_floor_id, FLOOR_LATEST),
                "floor large/long": floor(large_floor, "long", FLOOR_LATEST),
                "literal 1k": floor(small_floor, "small", FLOOR_LATEST_LITERAL),
                "literal large/short": floor(
                    large_floor, short_floor_id, FLOOR_LATEST_LITERAL
                ),
                "literal large/long": floor(large_floor, "long", FLOOR_LATEST_LITERAL),
                "decoded 1k": decoded(small_floor, "small"),
                "decoded large/short": decoded(large_floor, short_floor_id),
            }
            for measure in measures.values():  # warm the caches
                measure()
            found = interleaved(n_rounds, measures)
        finally:
            small_rt.close()
            large_rt.close()
    for name, times in found.items():
        say(f"    {name:>22}: " + "  ".join(f"{t * 1e6:.0f}" for t in times) + " us")
    m = {name: median(times) for name, times in found.items()}
    floor_small = min(m["floor 1k"], m["literal 1k"])
    floor_short = min(m["floor large/short"], m["literal large/short"])
    floor_long = min(m["floor large/long"], m["literal large/long"])
    label = f"{large // 1000:,}k" if large < 1_000_000 else f"{large // 1_000_000}M"
    return [
        Result(
            "3",
            "history(limit=50), 1k store",
            m["sessiond 1k"],
            floor_small,
            "s",
            ratio_of(m["sessiond 1k"], floor_small),
            "<= 2.0",
            notes=[
                "floor: raw indexed SELECT ... LIMIT 50 + fetchall on the "
                "agent_messages table (faster of two ORDER BYs), same disk",
                f"{label} stores bulk-built; see the module doc",
                "sessiond reads the session's index row every call (ownership, "
                "expiry) and answers the page kept from an earlier read under "
                "the same row (runtime.history_cache); the cold line below is "
                "a read with no page kept, as the first after a write",
            ],
        ),
        Result(
            "3",
            f"  ref: cold read (no page kept), {label} store",
            m["cold large/short"],
            floor_short,
            "s",
            ratio_of(m["cold large/short"], floor_short),
            "",
        ),
        Result(
            "3",
            f"history(limit=50), {label} store, 1k-msg session",
            m["sessiond large/short"],
            floor_short,
            "s",
            ratio_of(m["sessiond large/short"], floor_short),
            "<= 2.0",
        ),
        Result(
            "3",
            f"  ref: vs floor + json.loads/row, {label} store",
            m["sessiond large/short"],
            m["decoded large/short"],
            "s",
            ratio_of(m["sessiond large/short"], m["decoded large/short"]),
            "",
            notes=[
                "ref floor: the same query plus json.loads of each row, as "
                "openai-agents' SQLiteSession.get_items does (sessiond returns "
                "decoded message documents, the raw floor only JSON strings); "
                f"1k store: {m['decoded 1k'] * 1e6:.0f} us"
            ],
        ),
        Result(
            "3",
            f"history(limit=50), {label} store, {long_length // 1000}k-msg session",
            m["sessiond large/long"],
            floor_long,
            "s",
            ratio_of(m["sessiond large/long"], floor_long),
            "<= 2.0",
        ),
        Result(
            "3",
            f"history: {label} store vs 1k store (1k-msg session)",
            m["sessiond large/short"],
            m["sessiond 1k"],
            "s",
            ratio_of(m["sessiond large/short"], m["sessiond 1k"]),
            "<= 1.5",
            notes=["here the floor is sessiond's own cost at the 1k store"],
        ),
        Result(
            "3",
            f"history: {label} store long session vs 1k store",
            m["sessiond large/long"],
            m["sessiond 1k"],
            "s",
            ratio_of(m["sessiond large/long"], m["sessiond 1k"]),
            "<= 1.5",
        ),
    ]


def _plan(connection: sqlite3.Connection, statement: str, session_id: str) -> str:
    rows = connection.execute(
        f"EXPLAIN QUERY PLAN {statement}", (session_id, LIMIT)
    ).fetchall()
    return "; ".join(str(row[-1]) for row in rows)


def _check(
    small_rt: Any, large_rt: Any, small_id: str, short_id: str, long_id: str
) -> None:
    """The stores hold what they should (the bulk build went through the views)."""
    for runtime, session_id in (
        (small_rt, small_id),
        (large_rt, short_id),
        (large_rt, long_id),
    ):
        page = runtime.history(session_id, limit=LIMIT)
        assert len(page["messages"]) == LIMIT, session_id
        assert page["has_more"], session_id
        newest = page["messages"][0]["offset"]
        assert newest == runtime.get(session_id)["offset"], (newest, session_id)


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__ or ""))
