"""Context windows over real HTTP: the window, explicit summaries and drops."""

from __future__ import annotations

import httpx

from tests.gateway.helpers import new_session


def test_the_context_route_shows_what_the_agent_sees(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "hello there"})
    response = client.get(f"/v1/sessions/{sid}/context")
    assert response.status_code == 200
    context = response.json()
    assert context["agent_id"] == "echo"
    assert context["strategy"] == "recent"
    assert context["counter"] == "heuristic"
    assert context["budget"] == context["max_tokens"] - context["reserve_output_tokens"]
    assert [m["content"] for m in context["messages"]] == ["hello there"] * 2
    assert context["tokens"] == 2 * (4 + 3)
    assert context["dropped"] == 0
    assert context["summary"] is None
    assert context["summaries"] == []


def test_summaries_are_made_shown_in_the_log_and_dropped(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "first"})
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "second"})

    made = client.post(f"/v1/sessions/{sid}/context/summaries", json={"to_offset": 3})
    assert made.status_code == 201, made.text
    summary = made.json()
    assert (summary["from_offset"], summary["to_offset"]) == (2, 3)
    assert summary["counter"] == "heuristic"
    context = client.get(f"/v1/sessions/{sid}/context").json()
    assert context["summaries"] == [
        {k: summary[k] for k in ("offset", "from_offset", "to_offset", "tokens")}
    ]
    log = client.get(f"/v1/sessions/{sid}/events", params={"limit": 100}).json()
    recorded = [e for e in log["events"] if e["type"] == "summary_recorded"]
    assert recorded[0]["offset"] == summary["offset"]
    assert recorded[0]["data"]["text"] == summary["text"]

    dropped = client.delete(f"/v1/sessions/{sid}/context/summaries/{summary['offset']}")
    assert dropped.status_code == 204
    again = client.delete(f"/v1/sessions/{sid}/context/summaries/{summary['offset']}")
    assert again.status_code == 404
    assert again.json()["code"] == "summary_not_found"
    log = client.get(f"/v1/sessions/{sid}/events", params={"limit": 100}).json()
    assert log["events"][-1]["type"] == "summary_dropped"
    assert client.get(f"/v1/sessions/{sid}/context").json()["summaries"] == []


def test_bad_summary_requests_are_refused(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    empty = client.post(f"/v1/sessions/{sid}/context/summaries")
    assert empty.status_code == 400
    assert empty.json()["code"] == "invalid_request"
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "first"})
    for body in ({"to_offset": 99}, {"to_offset": "2"}, {"extra": 1}):
        refused = client.post(f"/v1/sessions/{sid}/context/summaries", json=body)
        assert refused.status_code == 400, body
    bad = client.delete(f"/v1/sessions/{sid}/context/summaries/abc")
    assert bad.status_code == 400
    assert client.get(f"/v1/sessions/{sid}/context", params={"x": 1}).status_code == 400
    missing = client.get("/v1/sessions/no-such-session/context")
    assert missing.status_code == 404
