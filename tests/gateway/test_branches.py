"""Checkpoints, rewinds, forks, branches, state at an offset, clear and reset
over real HTTP."""

from __future__ import annotations

import httpx

from tests.gateway.helpers import new_session


def visible(client: httpx.Client, sid: str) -> list[str]:
    page = client.get(f"/v1/sessions/{sid}/messages", params={"order": "asc"}).json()
    return [m["content"] for m in page["messages"]]


def test_checkpoints_are_saved_listed_restored_and_deleted(
    client: httpx.Client,
) -> None:
    sid = new_session(client)["id"]
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "first"})
    saved = client.post(
        f"/v1/sessions/{sid}/checkpoints",
        json={"name": "after first", "description": "d"},
    )
    assert saved.status_code == 201
    checkpoint = saved.json()
    assert checkpoint["name"] == "after first"
    assert checkpoint["offset"] == 4  # message, reply, turn_ended, checkpoint
    assert checkpoint["message_count"] == 2
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "second"})
    listed = client.get(f"/v1/sessions/{sid}/checkpoints").json()["checkpoints"]
    assert [c["id"] for c in listed] == [checkpoint["id"]]

    restored = client.post(f"/v1/sessions/{sid}/checkpoints/{checkpoint['id']}/restore")
    assert restored.status_code == 200
    assert restored.json()["message_count"] == 2
    assert visible(client, sid) == ["first", "first"]
    log = client.get(f"/v1/sessions/{sid}/events", params={"limit": 100}).json()[
        "events"
    ]
    contents = [
        e["data"].get("content") for e in log if e["type"] == "message_appended"
    ]
    assert contents == ["first", "first", "second", "second"]

    deleted = client.delete(f"/v1/sessions/{sid}/checkpoints/{checkpoint['id']}")
    assert deleted.status_code == 204
    assert client.get(f"/v1/sessions/{sid}/checkpoints").json()["checkpoints"] == []
    missing = client.post(f"/v1/sessions/{sid}/checkpoints/{checkpoint['id']}/restore")
    assert missing.status_code == 404
    assert missing.json()["code"] == "checkpoint_not_found"
    assert client.post(f"/v1/sessions/{sid}/checkpoints", json={}).status_code == 400


def test_rewind_moves_the_head_to_any_offset(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "a"})
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "b"})
    rewound = client.post(f"/v1/sessions/{sid}/rewind", json={"offset": 3})
    assert rewound.status_code == 200
    assert visible(client, sid) == ["a", "a"]
    for bad in ({}, {"offset": "3"}, {"offset": 99}):
        response = client.post(f"/v1/sessions/{sid}/rewind", json=bad)
        assert response.status_code == 400, bad
    huge = client.post(f"/v1/sessions/{sid}/rewind", json={"offset": 2**60})
    assert huge.json()["code"] == "integer_out_of_range"


def test_fork_answers_201_with_the_parent_and_branches_lists_it(
    client: httpx.Client,
) -> None:
    sid = new_session(client)["id"]
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "shared"})
    fork = client.post(f"/v1/sessions/{sid}/fork")
    assert fork.status_code == 201
    child = fork.json()
    assert child["parent"] == {"session_id": sid, "offset": 4}
    client.post(
        f"/v1/sessions/{child['id']}/messages", json={"content": "only in the fork"}
    )
    assert visible(client, child["id"]) == [
        "shared",
        "shared",
        "only in the fork",
        "only in the fork",
    ]
    assert visible(client, sid) == ["shared", "shared"]
    early = client.post(f"/v1/sessions/{sid}/fork", json={"offset": 1})
    assert early.status_code == 201
    assert early.json()["message_count"] == 0
    branches = client.get(f"/v1/sessions/{sid}/branches").json()
    assert branches["session_id"] == sid
    assert branches["parent"] is None
    assert {f["session_id"] for f in branches["forks"]} == {
        child["id"],
        early.json()["id"],
    }
    client.post(f"/v1/sessions/{sid}/rewind", json={"offset": 1})
    restores = client.get(f"/v1/sessions/{sid}/branches").json()["restores"]
    assert [r["to_offset"] for r in restores] == [1]


def test_state_at_an_offset_is_the_session_as_it_was(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "x"})
    then = client.get(f"/v1/sessions/{sid}/state", params={"offset": 2}).json()
    assert then["offset"] == 2
    assert then["message_count"] == 1
    now = client.get(f"/v1/sessions/{sid}/state").json()
    assert now["offset"] == 4  # the reply and turn_ended after the message
    assert (
        client.get(f"/v1/sessions/{sid}/state", params={"offset": 9}).status_code == 400
    )


def test_clear_empties_the_visible_history_and_keeps_the_session(
    client: httpx.Client,
) -> None:
    sid = new_session(client)["id"]
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "x"})
    cleared = client.post(f"/v1/sessions/{sid}/clear")
    assert cleared.status_code == 200
    assert cleared.json()["message_count"] == 0
    assert cleared.json()["status"] == "active"
    assert visible(client, sid) == []


def test_reset_ends_the_session_and_answers_the_fresh_one(client: httpx.Client) -> None:
    sid = new_session(client, scope="main", user_id="resetter")["id"]
    response = client.post(f"/v1/sessions/{sid}/reset")
    assert response.status_code == 200
    fresh = response.json()
    assert fresh["id"] != sid
    assert fresh["status"] == "active"
    assert client.get(f"/v1/sessions/{sid}").json()["status"] == "ended"
    again = client.post(
        "/v1/sessions",
        json={"agent_id": "echo", "scope": "main", "user_id": "resetter"},
    )
    assert again.json()["id"] == fresh["id"]
