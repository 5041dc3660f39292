"""The pure rules of the domain: timeout policies, scope keys, deep merge, ids and
names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aggregates import (
    InvalidRequestError,
    Scope,
    TimeoutLimits,
    TimeoutPolicy,
    deep_merge,
    name_key,
    normalize_name,
    scope_key,
    validate_session_id,
)
from aggregates.values import deadline, max_end

LIMITS = TimeoutLimits(
    default_timeout_minutes=30,
    min_timeout_minutes=5,
    max_timeout_minutes=1440,
    max_duration_minutes=720,
    warning_threshold_minutes=5,
)

# --- TimeoutPolicy.resolve


def test_a_policy_with_no_layers_is_the_global_default() -> None:
    policy = TimeoutPolicy.resolve(LIMITS)
    assert policy.as_dict() == {
        "timeout_minutes": 30,
        "auto_renew": True,
        "max_duration_minutes": 720,
        "warning_threshold_minutes": 5,
    }


def test_policy_layers_apply_global_then_agent_then_session() -> None:
    agent = {
        "timeout_minutes": 60,
        "auto_renew": False,
        "warning_threshold_minutes": 10,
    }
    session = {"timeout_minutes": 90}
    policy = TimeoutPolicy.resolve(LIMITS, agent, session)
    assert policy.timeout_minutes == 90  # the session wins
    assert policy.auto_renew is False  # the agent wins over the global default
    assert policy.warning_threshold_minutes == 10
    assert policy.max_duration_minutes == 720  # the global default remains


def test_null_and_missing_layers_and_null_values_change_nothing() -> None:
    policy = TimeoutPolicy.resolve(
        LIMITS, None, {"timeout_minutes": None}, {"unknown": 3}, {}
    )
    assert policy == TimeoutPolicy.resolve(LIMITS)


@pytest.mark.parametrize(
    ("asked", "expected"),
    [(1, 5), (5, 5), (6, 6), (1440, 1440), (5000, 1440), (-3, 5)],
)
def test_the_timeout_is_clamped_into_the_limits(asked: int, expected: int) -> None:
    policy = TimeoutPolicy.resolve(LIMITS, {"timeout_minutes": asked})
    assert policy.timeout_minutes == expected


def test_the_maximum_duration_is_clamped_between_the_timeout_and_the_global_cap() -> (
    None
):
    assert (
        TimeoutPolicy.resolve(
            LIMITS, {"max_duration_minutes": 9999}
        ).max_duration_minutes
        == 720
    )
    short = TimeoutPolicy.resolve(
        LIMITS, {"timeout_minutes": 120, "max_duration_minutes": 10}
    )
    assert short.max_duration_minutes == 120
    # The global cap wins even over a long timeout.
    long = TimeoutPolicy.resolve(LIMITS, {"timeout_minutes": 1440})
    assert long.max_duration_minutes == 720


def test_the_warning_threshold_is_clamped_between_zero_and_the_timeout() -> None:
    assert (
        TimeoutPolicy.resolve(
            LIMITS, {"warning_threshold_minutes": -1}
        ).warning_threshold_minutes
        == 0
    )
    policy = TimeoutPolicy.resolve(
        LIMITS, {"timeout_minutes": 10, "warning_threshold_minutes": 50}
    )
    assert policy.warning_threshold_minutes == 10


@pytest.mark.parametrize(
    "layer",
    [
        {"timeout_minutes": "30"},
        {"timeout_minutes": 1.5},
        {"timeout_minutes": True},
        {"max_duration_minutes": "x"},
        {"warning_threshold_minutes": "5"},
        {"warning_threshold_minutes": False},
        {"auto_renew": "yes"},
        {"auto_renew": 1},
    ],
)
def test_a_policy_with_wrongly_typed_values_is_an_invalid_request(
    layer: dict[str, Any],
) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        TimeoutPolicy.resolve(LIMITS, layer)
    assert raised.value.code == "invalid_request"


def test_changing_a_policy_refuses_out_of_range_values_instead_of_clamping() -> None:
    current = TimeoutPolicy.resolve(LIMITS).as_dict()
    changed = TimeoutPolicy.changed(
        LIMITS, current, {"timeout_minutes": 60, "auto_renew": None}
    )
    assert changed.timeout_minutes == 60
    assert changed.auto_renew is True
    for changes in (
        {"timeout_minutes": 4},
        {"timeout_minutes": 1441},
        {"max_duration_minutes": 10},
        {"warning_threshold_minutes": 31},
        {"auto_renew": "no"},
        {"timeout_minutes": "60"},
        {"nonsense": 1},
    ):
        with pytest.raises(InvalidRequestError):
            TimeoutPolicy.changed(LIMITS, current, changes)


def test_deadlines_follow_the_anchor_only_when_auto_renewing_and_never_pass_cap() -> (
    None
):
    created = datetime(2026, 1, 1, tzinfo=UTC)
    anchor = created + timedelta(minutes=100)
    renewing = {"timeout_minutes": 30, "auto_renew": True, "max_duration_minutes": 120}
    fixed = {**renewing, "auto_renew": False}
    assert deadline(renewing, created, anchor) == created + timedelta(minutes=120)
    assert deadline(
        renewing, created, created + timedelta(minutes=10)
    ) == created + timedelta(minutes=40)
    assert deadline(fixed, created, anchor) == created + timedelta(minutes=30)
    assert max_end(renewing, created) == created + timedelta(minutes=120)


# --- scope_key


def key(scope: Scope, **fields: Any) -> str:
    fields.setdefault("owner_id", "tenant")
    fields.setdefault("agent_id", "echo")
    fields.setdefault("user_id", "alice")
    fields.setdefault("channel_id", None)
    fields.setdefault("peer_id", None)
    return scope_key(scope, **fields)


def test_main_scope_shares_one_session_across_users_and_channels() -> None:
    assert key(Scope.MAIN) == "tenant/agent:echo:dm:main"
    assert key(Scope.MAIN, user_id="bob", channel_id="slack") == key(Scope.MAIN)


def test_per_peer_scope_gives_each_user_one_session_across_channels() -> None:
    assert key(Scope.PER_PEER) == "tenant/agent:echo:dm:peer:alice"
    assert key(Scope.PER_PEER, channel_id="slack") == key(
        Scope.PER_PEER, channel_id="discord"
    )
    assert key(Scope.PER_PEER, user_id="bob") != key(Scope.PER_PEER)


def test_per_channel_peer_scope_gives_each_user_one_session_per_channel() -> None:
    assert key(Scope.PER_CHANNEL_PEER) == "tenant/agent:echo:default:dm:alice:alice"
    assert key(Scope.PER_CHANNEL_PEER, channel_id="slack", peer_id="p1") == (
        "tenant/agent:echo:slack:dm:p1:alice"
    )
    assert key(Scope.PER_CHANNEL_PEER, channel_id="slack") != key(
        Scope.PER_CHANNEL_PEER, channel_id="discord"
    )
    assert key(Scope.PER_CHANNEL_PEER, user_id="bob") != key(Scope.PER_CHANNEL_PEER)


@pytest.mark.parametrize("scope", list(Scope))
def test_group_chats_are_isolated_per_chat_whatever_the_scope(scope: Scope) -> None:
    first = key(scope, group=True, channel_id="slack", peer_id="room-1")
    assert first == "tenant/agent:echo:slack:group:room-1"
    assert key(scope, group=True, channel_id="slack", peer_id="room-2") != first
    # Every member of the chat shares its session.
    assert (
        key(scope, group=True, channel_id="slack", peer_id="room-1", user_id="bob")
        == first
    )
    # A group never shares a direct-message session.
    assert first not in {key(s, channel_id="slack", peer_id="room-1") for s in Scope}


def test_a_group_session_needs_the_chat_id() -> None:
    with pytest.raises(InvalidRequestError):
        key(Scope.MAIN, group=True)


@pytest.mark.parametrize("scope", list(Scope))
def test_scope_keys_are_namespaced_by_owner_and_agent(scope: Scope) -> None:
    mine = key(scope, channel_id="c", peer_id="p")
    assert key(scope, owner_id="other", channel_id="c", peer_id="p") != mine
    assert key(scope, agent_id="other", channel_id="c", peer_id="p") != mine
    assert mine.startswith("tenant/agent:echo:")


# --- deep_merge


def test_deep_merge_merges_nested_objects_and_null_deletes() -> None:
    base = {"a": {"x": 1, "y": {"deep": 1, "keep": 2}}, "b": 2, "c": [1]}
    patch = {"a": {"y": {"deep": None, "new": 3}}, "b": None, "c": [2], "d": "added"}
    assert deep_merge(base, patch) == {
        "a": {"x": 1, "y": {"keep": 2, "new": 3}},
        "c": [2],
        "d": "added",
    }


def test_deep_merge_leaves_its_inputs_unchanged() -> None:
    base = {"a": {"x": 1}}
    patch = {"a": {"y": 2}}
    deep_merge(base, patch)
    assert base == {"a": {"x": 1}}
    assert patch == {"a": {"y": 2}}


def test_deep_merge_replaces_a_non_object_with_an_object_and_back() -> None:
    assert deep_merge({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}
    assert deep_merge({"a": {"b": 2}}, {"a": 1}) == {"a": 1}


def test_deep_merge_deleting_a_missing_key_is_harmless() -> None:
    assert deep_merge({"a": 1}, {"zzz": None}) == {"a": 1}


def test_deep_merge_never_stores_a_null_from_a_new_nested_object() -> None:
    # RFC 7396: a null inside a patch object always means "remove", also where
    # the target had no object to merge into.
    assert deep_merge({}, {"a": {"b": None, "c": 1}}) == {"a": {"c": 1}}
    assert deep_merge({"a": 5}, {"a": {"b": {"c": None}}}) == {"a": {"b": {}}}


# --- ids and names


@pytest.mark.parametrize("session_id", ["a", "A-b_9", "x" * 128, "0123456789abcdef"])
def test_valid_session_ids_pass(session_id: str) -> None:
    assert validate_session_id(session_id) == session_id


@pytest.mark.parametrize(
    "session_id",
    ["", "x" * 129, "has space", "slash/", "dot.", "ünï", "abc\n", "\nabc", None, 42],
)
def test_invalid_session_ids_are_refused(session_id: Any) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        validate_session_id(session_id)
    assert raised.value.code == "invalid_request"


def test_names_are_trimmed_and_blank_or_null_names_clear() -> None:
    assert normalize_name("  Trip plans ") == "Trip plans"
    assert normalize_name("   ") is None
    assert normalize_name("") is None
    assert normalize_name(None) is None
    assert normalize_name("x" * 200) == "x" * 200
    assert normalize_name(" " + "x" * 200 + " ") == "x" * 200


@pytest.mark.parametrize("name", ["x" * 201, 5, ["n"]])
def test_overlong_or_non_text_names_are_refused(name: Any) -> None:
    with pytest.raises(InvalidRequestError):
        normalize_name(name)


def test_name_keys_are_case_insensitive() -> None:
    assert name_key("Trip") == name_key("TRIP") == name_key("trip")
    assert name_key("Straße") == name_key("STRASSE")
    assert name_key(None) is None
