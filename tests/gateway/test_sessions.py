"""Sessions over real HTTP: create, list, read, update, end, lifecycle."""

from __future__ import annotations

import uuid

import httpx

from tests.gateway.helpers import new_session


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) >= {"type", "title", "status", "code", "detail"}
    assert body["status"] == response.status_code
    return str(body["code"])


def test_create_answers_201_with_the_session_its_location_and_etag(
    client: httpx.Client,
) -> None:
    response = client.post(
        "/v1/sessions",
        json={"agent_id": "echo", "name": "Trip", "metadata": {"topic": "travel"}},
    )
    assert response.status_code == 201
    session = response.json()
    assert session["agent_id"] == "echo"
    assert session["name"] == "Trip"
    assert session["metadata"] == {"topic": "travel"}
    assert session["status"] == "active"
    assert session["offset"] == 1
    assert response.headers["location"] == f"/v1/sessions/{session['id']}"
    assert response.headers["etag"] == '"1"'


def test_create_with_a_scope_is_get_or_create_and_answers_200_the_second_time(
    client: httpx.Client,
) -> None:
    user = uuid.uuid4().hex
    body = {"agent_id": "echo", "scope": "per-peer", "user_id": user}
    first = client.post("/v1/sessions", json=body)
    second = client.post("/v1/sessions", json=body)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]


def test_a_caller_chosen_session_id_is_idempotent(client: httpx.Client) -> None:
    sid = "chosen_" + uuid.uuid4().hex[:12]
    first = client.post("/v1/sessions", json={"agent_id": "echo", "session_id": sid})
    again = client.post("/v1/sessions", json={"agent_id": "echo", "session_id": sid})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] == sid
    bad = client.post(
        "/v1/sessions", json={"agent_id": "echo", "session_id": "no spaces"}
    )
    assert bad.status_code == 400


def test_create_refuses_unknown_fields_a_missing_agent_and_an_unknown_agent(
    client: httpx.Client,
) -> None:
    before = client.get("/v1/sessions").json()["total"]
    unknown = client.post("/v1/sessions", json={"agent_id": "echo", "owner_id": "root"})
    assert unknown.status_code == 400
    assert problem_code(unknown) == "invalid_request"
    assert "owner_id" not in unknown.text
    missing = client.post("/v1/sessions", json={"name": "x"})
    assert (missing.status_code, problem_code(missing)) == (400, "invalid_request")
    agent = client.post("/v1/sessions", json={"agent_id": "no-such-agent"})
    assert (agent.status_code, problem_code(agent)) == (400, "agent_not_found")
    wrong_type = client.post("/v1/sessions", json={"agent_id": "echo", "metadata": [1]})
    assert wrong_type.status_code == 400
    assert client.get("/v1/sessions").json()["total"] == before


def test_get_answers_the_session_and_404_for_an_unknown_id(
    client: httpx.Client,
) -> None:
    session = new_session(client)
    found = client.get(f"/v1/sessions/{session['id']}")
    assert found.status_code == 200
    assert found.json()["id"] == session["id"]
    missing = client.get("/v1/sessions/does-not-exist")
    assert (missing.status_code, problem_code(missing)) == (404, "not_found")


def test_list_filters_pages_with_a_cursor_and_counts(client: httpx.Client) -> None:
    user = "lister-" + uuid.uuid4().hex[:8]
    made = [
        new_session(client, user_id=user, name=f"{user} {i}")["id"] for i in range(5)
    ]
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, str | int] = {"user_id": user, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/sessions", params=params).json()
        assert page["total"] == 5
        seen += [s["id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made)
    assert len(seen) == len(set(seen))
    pinned = made[0]
    client.patch(f"/v1/sessions/{pinned}", json={"pinned": True})
    only = client.get("/v1/sessions", params={"user_id": user, "pinned": "true"}).json()
    assert [s["id"] for s in only["sessions"]] == [pinned]
    named = client.get(
        "/v1/sessions", params={"user_id": user, "q": f"{user} 3"}
    ).json()
    assert [s["id"] for s in named["sessions"]] == [made[3]]
    assert client.get("/v1/sessions", params={"status": "nope"}).status_code == 400
    assert client.get("/v1/sessions", params={"limit": 0}).status_code == 400
    assert client.get("/v1/sessions", params={"cursor": "!!"}).status_code == 400
    assert client.get("/v1/sessions", params={"colour": "red"}).status_code == 400


def test_patch_renames_pins_merges_attributes_and_clears_the_name_with_null(
    client: httpx.Client,
) -> None:
    session = new_session(client, name="before", attributes={"a": {"x": 1}, "b": 2})
    sid = session["id"]
    response = client.patch(
        f"/v1/sessions/{sid}",
        json={
            "name": "after",
            "pinned": True,
            "attributes": {"a": {"y": 2}, "b": None},
        },
    )
    assert response.status_code == 200
    patched = response.json()
    assert patched["name"] == "after"
    assert patched["pinned_at"] is not None
    assert patched["attributes"] == {"a": {"x": 1, "y": 2}}
    cleared = client.patch(f"/v1/sessions/{sid}", json={"name": None}).json()
    assert cleared["name"] is None
    assert (
        client.patch(f"/v1/sessions/{sid}", json={"pinned": "yes"}).status_code == 400
    )


def test_a_name_taken_by_another_session_of_the_user_is_a_409(
    client: httpx.Client,
) -> None:
    user = "namer-" + uuid.uuid4().hex[:8]
    new_session(client, user_id=user, name="Same")
    other = new_session(client, user_id=user)
    response = client.patch(f"/v1/sessions/{other['id']}", json={"name": "same"})
    assert (response.status_code, problem_code(response)) == (409, "name_taken")


def test_delete_ends_the_session_and_later_writes_answer_session_ended(
    client: httpx.Client,
) -> None:
    sid = new_session(client)["id"]
    ended = client.delete(f"/v1/sessions/{sid}")
    assert ended.status_code == 200
    assert ended.json()["status"] == "ended"
    assert client.get(f"/v1/sessions/{sid}").json()["status"] == "ended"
    write = client.post(f"/v1/sessions/{sid}/messages", json={"content": "late"})
    assert (write.status_code, problem_code(write)) == (409, "session_ended")


def test_if_match_on_a_session_write_answers_409_with_the_current_offset(
    client: httpx.Client,
) -> None:
    sid = new_session(client)["id"]
    stale = client.patch(
        f"/v1/sessions/{sid}", json={"name": "x"}, headers={"If-Match": '"7"'}
    )
    assert (stale.status_code, problem_code(stale)) == (409, "conflict")
    assert stale.json()["current_offset"] == 1
    fresh = client.patch(
        f"/v1/sessions/{sid}", json={"name": "x"}, headers={"If-Match": "1"}
    )
    assert fresh.status_code == 200
    garbage = client.patch(
        f"/v1/sessions/{sid}", json={"name": "y"}, headers={"If-Match": "*x"}
    )
    assert garbage.status_code == 400


def test_heartbeat_and_renew_answer_the_session(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    beat = client.post(f"/v1/sessions/{sid}/heartbeat")
    assert beat.status_code == 200
    assert beat.json()["id"] == sid
    renewed = client.post(f"/v1/sessions/{sid}/renew")
    assert renewed.status_code == 200
    assert renewed.json()["renewal_count"] >= 1
    assert (
        client.post(f"/v1/sessions/{sid}/renew", json={"extra": 1}).status_code == 400
    )


def test_patch_timeout_changes_only_the_named_fields_and_refuses_out_of_range(
    client: httpx.Client,
) -> None:
    session = new_session(client)
    sid = session["id"]
    changed = client.patch(f"/v1/sessions/{sid}/timeout", json={"timeout_minutes": 60})
    assert changed.status_code == 200
    timeout = changed.json()["timeout"]
    assert timeout["timeout_minutes"] == 60
    assert timeout["auto_renew"] == session["timeout"]["auto_renew"]
    offset = changed.json()["offset"]
    for bad in (
        {"timeout_minutes": 1},
        {"timeout_minutes": 10**6},
        {"auto_renew": "yes"},
    ):
        response = client.patch(f"/v1/sessions/{sid}/timeout", json=bad)
        assert (response.status_code, problem_code(response)) == (
            400,
            "invalid_request",
        )
    assert client.get(f"/v1/sessions/{sid}").json()["offset"] == offset


def test_idempotency_key_replays_a_non_message_write(client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "create-" + uuid.uuid4().hex}
    first = client.post("/v1/sessions", json={"agent_id": "echo"}, headers=headers)
    again = client.post("/v1/sessions", json={"agent_id": "echo"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other_body = client.post(
        "/v1/sessions", json={"agent_id": "echo", "name": "n"}, headers=headers
    )
    assert (other_body.status_code, problem_code(other_body)) == (
        422,
        "idempotency_key_reused",
    )
    sid = first.json()["id"]
    key = {"Idempotency-Key": "cp-" + uuid.uuid4().hex}
    one = client.post(
        f"/v1/sessions/{sid}/checkpoints", json={"name": "a"}, headers=key
    )
    two = client.post(
        f"/v1/sessions/{sid}/checkpoints", json={"name": "a"}, headers=key
    )
    assert one.json() == two.json()
    assert len(client.get(f"/v1/sessions/{sid}/checkpoints").json()["checkpoints"]) == 1
