"""Figure 1: durable appends to one session through ``Runtime``.

sessiond: ``runtime.append(session_id, text)``, one 200-byte message per call, each
acknowledged only once fsynced (WAL, ``synchronous=FULL``), no agent turn.

Floor: raw sqlite3 on the same disk, WAL, ``synchronous=FULL``, one INSERT + COMMIT
per message into an openai-agents-style ``agent_messages`` table.

Reference lines: plain ``eventsourcing`` (SQLite, WAL, its default
``synchronous``), ``Application.save`` of an aggregate that triggered one event
per message; and the ceiling (see :mod:`bench.bare`): sessiond's own statements
for a message, from a bare loop with no sessiond code around them.

Target: sessiond's throughput >= 0.6x the floor's.
"""

from __future__ import annotations

from pathlib import Path
from time import perf_counter, process_time

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench.bare import bare_appends, ceiling_result
from bench.common import (
    FloorStore,
    MessagePool,
    Options,
    Result,
    interleaved,
    main,
    median,
    paired_ratio,
    ratio_of,
    runtime_settings,
    say,
    scratch,
)


class Conversation(Aggregate):
    """The reference line's aggregate: one event per message."""

    @event("Started")
    def __init__(self) -> None:
        self.count = 0

    @event("MessageAdded")
    def add_message(self, role: str, content: str) -> None:
        self.count += 1


class Conversations(Application[object]):
    """A plain eventsourcing application."""


def eventsourcing_app(path: Path) -> Conversations:
    """The reference application on a SQLite file at ``path``."""
    return Conversations(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(path),
            "IS_SNAPSHOTTING_ENABLED": "no",
        }
    )


def eventsourcing_pragmas(app: Application[object]) -> str:
    """journal_mode and synchronous of the reference app's connections."""
    datastore = app.factory.datastore  # type: ignore[attr-defined]
    with datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        synchronous = cursor.fetchone()[0]
    return f"journal_mode={journal}, synchronous={synchronous}"


def run(options: Options) -> list[Result]:
    """Measure figure 1."""
    from runtime import Runtime

    per_round = options.pick(300, 150)
    n_rounds = options.n_rounds(full=15)
    pool = MessagePool()
    say(f"[1] durable append to one session: {n_rounds} rounds x {per_round} messages")
    with scratch(options, "append") as directory:
        floor = FloorStore(directory / "floor.db")
        runtime = Runtime(runtime_settings(directory / "sessiond.db"))
        reference = eventsourcing_app(directory / "eventsourcing.db")
        bare = bare_appends(directory / "bare.db", 1, pool)
        try:
            session_id = runtime.create()["id"]
            (bare_id,) = bare.session_ids
            conversation = Conversation()
            reference.save(conversation)
            # Warm up: connections, actor, statement caches.
            for _ in range(20):
                floor.append("s-1", pool.next())
                bare.append(bare_id)
                runtime.append(session_id, pool.next())
                conversation.add_message("user", pool.next())
                reference.save(conversation)

            cpu_per_append: dict[str, list[float]] = {"floor": [], "sessiond": []}

            def measure_floor() -> float:
                start, cpu = perf_counter(), process_time()
                for _ in range(per_round):
                    floor.append("s-1", pool.next())
                cpu_per_append["floor"].append((process_time() - cpu) / per_round)
                return per_round / (perf_counter() - start)

            def measure_sessiond() -> float:
                start, cpu = perf_counter(), process_time()
                for _ in range(per_round):
                    runtime.append(session_id, pool.next())
                cpu_per_append["sessiond"].append((process_time() - cpu) / per_round)
                return per_round / (perf_counter() - start)

            def measure_bare() -> float:
                start = perf_counter()
                for _ in range(per_round):
                    bare.append(bare_id)
                return per_round / (perf_counter() - start)

            def measure_eventsourcing() -> float:
                start = perf_counter()
                for _ in range(per_round):
                    conversation.add_message("user", pool.next())
                    reference.save(conversation)
                return per_round / (perf_counter() - start)

            found = interleaved(
                n_rounds,
                {
                    "floor": measure_floor,
                    "sessiond": measure_sessiond,
                    "eventsourcing": measure_eventsourcing,
                    "bare": measure_bare,
                },
            )
            pragmas = eventsourcing_pragmas(reference)
        finally:
            runtime.close()
            reference.close()
            bare.close()
            floor.close()
    floor_rate = median(found["floor"])
    sessiond_rate = median(found["sessiond"])
    reference_rate = median(found["eventsourcing"])
    bare_rate = median(found["bare"])
    for name, rates in found.items():
        say(f"    {name:>13}: " + "  ".join(f"{r:,.0f}" for r in rates) + " msg/s")
    return [
        Result(
            "1",
            "durable append, 1 session (Runtime.append)",
            sessiond_rate,
            floor_rate,
            "msg/s",
            ratio_of(sessiond_rate, floor_rate),
            ">= 0.6",
            notes=[
                "floor: raw sqlite3, WAL, synchronous=FULL, BEGIN; INSERT INTO "
                "agent_messages; COMMIT per 200-byte message, same disk",
                "median of per-round ratios (steadier under drifting load): "
                f"{paired_ratio(found['sessiond'], found['floor']):.2f}x",
                f"median of {n_rounds} interleaved rounds of {per_round} appends; "
                f"sessiond mean latency {1e6 / sessiond_rate:.0f} us, floor "
                f"{1e6 / floor_rate:.0f} us",
                "CPU per append (all threads, user+system): sessiond "
                f"{median(cpu_per_append['sessiond']) * 1e6:.0f} us, floor "
                f"{median(cpu_per_append['floor']) * 1e6:.0f} us; the rest of the "
                "latency is waiting for fsync",
            ],
        ),
        Result(
            "1",
            "  ref: eventsourcing Application.save/msg",
            reference_rate,
            floor_rate,
            "msg/s",
            ratio_of(reference_rate, floor_rate),
            "",
            notes=[
                f"reference: plain eventsourcing 9.5 SQLite ({pragmas}), no snapshots"
            ],
        ),
        ceiling_result(
            "1",
            "bare loop",
            bare_rate,
            floor_rate,
            "the 5 statements + COMMIT sessiond runs per message (event, index "
            "row, schedule, open turn, tracking) with no sessiond code around them",
        ),
    ]


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__ or ""))
