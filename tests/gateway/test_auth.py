"""API keys and ownership (T19, B.2 API1/API2) on a real server with keys for
alice, bob and an admin."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.routing import Route, WebSocketRoute
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from gateway.app import create_app
from gateway.auth import Authenticator
from runtime.settings import parse_api_keys
from tests.gateway.helpers import (
    ADMIN_KEY,
    ALICE_KEY,
    BOB_KEY,
    TestClient,
    keyed_client,
    new_session,
)
from tests.support.server import ServerProcess

# A valid body for every route that takes one, so only ownership can refuse it.
SAMPLE_BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/sessions/{id}"): {"name": "bob was here"},
    ("POST", "/v1/sessions/{id}/messages"): {"content": "hello from bob"},
    ("POST", "/v1/sessions/{id}/checkpoints"): {"name": "bob's"},
    ("POST", "/v1/sessions/{id}/rewind"): {"offset": 1},
    ("POST", "/v1/sessions/{id}/fork"): {"offset": 1},
    ("PATCH", "/v1/sessions/{id}/timeout"): {"timeout_minutes": 60},
    ("PUT", "/v1/sessions/{id}/webhook"): {"url": "http://127.0.0.1:9/bob"},
    ("PATCH", "/v1/sessions/{id}/reset-policy"): {"idle_minutes": 5},
}
# More ways to call some routes: streams, resumption, background sends.
VARIANTS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("GET", "/v1/sessions/{id}/events"): [
        {"headers": {"Accept": "text/event-stream"}},
        {"headers": {"Accept": "text/event-stream", "Last-Event-ID": "1"}},
        {"params": {"after": 1}},
    ],
    ("POST", "/v1/sessions/{id}/messages"): [
        {"headers": {"Accept": "text/event-stream"}},
        {"params": {"wait": "false"}},
    ],
    ("GET", "/v1/sessions/{id}/state"): [{"params": {"offset": 1}}],
    ("GET", "/v1/sessions/{id}/export"): [{"params": {"format": "markdown"}}],
    ("DELETE", "/v1/sessions/{id}"): [{"params": {"purge": "true"}}],
}


@pytest.fixture(scope="module")
def clients(auth_server: ServerProcess) -> Iterator[dict[str, httpx.Client]]:
    made = {
        name: keyed_client(auth_server, key)
        for name, key in (
            ("alice", ALICE_KEY),
            ("bob", BOB_KEY),
            ("admin", ADMIN_KEY),
            ("anonymous", None),
        )
    }
    yield made
    for http in made.values():
        http.close()


def ws_url(server: ServerProcess, sid: str) -> str:
    return f"ws://127.0.0.1:{server.port}/v1/sessions/{sid}/ws"


def ws_refusal(
    server: ServerProcess, sid: str, key: str | None, **headers: str
) -> tuple[int, bytes]:
    all_headers = {**headers}
    if key:
        all_headers["Authorization"] = f"Bearer {key}"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server, sid), additional_headers=all_headers, open_timeout=10)
    return refused.value.response.status_code, bytes(refused.value.response.body or b"")


MISSING = "no-such-session"


def same_answer(found: httpx.Response, unknown: httpx.Response, sid: str) -> bool:
    """Whether two 404s say the same, but for the session id they name and the
    time they were given at."""

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items() if k != "timestamp"}
        if isinstance(value, str):
            return value.replace(sid, "<id>").replace(MISSING, "<id>")
        return value

    return bool(scrub(found.json()) == scrub(unknown.json()))


def test_every_route_answers_404_to_another_principal_and_changes_nothing(
    auth_server: ServerProcess, clients: dict[str, httpx.Client]
) -> None:
    alice, bob = clients["alice"], clients["bob"]
    sid = new_session(alice, name="alice's secret")["id"]
    alice.post(f"/v1/sessions/{sid}/messages", json={"content": "private"})
    checkpoint = alice.post(
        f"/v1/sessions/{sid}/checkpoints", json={"name": "cp"}
    ).json()
    alice_before = alice.get(f"/v1/sessions/{sid}").json()
    reference = bob.get(f"/v1/sessions/{MISSING}")
    assert reference.status_code == 404
    expected = reference.json()

    walked = 0
    for route in create_app().routes:
        path = getattr(route, "path", "")
        if "{id}" not in path:
            continue
        concrete = (
            path.replace("{id}", sid)
            .replace("{cid}", checkpoint["id"])
            .replace("{offset}", "1")
        )
        if isinstance(route, WebSocketRoute):
            status, body = ws_refusal(auth_server, sid, BOB_KEY)
            assert status == 404
            assert httpx.Response(404, content=body).json() == expected
            walked += 1
            continue
        assert isinstance(route, Route)
        for method in sorted(route.methods or ()):
            template = (method, path)
            for variant in [{}, *VARIANTS.get(template, [])]:
                headers = {
                    "Idempotency-Key": uuid.uuid4().hex,
                    "If-Match": str(alice_before["offset"]),
                }
                headers.update(variant.get("headers", {}))
                response = bob.request(
                    method,
                    concrete,
                    json=SAMPLE_BODIES.get(template),
                    params=variant.get("params"),
                    headers=headers,
                )
                # Not an existence oracle: the answer is exactly the one this
                # route gives for a session that does not exist (dialects have
                # their own error bodies), and never a success.
                unknown = bob.request(
                    method,
                    path.replace("{id}", MISSING)
                    .replace("{cid}", checkpoint["id"])
                    .replace("{offset}", "1"),
                    json=SAMPLE_BODIES.get(template),
                    params=variant.get("params"),
                    headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                )
                assert response.status_code == unknown.status_code, (
                    method,
                    path,
                    variant,
                    response.text,
                )
                assert not 200 <= response.status_code < 300, (method, path)
                if method != "HEAD":
                    assert same_answer(response, unknown, sid), (method, path, variant)
                if path.startswith("/v1/"):
                    assert response.status_code == 404, (method, path, variant)
                    if method != "HEAD":
                        assert response.json() == expected, (method, path, variant)
                walked += 1
    assert walked >= 30

    after = alice.get(f"/v1/sessions/{sid}").json()
    assert after["offset"] == alice_before["offset"]
    assert after["name"] == "alice's secret"
    assert after["status"] == "active"


def test_lists_show_only_the_callers_sessions_and_the_admin_sees_all(
    clients: dict[str, httpx.Client],
) -> None:
    alice, bob, admin = clients["alice"], clients["bob"], clients["admin"]
    alice_sid = new_session(alice)["id"]
    bob_sid = new_session(bob)["id"]
    for params in ({}, {"user_id": "alice"}, {"status": "active"}, {"limit": 1000}):
        ids = [
            s["id"] for s in bob.get("/v1/sessions", params=params).json()["sessions"]
        ]
        assert alice_sid not in ids
    assert bob_sid in [
        s["id"]
        for s in bob.get("/v1/sessions", params={"limit": 1000}).json()["sessions"]
    ]
    every = [
        s["id"]
        for s in admin.get("/v1/sessions", params={"limit": 1000}).json()["sessions"]
    ]
    assert {alice_sid, bob_sid} <= set(every)
    assert admin.get(f"/v1/sessions/{alice_sid}").status_code == 200
    assert alice.get(f"/v1/sessions/{alice_sid}").json()["user_id"] == "alice"


def test_a_fork_of_alices_session_by_the_admin_is_not_listed_to_alice_as_hers(
    clients: dict[str, httpx.Client],
) -> None:
    alice, admin = clients["alice"], clients["admin"]
    sid = new_session(alice)["id"]
    fork = admin.post(f"/v1/sessions/{sid}/fork")
    assert fork.status_code == 201
    forks = alice.get(f"/v1/sessions/{sid}/branches").json()["forks"]
    assert fork.json()["id"] not in [f["session_id"] for f in forks]


def test_missing_wrong_and_malformed_keys_answer_401_with_a_bearer_challenge(
    clients: dict[str, httpx.Client], auth_server: ServerProcess
) -> None:
    anonymous = clients["anonymous"]
    for path in (
        "/v1/sessions",
        "/openapi.json",
        "/metrics",
        "/v1/sessions/x/messages",
    ):
        response = anonymous.get(path)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == 'Bearer realm="sessiond"'
    for value in (f"Bearer {ALICE_KEY}x", f"Basic {ALICE_KEY}", "Bearer", ALICE_KEY):
        response = anonymous.get("/v1/sessions", headers={"Authorization": value})
        assert response.status_code == 401
        assert ALICE_KEY not in response.text
    wrong = anonymous.get("/v1/sessions", headers={"Authorization": "Bearer nope"})
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert anonymous.get("/v1/health").status_code == 200
    status, _ = ws_refusal(auth_server, "anything", None)
    assert status == 401
    status, _ = ws_refusal(auth_server, "anything", "wrong-key")
    assert status == 401


def test_the_server_log_never_holds_a_key(
    auth_server: ServerProcess, clients: dict[str, httpx.Client]
) -> None:
    clients["alice"].get("/v1/sessions")
    clients["anonymous"].get(
        "/v1/sessions", headers={"Authorization": f"Bearer {BOB_KEY}0"}
    )
    log = auth_server.log_text()
    for key in (ALICE_KEY, BOB_KEY, ADMIN_KEY):
        assert key not in log


def test_keys_are_kept_as_digests_and_hidden_from_repr() -> None:
    keys = parse_api_keys(f"alice:{ALICE_KEY}, *:{ADMIN_KEY}")
    assert ALICE_KEY not in repr(keys)
    assert all(len(key.digest) == 32 for key in keys)
    authenticator = Authenticator(keys)
    alice = authenticator.principal_for(f"Bearer {ALICE_KEY}")
    admin = authenticator.principal_for(f"bearer {ADMIN_KEY}")
    assert alice is not None
    assert (alice.id, alice.admin) == ("alice", False)
    assert admin is not None
    assert admin.admin
    assert authenticator.principal_for(f"Bearer {ALICE_KEY[:-1]}") is None
    with pytest.raises(ValueError, match="entry 2") as raised:
        parse_api_keys(f"alice:{ALICE_KEY},{BOB_KEY}")
    assert BOB_KEY not in str(raised.value)


def test_repeated_failures_from_one_address_turn_into_429_but_valid_keys_still_work(
    tmp_path: Any,
) -> None:
    from gateway.limits import Limits
    from runtime import Settings

    settings = Settings(
        db=str(tmp_path / "db"), api_keys=parse_api_keys(f"alice:{ALICE_KEY}")
    )
    with TestClient(
        create_app(settings, limits=Limits(auth_failures_per_minute=3))
    ) as http:
        codes = [
            http.get("/v1/sessions", headers={"Authorization": "Bearer x"}).status_code
            for _ in range(5)
        ]
        assert codes == [401, 401, 401, 429, 429]
        good = http.get(
            "/v1/sessions", headers={"Authorization": f"Bearer {ALICE_KEY}"}
        )
        assert good.status_code == 200


def test_a_websocket_from_another_origin_is_refused(
    auth_server: ServerProcess, clients: dict[str, httpx.Client]
) -> None:
    sid = new_session(clients["alice"])["id"]
    status, body = ws_refusal(auth_server, sid, ALICE_KEY, Origin="http://evil.example")
    assert status == 403
    assert b"forbidden" in body
