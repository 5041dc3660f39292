"""A message for a session that was reset goes to the session carrying on its
conversation, however many resets ago it was addressed (a daily reset makes a
chain a day long; a client may hold the first id for months). Before, a message
followed at most four resets and then failed with 503 ``unavailable``."""

from __future__ import annotations

from runtime import Principal, Runtime

ALICE = Principal("alice")


def test_a_message_to_a_session_reset_many_times_lands_in_the_live_one(
    runtime: Runtime,
) -> None:
    first, _ = runtime.open(principal=ALICE, scope="main")
    live = first
    for _ in range(40):
        live = runtime.reset(live["id"], principal=ALICE)

    message = runtime.append(first["id"], "still talking", principal=ALICE)

    assert message["session_id"] == live["id"]
    assert runtime.get(live["id"], principal=ALICE)["message_count"] == 1


def test_a_chain_of_resets_without_a_scope_is_followed_hop_by_hop(
    runtime: Runtime,
) -> None:
    first = runtime.create(principal=ALICE)
    assert first["scope_key"] is None
    live = first
    for _ in range(10):
        live = runtime.reset(live["id"], principal=ALICE)

    message = runtime.append(first["id"], "hello", principal=ALICE)

    assert message["session_id"] == live["id"]
    reply = runtime.send(first["id"], "and a turn", principal=ALICE)
    assert reply["reply"]["session_id"] == live["id"]
