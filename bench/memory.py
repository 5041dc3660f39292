"""Figure 7: resident memory while 10,000 stored sessions are touched in turn with
a cap of 500 live actors.

10,000 sessions are created (each with a few messages), then each is touched in
turn with ``runtime.append`` (``--quick``: 2,000 sessions, cap 100): every touch
past the cap activates an actor and passivates the least recently used one. The
process's RSS is sampled from ``/proc/self/status`` every 1,000 touches.

Floor: RSS at the end of warm-up (after the first 2,000 touches: the cap is full
and passivation has been running for a while). Measured: the largest RSS sampled
after warm-up. Target: growth after warm-up <= 1.10x.
"""

from __future__ import annotations

import gc
import threading
from time import perf_counter
from typing import Any

from bench.common import (
    MessagePool,
    Options,
    Result,
    main,
    ratio_of,
    rss_bytes,
    runtime_settings,
    say,
    scratch,
)

SAMPLE_EVERY = 1000


def create_sessions(
    runtime: Any, count: int, pool: MessagePool, threads: int = 8
) -> list[str]:
    """``count`` sessions with 3 messages each, created from several threads."""
    ids: list[list[str]] = [[] for _ in range(threads)]

    def work(index: int) -> None:
        for _ in range(index, count, threads):
            session_id = runtime.create()["id"]
            for _ in range(3):
                runtime.append(session_id, pool.next())
            runtime.directory.passivate(session_id)
            ids[index].append(session_id)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [sid for chunk in ids for sid in chunk]


def run(options: Options) -> list[Result]:
    """Measure figure 7."""
    from runtime import Runtime

    sessions = options.pick(10_000, 2_000)
    cap = options.pick(500, 100)
    warm_up = options.pick(2_000, 1_000)
    say(
        f"[7] memory: {sessions:,} sessions touched in turn, max_live_actors={cap}, "
        f"RSS every {SAMPLE_EVERY:,} touches"
    )
    pool = MessagePool()
    with scratch(options, "memory") as directory:
        runtime = Runtime(
            runtime_settings(directory / "sessiond.db", max_live_actors=cap)
        )
        try:
            start = perf_counter()
            session_ids = create_sessions(runtime, sessions, pool)
            took = perf_counter() - start
            say(f"    created {len(session_ids):,} sessions in {took:.0f} s")
            gc.collect()
            samples: list[tuple[int, int, int]] = [
                (0, rss_bytes(), runtime.directory.live_count())
            ]
            start = perf_counter()
            for touched, session_id in enumerate(session_ids, start=1):
                runtime.append(session_id, pool.next())
                if touched % SAMPLE_EVERY == 0:
                    samples.append(
                        (touched, rss_bytes(), runtime.directory.live_count())
                    )
            took = perf_counter() - start
            stats = runtime.directory.stats
            activations, passivations = stats.activations, stats.passivations
        finally:
            runtime.close()
    say(
        f"    {sessions:,} touches in {took:.0f} s ({activations:,} activations, "
        f"{passivations:,} passivations in all)"
    )
    for touched, rss, live in samples:
        mib = rss / 2**20
        say(f"    after {touched:>6,} touches: RSS {mib:7.1f} MiB, {live} live actors")
    base = next(rss for touched, rss, _ in samples if touched >= warm_up)
    peak = max(rss for touched, rss, _ in samples if touched >= warm_up)
    assert max(live for _, _, live in samples) <= cap
    return [
        Result(
            "7",
            f"RSS growth after warm-up, {sessions // 1000}k sessions, cap {cap}",
            peak,
            base,
            "B",
            ratio_of(peak, base),
            "<= 1.1",
            notes=[
                f"floor: RSS after {warm_up:,} touches (end of warm-up); measured: the "
                "largest RSS sampled after it"
            ],
        )
    ]


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__ or ""))
