"""T12: a renewal (or a message) and the supervisor's expiry submitted at once.

200 iterations on a real SQLite file with a fake clock at the session's deadline
plus or minus one millisecond (and, in a third of them, the clock crossing the
deadline while both are in flight). Both go through the session's actor, which
handles passed deadlines before every command, so exactly one of them wins:
either the renewal (or message) is recorded and there is no ``Expired``, or there
is one ``Expired`` and the renewal (or message) was refused with
``SessionExpiredError`` carrying the deadline. The log says the same as the
replies, in the same order.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from aggregates.errors import SessionExpiredError
from runtime import FakeClock, Runtime

RuntimeFactory = Callable[..., Runtime]
ITERATIONS = 200
MINUTE = 60.0
MS = 0.001
TIMEOUT = {"timeout_minutes": 5, "warning_threshold_minutes": 1}


class TrippingClock(FakeClock):
    """A fake clock that, once armed, jumps forward on its n-th reading: so the
    deadline is crossed at a different point of the racing calls each time
    (between the check of one and the command of the other, or inside one)."""

    def __init__(self) -> None:
        super().__init__()
        self._trip = threading.Lock()
        self._left: int | None = None
        self._step = 0.0
        self.readings = 0

    def arm(self, readings: int, step: float) -> None:
        with self._trip:
            self._left, self._step, self.readings = readings, step, 0

    def disarm(self) -> None:
        with self._trip:
            self._left = None

    def now(self) -> datetime:
        with self._trip:
            self.readings += 1
            if self._left is not None:
                if self._left == 0:
                    self._left = None
                    self.advance(self._step)
                else:
                    self._left -= 1
        return super().now()


@pytest.fixture
def clock() -> TrippingClock:
    return TrippingClock()


@pytest.fixture
def runtime(runtime_factory: RuntimeFactory, clock: TrippingClock) -> Runtime:
    return runtime_factory(supervisor_interval=0, clock=clock)


def run_together(*actions: Callable[[], Any]) -> list[tuple[str, Any]]:
    """Start every action at the same moment (a barrier) on its own thread and
    return ``("ok", value)`` or ``("error", exception)`` for each."""
    barrier = threading.Barrier(len(actions))
    results: list[tuple[str, Any]] = [("missing", None)] * len(actions)

    def run(index: int, action: Callable[[], Any]) -> None:
        barrier.wait(timeout=10)
        try:
            results[index] = ("ok", action())
        except Exception as error:
            results[index] = ("error", error)

    threads = [
        threading.Thread(target=run, args=(i, action), daemon=True)
        for i, action in enumerate(actions)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a racing call did not finish"
    return results


def iteration(
    runtime: Runtime,
    clock: TrippingClock,
    rng: random.Random,
    *,
    where: str,
    operation: str,
    supervisor: str,
) -> str:
    """One race; returns which side won (``"renewal"`` or ``"expiry"``)."""
    sid = runtime.create("echo", timeout=TIMEOUT)["id"]
    deadline = datetime.fromisoformat(runtime.get(sid)["expires_at"])
    clock.advance(4 * MINUTE)
    runtime.run_lifecycle()  # the warning, so that the race is about the expiry
    before = runtime.views.session_row(sid)
    assert before is not None
    warned_offset = before["doc"]["offset"]
    assert runtime.views.events(sid, after=warned_offset - 1, limit=5)[0][0][
        "type"
    ] == ("expiry_warned")
    clock.advance(MINUTE - MS)  # deadline - 1 ms
    if where == "after":
        clock.advance(2 * MS)  # deadline + 1 ms

    def operate() -> Any:
        if operation == "renew":
            return runtime.renew(sid)
        if operation == "heartbeat":
            return runtime.heartbeat(sid)
        if operation == "append":
            return runtime.append(sid, "racing message")
        return runtime.send(sid, "racing message")

    def supervise() -> Any:
        if supervisor == "tick":
            return runtime.run_lifecycle()
        return runtime.supervise(sid).get(timeout=30)

    if where == "crossing":
        # The clock passes the deadline at its n-th reading from here on, by
        # whichever of the two calls makes it.
        clock.arm(rng.randrange(0, 6), 2 * MS)
    replies = run_together(operate, supervise)
    clock.disarm()  # in case the calls read it fewer times
    (op_kind, op_value), (sup_kind, sup_value) = replies[0], replies[1]
    assert sup_kind == "ok", sup_value

    events, has_more = runtime.views.events(sid, after=warned_offset, limit=50)
    assert not has_more
    kinds = [event["type"] for event in events]
    expired = [event for event in events if event["type"] == "expired"]
    assert len(expired) <= 1

    if op_kind == "ok":
        # The renewal won: recorded, before the deadline, and no expiry.
        assert expired == [], (where, operation, supervisor, kinds)
        expected = {
            "renew": ["renewed"],
            "heartbeat": ["renewed"],
            "append": ["message_appended"],
            "send": ["message_appended", "message_appended", "turn_ended"],
        }[operation]
        assert kinds == expected, (where, operation, supervisor, kinds)
        # What renewed it was recorded before the deadline it escaped (a send's
        # reply may come later: the message had renewed the session by then).
        assert datetime.fromisoformat(events[0]["at"]) < deadline, (
            "renewed at or after the deadline",
            where,
            operation,
            events[0],
        )
        new_deadline = datetime.fromisoformat(runtime.get(sid)["expires_at"])
        assert new_deadline > deadline
        if operation in ("append", "send"):
            reply_offset = (
                op_value["offset"]
                if operation == "append"
                else (op_value["user_message"]["offset"])
            )
            assert reply_offset == events[0]["offset"]
        winner = "renewal"
    else:
        # The expiry won: one Expired, for this deadline, and the call refused.
        assert isinstance(op_value, SessionExpiredError), (where, operation, op_value)
        assert op_value.code == "session_expired"
        assert op_value.expires_at == deadline
        assert kinds == ["expired"], (where, operation, supervisor, kinds)
        assert datetime.fromisoformat(expired[0]["data"]["expires_at"]) == deadline
        assert datetime.fromisoformat(expired[0]["at"]) >= deadline
        with pytest.raises(SessionExpiredError):
            runtime.get(sid)
        winner = "expiry"

    if where == "before":
        assert winner == "renewal", (operation, supervisor)
    if where == "after":
        assert winner == "expiry", (operation, supervisor)
    if supervisor == "tick" and winner == "renewal":
        assert sup_value in ([], [sid])  # asked, if at all, about the old deadline
    runtime.delete(sid)  # off the schedule: no later iteration sees it due
    return winner


def test_a_renewal_and_an_expiry_at_the_deadline_never_both_win(
    runtime: Runtime, clock: TrippingClock
) -> None:
    rng = random.Random(12)
    wheres = ("before", "after", "crossing")
    operations = ("renew", "send", "heartbeat", "append")
    supervisors = ("tick", "supervise")
    winners: dict[str, dict[str, int]] = {
        w: {"renewal": 0, "expiry": 0} for w in wheres
    }
    for number in range(ITERATIONS):
        where = wheres[number % 3]
        operation = operations[(number // 3) % 4]
        supervisor = supervisors[(number // 12) % 2]
        winner = iteration(
            runtime, clock, rng, where=where, operation=operation, supervisor=supervisor
        )
        winners[where][winner] += 1
        clock.advance(MINUTE)
    assert winners["before"]["expiry"] == 0
    assert winners["after"]["renewal"] == 0
    # Crossing the deadline mid-flight, each side wins some of the time.
    assert winners["crossing"]["renewal"] > 0
    assert winners["crossing"]["expiry"] > 0
    # No session is left on the schedule and none was left half-expired.
    assert runtime.views.due(clock.now() + timedelta(days=1), 10) == []
