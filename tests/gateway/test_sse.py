"""The live tail of a session's log over SSE (T24), on real servers: ids are
offsets, ``Last-Event-ID`` resumes with no gap and no duplicate (also across a
restart), idle streams ping and re-check, closed streams free everything."""

from __future__ import annotations

import re
import signal
import time

import httpx
import pytest

from tests.gateway.conftest import ServerFactory
from tests.gateway.helpers import new_session, sse_events
from tests.support.server import ServerProcess

SSE = {"Accept": "text/event-stream"}
FACTORY = "tests.gateway.app_factory:create_test_app"


def read_offsets(
    http: httpx.Client, sid: str, *, until: int, last_event_id: int | None = None
) -> list[int]:
    """Open the tail and collect event ids until offset ``until``."""
    headers = dict(SSE)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    offsets: list[int] = []
    with http.stream("GET", f"/v1/sessions/{sid}/events", headers=headers) as response:
        assert response.status_code == 200
        for event in sse_events(response):
            if event.id is None:
                continue
            assert event.event == event.data["type"]
            assert int(event.id) == event.data["offset"]
            offsets.append(int(event.id))
            if offsets[-1] >= until:
                break
    return offsets


def test_the_tail_sends_log_entries_with_offsets_as_ids_and_live_deltas(
    client: httpx.Client,
) -> None:
    sid = new_session(client)["id"]
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "before"})
    seen: list[tuple[str | None, str | None]] = []
    with client.stream("GET", f"/v1/sessions/{sid}/events", headers=SSE) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        for event in sse_events(response):
            seen.append((event.id, event.event))
            if event.id == "4":
                # caught up with the backlog: now a live turn
                with httpx.Client(base_url=str(client.base_url), timeout=20) as other:
                    other.post(
                        f"/v1/sessions/{sid}/messages", json={"content": "live one"}
                    )
            if event.event == "done":
                break
    ids = [int(i) for i, _ in seen if i is not None]
    assert ids == [1, 2, 3, 4, 5, 6, 7]  # turns: message, reply, turn_ended
    deltas = [name for i, name in seen if i is None]
    assert "text_delta" in deltas
    assert "message_stop" in deltas


def test_last_event_id_resumes_after_a_disconnect_without_gap_or_duplicate(
    client: httpx.Client,
) -> None:
    sid = new_session(client)["id"]
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "one"})
    first = read_offsets(client, sid, until=2)
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "two"})
    rest = read_offsets(client, sid, until=5, last_event_id=first[-1])
    assert first + rest == [1, 2, 3, 4, 5]
    assert read_offsets(client, sid, until=5, last_event_id=4) == [5]


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "kill-9"]
)
def test_last_event_id_resumes_across_a_server_restart(
    server_factory: ServerFactory, sig: int
) -> None:
    server = server_factory()
    with httpx.Client(base_url=server.url, timeout=20) as http:
        sid = new_session(http)["id"]
        http.post(
            f"/v1/sessions/{sid}/messages", json={"content": "before the restart"}
        )
        before = read_offsets(http, sid, until=2)
        http.post(f"/v1/sessions/{sid}/messages", json={"content": "missed while away"})
    server.restart(sig)
    with httpx.Client(base_url=server.url, timeout=20) as http:
        http.post(f"/v1/sessions/{sid}/messages", json={"content": "after the restart"})
        after = read_offsets(http, sid, until=7, last_event_id=before[-1])
    assert before + after == list(range(1, 8))


def test_a_tail_of_an_unknown_session_is_404_and_a_bad_last_event_id_400(
    client: httpx.Client,
) -> None:
    response = client.get("/v1/sessions/nope/events", headers=SSE)
    assert response.status_code == 404
    sid = new_session(client)["id"]
    for bad in ("x", "-1", "1.5"):
        refused = client.get(
            f"/v1/sessions/{sid}/events", headers={**SSE, "Last-Event-ID": bad}
        )
        assert refused.status_code == 400


def test_an_ended_session_the_client_has_read_answers_204(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    offset = client.delete(f"/v1/sessions/{sid}").json()["offset"]
    response = client.get(
        f"/v1/sessions/{sid}/events", headers={**SSE, "Last-Event-ID": str(offset)}
    )
    assert response.status_code == 204


@pytest.fixture
def quick_server(server_factory: ServerFactory) -> ServerProcess:
    """A server that pings idle streams every 0.3 s and allows 3 per principal."""
    return server_factory(
        env={"TEST_PING_SECONDS": "0.3", "TEST_MAX_STREAMS": "3"}, factory=FACTORY
    )


def test_an_idle_stream_pings_and_closes_once_the_session_has_ended(
    quick_server: ServerProcess,
) -> None:
    with httpx.Client(base_url=quick_server.url, timeout=10) as http:
        sid = new_session(http)["id"]
        names: list[str | None] = []
        with http.stream("GET", f"/v1/sessions/{sid}/events", headers=SSE) as response:
            for event in sse_events(response):
                names.append(event.event)
                if names.count("ping") == 2 and "ended" not in names:
                    with httpx.Client(base_url=quick_server.url, timeout=10) as other:
                        other.delete(f"/v1/sessions/{sid}")
            # the loop ends because the server closed the stream
    assert names[0] == "opened"
    assert "ended" in names
    assert names.count("ping") >= 2


def test_the_per_principal_stream_cap_answers_429(quick_server: ServerProcess) -> None:
    with httpx.Client(base_url=quick_server.url, timeout=10) as http:
        sid = new_session(http)["id"]
        opened = [
            http.stream("GET", f"/v1/sessions/{sid}/events", headers=SSE)
            for _ in range(3)
        ]
        responses = [stream.__enter__() for stream in opened]
        try:
            assert [r.status_code for r in responses] == [200, 200, 200]
            refused = http.get(f"/v1/sessions/{sid}/events", headers=SSE)
            assert refused.status_code == 429
            assert refused.json()["code"] == "rate_limited"
            assert "retry-after" in refused.headers
        finally:
            for stream in opened:
                stream.__exit__(None, None, None)


def open_sse_streams(metrics: str) -> int:
    found = re.search(
        r'^sessiond_http_open_streams\{kind="sse"\} (\d+)$', metrics, re.M
    )
    assert found is not None
    return int(found.group(1))


def test_disconnected_streams_free_their_resources(quick_server: ServerProcess) -> None:
    with httpx.Client(base_url=quick_server.url, timeout=10) as http:
        sid = new_session(http)["id"]
        for _ in range(30):
            with http.stream(
                "GET", f"/v1/sessions/{sid}/events", headers=SSE
            ) as response:
                next(sse_events(response))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            metrics = http.get("/metrics").text
            if open_sse_streams(metrics) == 0:
                break
            time.sleep(0.05)  # bounded poll of a gauge the server updates on disconnect
        assert open_sse_streams(metrics) == 0
        assert re.search(r"^sessiond_open_streams 0$", metrics, re.M)
        # the cap of 3 would refuse a fourth stream if any slot had leaked
        with http.stream("GET", f"/v1/sessions/{sid}/events", headers=SSE) as response:
            assert response.status_code == 200
