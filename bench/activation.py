"""Figure 4: activating a passivated session, at 10 and at 100,000 events.

For each session: ``runtime.directory.passivate(id)`` (its actor stops), then the
next command is timed: ``runtime.checkpoints(id)``, a read answered by the actor,
which must first be started and rehydrated (latest snapshot + the log's tail).

The 100,000-event session is bulk-built through the runtime's own application
(see :func:`bench.common.bulk_append`), with snapshots where the actor would
take them, then 9 more events appended through ``Runtime.append``: it replays 9
events past its latest snapshot, the small one its 10. A reference line shows the
worst case, 99 events past the snapshot (snapshots are every 100 events).

Floor: the same activation of the 10-event session, in the same rounds.
Target: the 100,000-event activation within 3x of the 10-event one.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from bench.common import (
    MessagePool,
    Options,
    Result,
    bulk_append,
    main,
    median,
    ratio_of,
    runtime_settings,
    say,
    scratch,
)

SMALL = 10
TAIL = 9  # events after the large session's latest snapshot


def activations(runtime: Any, sessions: dict[str, str], times: int) -> dict[str, float]:
    """Median seconds of the first command after passivating, for each session
    (label -> id), over ``times``; the sessions take turns, in a rotating order,
    so all meet the same load on the machine."""
    found: dict[str, list[float]] = {label: [] for label in sessions}
    labels = list(sessions)
    for index in range(times):
        shift = index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            session_id = sessions[label]
            runtime.directory.passivate(session_id)
            start = perf_counter()
            runtime.checkpoints(session_id)
            found[label].append(perf_counter() - start)
    return {label: median(values) for label, values in found.items()}


def build(runtime: Any, events: int, tail: int, pool: MessagePool) -> str:
    """A session of ``events`` events (bulk-built, snapshotted as the actor would)
    followed by ``tail`` appends through ``Runtime.append``."""
    session_id: str = runtime.create()["id"]
    bulk_append(
        runtime,
        [session_id],
        events - 1,
        pool,
        per_save=5000,
        sessions_per_transaction=1,
    )
    for _ in range(tail):
        runtime.append(session_id, pool.next())
    return session_id


def run(options: Options) -> list[Result]:
    """Measure figure 4."""
    from runtime import Runtime

    large = options.pick(100_000, 100_000)
    per_round = options.pick(30, 10)
    n_rounds = options.n_rounds()
    pool = MessagePool()
    say(
        f"[4] activation after passivation: {SMALL} vs {large:,} events; "
        f"{n_rounds} rounds x {per_round} activations"
    )
    with scratch(options, "activation") as directory:
        runtime = Runtime(runtime_settings(directory / "sessiond.db"))
        try:
            interval = runtime.settings.snapshot_interval
            small_id = runtime.create()["id"]
            for _ in range(SMALL - 1):
                runtime.append(small_id, pool.next())
            start = perf_counter()
            large_id = build(runtime, large, TAIL, pool)
            worst_id = build(runtime, large, interval - 1, pool)
            built = perf_counter() - start
            for sid, label in (
                (small_id, "small"),
                (large_id, "large"),
                (worst_id, "worst"),
            ):
                version = runtime.get(sid)["offset"]
                snapshot = (
                    (version // interval) * interval if version >= interval else 0
                )
                say(
                    f"    {label} session: {version:,} events, latest snapshot at "
                    f"{snapshot:,}, replays {version - snapshot} events on activation"
                )
            say(f"    built the two large sessions in {built:.0f} s")
            sessions = {
                "10 events": small_id,
                "100k events": large_id,
                "100k, long tail": worst_id,
            }
            found: dict[str, list[float]] = {label: [] for label in sessions}
            for _ in range(n_rounds):
                for label, value in activations(runtime, sessions, per_round).items():
                    found[label].append(value)
        finally:
            runtime.close()
    for name, times in found.items():
        say(f"    {name:>12}: " + "  ".join(f"{t * 1e6:.0f}" for t in times) + " us")
    small = median(found["10 events"])
    big = median(found["100k events"])
    worst = median(found["100k, long tail"])
    return [
        Result(
            "4",
            "activate passivated session: 100k vs 10 events",
            big,
            small,
            "s",
            ratio_of(big, small),
            "<= 3.0",
            notes=[
                "floor: activating the 10-event session (passivate, then time "
                "checkpoints(id)), same rounds",
                f"large session: {TAIL} events after its latest snapshot, as the "
                "small one has 10 in all",
            ],
        ),
        Result(
            "4",
            "  ref: 100k events, 99 past the snapshot",
            worst,
            small,
            "s",
            ratio_of(worst, small),
            "",
            notes=["worst case with snapshots every 100 events: 99 replayed"],
        ),
    ]


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__ or ""))
