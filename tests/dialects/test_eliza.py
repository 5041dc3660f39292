"""The ElizaOS messaging Sessions dialect over real HTTP against a real server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DatabaseFactory
from tests.support.server import ServerProcess

BASE = "/api/messaging/sessions"
AGENT = "6f1c2a4e-8b0d-4c3e-9a57-2f7d1e0b9c11"
USER = "0b9e6d3a-1c2f-4e5a-8d7b-3c4f5a6b7c8d"
API_KEY = "eliza-test-key"


def write_config(where: Path) -> Path:
    """A config file with a UUID-keyed echo agent."""
    config = where / "sessiond.toml"
    config.write_text(f'[agents."{AGENT}"]\nprovider = "echo"\n')
    return config


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[ServerProcess]:
    """A server with the agent configured and no authentication."""
    where = tmp_path_factory.mktemp("eliza")
    process = ServerProcess(
        database_factory(),
        log=where / "server.log",
        env={"SESSIOND_CONFIG": str(write_config(where))},
    )
    yield process.start()
    process.stop()


@pytest.fixture(scope="module")
def fast_server(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[ServerProcess]:
    """A server whose clock runs 600 times faster (5 minutes = 0.5 s), with an
    API key."""
    where = tmp_path_factory.mktemp("eliza-fast")
    process = ServerProcess(
        database_factory(),
        log=where / "server.log",
        env={
            "SESSIOND_CONFIG": str(write_config(where)),
            "SESSIOND_TEST_CLOCK_SPEED": "600",
            "SESSIOND_API_KEYS": f"alice:{API_KEY}",
            "SESSIOND_SUPERVISOR_INTERVAL": "0.05",
        },
        factory="tests.dialects.fast_clock:create_app",
    )
    yield process.start()
    process.stop()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """A client of the plain server."""
    with httpx.Client(base_url=server.url, timeout=20.0) as client:
        yield client


@pytest.fixture
def fast(fast_server: ServerProcess) -> Iterator[httpx.Client]:
    """A client of the fast-clock server, sending the key as ``X-API-KEY``."""
    with httpx.Client(
        base_url=fast_server.url, timeout=20.0, headers={"X-API-KEY": API_KEY}
    ) as client:
        yield client


def create(client: httpx.Client, **extra: Any) -> dict[str, Any]:
    """Create a session; returns its SessionInfo."""
    response = client.post(BASE, json={"agentId": AGENT, "userId": USER, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def error_code(response: httpx.Response) -> str:
    """The ElizaOS error code of a response."""
    error = response.json()["error"]
    assert set(error) >= {"code", "message", "timestamp"}
    return str(error["code"])


def until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``check`` (each poll is a real request) until true, bounded."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
    pytest.fail("the condition did not hold in time")


SESSION_INFO_FIELDS = {
    "sessionId",
    "channelId",
    "agentId",
    "userId",
    "createdAt",
    "lastActivity",
    "metadata",
    "expiresAt",
    "timeoutConfig",
    "renewalCount",
    "timeRemaining",
    "isNearExpiration",
}


# ---------------------------------------------------------------------- health, create


def test_health_reports_healthy_with_the_original_fields(http: httpx.Client) -> None:
    response = http.get(BASE + "/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert {"activeSessions", "timestamp", "expiringSoon", "uptime"} <= set(body)


def test_create_answers_201_with_a_camel_case_session_info(http: httpx.Client) -> None:
    info = create(http, metadata={"platform": "web"})
    assert set(info) >= SESSION_INFO_FIELDS
    assert str(uuid.UUID(info["sessionId"])) == info["sessionId"]
    assert str(uuid.UUID(info["channelId"])) == info["channelId"]
    assert (info["agentId"], info["userId"]) == (AGENT, USER)
    assert info["metadata"] == {"platform": "web"}
    assert info["timeoutConfig"] == {
        "timeoutMinutes": 30,
        "autoRenew": True,
        "maxDurationMinutes": 720,
        "warningThresholdMinutes": 5,
    }
    assert info["renewalCount"] == 0


def test_create_clamps_an_out_of_range_timeout_config(http: httpx.Client) -> None:
    low = create(http, timeoutConfig={"timeoutMinutes": 1})
    high = create(http, timeoutConfig={"timeoutMinutes": 99999, "autoRenew": False})
    assert low["timeoutConfig"]["timeoutMinutes"] == 5
    assert high["timeoutConfig"]["timeoutMinutes"] == 1440
    assert high["timeoutConfig"]["autoRenew"] is False


def test_create_refuses_missing_fields_and_bad_uuids_as_validation_errors(
    http: httpx.Client,
) -> None:
    missing = http.post(BASE, json={"agentId": AGENT})
    bad_agent = http.post(BASE, json={"agentId": "nope", "userId": USER})
    bad_user = http.post(BASE, json={"agentId": AGENT, "userId": "nope"})
    huge = http.post(
        BASE, json={"agentId": AGENT, "userId": USER, "metadata": {"x": "y" * 11000}}
    )
    for response in (missing, bad_agent, bad_user, huge):
        assert response.status_code == 400
        assert error_code(response) == "VALIDATION_ERROR"
    assert "agentId, userId" in missing.json()["error"]["message"]


def test_create_with_an_unconfigured_agent_answers_404_agent_not_found(
    http: httpx.Client,
) -> None:
    response = http.post(BASE, json={"agentId": str(uuid.uuid4()), "userId": USER})
    assert response.status_code == 404
    assert error_code(response) == "AGENT_NOT_FOUND"


# ------------------------------------------------------------- get, list, delete


def test_get_answers_the_session_and_404_for_an_unknown_id(http: httpx.Client) -> None:
    info = create(http)
    found = http.get(f"{BASE}/{info['sessionId']}")
    assert found.status_code == 200
    assert found.json()["sessionId"] == info["sessionId"]
    missing = http.get(f"{BASE}/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert error_code(missing) == "SESSION_NOT_FOUND"


def test_list_answers_sessions_total_and_stats(http: httpx.Client) -> None:
    info = create(http)
    body = http.get(BASE).json()
    assert info["sessionId"] in {s["sessionId"] for s in body["sessions"]}
    assert body["total"] == len(body["sessions"])
    assert set(body["stats"]) == {"totalSessions", "activeSessions", "expiredSessions"}
    assert body["stats"]["activeSessions"] == body["total"]


def test_delete_answers_success_with_data_and_then_404_everywhere(
    http: httpx.Client,
) -> None:
    sid = create(http)["sessionId"]
    response = http.delete(f"{BASE}/{sid}")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["message"] == f"Session {sid} deleted successfully"
    assert body["data"]["message"] == body["message"]
    assert sid not in {s["sessionId"] for s in http.get(BASE).json()["sessions"]}
    for response in (
        http.get(f"{BASE}/{sid}"),
        http.delete(f"{BASE}/{sid}"),
        http.get(f"{BASE}/{sid}/messages"),
        http.post(f"{BASE}/{sid}/messages", json={"content": "hi"}),
        http.post(f"{BASE}/{sid}/heartbeat"),
        http.post(f"{BASE}/{sid}/renew"),
        http.patch(f"{BASE}/{sid}/timeout", json={"timeoutMinutes": 10}),
    ):
        assert response.status_code == 404, response.text
        assert error_code(response) == "SESSION_NOT_FOUND"


# ---------------------------------------------------------------------- messages


def test_send_over_http_answers_201_with_the_agent_response_and_data(
    http: httpx.Client,
) -> None:
    info = create(http)
    response = http.post(
        f"{BASE}/{info['sessionId']}/messages",
        json={"content": "hello", "transport": "http", "metadata": {"k": 1}},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True
    assert body["agentResponse"]["text"] == "hello"
    user_message = body["userMessage"]
    assert user_message["content"] == "hello"
    assert user_message["channel_id"] == info["channelId"]
    assert user_message["author_id"] == USER
    assert isinstance(user_message["created_at"], int)
    assert set(body["sessionStatus"]) == {
        "expiresAt",
        "renewalCount",
        "wasRenewed",
        "isNearExpiration",
    }
    assert body["sessionStatus"]["wasRenewed"] is True
    assert body["data"]["agentResponse"] == body["agentResponse"]


def test_send_with_the_legacy_sync_mode_waits_for_the_reply(http: httpx.Client) -> None:
    sid = create(http)["sessionId"]
    body = http.post(
        f"{BASE}/{sid}/messages", json={"content": "hi", "mode": "sync"}
    ).json()
    assert body["agentResponse"]["text"] == "hi"


def test_send_by_default_records_the_message_and_the_reply_follows_in_history(
    http: httpx.Client,
) -> None:
    sid = create(http)["sessionId"]
    response = http.post(f"{BASE}/{sid}/messages", json={"content": "later"})
    assert response.status_code == 201
    body = response.json()
    assert "agentResponse" not in body
    assert body["userMessage"]["content"] == "later"

    def replied() -> bool:
        found = http.get(f"{BASE}/{sid}/messages").json()["messages"]
        return any(m["isAgent"] for m in found)

    until(replied)
    newest = http.get(f"{BASE}/{sid}/messages").json()["messages"][0]
    assert (newest["isAgent"], newest["authorId"], newest["content"]) == (
        True,
        AGENT,
        "later",
    )


def test_send_over_sse_streams_user_message_chunks_and_done(http: httpx.Client) -> None:
    sid = create(http)["sessionId"]
    with http.stream(
        "POST", f"{BASE}/{sid}/messages", json={"content": "streamed", "mode": "stream"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events = [
        line.split(": ", 1)[1]
        for line in text.splitlines()
        if line.startswith("event:")
    ]
    assert events[0] == "user_message"
    assert events[-1] == "done"
    assert "chunk" in events
    assert '"index":0' in text


def test_send_refuses_bad_transport_content_and_metadata(http: httpx.Client) -> None:
    sid = create(http)["sessionId"]
    url = f"{BASE}/{sid}/messages"
    for body in (
        {"content": "x", "transport": "pigeon"},
        {"content": "x", "mode": "telepathy"},
        {"content": 5},
        {"content": "   "},
        {"content": "x" * 4001},
        {"content": "x", "metadata": {"big": "y" * 11000}},
    ):
        response = http.post(url, json=body)
        assert response.status_code == 400, body
        assert error_code(response) == "VALIDATION_ERROR"
    missing = http.post(f"{BASE}/{uuid.uuid4()}/messages", json={"content": "x"})
    assert (missing.status_code, error_code(missing)) == (404, "SESSION_NOT_FOUND")


def send_sync(client: httpx.Client, sid: str, content: str) -> None:
    """Send one message over http (user message and reply recorded)."""
    response = client.post(
        f"{BASE}/{sid}/messages", json={"content": content, "transport": "http"}
    )
    assert response.status_code == 201, response.text


def test_paging_backwards_by_before_visits_every_message_once_despite_ties(
    http: httpx.Client,
) -> None:
    sid = create(http)["sessionId"]
    for index in range(12):
        send_sync(http, sid, f"m{index}")  # a message and its reply often share a ms
    seen: list[str] = []
    before: int | None = None
    for _ in range(30):
        params: dict[str, Any] = {"limit": 3}
        if before is not None:
            params["before"] = before
        body = http.get(f"{BASE}/{sid}/messages", params=params).json()
        assert 1 <= len(body["messages"]) <= 3
        seen.extend(m["id"] for m in body["messages"])
        if not body["hasMore"]:
            break
        before = body["cursors"]["before"]
    assert len(seen) == 24
    assert len(set(seen)) == 24
    everything = http.get(f"{BASE}/{sid}/messages", params={"limit": 100}).json()
    assert [m["id"] for m in everything["messages"]] == seen
    assert everything["hasMore"] is False
    stamps = [m["createdAt"] for m in everything["messages"]]
    assert stamps == sorted(stamps, reverse=True)


def test_paging_forwards_by_after_visits_every_message_once_despite_ties(
    http: httpx.Client,
) -> None:
    sid = create(http)["sessionId"]
    for index in range(8):
        send_sync(http, sid, f"m{index}")
    seen: list[str] = []
    after = 0
    for _ in range(30):
        body = http.get(
            f"{BASE}/{sid}/messages", params={"limit": 3, "after": after}
        ).json()
        seen.extend(reversed([m["id"] for m in body["messages"]]))
        if not body["hasMore"]:
            break
        after = body["cursors"]["after"]
    oldest_first = list(
        reversed(
            [m["id"] for m in http.get(f"{BASE}/{sid}/messages").json()["messages"]]
        )
    )
    assert seen == oldest_first


def test_before_and_after_together_select_the_window_between_them(
    http: httpx.Client,
) -> None:
    sid = create(http)["sessionId"]
    for index in range(4):
        send_sync(http, sid, f"m{index}")
    everything = http.get(f"{BASE}/{sid}/messages").json()
    newest, oldest = everything["cursors"]["after"], everything["cursors"]["before"]
    body = http.get(
        f"{BASE}/{sid}/messages", params={"before": newest, "after": oldest}
    ).json()
    for message in body["messages"]:
        assert message["content"] in {"m0", "m1", "m2", "m3"}
    assert len(body["messages"]) < 8


def test_limit_is_clamped_and_a_bad_timestamp_is_a_validation_error(
    http: httpx.Client,
) -> None:
    sid = create(http)["sessionId"]
    for index in range(2):
        send_sync(http, sid, f"m{index}")
    url = f"{BASE}/{sid}/messages"
    assert len(http.get(url, params={"limit": 0}).json()["messages"]) >= 1
    assert len(http.get(url, params={"limit": 500}).json()["messages"]) == 4
    assert len(http.get(url, params={"limit": "abc"}).json()["messages"]) == 4
    bad = http.get(url, params={"before": "yesterday"})
    assert (bad.status_code, error_code(bad)) == (400, "VALIDATION_ERROR")
    assert http.get(url, params={"before": 1}).json() == {
        "messages": [],
        "hasMore": False,
    }


# ------------------------------------------------------ renew, heartbeat, timeout


def test_renew_extends_the_deadline_and_counts_renewals(http: httpx.Client) -> None:
    info = create(http)
    renewed = http.post(f"{BASE}/{info['sessionId']}/renew")
    assert renewed.status_code == 200
    assert renewed.json()["renewalCount"] == 1
    assert renewed.json()["expiresAt"] >= info["expiresAt"]
    missing = http.post(f"{BASE}/{uuid.uuid4()}/renew")
    assert (missing.status_code, error_code(missing)) == (404, "SESSION_NOT_FOUND")


def test_renew_at_the_maximum_duration_answers_422_renewal_failed(
    http: httpx.Client,
) -> None:
    info = create(http, timeoutConfig={"timeoutMinutes": 60, "maxDurationMinutes": 60})
    response = http.post(f"{BASE}/{info['sessionId']}/renew")
    assert (response.status_code, error_code(response)) == (
        422,
        "SESSION_RENEWAL_FAILED",
    )


def test_heartbeat_renews_only_when_auto_renew_is_on(http: httpx.Client) -> None:
    auto = create(http)
    manual = create(http, timeoutConfig={"autoRenew": False})
    beat = http.post(f"{BASE}/{auto['sessionId']}/heartbeat").json()
    assert beat["renewalCount"] == 1
    still = http.post(f"{BASE}/{manual['sessionId']}/heartbeat").json()
    assert still["renewalCount"] == 0
    assert still["expiresAt"] == manual["expiresAt"]


def test_patch_timeout_changes_only_the_named_fields(http: httpx.Client) -> None:
    info = create(http, timeoutConfig={"timeoutMinutes": 45})
    response = http.patch(
        f"{BASE}/{info['sessionId']}/timeout", json={"autoRenew": False}
    )
    assert response.status_code == 200
    config = response.json()["timeoutConfig"]
    assert config["autoRenew"] is False
    assert config["timeoutMinutes"] == 45
    changed = http.patch(
        f"{BASE}/{info['sessionId']}/timeout", json={"timeoutMinutes": 90}
    ).json()
    assert changed["timeoutConfig"]["timeoutMinutes"] == 90
    assert changed["timeoutConfig"]["autoRenew"] is False


def test_patch_timeout_refuses_an_out_of_range_or_non_numeric_timeout(
    http: httpx.Client,
) -> None:
    sid = create(http)["sessionId"]
    for body in (
        {"timeoutMinutes": 1},
        {"timeoutMinutes": 5000},
        {"timeoutMinutes": "soon"},
    ):
        response = http.patch(f"{BASE}/{sid}/timeout", json=body)
        assert (response.status_code, error_code(response)) == (400, "VALIDATION_ERROR")
    assert http.get(f"{BASE}/{sid}").json()["timeoutConfig"]["timeoutMinutes"] == 30


# ---------------------------------------------------------------------- expiry, auth


def test_an_expired_session_answers_410_on_every_call_until_deleted(
    fast: httpx.Client,
) -> None:
    sid = create(fast, timeoutConfig={"timeoutMinutes": 5})["sessionId"]
    until(lambda: fast.get(f"{BASE}/{sid}").status_code == 410)
    for _ in range(2):
        for response in (
            fast.get(f"{BASE}/{sid}"),
            fast.get(f"{BASE}/{sid}/messages"),
            fast.post(f"{BASE}/{sid}/messages", json={"content": "hi"}),
            fast.post(f"{BASE}/{sid}/heartbeat"),
            fast.post(f"{BASE}/{sid}/renew"),
            fast.patch(f"{BASE}/{sid}/timeout", json={"timeoutMinutes": 10}),
        ):
            assert response.status_code == 410, response.text
            assert error_code(response) == "SESSION_EXPIRED"
            assert sid in response.json()["error"]["message"]
    assert sid not in {s["sessionId"] for s in fast.get(BASE).json()["sessions"]}
    assert fast.get(BASE).json()["stats"]["expiredSessions"] >= 1
    assert fast.delete(f"{BASE}/{sid}").status_code == 200
    assert fast.get(f"{BASE}/{sid}").status_code == 404


def test_heartbeats_keep_an_auto_renewing_session_alive(fast: httpx.Client) -> None:
    # 15 scaled minutes are 1.5 s: a heartbeat may lag that long on a loaded
    # machine (5 minutes, 0.5 s, once expired a session in CI between two
    # heartbeats). Without heartbeats it would expire well within the loop.
    info = create(fast, timeoutConfig={"timeoutMinutes": 15})
    sid = info["sessionId"]
    started = time.monotonic()
    while time.monotonic() - started < 4.0:  # over two and a half timeouts
        assert fast.post(f"{BASE}/{sid}/heartbeat").status_code == 200
        time.sleep(0.05)
    assert fast.get(f"{BASE}/{sid}").status_code == 200


def test_the_api_key_is_required_and_accepted_as_x_api_key(
    fast_server: ServerProcess,
) -> None:
    with httpx.Client(base_url=fast_server.url, timeout=20.0) as anonymous:
        assert anonymous.get(BASE).status_code == 401
        bearer = anonymous.get(BASE, headers={"Authorization": f"Bearer {API_KEY}"})
        assert bearer.status_code == 200
        wrong = anonymous.get(BASE, headers={"X-API-KEY": "wrong"})
        assert wrong.status_code == 401
        assert anonymous.get(BASE, headers={"X-API-KEY": API_KEY}).status_code == 200
