"""The lifecycle through the runtime, on a real SQLite file with a fake clock:
timeout policy and renewal, the ``LifecycleSupervisor`` (expiry warnings, expiry,
daily and idle resets, retention) driven one tick at a time by ``run_lifecycle``,
restarts with deadlines passed while the service was down, and the durable
schedule the tick works from.

``supervisor_interval=0`` means no background ticker: each test decides when the
supervisor looks, so nothing depends on real time passing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import datetime, timedelta
from typing import Any

import pytest
from eventsourcing.sqlite import SQLiteCursor

from aggregates.errors import SessionExpiredError
from aggregates.values import TimeoutLimits
from runtime import (
    AgentConfig,
    FakeClock,
    InvalidRequestError,
    Principal,
    RenewalRefusedError,
    Runtime,
    SessionEndedError,
    SessionNotFoundError,
    Settings,
)
from tests.support.database import query

RuntimeFactory = Callable[..., Runtime]
MINUTE = 60.0
MS = 0.001
ADMIN = Principal("ops", admin=True)
LONG_LIMITS = TimeoutLimits(
    max_timeout_minutes=2 * 1440, max_duration_minutes=10 * 1440
)
"""Limits under which a session can sit idle for more than a day."""
TWO_DAYS = {"timeout_minutes": 2 * 1440, "max_duration_minutes": 10 * 1440}


@pytest.fixture
def make(runtime_factory: RuntimeFactory) -> RuntimeFactory:
    """Runtimes with no background ticker (the test drives the supervisor)."""

    def build(**changes: Any) -> Runtime:
        changes.setdefault("supervisor_interval", 0)
        return runtime_factory(**changes)

    return build


@pytest.fixture
def runtime(make: RuntimeFactory) -> Runtime:
    return make()


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def log_of(runtime: Runtime, session_id: str) -> list[dict[str, Any]]:
    """The session's whole log from the store (any status)."""
    events, has_more = runtime.views.events(session_id, after=0, limit=1000)
    assert not has_more
    return events


def types_of(runtime: Runtime, session_id: str) -> list[str]:
    return [event["type"] for event in log_of(runtime, session_id)]


def drain(tail: Any, *, timeout: float = 5.0, until: str | None = None) -> list[str]:
    """Event types from a tail until ``until`` arrives (or nothing more within
    ``timeout``); bounded."""
    found: list[str] = []
    for _ in range(100):
        item = tail.get(timeout=timeout if until else 0.2)
        if item is None:
            break
        if item["type"] == "event":
            found.append(item["event"]["type"])
            if item["event"]["type"] == until:
                break
    return found


def schedule_rows(db: str) -> dict[str, tuple[int, str]]:
    """The durable schedule as stored in the database."""
    rows = query(db, "SELECT session_id, due_ms, due FROM session_schedule")
    return {str(sid): (int(ms), str(due)) for sid, ms, due in rows}


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# --- policy


def test_a_new_session_has_the_default_policy_and_expires_thirty_minutes_after_creation(
    runtime: Runtime, clock: FakeClock
) -> None:
    session = runtime.create("echo")
    assert session["timeout"] == {
        "timeout_minutes": 30,
        "auto_renew": True,
        "max_duration_minutes": 720,
        "warning_threshold_minutes": 5,
    }
    assert when(session["expires_at"]) == clock.now() + timedelta(minutes=30)
    assert session["renewal_count"] == 0
    assert session["near_expiry"] is False
    assert session["time_remaining_ms"] == 30 * 60_000


def test_the_timeout_limits_come_from_the_session_environment_variables(
    make: RuntimeFactory,
) -> None:
    defaults = Settings.from_env({})
    assert defaults.timeout_limits.default_timeout_minutes == 30
    assert defaults.timeout_limits.min_timeout_minutes == 5
    assert defaults.timeout_limits.max_timeout_minutes == 1440
    assert defaults.timeout_limits.max_duration_minutes == 720
    assert defaults.timeout_limits.warning_threshold_minutes == 5
    settings = Settings.from_env(
        {
            "SESSION_DEFAULT_TIMEOUT_MINUTES": "45",
            "SESSION_MIN_TIMEOUT_MINUTES": "10",
            "SESSION_MAX_TIMEOUT_MINUTES": "120",
            "SESSION_MAX_DURATION_MINUTES": "240",
            "SESSION_WARNING_THRESHOLD_MINUTES": "7",
            "SESSIOND_SUPERVISOR_INTERVAL": "0.25",
            "SESSIOND_RETENTION_DAYS": "3",
        }
    )
    assert settings.supervisor_interval == 0.25
    assert settings.retention_days == 3.0
    assert Settings.from_env({"SESSIOND_RETENTION_DAYS": "0"}).retention_days is None
    runtime = make(timeout_limits=settings.timeout_limits)
    assert runtime.create("echo")["timeout"] == {
        "timeout_minutes": 45,
        "auto_renew": True,
        "max_duration_minutes": 240,
        "warning_threshold_minutes": 7,
    }
    clamped = runtime.create("echo", timeout={"timeout_minutes": 5})["timeout"]
    assert clamped["timeout_minutes"] == 10
    clamped = runtime.create(
        "echo", timeout={"timeout_minutes": 500, "max_duration_minutes": 1000}
    )["timeout"]
    assert clamped["timeout_minutes"] == 120
    assert clamped["max_duration_minutes"] == 240


def test_a_session_timeout_beats_the_agents_which_beats_the_global_default(
    make: RuntimeFactory,
) -> None:
    agents = {
        "echo": AgentConfig(
            id="echo", timeout={"timeout_minutes": 60, "warning_threshold_minutes": 10}
        )
    }
    runtime = make(agents=agents)
    from_agent = runtime.create("echo")["timeout"]
    assert from_agent["timeout_minutes"] == 60
    assert from_agent["warning_threshold_minutes"] == 10
    assert from_agent["max_duration_minutes"] == 720  # global
    own = runtime.create("echo", timeout={"timeout_minutes": 90, "auto_renew": False})
    assert own["timeout"] == {
        "timeout_minutes": 90,
        "auto_renew": False,
        "max_duration_minutes": 720,
        "warning_threshold_minutes": 10,
    }


def test_creation_clamps_out_of_range_timeouts_into_the_limits(
    runtime: Runtime,
) -> None:
    low = runtime.create("echo", timeout={"timeout_minutes": 1})["timeout"]
    high = runtime.create(
        "echo", timeout={"timeout_minutes": 100_000, "max_duration_minutes": 100_000}
    )["timeout"]
    assert low["timeout_minutes"] == 5
    assert high["timeout_minutes"] == 1440
    assert high["max_duration_minutes"] == 720
    with pytest.raises(InvalidRequestError):
        runtime.create("echo", timeout={"timeout_minutes": "thirty"})


@pytest.mark.parametrize(
    "changes",
    [
        {"timeout_minutes": 4},
        {"timeout_minutes": 1441},
        {"max_duration_minutes": 721},
        {"warning_threshold_minutes": 31},
    ],
)
def test_update_timeout_refuses_out_of_range_values_and_records_nothing(
    runtime: Runtime, changes: dict[str, int]
) -> None:
    session = runtime.create("echo")
    with pytest.raises(InvalidRequestError) as raised:
        runtime.update_timeout(session["id"], **changes)
    assert raised.value.code == "invalid_request"
    after = runtime.get(session["id"])
    assert after["offset"] == session["offset"]
    assert after["timeout"] == session["timeout"]


def test_update_timeout_changes_only_the_fields_it_names(
    runtime: Runtime, clock: FakeClock
) -> None:
    created = clock.now()
    sid = runtime.create(
        "echo", timeout={"timeout_minutes": 20, "warning_threshold_minutes": 2}
    )["id"]
    clock.advance(10 * MINUTE)
    runtime.append(sid, "activity")  # last activity: +10 min
    changed = runtime.update_timeout(sid, timeout_minutes=60)
    assert changed["timeout"] == {
        "timeout_minutes": 60,
        "auto_renew": True,
        "max_duration_minutes": 720,
        "warning_threshold_minutes": 2,
    }
    assert when(changed["expires_at"]) == created + timedelta(minutes=70)
    # Switching auto-renew off keeps the custom timeout (unlike ElizaOS, which
    # resets omitted fields) and anchors the deadline at creation.
    fixed = runtime.update_timeout(sid, auto_renew=False)
    assert fixed["timeout"]["timeout_minutes"] == 60
    assert fixed["timeout"]["warning_threshold_minutes"] == 2
    assert when(fixed["expires_at"]) == created + timedelta(minutes=60)
    assert types_of(runtime, sid)[-2:] == ["timeout_changed", "timeout_changed"]


def test_expires_at_is_last_activity_plus_timeout_capped_at_the_maximum_duration(
    runtime: Runtime, clock: FakeClock
) -> None:
    created = clock.now()
    renewing = runtime.create(
        "echo", timeout={"timeout_minutes": 60, "max_duration_minutes": 90}
    )["id"]
    fixed = runtime.create(
        "echo", timeout={"timeout_minutes": 60, "auto_renew": False}
    )["id"]
    clock.advance(20 * MINUTE)
    runtime.append(renewing, "a")
    runtime.append(fixed, "a")
    assert when(runtime.get(renewing)["expires_at"]) == created + timedelta(minutes=80)
    assert when(runtime.get(fixed)["expires_at"]) == created + timedelta(minutes=60)
    clock.advance(25 * MINUTE)  # +45 min: 45 + 60 is past the 90-minute cap
    runtime.append(renewing, "b")
    assert when(runtime.get(renewing)["expires_at"]) == created + timedelta(minutes=90)


# --- renewal


def test_every_message_renews_an_auto_renewing_session(
    runtime: Runtime, clock: FakeClock
) -> None:
    sid = runtime.create("echo")["id"]
    clock.advance(10 * MINUTE)
    result = runtime.send(sid, "hello there")  # the message and the echo reply
    session = result["session"]
    assert session["renewal_count"] == 2
    assert when(session["expires_at"]) == clock.now() + timedelta(minutes=30)
    clock.advance(29 * MINUTE)
    runtime.append(sid, "still here")
    again = runtime.get(sid)
    assert again["renewal_count"] == 3
    assert when(again["expires_at"]) == clock.now() + timedelta(minutes=30)
    # The deadline a message set is in the log, with the message.
    appended = [e for e in log_of(runtime, sid) if e["type"] == "message_appended"]
    assert appended[-1]["data"]["expires_at"] == again["expires_at"]


def test_a_heartbeat_renews_an_auto_renewing_session(
    runtime: Runtime, clock: FakeClock
) -> None:
    sid = runtime.create("echo")["id"]
    clock.advance(29 * MINUTE)
    beat = runtime.heartbeat(sid)
    assert beat["renewal_count"] == 1
    assert when(beat["expires_at"]) == clock.now() + timedelta(minutes=30)
    clock.advance(29 * MINUTE)
    runtime.run_lifecycle()
    assert runtime.get(sid)["status"] == "active"
    renewed = [e for e in log_of(runtime, sid) if e["type"] == "renewed"]
    assert [e["data"]["reason"] for e in renewed] == ["heartbeat"]


def test_without_auto_renew_neither_messages_nor_heartbeats_keep_a_session_alive(
    runtime: Runtime, clock: FakeClock
) -> None:
    created = clock.now()
    sid = runtime.create("echo", timeout={"auto_renew": False})["id"]
    clock.advance(20 * MINUTE)
    runtime.send(sid, "a message")
    clock.advance(9 * MINUTE)
    beat = runtime.heartbeat(sid)
    assert beat["renewal_count"] == 0
    assert when(beat["expires_at"]) == created + timedelta(minutes=30)
    clock.advance(1 * MINUTE)
    with pytest.raises(SessionExpiredError) as raised:
        runtime.heartbeat(sid)
    assert raised.value.expires_at == created + timedelta(minutes=30)
    assert "renewed" not in types_of(runtime, sid)


def test_a_manual_renewal_works_even_with_auto_renew_off(
    runtime: Runtime, clock: FakeClock
) -> None:
    sid = runtime.create("echo", timeout={"auto_renew": False})["id"]
    clock.advance(25 * MINUTE)
    renewed = runtime.renew(sid)
    assert renewed["renewal_count"] == 1
    assert when(renewed["expires_at"]) == clock.now() + timedelta(minutes=30)
    assert renewed["timeout"]["auto_renew"] is False
    clock.advance(29 * MINUTE)
    runtime.run_lifecycle()
    assert runtime.get(sid)["status"] == "active"


def test_renewal_stops_at_the_maximum_duration_and_the_session_expires_on_time(
    runtime: Runtime, clock: FakeClock
) -> None:
    created = clock.now()
    cap = created + timedelta(minutes=90)
    sid = runtime.create(
        "echo", timeout={"timeout_minutes": 60, "max_duration_minutes": 90}
    )["id"]
    clock.advance(50 * MINUTE)
    runtime.append(sid, "renews up to the cap")
    assert when(runtime.get(sid)["expires_at"]) == cap
    clock.advance(30 * MINUTE)
    # The deadline sits at the cap: a renewal cannot move it and is refused.
    with pytest.raises(RenewalRefusedError) as refused:
        runtime.renew(sid)
    assert refused.value.code == "renewal_refused"
    assert when(runtime.heartbeat(sid)["expires_at"]) == cap
    runtime.append(sid, "not past the cap either")
    assert when(runtime.get(sid)["expires_at"]) == cap
    clock.advance(10 * MINUTE - MS)
    runtime.run_lifecycle()
    assert runtime.get(sid)["status"] == "active"
    clock.advance(MS)  # exactly the cap
    # The renewal that would go past the maximum duration is too late: the
    # session has reached its end, which it answers with.
    with pytest.raises(SessionExpiredError) as raised:
        runtime.renew(sid)
    assert raised.value.expires_at == cap
    events = log_of(runtime, sid)
    assert [e["type"] for e in events][-1] == "expired"
    assert when(events[-1]["at"]) == cap


# --- expiry


def test_the_warning_fires_once_at_the_threshold_and_is_pushed_to_a_tail(
    runtime: Runtime, clock: FakeClock
) -> None:
    created = clock.now()
    sid = runtime.create("echo")["id"]
    with runtime.tail(sid, after=1) as tail:
        clock.advance(25 * MINUTE - MS)
        assert runtime.run_lifecycle() == []
        assert "expiry_warned" not in types_of(runtime, sid)
        clock.advance(MS)
        assert runtime.run_lifecycle() == [sid]
        assert drain(tail, until="expiry_warned") == ["expiry_warned"]
        for _ in range(3):
            clock.advance(MINUTE)
            runtime.run_lifecycle()
        assert drain(tail) == []
    warned = [e for e in log_of(runtime, sid) if e["type"] == "expiry_warned"]
    assert len(warned) == 1
    assert when(warned[0]["data"]["expires_at"]) == created + timedelta(minutes=30)
    assert when(warned[0]["at"]) == created + timedelta(minutes=25)
    session = runtime.get(sid)
    assert session["near_expiry"] is True
    assert runtime.health()["sessions_expiring_soon"] == 1


def test_the_session_expires_at_its_deadline_and_every_later_call_says_expired(
    runtime: Runtime, clock: FakeClock
) -> None:
    created = clock.now()
    deadline = created + timedelta(minutes=30)
    sid = runtime.create("echo")["id"]
    runtime.send(sid, "hello")
    checkpoint = runtime.checkpoint_save(sid, "before")
    clock.advance(30 * MINUTE - MS)
    runtime.run_lifecycle()
    assert runtime.get(sid)["status"] == "active"
    deadline = when(runtime.get(sid)["expires_at"])
    with runtime.tail(sid, after=runtime.get(sid)["offset"]) as tail:
        clock.advance(MS)
        assert runtime.run_lifecycle() == [sid]
        assert drain(tail, until="expired") == ["expired"]
    events = log_of(runtime, sid)
    assert [e["type"] for e in events][-1] == "expired"
    assert when(events[-1]["data"]["expires_at"]) == deadline
    calls: list[Callable[[], Any]] = [
        lambda: runtime.get(sid),
        lambda: runtime.history(sid),
        lambda: runtime.messages(sid),
        lambda: runtime.events(sid),
        lambda: runtime.send(sid, "anyone?"),
        lambda: runtime.append(sid, "anyone?"),
        lambda: runtime.submit(sid, "anyone?"),
        lambda: runtime.renew(sid),
        lambda: runtime.heartbeat(sid),
        lambda: runtime.update(sid, name="renamed"),
        lambda: runtime.update_timeout(sid, timeout_minutes=60),
        lambda: runtime.set_reset_policy(sid, idle_minutes=5),
        lambda: runtime.checkpoints(sid),
        lambda: runtime.checkpoint_save(sid, "after"),
        lambda: runtime.checkpoint_restore(sid, checkpoint["id"]),
        lambda: runtime.fork(sid),
        lambda: runtime.clear(sid),
        lambda: runtime.reset(sid),
        lambda: runtime.export(sid),
        lambda: runtime.tail(sid),
        lambda: runtime.branches(sid),
        lambda: runtime.state_at(sid, 1),
        lambda: runtime.rewind(sid, 1),
    ]
    for _ in range(2):  # not once, as in ElizaOS: every time, until retention
        for call in calls:
            with pytest.raises(SessionExpiredError) as raised:
                call()
            assert raised.value.code == "session_expired"
            assert raised.value.expires_at == deadline
    assert [e["type"] for e in log_of(runtime, sid)] == [e["type"] for e in events]
    # An operator can still read the log; delete still works.
    audit = runtime.events(sid, principal=ADMIN, include_expired=True)["events"]
    assert audit[-1]["type"] == "expired"
    assert runtime.list(status="expired")["total"] == 1
    deleted = runtime.delete(sid)
    assert deleted["status"] == "ended"
    assert types_of(runtime, sid)[-2:] == ["expired", "ended"]


def test_a_call_that_comes_before_the_supervisor_expires_the_session_itself_once(
    runtime: Runtime, clock: FakeClock
) -> None:
    sid = runtime.create("echo")["id"]
    clock.advance(31 * MINUTE)
    with pytest.raises(SessionExpiredError):
        runtime.get(sid)
    assert types_of(runtime, sid) == ["opened", "expiry_warned", "expired"]
    assert runtime.run_lifecycle() == []
    with pytest.raises(SessionExpiredError):
        runtime.append(sid, "late")
    assert types_of(runtime, sid) == ["opened", "expiry_warned", "expired"]


def test_a_renewal_after_the_warning_cancels_the_expiry_and_re_arms_the_warning(
    runtime: Runtime, clock: FakeClock
) -> None:
    created = clock.now()
    sid = runtime.create("echo")["id"]
    clock.advance(26 * MINUTE)
    runtime.run_lifecycle()
    assert types_of(runtime, sid)[-1] == "expiry_warned"
    clock.advance(1 * MINUTE)
    renewed = runtime.renew(sid)
    new_deadline = created + timedelta(minutes=57)
    assert when(renewed["expires_at"]) == new_deadline
    assert renewed["near_expiry"] is False
    clock.advance(4 * MINUTE)  # past the old deadline
    assert runtime.run_lifecycle() == []
    assert runtime.get(sid)["status"] == "active"
    clock.advance(21 * MINUTE - MS)  # just before the new warning (at +52)
    assert runtime.run_lifecycle() == []
    clock.advance(MS)
    assert runtime.run_lifecycle() == [sid]
    warned = [e for e in log_of(runtime, sid) if e["type"] == "expiry_warned"]
    assert [when(e["data"]["expires_at"]) for e in warned] == [
        created + timedelta(minutes=30),
        new_deadline,
    ]
    clock.advance(5 * MINUTE)
    runtime.run_lifecycle()
    assert types_of(runtime, sid)[-1] == "expired"
    assert types_of(runtime, sid).count("expired") == 1


def test_the_background_ticker_acts_without_being_asked(
    make: RuntimeFactory, clock: FakeClock
) -> None:
    runtime = make(supervisor_interval=0.01)
    sid = runtime.create("echo")["id"]
    with runtime.tail(sid, after=1) as tail:
        clock.advance(31 * MINUTE)
        assert drain(tail, until="expired") == ["expiry_warned", "expired"]


# --- resets


def test_resets_are_opt_in(make: RuntimeFactory, clock: FakeClock) -> None:
    runtime = make(timeout_limits=LONG_LIMITS)
    sid = runtime.create("echo", scope="per-peer", timeout=TWO_DAYS)["id"]
    assert runtime.get(sid)["reset_policy"] == {"daily_at": None, "idle_minutes": None}
    clock.advance(23 * 60 * MINUTE)  # idle most of a day, through every time of day
    runtime.run_lifecycle()
    assert runtime.get(sid)["status"] == "active"
    assert "ended" not in types_of(runtime, sid)


def test_a_daily_reset_ends_the_session_and_opens_its_successor_on_the_same_scope_key(
    make: RuntimeFactory, clock: FakeClock
) -> None:
    runtime = make(timeout_limits=LONG_LIMITS)
    # The fake clock starts at midnight UTC.
    sid = runtime.create(
        "echo", scope="per-peer", metadata={"topic": "x"}, timeout=TWO_DAYS
    )["id"]
    runtime.send(sid, "before the reset")
    policy = runtime.set_reset_policy(sid, daily_at="00:30")["reset_policy"]
    assert policy == {"daily_at": "00:30", "idle_minutes": None}
    assert types_of(runtime, sid)[-1] == "reset_policy_changed"
    with runtime.tail(sid, after=runtime.get(sid)["offset"]) as tail:
        clock.advance(30 * MINUTE - MS)
        assert runtime.run_lifecycle() == []
        clock.advance(MS)
        assert runtime.run_lifecycle() == [sid]
        assert drain(tail, until="ended") == ["ended"]
    ended = log_of(runtime, sid)[-1]
    assert ended["type"] == "ended"
    assert ended["data"]["reason"] == "daily_reset"
    old = runtime.get(sid)
    assert old["status"] == "ended"
    successor, created = runtime.open("echo", scope="per-peer")
    assert created is False
    assert successor["id"] != sid
    assert successor["scope_key"] == old["scope_key"]
    assert successor["metadata"] == {"topic": "x"}
    assert successor["reset_policy"] == policy
    assert successor["message_count"] == 0
    assert when(successor["created_at"]) == clock.now()
    assert types_of(runtime, successor["id"]) == ["opened"]
    # The successor resets again the next day, not before.
    clock.advance(24 * 60 * MINUTE - MINUTE)
    assert runtime.run_lifecycle() == []
    clock.advance(MINUTE)
    assert runtime.run_lifecycle() == [successor["id"]]
    assert runtime.get(successor["id"])["status"] == "ended"


def test_opting_in_to_a_daily_reset_never_resets_at_once(
    make: RuntimeFactory, clock: FakeClock
) -> None:
    runtime = make(timeout_limits=LONG_LIMITS)
    # Created at 00:00; at 01:00 the user asks for a daily reset at 00:30, a time
    # of day already past: the first reset is tomorrow's 00:30, not now.
    sid = runtime.create("echo", timeout=TWO_DAYS)["id"]
    clock.advance(60 * MINUTE)
    runtime.set_reset_policy(sid, daily_at="00:30")
    assert runtime.run_lifecycle() == []
    assert runtime.get(sid)["status"] == "active"
    clock.advance(23 * 60 * MINUTE + 29 * MINUTE)  # tomorrow 00:29
    runtime.run_lifecycle()
    assert runtime.get(sid)["status"] == "active"
    clock.advance(MINUTE)
    runtime.run_lifecycle()
    assert runtime.get(sid)["status"] == "ended"


def test_an_idle_reset_ends_a_session_idle_for_the_period_and_opens_its_successor(
    runtime: Runtime, clock: FakeClock
) -> None:
    sid = runtime.create("echo", scope="per-peer")["id"]
    runtime.set_reset_policy(sid, idle_minutes=10)
    clock.advance(6 * MINUTE)
    runtime.append(sid, "activity moves the idle point")
    clock.advance(10 * MINUTE - MS)
    assert runtime.run_lifecycle() == []
    clock.advance(MS)
    assert runtime.run_lifecycle() == [sid]
    assert log_of(runtime, sid)[-1]["data"]["reason"] == "idle_reset"
    successor = runtime.create("echo", scope="per-peer")
    assert successor["id"] != sid
    assert successor["reset_policy"]["idle_minutes"] == 10
    assert successor["status"] == "active"


def test_a_message_after_the_idle_reset_point_is_recorded_in_the_successor(
    runtime: Runtime, clock: FakeClock
) -> None:
    sid = runtime.create("echo", scope="per-peer")["id"]
    runtime.send(sid, "first conversation")
    runtime.set_reset_policy(sid, idle_minutes=10)
    clock.advance(11 * MINUTE)  # the supervisor has not looked yet
    result = runtime.send(sid, "the message that finds the session idle")
    successor = result["session"]
    assert successor["id"] != sid
    assert result["user_message"]["session_id"] == successor["id"]
    assert (
        result["user_message"]["content"] == "the message that finds the session idle"
    )
    assert result["reply"]["session_id"] == successor["id"]
    contents = [m["content"] for m in runtime.messages(successor["id"])]
    assert contents[0] == "the message that finds the session idle"
    assert len(contents) == 2
    old = runtime.get(sid)
    assert old["status"] == "ended"
    assert "the message that finds the session idle" not in [
        m["content"] for m in runtime.messages(sid)
    ]
    assert log_of(runtime, sid)[-1]["data"]["reason"] == "idle_reset"
    assert runtime.create("echo", scope="per-peer")["id"] == successor["id"]


def test_a_message_sent_after_the_supervisor_reset_a_session_goes_to_its_successor(
    runtime: Runtime, clock: FakeClock
) -> None:
    # With the service's own ticker, the supervisor nearly always gets to a reset
    # point before the next message does; the message must not be refused.
    sid = runtime.create("echo", scope="per-peer")["id"]
    runtime.set_reset_policy(sid, idle_minutes=10)
    clock.advance(11 * MINUTE)
    assert runtime.run_lifecycle() == [sid]
    ended = log_of(runtime, sid)[-1]
    successor_id = runtime.create("echo", scope="per-peer")["id"]
    # The reset is announced with the session that carries on.
    assert ended["type"] == "ended"
    assert ended["data"]["reason"] == "idle_reset"
    assert ended["data"]["successor_id"] == successor_id
    clock.advance(MINUTE)
    result = runtime.send(sid, "after the reset", idempotency_key="k1")
    assert result["session"]["id"] == successor_id
    assert result["user_message"]["session_id"] == successor_id
    again = runtime.send(sid, "after the reset", idempotency_key="k1")  # a retry
    assert again["user_message"]["id"] == result["user_message"]["id"]
    first_message = runtime.messages(successor_id)[0]
    assert first_message["content"] == "after the reset"
    assert runtime.messages(sid) == []
    # Only messages follow: other writes to the ended session are refused, and
    # deleting it leaves its successor alone.
    with pytest.raises(SessionEndedError):
        runtime.renew(sid)
    runtime.delete(sid)
    assert runtime.get(successor_id)["status"] == "active"


def test_a_message_to_a_deleted_session_is_refused(runtime: Runtime) -> None:
    sid = runtime.create("echo", scope="per-peer")["id"]
    runtime.delete(sid)
    with pytest.raises(SessionEndedError):
        runtime.send(sid, "anyone?")
    assert runtime.messages(sid) == []


def test_an_append_after_the_daily_reset_point_is_recorded_in_the_successor(
    runtime: Runtime, clock: FakeClock
) -> None:
    sid = runtime.create("echo", scope="main", timeout={"timeout_minutes": 120})["id"]
    runtime.set_reset_policy(sid, daily_at="00:15")
    clock.advance(20 * MINUTE)
    message = runtime.append(sid, "kept")
    assert message["session_id"] != sid
    assert [m["content"] for m in runtime.messages(message["session_id"])] == ["kept"]
    assert runtime.get(sid)["status"] == "ended"


# --- retention


def test_retention_purges_ended_and_expired_sessions_older_than_the_retention_period(
    make: RuntimeFactory, clock: FakeClock, db: str
) -> None:
    runtime = make(retention_days=1)
    expired = runtime.create("echo")["id"]
    runtime.send(expired, "secret words")
    runtime.checkpoint_save(expired, "a checkpoint")
    deleted = runtime.create("echo")["id"]
    runtime.delete(deleted)
    clock.advance(31 * MINUTE)
    runtime.run_lifecycle()
    assert runtime.get(deleted)["status"] == "ended"
    clock.advance(24 * 60 * MINUTE - 31 * MINUTE)
    recent = runtime.create("echo")["id"]
    runtime.delete(recent)  # ended, but not a day ago
    live = runtime.create("echo", timeout={"timeout_minutes": 120})["id"]
    runtime.run_lifecycle()
    # The deleted session ended exactly a day ago: not older than the period yet.
    assert runtime.get(deleted)["status"] == "ended"
    clock.advance(32 * MINUTE)
    runtime.run_lifecycle()
    calls: list[Callable[[str], Any]] = [
        runtime.get,
        runtime.history,
        lambda s: runtime.events(s, principal=ADMIN, include_expired=True),
        lambda s: runtime.send(s, "hello?"),
        runtime.renew,
        runtime.delete,
        runtime.checkpoints,
        runtime.export,
        runtime.tail,
    ]
    for purged in (expired, deleted):
        for call in calls:
            with pytest.raises(SessionNotFoundError) as raised:
                call(purged)
            assert raised.value.code == "not_found"
    assert runtime.get(recent)["status"] == "ended"
    assert runtime.get(live)["status"] == "active"
    for table, column in (
        ("stored_events", "originator_id"),
        ("stored_snapshots", "originator_id"),
        ("session_index", "session_id"),
        ("session_schedule", "session_id"),
    ):
        [(count,)] = query(
            db,
            f"SELECT count(*) FROM {table} WHERE {column} IN (?, ?)",
            (expired, deleted),
        )
        assert count == 0, table
    [(leftover,)] = query(
        db, "SELECT count(*) FROM stored_events WHERE state LIKE '%secret words%'"
    )
    assert leftover == 0
    [(others,)] = query(
        db,
        "SELECT count(*) FROM stored_events WHERE originator_id IN (?, ?)",
        (recent, live),
    )
    assert others > 0


def test_without_a_retention_period_nothing_is_purged(
    make: RuntimeFactory, clock: FakeClock
) -> None:
    runtime = make(retention_days=None)
    sid = runtime.create("echo")["id"]
    runtime.delete(sid)
    clock.advance(400 * 24 * 60 * MINUTE)
    runtime.run_lifecycle()
    assert runtime.get(sid)["status"] == "ended"


def test_cleanup_purges_old_sessions_and_can_keep_those_with_checkpoints(
    make: RuntimeFactory, clock: FakeClock
) -> None:
    runtime = make(retention_days=None)
    kept = runtime.create("echo")["id"]
    runtime.checkpoint_save(kept, "worth keeping")
    plain = runtime.create("echo")["id"]
    runtime.delete(kept)
    runtime.delete(plain)
    clock.advance(2 * 24 * 60 * MINUTE)
    young = runtime.create("echo")["id"]
    runtime.delete(young)
    assert runtime.cleanup(older_than=timedelta(days=3)) == 0
    assert runtime.cleanup(older_than=timedelta(days=1), keep_checkpoints=True) == 1
    with pytest.raises(SessionNotFoundError):
        runtime.get(plain)
    assert runtime.get(kept)["status"] == "ended"
    assert runtime.get(young)["status"] == "ended"
    assert runtime.cleanup(older_than=timedelta(days=1)) == 1
    with pytest.raises(SessionNotFoundError):
        runtime.get(kept)
    assert runtime.get(young)["status"] == "ended"


def test_cleanup_purges_only_the_callers_sessions_unless_admin(
    make: RuntimeFactory, clock: FakeClock
) -> None:
    runtime = make(retention_days=None)
    alice, bob = Principal("alice"), Principal("bob")
    mine = runtime.create("echo", principal=alice)["id"]
    theirs = runtime.create("echo", principal=bob)["id"]
    runtime.delete(mine, principal=alice)
    runtime.delete(theirs, principal=bob)
    clock.advance(2 * 24 * 60 * MINUTE)
    assert runtime.cleanup(older_than=timedelta(days=1), principal=alice) == 1
    assert runtime.get(theirs, principal=bob)["status"] == "ended"
    assert runtime.cleanup(older_than=timedelta(days=1), principal=ADMIN) == 1
    with pytest.raises(SessionNotFoundError):
        runtime.get(theirs, principal=bob)


# --- restart


def test_after_a_restart_each_passed_deadline_is_handled_once_in_order(
    make: RuntimeFactory, clock: FakeClock
) -> None:
    start = clock.now()
    first = make()
    expiring = first.create("echo")["id"]  # warn +25, expire +30
    idle = first.create("echo", scope="per-peer")["id"]  # idle reset +10 wins
    first.set_reset_policy(idle, idle_minutes=10)
    warned_only = first.create("echo", timeout={"timeout_minutes": 50})[
        "id"
    ]  # warn +45
    untouched = first.create("echo", timeout={"timeout_minutes": 60})["id"]  # warn +55
    first.close()
    clock.advance(45 * MINUTE)  # three deadlines of `expiring` and others passed
    second = make()
    asked = second.run_lifecycle()
    assert sorted(asked) == sorted([expiring, idle, warned_only])
    events = log_of(second, expiring)
    assert [e["type"] for e in events] == ["opened", "expiry_warned", "expired"]
    assert all(
        when(e["data"]["expires_at"]) == start + timedelta(minutes=30)
        for e in events[1:]
    )
    assert all(when(e["at"]) == clock.now() for e in events[1:])
    assert types_of(second, idle) == ["opened", "reset_policy_changed", "ended"]
    assert log_of(second, idle)[-1]["data"]["reason"] == "idle_reset"
    successor = second.create("echo", scope="per-peer")
    assert successor["id"] != idle
    assert when(successor["created_at"]) == clock.now()
    assert types_of(second, warned_only) == ["opened", "expiry_warned"]
    assert types_of(second, untouched) == ["opened"]
    offsets = {sid: second.views.session_row(sid)["doc"]["offset"] for sid in asked}
    assert second.run_lifecycle() == []
    assert {
        sid: second.views.session_row(sid)["doc"]["offset"] for sid in asked
    } == offsets
    assert types_of(second, successor["id"]) == ["opened"]


def test_the_schedule_survives_a_restart_in_the_database(
    make: RuntimeFactory, clock: FakeClock, db: str
) -> None:
    first = make()
    sid = first.create("echo")["id"]
    created = clock.now()
    first.close()
    assert schedule_rows(db) == {sid: (ms(created + timedelta(minutes=25)), "warn")}
    clock.advance(26 * MINUTE)
    second = make()
    assert second.run_lifecycle() == [sid]
    assert schedule_rows(db) == {sid: (ms(created + timedelta(minutes=30)), "expire")}


# --- the schedule


def test_the_schedule_holds_each_live_sessions_next_deadline_written_with_its_events(
    runtime: Runtime, clock: FakeClock, db: str
) -> None:
    created = clock.now()
    sid = runtime.create("echo")["id"]
    assert schedule_rows(db)[sid] == (ms(created + timedelta(minutes=25)), "warn")
    runtime.set_reset_policy(sid, idle_minutes=7)
    assert schedule_rows(db)[sid] == (
        ms(created + timedelta(minutes=7)),
        "idle_reset",
    )
    runtime.set_reset_policy(sid, idle_minutes=None)
    clock.advance(25 * MINUTE)
    runtime.run_lifecycle()
    assert schedule_rows(db)[sid] == (
        ms(created + timedelta(minutes=30)),
        "expire",
    )
    clock.advance(5 * MINUTE)
    runtime.run_lifecycle()
    assert sid not in schedule_rows(db)
    ended = runtime.create("echo")["id"]
    runtime.delete(ended)
    assert ended not in schedule_rows(db)


def test_a_tick_with_nothing_due_touches_no_session_actor(
    runtime: Runtime, clock: FakeClock
) -> None:
    ids = [
        runtime.create("echo", timeout={"timeout_minutes": 30 + i})["id"]
        for i in range(40)
    ]
    runtime.directory.stop_all()
    before = runtime.directory.stats.activations
    clock.advance(24 * MINUTE)
    for _ in range(5):
        assert runtime.run_lifecycle() == []
    assert runtime.directory.stats.activations == before
    assert runtime.directory.live_count() == 0
    clock.advance(2 * MINUTE)  # +26: only the first two sessions' warnings are due
    assert sorted(runtime.run_lifecycle()) == sorted(ids[:2])
    assert runtime.directory.stats.activations == before + 2
    assert runtime.run_lifecycle() == []
    assert runtime.directory.stats.activations == before + 2


def test_a_tick_handles_many_due_sessions_in_one_go(
    runtime: Runtime, clock: FakeClock
) -> None:
    ids = {runtime.create("echo")["id"] for _ in range(60)}
    clock.advance(31 * MINUTE)
    assert set(runtime.run_lifecycle()) == ids
    assert runtime.counts() == {"expired": 60}
    assert runtime.run_lifecycle() == []


@pytest.mark.sqlite_only  # SQLite's query plans; PostgreSQL's depend on statistics
def test_no_query_of_a_tick_scans_the_stored_sessions(
    make: RuntimeFactory,
    clock: FakeClock,
    db_path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = make(retention_days=1)
    for _ in range(20):
        runtime.delete(runtime.create("echo")["id"])
    due = runtime.create("echo")["id"]
    for _ in range(20):
        runtime.create("echo", timeout={"timeout_minutes": 60})
    clock.advance(26 * MINUTE)
    executed: list[tuple[str, Any]] = []
    original = SQLiteCursor.execute

    def recording(self: SQLiteCursor, *args: Any, **kwargs: Any) -> None:
        executed.append((args[0], args[1] if len(args) > 1 else ()))
        original(self, *args, **kwargs)

    monkeypatch.setattr(SQLiteCursor, "execute", recording)
    assert runtime.run_lifecycle() == [due]  # a warning, and the retention query
    assert runtime.run_lifecycle() == []  # nothing due
    monkeypatch.undo()
    selects = [
        (sql, params)
        for sql, params in executed
        if sql.lstrip().upper().startswith("SELECT")
    ]
    assert any("session_schedule" in sql for sql, _ in selects)
    assert any("status IN" in sql for sql, _ in selects)  # retention ran
    with closing(sqlite3.connect(db_path)) as connection:
        for sql, params in selects:
            plan = connection.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
            scans = [row[3] for row in plan if str(row[3]).startswith("SCAN")]
            assert scans == [], (sql, scans)
