"""Figure 5: checkpoint save, restore and fork, at 100 and at 100,000 events.

Each round times, on both sessions (their actors live), a
``runtime.checkpoint_save``, a ``runtime.checkpoint_restore`` back to the
checkpoint saved before the round, and a ``runtime.fork`` (at the current
offset). Each is a durable write (fsynced), the fork a new session. The two
sessions take turns operation by operation, so both meet the same load.

The 100,000-event session is bulk-built through the runtime's own application
(see :func:`bench.common.bulk_append`), with snapshots where the actor would
take them.

Floor: the same operation on the 100-event session, in the same rounds.
Target: each operation at 100,000 events within 1.5x of it at 100.
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

OPERATIONS = ("save", "restore", "fork")


def operations(
    runtime: Any, sessions: dict[str, tuple[str, str]], times: int
) -> dict[str, dict[str, float]]:
    """Median seconds of each operation on each session over ``times``
    repetitions. ``sessions`` maps a label to (session id, checkpoint id). The
    sessions take turns operation by operation (the order alternating), so both
    see the same moment's load on the machine."""
    found = {label: {name: [] for name in OPERATIONS} for label in sessions}
    labels = list(sessions)
    for index in range(times):
        order = labels if index % 2 == 0 else labels[::-1]
        for name in OPERATIONS:
            for label in order:
                session_id, checkpoint_id = sessions[label]
                start = perf_counter()
                if name == "save":
                    runtime.checkpoint_save(session_id, f"cp-{index}")
                elif name == "restore":
                    runtime.checkpoint_restore(session_id, checkpoint_id)
                else:
                    runtime.fork(session_id)
                found[label][name].append(perf_counter() - start)
    return {
        label: {name: median(values) for name, values in by_name.items()}
        for label, by_name in found.items()
    }


def run(options: Options) -> list[Result]:
    """Measure figure 5."""
    from runtime import Runtime

    large = 100_000
    per_round = options.pick(20, 8)
    n_rounds = options.n_rounds()
    pool = MessagePool()
    say(
        f"[5] checkpoint save/restore/fork: 100 vs {large:,} events; "
        f"{n_rounds} rounds x {per_round} of each"
    )
    with scratch(options, "checkpoints") as directory:
        runtime = Runtime(runtime_settings(directory / "sessiond.db"))
        try:
            small_id = runtime.create()["id"]
            for _ in range(100 - 2):
                runtime.append(small_id, pool.next())
            large_id = runtime.create()["id"]
            start = perf_counter()
            bulk_append(
                runtime,
                [large_id],
                large - 2,
                pool,
                per_save=5000,
                sessions_per_transaction=1,
            )
            say(f"    built the large session in {perf_counter() - start:.0f} s")
            checkpoints = {}
            for session_id in (small_id, large_id):
                checkpoints[session_id] = runtime.checkpoint_save(session_id, "base")[
                    "id"
                ]
                say(f"    session at {runtime.get(session_id)['offset']:,} events")
            per_round_results: dict[str, list[dict[str, float]]] = {
                "100": [],
                "100k": [],
            }
            pair = {
                "100": (small_id, checkpoints[small_id]),
                "100k": (large_id, checkpoints[large_id]),
            }
            for _ in range(n_rounds):
                for label, result in operations(runtime, pair, per_round).items():
                    per_round_results[label].append(result)
        finally:
            runtime.close()
    results = []
    for name in OPERATIONS:
        small = median([r[name] for r in per_round_results["100"]])
        big = median([r[name] for r in per_round_results["100k"]])
        say(
            f"    {name:>8}: 100 events "
            + " ".join(f"{r[name] * 1e6:.0f}" for r in per_round_results["100"])
            + " us; 100k events "
            + " ".join(f"{r[name] * 1e6:.0f}" for r in per_round_results["100k"])
            + " us"
        )
        results.append(
            Result(
                "5",
                f"checkpoint {name}: 100k vs 100 events"
                if name != "fork"
                else "fork: 100k vs 100 events",
                big,
                small,
                "s",
                ratio_of(big, small),
                "<= 1.5",
                notes=[
                    "floor: the same operation on the 100-event session, same rounds"
                ]
                if name == "save"
                else [],
            )
        )
    return results


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__ or ""))
