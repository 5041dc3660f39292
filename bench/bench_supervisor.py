"""The lifecycle supervisor: a tick costs what is due, not what is stored; and
warnings and expiries fire within a second of their deadline under load.

(a) Tick cost. Two stores, 1,000 and 100,000 sessions (``--quick``: 1,000 and
10,000), each with the same cohorts of 100 sessions that fall due together. A
round moves the store's fake clock to the next cohort's deadline and times one
``runtime.run_lifecycle()``: the schedule query, 100 session actors started,
each loading its session, recording ``Expired`` and saving (group-committed,
fsynced), and the tick waiting for all of them, plus the retention query. The
actors are passivated between rounds (untimed), so every round starts cold. The
rounds of the two stores are interleaved. Also timed: a tick with nothing due.
Target: the 100,000-session tick within 2x of the 1,000-session tick.

The stores are built through the runtime's own application, not ``create`` one
by one: ``Session.open`` aggregates saved with ``runtime.app.save(*batch)`` in
batches of 2,000, so each batch is one transaction holding the ``Opened`` events,
the index rows and the schedule rows, exactly what ``create`` writes. Of the
bulk sessions (not due during the run) four in five are live (deadline a day
away, so every one has a schedule row) and one in five has ended (so the
retention query has rows to skip).

(b) Firing on time. A real clock (``SystemClock``) and the service's own ticker
(``supervisor_interval`` 0.2 s): 10,000 sessions (``--quick``: 2,000) fall due
within the same minute (``--quick``: 20 s), half to be warned of their expiry
(threshold 1 minute) and half to expire (already warned, as they would have
been a minute earlier). Every session has a subscriber on the event bus.
Measured per session: the lag from its deadline to (1) the time the actor
recorded on the event (when it decided) and (2) the moment the committed event
reached its subscriber (what a streaming client would see). Target: every one
within 1 s. Default actor settings (at most 1,024 live actors, least recently
used stopped first), so the run also pays for passivating actors. The same is
then run at a tenth of the rate (a reference line: where the lag is when the
supervisor is not saturated).

Every due session costs an actor activation on the supervisor's thread (a
pykka thread start and proxy) plus, on the actor, a load and an fsynced
(group-committed) write; on a small, busy machine that bounds how many sessions
per second one supervisor can act on, which the ``lag to decision`` figures show.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter
from typing import Any

from aggregates.session import Session
from bench.common import (
    Options,
    Result,
    interleaved,
    main,
    median,
    ratio_of,
    runtime_settings,
    say,
    scratch,
)
from runtime import FakeClock, Runtime, SystemClock

DUE_PER_ROUND = 100
BATCH = 2000
START = datetime(2026, 1, 1, tzinfo=UTC)
LONG = {
    "timeout_minutes": 1440,
    "auto_renew": True,
    "max_duration_minutes": 1440,
    "warning_threshold_minutes": 0,
}


def policy(timeout_minutes: int, warning_minutes: int) -> dict[str, Any]:
    return {
        "timeout_minutes": timeout_minutes,
        "auto_renew": True,
        "max_duration_minutes": 720,
        "warning_threshold_minutes": warning_minutes,
    }


def new_session(session_id: str, created: datetime, timeout: dict[str, Any]) -> Session:
    return Session.open(
        session_id=session_id,
        timestamp=created,
        owner_id="local",
        agent_id="echo",
        user_id="local",
        timeout=timeout,
    )


def save_all(runtime: Runtime, sessions: Any) -> int:
    """Save sessions through the runtime's application in batches of ``BATCH``."""
    batch: list[Session] = []
    saved = 0
    for session in sessions:
        batch.append(session)
        if len(batch) >= BATCH:
            runtime.app.save(*batch)
            saved += len(batch)
            batch = []
    if batch:
        runtime.app.save(*batch)
        saved += len(batch)
    return saved


def count_rows(db: Path, table: str) -> int:
    with closing(sqlite3.connect(db)) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# --- (a)


class TickStore:
    """One store for (a): ``size`` sessions, ``rounds`` cohorts due in turn."""

    def __init__(self, directory: Path, size: int, rounds: int) -> None:
        self.size = size
        self.db = directory / f"tick-{size}.db"
        self.clock = FakeClock(START)
        self.runtime = Runtime(
            runtime_settings(self.db, clock=self.clock, supervisor_interval=0)
        )
        self.round = 0
        self.rounds = rounds
        bulk = size - rounds * DUE_PER_ROUND
        assert bulk > 0

        def sessions() -> Any:
            for number in range(bulk):
                session = new_session(f"bulk-{number:07d}", START, LONG)
                if number % 5 == 4:
                    session.end(timestamp=START, reason="deleted")
                yield session
            for cohort in range(rounds):
                # Cohort r expires at START + (10 + r) minutes; no warnings.
                timeout = policy(10 + cohort, 0)
                for number in range(DUE_PER_ROUND):
                    yield new_session(f"due-{cohort:03d}-{number:04d}", START, timeout)

        started = perf_counter()
        saved = save_all(self.runtime, sessions())
        self.build_seconds = perf_counter() - started
        assert saved == size
        assert count_rows(self.db, "session_index") == size
        live = size - bulk // 5
        assert count_rows(self.db, "session_schedule") == live, "schedule rows"

    def due_tick(self) -> float:
        """Time one tick with the next cohort due (cold actors)."""
        assert self.round < self.rounds, "more rounds than cohorts"
        target = START + timedelta(minutes=10 + self.round)
        self.clock.advance((target - self.clock.now()).total_seconds())
        self.round += 1
        started = perf_counter()
        asked = self.runtime.run_lifecycle()
        took = perf_counter() - started
        assert len(asked) == DUE_PER_ROUND, len(asked)
        self.runtime.directory.stop_all()  # untimed: the next round starts cold
        return took

    def empty_tick(self, calls: int = 50) -> float:
        """Mean seconds of a tick with nothing due."""
        started = perf_counter()
        for _ in range(calls):
            assert self.runtime.run_lifecycle() == []
        return (perf_counter() - started) / calls

    def close(self) -> None:
        self.runtime.close()


def run_ticks(options: Options, directory: Path) -> list[Result]:
    rounds = options.n_rounds()
    small_size = 1_000
    large_size = options.pick(100_000, 10_000)
    say(f"(a) building stores of {small_size:,} and {large_size:,} sessions ...")
    small = TickStore(directory, small_size, rounds)
    large = TickStore(directory, large_size, rounds)
    for store in (small, large):
        say(
            f"    {store.size:,} sessions in {store.build_seconds:.1f} s "
            f"({store.size / store.build_seconds:,.0f} sessions/s, "
            f"Sessions.save of Session.open aggregates, {BATCH:,} per transaction)"
        )
    try:
        small.empty_tick(5)  # warm both (imports, statement caches)
        large.empty_tick(5)
        due = interleaved(rounds, {"small": small.due_tick, "large": large.due_tick})
        empty = interleaved(
            rounds, {"small": small.empty_tick, "large": large.empty_tick}
        )
    finally:
        small.close()
        large.close()
    small_due, large_due = median(due["small"]), median(due["large"])
    small_empty, large_empty = median(empty["small"]), median(empty["large"])
    say(
        f"    tick with {DUE_PER_ROUND} due: {small_due * 1e3:.1f} ms at "
        f"{small_size:,} "
        f"stored, {large_due * 1e3:.1f} ms at {large_size:,} (medians of {rounds})"
    )
    say(
        f"    tick with nothing due: {small_empty * 1e6:.0f} us at {small_size:,}, "
        f"{large_empty * 1e6:.0f} us at {large_size:,}"
    )
    return [
        Result(
            figure="sup-a",
            title=f"tick, {DUE_PER_ROUND} due, {large_size:,} vs {small_size:,} stored",
            measured=large_due,
            floor=small_due,
            unit="s",
            ratio=ratio_of(large_due, small_due),
            target="<= 2.0",
            notes=[
                f"per due session: {large_due / DUE_PER_ROUND * 1e3:.2f} ms "
                f"(activate, load, record Expired, fsynced group commit)",
                "rounds: "
                + ", ".join(f"{x * 1e3:.0f}" for x in due["small"])
                + " ms (small) / "
                + ", ".join(f"{x * 1e3:.0f}" for x in due["large"])
                + " ms (large)",
            ],
        ),
        Result(
            figure="sup-a0",
            title=f"tick, nothing due, {large_size:,} vs {small_size:,} stored",
            measured=large_empty,
            floor=small_empty,
            unit="s",
            ratio=ratio_of(large_empty, small_empty),
            target="<= 2.0",
            notes=[
                "rounds: "
                + ", ".join(f"{x * 1e6:.0f}" for x in empty["small"])
                + " us (small) / "
                + ", ".join(f"{x * 1e6:.0f}" for x in empty["large"])
                + " us (large)",
            ],
        ),
    ]


# --- (b)


class Arrivals:
    """Records when each lifecycle event reached its subscriber."""

    def __init__(
        self, expected: int, wanted: set[tuple[str, str]] | None = None
    ) -> None:
        self.expected = expected
        # Only these (session, event type) count: a session warned at the start
        # of the window expires a minute on, which can come before the window's
        # last expiry; counted, it ended the wait one arrival early.
        self.wanted = wanted
        self.lock = threading.Lock()
        self.seen: dict[tuple[str, str], tuple[datetime, datetime]] = {}
        self.done = threading.Event()

    def deliver_for(self, session_id: str) -> Callable[[dict[str, Any]], None]:
        def deliver(item: dict[str, Any]) -> None:
            if item.get("type") != "event":
                return
            event = item["event"]
            if event["type"] not in ("expiry_warned", "expired"):
                return
            key = (session_id, event["type"])
            if self.wanted is not None and key not in self.wanted:
                return
            arrived = datetime.now(UTC)
            decided = datetime.fromisoformat(event["at"])
            with self.lock:
                self.seen.setdefault(key, (decided, arrived))
                if len(self.seen) >= self.expected:
                    self.done.set()

        return deliver


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def estimate_build_seconds(directory: Path, count: int) -> float:
    """Time saving 1,000 sessions in a scratch store; scale to ``count``."""
    db = directory / f"calibrate-{count}.db"
    with Runtime(runtime_settings(db, supervisor_interval=0)) as runtime:
        now = datetime.now(UTC)
        started = perf_counter()
        save_all(
            runtime, (new_session(f"c{i}", now, policy(5, 1)) for i in range(1000))
        )
        took = perf_counter() - started
    return took * count / 1000


def run_firing(
    directory: Path,
    count: int,
    window: float,
    *,
    reference: bool = False,
    **settings: Any,
) -> list[Result]:
    lead = 5.0 + 2 * estimate_build_seconds(directory, count)
    say(
        f"(b) {count:,} sessions due within {window:.0f} s "
        "(half warned, half expired), "
        f"real clock, supervisor_interval 0.2 s; first deadline in {lead:.0f} s"
    )
    db = directory / f"firing-{count}.db"
    clock = SystemClock()
    runtime = Runtime(
        runtime_settings(db, clock=clock, supervisor_interval=0.2, **settings)
    )
    try:
        first = clock.now() + timedelta(seconds=lead)
        due_at: dict[tuple[str, str], datetime] = {}

        def sessions() -> Any:
            for number in range(count):
                due = first + timedelta(seconds=window * number / count)
                session_id = f"fire-{number:06d}"
                if number % 2 == 0:
                    # To be warned at `due` (expires a minute later).
                    expires = due + timedelta(minutes=1)
                    session = new_session(
                        session_id, expires - timedelta(minutes=5), policy(5, 1)
                    )
                    due_at[(session_id, "expiry_warned")] = due
                else:
                    # Warned a minute ago; expires at `due`.
                    session = new_session(
                        session_id, due - timedelta(minutes=5), policy(5, 1)
                    )
                    assert (
                        session.act_on_deadlines(timestamp=due - timedelta(minutes=1))
                        is None
                    )
                    due_at[(session_id, "expired")] = due
                yield session

        started = perf_counter()
        save_all(runtime, sessions())
        arrivals = Arrivals(count, set(due_at))
        build = perf_counter() - started
        for session_id, _ in due_at:
            runtime.app.bus.subscribe(session_id, arrivals.deliver_for(session_id))
        remaining = (first - clock.now()).total_seconds()
        say(f"    built in {build:.1f} s; {remaining:.1f} s until the first deadline")
        if remaining < 0:
            say("    WARNING: the build overran the lead; early deadlines start late")
        budget = remaining + window + 30.0
        arrivals.done.wait(budget)
        # Only the events the measurement is about; later expiries of the warned
        # half (a minute on) are not waited for.
        with arrivals.lock:
            seen = dict(arrivals.seen)
        passivations = runtime.directory.stats.passivations
        try:  # the supervisor answers between ticks, which can be long here
            dispatched = f"{runtime.supervisor.dispatched.get(timeout=120):,}"
        except Exception:
            dispatched = "(no answer)"
    finally:
        runtime.close()

    results: list[Result] = []
    for kind, figure in (("expiry_warned", "sup-b-warn"), ("expired", "sup-b-expire")):
        wanted = [key for key in due_at if key[1] == kind]
        decided = [
            (seen[k][0] - due_at[k]).total_seconds() for k in wanted if k in seen
        ]
        arrived = [
            (seen[k][1] - due_at[k]).total_seconds() for k in wanted if k in seen
        ]
        missing = len(wanted) - len(arrived)
        late = sum(1 for lag in arrived if lag > 1.0)
        early = sum(1 for lag in decided if lag < 0)
        worst = max(arrived) if arrived else math.inf
        say(
            f"    {kind}: {len(arrived):,}/{len(wanted):,} arrived; lag to decision "
            f"p50 {percentile(decided, 0.5) * 1e3:.0f} ms, p99 "
            f"{percentile(decided, 0.99) * 1e3:.0f} ms; to subscriber p50 "
            f"{percentile(arrived, 0.5) * 1e3:.0f} ms, p99 "
            f"{percentile(arrived, 0.99) * 1e3:.0f} ms, max {worst * 1e3:.0f} ms; "
            f"{late} over 1 s, {early} before the deadline, {missing} missing"
        )
        results.append(
            Result(
                figure=figure + ("-ref" if reference else ""),
                title=f"{kind} lag at {count:,} due in {window:.0f} s (max)",
                measured=worst if not missing else math.inf,
                floor=1.0,
                unit="s",
                ratio=(worst if not missing else math.inf) / 1.0,
                target="" if reference else "<= 1.0",
                notes=[
                    f"{kind}: deadline -> committed event at a bus subscriber; "
                    f"p50 {percentile(arrived, 0.5) * 1e3:.0f} ms, "
                    f"p99 {percentile(arrived, 0.99) * 1e3:.0f} ms; the 'floor' "
                    "column is the 1 s budget, not a measurement",
                ],
            )
        )
    say(f"    supervisor dispatched {dispatched}; actors passivated {passivations:,}")
    return results


def run(options: Options) -> list[Result]:
    with scratch(options, "supervisor") as directory:
        results = run_ticks(options, directory)
        count = options.pick(10_000, 2_000)
        window = options.pick(60.0, 20.0)
        results += run_firing(directory, count, window)
        # The same at a tenth of the rate: where the lag is when not saturated.
        results += run_firing(directory, count // 10, window, reference=True)
    return results


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__ or ""))
