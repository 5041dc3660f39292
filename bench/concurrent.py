"""Figure 2: durable appends from 64 threads to 64 sessions at once.

sessiond: 64 threads, each appending 200-byte messages to its own session with
``runtime.append``; every append is acknowledged only once fsynced. Concurrent
sessions' writes share transactions (group commit).

Floor: the single-transaction floor of figure 1 (raw sqlite3, WAL,
``synchronous=FULL``, one INSERT + COMMIT per message, one thread), measured again
here in interleaved rounds.

Reference lines: raw sqlite3 with the same 64 threads, each on its own
connection, one INSERT + COMMIT per message (what the floor schema does under
concurrency); and the ceiling (see :mod:`bench.bare`): sessiond's own statements
for each message through sessiond's group committer from the same 64 threads,
with no other sessiond code.

Target: sessiond's aggregate throughput >= 2x the floor's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import perf_counter

from bench.bare import bare_appends, ceiling_result
from bench.common import (
    FLOOR_INSERT,
    FloorStore,
    MessagePool,
    Options,
    Result,
    connect_floor,
    interleaved,
    main,
    median,
    message_data,
    paired_ratio,
    ratio_of,
    runtime_settings,
    say,
    scratch,
)

THREADS = 64


def run_threads(threads: int, work: Callable[[int], None]) -> float:
    """Seconds from a common start until ``work(i)`` finished on every thread."""
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        barrier.wait()
        try:
            work(index)
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = perf_counter()
    for worker in workers:
        worker.join()
    took = perf_counter() - start
    if errors:
        raise errors[0]
    return took


def run(options: Options) -> list[Result]:
    """Measure figure 2."""
    from runtime import Runtime

    per_thread = options.pick(60, 15)
    floor_messages = options.pick(600, 150)
    n_rounds = options.n_rounds()
    raw_per_thread = max(5, per_thread // 3)  # the reference line is slow
    pool = MessagePool()
    messages = [pool.next() for _ in range(256)]
    say(
        f"[2] durable appends, {THREADS} threads x {THREADS} sessions: "
        f"{n_rounds} rounds "
        f"x {THREADS * per_thread} messages (floor: {floor_messages} per round)"
    )
    with scratch(options, "concurrent") as directory:
        floor = FloorStore(directory / "floor.db")
        raw_path = directory / "raw64.db"
        FloorStore(raw_path).close()
        raw_connections = [connect_floor(raw_path) for _ in range(THREADS)]
        runtime = Runtime(runtime_settings(directory / "sessiond.db"))
        bare = bare_appends(directory / "bare.db", THREADS, pool)
        try:
            sessions = [runtime.create()["id"] for _ in range(THREADS)]
            for session_id in sessions:  # activate every actor
                runtime.append(session_id, messages[0])
            for _ in range(20):
                floor.append("s-1", messages[0])
            commit_counts = [0, 0]

            def measure_floor() -> float:
                start = perf_counter()
                for i in range(floor_messages):
                    floor.append("s-1", messages[i % len(messages)])
                return floor_messages / (perf_counter() - start)

            def sessiond_work(index: int) -> None:
                session_id = sessions[index]
                for i in range(per_thread):
                    runtime.append(session_id, messages[(index + i) % len(messages)])

            def measure_sessiond() -> float:
                committer = runtime.app.recorder.committer  # type: ignore[attr-defined]
                batches, writes = committer.batches, committer.writes
                took = run_threads(THREADS, sessiond_work)
                commit_counts[0] += committer.batches - batches
                commit_counts[1] += committer.writes - writes
                return THREADS * per_thread / took

            def bare_work(index: int) -> None:
                session_id = bare.session_ids[index]
                for _ in range(per_thread):
                    bare.append_grouped(session_id)

            def measure_bare() -> float:
                return THREADS * per_thread / run_threads(THREADS, bare_work)

            def raw_work(index: int) -> None:
                connection = raw_connections[index]
                session_id = f"s-{index}"
                for i in range(raw_per_thread):
                    data = message_data("user", messages[(index + i) % len(messages)])
                    connection.execute("BEGIN IMMEDIATE")
                    connection.execute(FLOOR_INSERT, (session_id, data))
                    connection.execute("COMMIT")

            def measure_raw64() -> float:
                return THREADS * raw_per_thread / run_threads(THREADS, raw_work)

            found = interleaved(
                n_rounds,
                {
                    "floor": measure_floor,
                    "sessiond": measure_sessiond,
                    "raw sqlite3 x64": measure_raw64,
                    "ceiling x64": measure_bare,
                },
            )
        finally:
            runtime.close()
            bare.close()
            floor.close()
            for connection in raw_connections:
                connection.close()
    for name, rates in found.items():
        say(f"    {name:>15}: " + "  ".join(f"{r:,.0f}" for r in rates) + " msg/s")
    floor_rate = median(found["floor"])
    sessiond_rate = median(found["sessiond"])
    raw_rate = median(found["raw sqlite3 x64"])
    bare_rate = median(found["ceiling x64"])
    bare_batches = bare.committer.batches
    bare_writes = bare.committer.writes
    batches, writes = commit_counts
    return [
        Result(
            "2",
            f"durable append, {THREADS} threads x {THREADS} sessions",
            sessiond_rate,
            floor_rate,
            "msg/s",
            ratio_of(sessiond_rate, floor_rate),
            ">= 2.0",
            notes=[
                "median of per-round ratios (steadier under drifting load): "
                f"{paired_ratio(found['sessiond'], found['floor']):.2f}x",
                "floor: figure 1's single-thread INSERT + COMMIT per message "
                "(WAL, synchronous=FULL), re-measured in the same rounds",
                f"sessiond group commit: {writes} writes in {batches} transactions "
                f"({writes / max(batches, 1):.1f} per fsync)",
            ],
        ),
        Result(
            "2",
            f"  ref: raw sqlite3, {THREADS} threads, commit/msg",
            raw_rate,
            floor_rate,
            "msg/s",
            ratio_of(raw_rate, floor_rate),
            "",
        ),
        ceiling_result(
            "2",
            f"{THREADS} threads",
            bare_rate,
            floor_rate,
            "the statements sessiond runs per message, batched by sessiond's "
            f"group committer, with no other sessiond code; {bare_writes} writes "
            f"in {bare_batches} transactions "
            f"({bare_writes / max(bare_batches, 1):.1f} per fsync)",
        ),
    ]


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__ or ""))
