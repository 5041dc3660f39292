"""Messages over real HTTP: blocking, streamed (SSE), accepted (202), history,
the log as JSON, export, If-Match and Idempotency-Key."""

from __future__ import annotations

import uuid

import httpx

from tests.gateway.helpers import new_session, sse_events

TURN_EVENT_TYPES = {
    "message_start",
    "content_block_start",
    "text_delta",
    "input_json_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
    "done",
}


def test_a_json_message_waits_for_the_reply(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    response = client.post(
        f"/v1/sessions/{sid}/messages", json={"content": "find a train"}
    )
    assert response.status_code == 200
    result = response.json()
    assert set(result) >= {
        "user_message",
        "reply",
        "tool_calls",
        "usage",
        "steps",
        "session",
    }
    assert result["user_message"]["content"] == "find a train"
    assert result["user_message"]["offset"] == 2
    assert result["reply"]["role"] == "assistant"
    assert result["reply"]["content"] == "find a train"
    assert result["usage"] == {"input_tokens": 3, "output_tokens": 3}
    assert result["session"]["message_count"] == 2


def test_an_event_stream_request_streams_the_turn_with_named_events(
    client: httpx.Client,
) -> None:
    sid = new_session(client)["id"]
    with client.stream(
        "POST",
        f"/v1/sessions/{sid}/messages",
        json={"content": "one two three"},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response))
    names = [e.event for e in events]
    assert names[0] == "message_start"
    assert names[-1] == "done"
    assert set(names) <= TURN_EVENT_TYPES
    assert all(e.event == e.data["type"] for e in events)
    text = "".join(e.data["text"] for e in events if e.event == "text_delta")
    assert text == "one two three"
    stop = next(e for e in events if e.event == "message_stop")
    assert stop.data["message"]["content"] == "one two three"
    assert events[-1].data["reply"]["offset"] == 3


def test_a_turn_that_runs_out_of_time_is_an_error_event_or_a_504(
    client: httpx.Client,
) -> None:
    sid = new_session(client)["id"]
    body = {"content": "too slow for a nanosecond", "timeout": 1e-9}
    with client.stream(
        "POST",
        f"/v1/sessions/{sid}/messages",
        json=body,
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        events = list(sse_events(response))
    assert events[0].event == "message_start"
    assert events[-1].event == "error"
    assert events[-1].data["type"] == "error"
    assert events[-1].data["error"]["code"] == "timeout"
    blocking = client.post(f"/v1/sessions/{sid}/messages", json=body)
    assert blocking.status_code == 504
    assert blocking.json()["code"] == "timeout"


def test_a_streamed_message_to_an_unknown_session_is_a_plain_404(
    client: httpx.Client,
) -> None:
    response = client.post(
        "/v1/sessions/nope/messages",
        json={"content": "x"},
        headers={"Accept": "text/event-stream"},
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_wait_false_answers_202_and_the_reply_arrives_in_the_log(
    client: httpx.Client,
) -> None:
    sid = new_session(client)["id"]
    response = client.post(
        f"/v1/sessions/{sid}/messages?wait=false", json={"content": "later"}
    )
    assert response.status_code == 202
    message = response.json()
    assert message["role"] == "user"
    assert message["offset"] == 2
    with client.stream(
        "GET", f"/v1/sessions/{sid}/events", headers={"Accept": "text/event-stream"}
    ) as stream:
        for event in sse_events(stream):
            if (
                event.event == "message_appended"
                and event.data["data"]["role"] == "assistant"
            ):
                assert event.data["data"]["content"] == "later"
                assert int(event.id or 0) == 3
                break


def test_message_bodies_are_validated(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    url = f"/v1/sessions/{sid}/messages"
    for body in (
        {},
        {"content": 5},
        {"content": "x", "role": "owner"},
        {"content": "x", "timeout": 0},
        {"content": "x", "timeout": 10**6},
        {"content": "x", "unknown": True},
        {"content": "x", "attachments": {}},
    ):
        response = client.post(url, json=body)
        assert response.status_code == 400, body
    assert client.post(url + "?wait=maybe", json={"content": "x"}).status_code == 400
    assert client.get(f"/v1/sessions/{sid}").json()["offset"] == 1


def test_history_pages_by_offset_in_both_orders(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    for i in range(3):
        client.post(f"/v1/sessions/{sid}/messages", json={"content": f"m{i}"})
    newest = client.get(f"/v1/sessions/{sid}/messages", params={"limit": 2}).json()
    # each turn: message, reply, turn_ended (not a message)
    assert [m["offset"] for m in newest["messages"]] == [9, 8]
    assert newest["has_more"] is True
    older = client.get(
        f"/v1/sessions/{sid}/messages", params={"limit": 10, "before": 8}
    ).json()
    assert [m["offset"] for m in older["messages"]] == [6, 5, 3, 2]
    assert older["has_more"] is False
    ascending = client.get(
        f"/v1/sessions/{sid}/messages", params={"order": "asc", "after": 3, "limit": 2}
    ).json()
    assert [m["offset"] for m in ascending["messages"]] == [5, 6]
    for bad in ({"limit": 1001}, {"order": "up"}, {"before": -1}, {"before": "x"}):
        assert client.get(f"/v1/sessions/{sid}/messages", params=bad).status_code == 400


def test_the_log_pages_as_json(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"})
    page = client.get(
        f"/v1/sessions/{sid}/events", params={"after": 1, "limit": 1}
    ).json()
    assert [e["offset"] for e in page["events"]] == [2]
    assert page["events"][0]["type"] == "message_appended"
    assert set(page["events"][0]) == {"offset", "type", "at", "data"}
    assert page["has_more"] is True


def test_if_match_on_a_message_is_checked_atomically(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    url = f"/v1/sessions/{sid}/messages?wait=false"
    ok = client.post(url, json={"content": "a"}, headers={"If-Match": "1"})
    assert ok.status_code == 202
    stale = client.post(url, json={"content": "b"}, headers={"If-Match": "1"})
    assert stale.status_code == 409
    assert stale.json()["code"] == "conflict"
    assert stale.json()["current_offset"] >= 2


def test_idempotency_key_on_a_message_returns_the_first_result(
    client: httpx.Client,
) -> None:
    sid = new_session(client)["id"]
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    first = client.post(
        f"/v1/sessions/{sid}/messages", json={"content": "once"}, headers=headers
    )
    again = client.post(
        f"/v1/sessions/{sid}/messages", json={"content": "once"}, headers=headers
    )
    assert first.status_code == again.status_code == 200
    assert again.json()["user_message"] == first.json()["user_message"]
    assert again.json()["reply"]["id"] == first.json()["reply"]["id"]
    assert client.get(f"/v1/sessions/{sid}").json()["message_count"] == 2
    bad = client.post(
        f"/v1/sessions/{sid}/messages",
        json={"content": "x"},
        headers={"Idempotency-Key": ""},
    )
    assert bad.status_code == 400


def test_export_in_three_formats(client: httpx.Client) -> None:
    sid = new_session(client, name="Exported")["id"]
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "hello export"})
    as_json = client.get(f"/v1/sessions/{sid}/export").json()
    assert as_json["session"]["id"] == sid
    assert [m["content"] for m in as_json["messages"]] == [
        "hello export",
        "hello export",
    ]
    markdown = client.get(f"/v1/sessions/{sid}/export", params={"format": "markdown"})
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert "# Exported" in markdown.text
    text = client.get(f"/v1/sessions/{sid}/export", params={"format": "text"})
    assert text.headers["content-type"].startswith("text/plain")
    assert "user: hello export" in text.text
    assert (
        client.get(f"/v1/sessions/{sid}/export", params={"format": "pdf"}).status_code
        == 400
    )
