"""The lifecycle rules on their own: the timeout policy (defaults, precedence,
clamping, refusal), the deadline and its cap, the schedule of a session's next
deadline, and ``Session.act_on_deadlines`` handling passed deadlines once each, in
order. Pure functions and the aggregate; no runtime, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aggregates import (
    InvalidRequestError,
    RenewalRefusedError,
    Session,
    SessionEndedError,
    TimeoutLimits,
    TimeoutPolicy,
)
from aggregates.errors import SessionExpiredError
from aggregates.lifecycle import (
    Due,
    next_daily,
    next_deadline,
    validate_reset_policy,
    warning_at,
)
from aggregates.values import deadline, max_end

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIMITS = TimeoutLimits()


def minutes(value: float) -> datetime:
    """``value`` minutes after the test's start."""
    return T0 + timedelta(minutes=value)


def policy(**changes: Any) -> dict[str, Any]:
    """The default policy with some fields changed (clamped, as creation does)."""
    return TimeoutPolicy.resolve(LIMITS, changes).as_dict()


def new_session(
    session_id: str = "s1",
    *,
    reset_policy: dict[str, Any] | None = None,
    **timeout: Any,
) -> Session:
    session = Session.open(
        session_id=session_id,
        timestamp=T0,
        owner_id="alice",
        agent_id="echo",
        user_id="alice",
        timeout=policy(**timeout),
        reset_policy=reset_policy,
    )
    session.collect_events()
    return session


def kinds(session: Session) -> list[str]:
    """Class names of the session's pending events, collected."""
    return [type(event).__name__ for event in session.collect_events()]


def say(
    session: Session, at: datetime, content: str = "hi", message_id: str = "m"
) -> None:
    session.append_message(
        timestamp=at, message_id=message_id, role="user", content=content
    )


# --- policy


def test_the_default_limits_are_30_5_1440_720_and_5_minutes() -> None:
    assert (
        TimeoutLimits(
            default_timeout_minutes=30,
            min_timeout_minutes=5,
            max_timeout_minutes=1440,
            max_duration_minutes=720,
            warning_threshold_minutes=5,
        )
        == LIMITS
    )
    assert TimeoutPolicy.resolve(LIMITS).as_dict() == {
        "timeout_minutes": 30,
        "auto_renew": True,
        "max_duration_minutes": 720,
        "warning_threshold_minutes": 5,
    }


def test_the_session_beats_the_agent_which_beats_the_global_defaults() -> None:
    agent = {
        "timeout_minutes": 60,
        "warning_threshold_minutes": 10,
        "auto_renew": False,
    }
    session = {"timeout_minutes": 90}
    resolved = TimeoutPolicy.resolve(LIMITS, agent, session)
    assert resolved.timeout_minutes == 90  # session
    assert resolved.warning_threshold_minutes == 10  # agent
    assert resolved.auto_renew is False  # agent
    assert resolved.max_duration_minutes == 720  # global
    # A None in the session layer means "not given", not "null".
    assert (
        TimeoutPolicy.resolve(LIMITS, agent, {"timeout_minutes": None}).timeout_minutes
        == 60
    )


@pytest.mark.parametrize(
    ("given", "field", "expected"),
    [
        ({"timeout_minutes": 1}, "timeout_minutes", 5),
        ({"timeout_minutes": 100_000}, "timeout_minutes", 1440),
        ({"timeout_minutes": -3}, "timeout_minutes", 5),
        ({"max_duration_minutes": 100_000}, "max_duration_minutes", 720),
        # the maximum duration is never shorter than the timeout
        (
            {"timeout_minutes": 60, "max_duration_minutes": 10},
            "max_duration_minutes",
            60,
        ),
        # the warning never comes before the session starts
        (
            {"timeout_minutes": 10, "warning_threshold_minutes": 50},
            "warning_threshold_minutes",
            10,
        ),
        ({"warning_threshold_minutes": -1}, "warning_threshold_minutes", 0),
    ],
)
def test_creation_clamps_out_of_range_values_into_the_limits(
    given: dict[str, Any], field: str, expected: int
) -> None:
    assert TimeoutPolicy.resolve(LIMITS, given).as_dict()[field] == expected


@pytest.mark.parametrize(
    "changes",
    [
        {"timeout_minutes": 4},
        {"timeout_minutes": 1441},
        {"max_duration_minutes": 721},
        {"max_duration_minutes": 10},  # shorter than the 30-minute timeout
        {"warning_threshold_minutes": 31},  # longer than the timeout
        {"warning_threshold_minutes": -1},
        {"timeout_minutes": "60"},
        {"auto_renew": "yes"},
        {"no_such_field": 1},
    ],
)
def test_a_change_refuses_out_of_range_or_unknown_values_with_invalid_request(
    changes: dict[str, Any],
) -> None:
    current = policy()
    with pytest.raises(InvalidRequestError) as raised:
        TimeoutPolicy.changed(LIMITS, current, changes)
    assert raised.value.code == "invalid_request"


def test_a_change_keeps_every_field_it_does_not_name() -> None:
    current = policy(timeout_minutes=60, warning_threshold_minutes=15)
    changed = TimeoutPolicy.changed(LIMITS, current, {"auto_renew": False}).as_dict()
    assert changed == {**current, "auto_renew": False}


def test_the_deadline_is_anchor_plus_timeout_capped_at_the_maximum_duration() -> None:
    renewing = policy(timeout_minutes=60, max_duration_minutes=100)
    assert deadline(renewing, T0, T0) == minutes(60)
    assert deadline(renewing, T0, minutes(20)) == minutes(80)
    assert deadline(renewing, T0, minutes(70)) == minutes(100)  # capped
    assert max_end(renewing, T0) == minutes(100)
    fixed = {**renewing, "auto_renew": False}
    # Without auto-renew the anchor is creation, whatever the last activity.
    assert deadline(fixed, T0, minutes(50)) == minutes(60)


# --- renewal


def test_every_auto_renewing_message_moves_the_deadline_and_counts_a_renewal() -> None:
    session = new_session(timeout_minutes=30)
    assert session.expires_at == minutes(30)
    say(session, minutes(10))
    (appended,) = session.collect_events()
    assert isinstance(appended, Session.MessageAppended)
    assert appended.expires_at == minutes(40)
    assert session.expires_at == minutes(40)
    assert session.renewal_count == 1
    say(session, minutes(25))
    assert session.expires_at == minutes(55)
    assert session.renewal_count == 2


def test_without_auto_renew_no_message_or_heartbeat_keeps_it_alive() -> None:
    session = new_session(timeout_minutes=30, auto_renew=False)
    say(session, minutes(20))
    (appended,) = session.collect_events()
    assert isinstance(appended, Session.MessageAppended)
    assert appended.expires_at is None
    assert session.heartbeat(timestamp=minutes(25)) is False
    assert session.collect_events() == []
    assert session.expires_at == minutes(30)
    assert session.renewal_count == 0
    assert session.act_on_deadlines(timestamp=minutes(30)) is Due.EXPIRE


def test_a_manual_renewal_works_even_without_auto_renew() -> None:
    session = new_session(timeout_minutes=30, auto_renew=False)
    session.renew(timestamp=minutes(20))
    (renewed,) = session.collect_events()
    assert isinstance(renewed, Session.Renewed)
    assert renewed.reason == "manual"
    assert session.expires_at == minutes(50)
    assert session.renewal_count == 1
    assert session.timeout["auto_renew"] is False  # the flag is left as it was


def test_a_heartbeat_renews_an_auto_renewing_session() -> None:
    session = new_session(timeout_minutes=30)
    assert session.heartbeat(timestamp=minutes(29)) is True
    (renewed,) = session.collect_events()
    assert isinstance(renewed, Session.Renewed)
    assert renewed.reason == "heartbeat"
    assert session.expires_at == minutes(59)


def test_renewal_stops_at_the_maximum_duration_and_it_expires_on_time() -> None:
    session = new_session(timeout_minutes=60, max_duration_minutes=100)
    say(session, minutes(70))
    assert session.expires_at == minutes(100)  # capped
    # Once the deadline sits at the cap, a renewal cannot move it: refused.
    with pytest.raises(RenewalRefusedError) as raised:
        session.renew(timestamp=minutes(90))
    assert raised.value.code == "renewal_refused"
    assert session.expires_at == minutes(100)
    with pytest.raises(RenewalRefusedError):
        session.renew(timestamp=minutes(100))
    assert session.heartbeat(timestamp=minutes(100)) is False
    session.collect_events()
    assert session.act_on_deadlines(timestamp=minutes(100)) is Due.EXPIRE
    assert kinds(session) == ["ExpiryWarned", "Expired"]
    assert session.expires_at == minutes(100)


def test_a_timeout_change_recomputes_the_deadline_from_the_last_activity() -> None:
    session = new_session(timeout_minutes=30)
    say(session, minutes(10))
    session.change_timeout(
        timestamp=minutes(12), limits=LIMITS, changes={"timeout_minutes": 60}
    )
    assert session.expires_at == minutes(70)
    # Switching auto-renew off anchors the deadline at creation again.
    session.change_timeout(
        timestamp=minutes(13), limits=LIMITS, changes={"auto_renew": False}
    )
    assert session.expires_at == minutes(60)
    assert session.timeout["timeout_minutes"] == 60
    # A change that changes nothing records nothing.
    session.collect_events()
    session.change_timeout(
        timestamp=minutes(14), limits=LIMITS, changes={"auto_renew": False}
    )
    assert session.collect_events() == []


# --- schedule


def schedule(**overrides: Any) -> tuple[datetime, Due] | None:
    arguments: dict[str, Any] = {
        "active": True,
        "expires_at": minutes(30),
        "warned_for": None,
        "timeout": policy(),
        "reset_policy": {"daily_at": None, "idle_minutes": None},
        "daily_from": T0,
        "last_activity_at": T0,
    }
    arguments.update(overrides)
    return next_deadline(**arguments)


def test_the_next_deadline_is_the_warning_then_the_expiry() -> None:
    assert schedule() == (minutes(25), Due.WARN)
    assert schedule(warned_for=minutes(30)) == (minutes(30), Due.EXPIRE)
    # A warning given for an earlier deadline does not count for this one.
    assert schedule(warned_for=minutes(20)) == (minutes(25), Due.WARN)
    assert schedule(active=False) is None


def test_a_zero_warning_threshold_schedules_no_warning() -> None:
    no_warning = policy(warning_threshold_minutes=0)
    assert warning_at(minutes(30), no_warning) is None
    assert schedule(timeout=no_warning) == (minutes(30), Due.EXPIRE)


def test_an_idle_reset_due_before_the_warning_comes_first() -> None:
    resets = {"daily_at": None, "idle_minutes": 10}
    assert schedule(reset_policy=resets) == (minutes(10), Due.IDLE_RESET)
    assert schedule(reset_policy=resets, last_activity_at=minutes(20)) == (
        minutes(25),
        Due.WARN,
    )


def test_on_a_tie_the_warning_comes_first_then_the_expiry_then_a_reset() -> None:
    tie = policy(warning_threshold_minutes=0)
    resets = {"daily_at": "12:30", "idle_minutes": 30}
    assert schedule(timeout=tie, reset_policy=resets) == (minutes(30), Due.EXPIRE)
    resets_only = {"daily_at": "12:30", "idle_minutes": 30}
    found = schedule(timeout=tie, reset_policy=resets_only, expires_at=minutes(31))
    assert found == (minutes(30), Due.DAILY_RESET)


def test_the_daily_reset_is_the_first_such_time_of_day_strictly_after() -> None:
    assert next_daily(T0, "13:15") == datetime(2026, 3, 1, 13, 15, tzinfo=UTC)
    assert next_daily(T0, "12:00") == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert next_daily(T0, "03:00") == datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    assert next_daily(datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "00:00") == datetime(
        2027, 1, 1, 0, 0, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"daily_at": "24:00"},
        {"daily_at": "9:00"},
        {"daily_at": "09:60"},
        {"daily_at": 900},
        {"idle_minutes": 0},
        {"idle_minutes": True},
        {"idle_minutes": 1.5},
        {"idle_minutes": 366 * 24 * 60 + 1},
        {"idle_minutes": 19301790245},  # found by fuzzing: overflowed to a 500
        {"hourly": 1},
    ],
)
def test_a_reset_policy_refuses_malformed_values(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        validate_reset_policy(bad)


def test_a_reset_policy_change_keeps_the_fields_it_does_not_name() -> None:
    session = new_session()
    session.set_reset_policy(timestamp=minutes(1), policy={"idle_minutes": 15})
    session.set_reset_policy(timestamp=minutes(2), policy={"daily_at": "04:00"})
    assert session.reset_policy == {"daily_at": "04:00", "idle_minutes": 15}
    assert kinds(session) == ["ResetPolicyChanged", "ResetPolicyChanged"]
    session.set_reset_policy(timestamp=minutes(3), policy={"idle_minutes": 15})
    assert kinds(session) == []


# --- acting


def test_nothing_is_done_before_the_first_deadline() -> None:
    session = new_session()
    assert (
        session.act_on_deadlines(timestamp=minutes(25) - timedelta(milliseconds=1))
        is None
    )
    assert kinds(session) == []


def test_the_warning_fires_at_the_threshold_once_per_deadline() -> None:
    session = new_session()
    assert session.act_on_deadlines(timestamp=minutes(25)) is None
    events = session.collect_events()
    assert [type(e).__name__ for e in events] == ["ExpiryWarned"]
    assert events[0].expires_at == minutes(30)
    assert session.act_on_deadlines(timestamp=minutes(29)) is None
    assert kinds(session) == []
    assert session.next_deadline() == (minutes(30), Due.EXPIRE)


def test_a_renewal_after_the_warning_re_arms_it_for_the_new_deadline() -> None:
    session = new_session()
    session.act_on_deadlines(timestamp=minutes(26))
    session.renew(timestamp=minutes(27))
    session.collect_events()
    assert session.next_deadline() == (minutes(52), Due.WARN)
    assert (
        session.act_on_deadlines(timestamp=minutes(30)) is None
    )  # old deadline passes
    assert kinds(session) == []
    session.act_on_deadlines(timestamp=minutes(52))
    events = session.collect_events()
    assert [type(e).__name__ for e in events] == ["ExpiryWarned"]
    assert events[0].expires_at == minutes(57)


def test_a_renewal_capped_at_the_same_deadline_does_not_warn_twice() -> None:
    session = new_session(timeout_minutes=60, max_duration_minutes=100)
    say(session, minutes(50))  # deadline capped at 100
    session.act_on_deadlines(timestamp=minutes(95))
    assert kinds(session) == ["MessageAppended", "ExpiryWarned"]
    with pytest.raises(RenewalRefusedError):  # the deadline already sits at its cap
        session.renew(timestamp=minutes(96))
    session.collect_events()
    assert session.expires_at == minutes(100)
    assert session.act_on_deadlines(timestamp=minutes(99)) is None
    assert kinds(session) == []


def test_passed_deadlines_are_handled_once_each_in_order() -> None:
    session = new_session()
    assert session.act_on_deadlines(timestamp=minutes(500)) is Due.EXPIRE
    events = session.collect_events()
    assert [type(e).__name__ for e in events] == ["ExpiryWarned", "Expired"]
    assert all(e.expires_at == minutes(30) for e in events)
    assert session.status == "expired"
    assert session.next_deadline() is None
    assert session.act_on_deadlines(timestamp=minutes(1000)) is None
    assert kinds(session) == []


def test_an_expired_session_refuses_every_write_with_its_deadline() -> None:
    session = new_session()
    session.act_on_deadlines(timestamp=minutes(31))
    for write in (
        lambda: say(session, minutes(32)),
        lambda: session.renew(timestamp=minutes(32)),
        lambda: session.heartbeat(timestamp=minutes(32)),
        lambda: session.set_reset_policy(
            timestamp=minutes(32), policy={"idle_minutes": 5}
        ),
        lambda: session.change_timeout(
            timestamp=minutes(32), limits=LIMITS, changes={"timeout_minutes": 60}
        ),
    ):
        with pytest.raises(SessionExpiredError) as raised:
            write()
        assert raised.value.code == "session_expired"
        assert raised.value.expires_at == minutes(30)
    session.end(timestamp=minutes(33))  # delete still works
    assert kinds(session)[-1] == "Ended"
    with pytest.raises(SessionEndedError):
        say(session, minutes(34))


def test_a_due_idle_reset_is_left_to_the_runtime_and_nothing_after_it_done() -> None:
    session = new_session(reset_policy={"daily_at": None, "idle_minutes": 10})
    say(session, minutes(5))
    session.collect_events()
    assert session.act_on_deadlines(timestamp=minutes(14)) is None
    # Idle at 15, warning at 30, expiry at 35: the reset comes first and stops.
    assert session.act_on_deadlines(timestamp=minutes(500)) is Due.IDLE_RESET
    assert kinds(session) == []
    assert session.status == "active"


def test_a_due_daily_reset_is_returned_at_its_time_of_day() -> None:
    session = new_session(reset_policy={"daily_at": "12:20", "idle_minutes": None})
    assert session.next_deadline() == (minutes(20), Due.DAILY_RESET)
    assert session.act_on_deadlines(timestamp=minutes(20)) is Due.DAILY_RESET


def test_a_reset_anchors_the_idle_period_at_the_last_activity() -> None:
    session = new_session(reset_policy={"daily_at": None, "idle_minutes": 10})
    say(session, minutes(9))
    session.heartbeat(timestamp=minutes(18))
    session.collect_events()
    assert session.next_deadline() == (minutes(28), Due.IDLE_RESET)


def test_opting_in_to_a_daily_reset_counts_from_the_change_not_from_creation() -> None:
    long_lived = {
        "timeout_minutes": 2880,
        "auto_renew": True,
        "max_duration_minutes": 5000,
        "warning_threshold_minutes": 0,
    }
    session = Session.open(
        session_id="s1",
        timestamp=T0,  # 12:00
        owner_id="alice",
        agent_id="echo",
        user_id="alice",
        timeout=long_lived,
    )
    session.set_reset_policy(timestamp=minutes(60), policy={"daily_at": "12:30"})
    # 12:30 today had passed when the user opted in at 13:00: tomorrow's counts.
    tomorrow = datetime(2026, 3, 2, 12, 30, tzinfo=UTC)
    assert session.next_deadline() == (tomorrow, Due.DAILY_RESET)
    assert (
        session.act_on_deadlines(timestamp=tomorrow - timedelta(milliseconds=1)) is None
    )
    assert session.act_on_deadlines(timestamp=tomorrow) is Due.DAILY_RESET
    # A successor opened with the policy counts from its opening.
    successor = Session.open(
        session_id="s2",
        timestamp=tomorrow,
        owner_id="alice",
        agent_id="echo",
        user_id="alice",
        timeout=long_lived,
        reset_policy={"daily_at": "12:30", "idle_minutes": None},
    )
    assert successor.next_deadline() == (tomorrow + timedelta(days=1), Due.DAILY_RESET)
