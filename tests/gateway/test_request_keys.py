"""``Idempotency-Key`` on writes other than messages holds across processes and
restarts: the key and the first response live in the database."""

from __future__ import annotations

import uuid

import httpx

from tests.gateway.conftest import ServerFactory

CREATE = {"agent_id": "echo", "name": "keyed"}


def key() -> dict[str, str]:
    return {"Idempotency-Key": "k-" + uuid.uuid4().hex}


def named_sessions(client: httpx.Client) -> list[str]:
    sessions = client.get("/v1/sessions", params={"limit": 100}).json()["sessions"]
    return [s["id"] for s in sessions if s["name"] == "keyed"]


def test_a_retry_on_another_server_replays_the_first_response(
    server_factory: ServerFactory,
) -> None:
    a, b = server_factory(name="a"), server_factory(name="b")
    headers = key()
    with (
        httpx.Client(base_url=a.url, timeout=20.0) as on_a,
        httpx.Client(base_url=b.url, timeout=20.0) as on_b,
    ):
        first = on_a.post("/v1/sessions", json=CREATE, headers=headers)
        again = on_b.post("/v1/sessions", json=CREATE, headers=headers)
        other = on_b.post("/v1/sessions", json={"agent_id": "echo"}, headers=headers)

        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["location"] == first.headers["location"]
        assert "idempotent-replayed" not in first.headers
        assert (other.status_code, other.json()["code"]) == (
            422,
            "idempotency_key_reused",
        )
        assert named_sessions(on_b) == [first.json()["id"]]


def test_a_retry_after_a_restart_replays_the_first_response(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(name="before")
    headers = key()
    with httpx.Client(base_url=server.url, timeout=20.0) as http:
        sid = http.post("/v1/sessions", json={"agent_id": "echo"}).json()["id"]
        saved = http.post(
            f"/v1/sessions/{sid}/checkpoints", json={"name": "cp"}, headers=headers
        )
        assert saved.status_code == 201
    server.stop()

    restarted = server_factory(name="after")
    with httpx.Client(base_url=restarted.url, timeout=20.0) as http:
        again = http.post(
            f"/v1/sessions/{sid}/checkpoints", json={"name": "cp"}, headers=headers
        )
        assert again.status_code == 201
        assert again.json() == saved.json()
        assert again.headers["idempotent-replayed"] == "true"
        checkpoints = http.get(f"/v1/sessions/{sid}/checkpoints").json()
        assert len(checkpoints["checkpoints"]) == 1


def test_a_failed_keyed_write_runs_again_on_retry(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    headers = key()
    rename = {"name": "taken"}
    with httpx.Client(base_url=server.url, timeout=20.0) as http:
        holder = http.post("/v1/sessions", json={"agent_id": "echo", **rename})
        sid = http.post("/v1/sessions", json={"agent_id": "echo"}).json()["id"]
        refused = http.patch(f"/v1/sessions/{sid}", json=rename, headers=headers)
        assert (refused.status_code, refused.json()["code"]) == (409, "name_taken")

        http.patch(f"/v1/sessions/{holder.json()['id']}", json={"name": "other"})
        retried = http.patch(f"/v1/sessions/{sid}", json=rename, headers=headers)

        assert retried.status_code == 200
        assert retried.json()["name"] == "taken"
        assert "idempotent-replayed" not in retried.headers
