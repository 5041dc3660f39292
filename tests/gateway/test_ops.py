"""Health, metrics, the OpenAPI document against the route table, and the error
table (in-process where a test needs a runtime in a given state)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import runtime
from gateway.app import create_app
from gateway.dialects import ROUTES as DIALECT_ROUTES
from gateway.errors import STATUS_BY_CODE, problem_of
from gateway.openapi import document, operations
from gateway.routes import ROUTES, route_table
from runtime import FakeClock, Runtime, Settings
from tests.gateway.helpers import TestClient, new_session


def test_health_answers_the_store_state_without_a_key(client: httpx.Client) -> None:
    response = client.get("/v1/health")
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok"
    assert health["store"] == "ok"
    assert {"live_actors", "sessions_active", "version"} <= set(health)


def test_metrics_are_prometheus_text_labelled_by_route_template(
    client: httpx.Client,
) -> None:
    sid = new_session(client)["id"]
    client.post(f"/v1/sessions/{sid}/messages", json={"content": "count me"})
    client.get(f"/v1/sessions/{sid}")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert sid not in text
    assert re.search(
        r"^sessiond_http_requests_total"
        r'\{method="GET",route="/v1/sessions/\{id\}",status="200"\} \d+$',
        text,
        re.M,
    )
    assert (
        'sessiond_http_request_duration_seconds_bucket{method="POST",route="/v1/sessions/{id}/messages",le="+Inf"}'
        in text
    )
    for name in (
        "sessiond_live_actors",
        "sessiond_activations_total",
        "sessiond_passivations_total",
        "sessiond_appends_total",
        "sessiond_projection_lag",
        "sessiond_open_streams",
        'sessiond_http_open_streams{kind="sse"}',
    ):
        assert re.search(rf"^{re.escape(name)} \d+", text, re.M), name


def test_the_openapi_document_and_the_route_table_agree_both_ways(
    client: httpx.Client,
) -> None:
    served = client.get("/openapi.json").json()
    assert served == document(("echo",))
    agent_id = served["components"]["schemas"]["CreateSession"]["properties"]
    assert agent_id["agent_id"]["enum"] == ["echo"]  # the configured agents
    assert served["openapi"].startswith("3.1")
    # The document describes the native API; the dialects are mounted beside it.
    in_app = route_table(list(create_app().routes)) - route_table(DIALECT_ROUTES)
    assert in_app == route_table(ROUTES)
    assert operations() - in_app == set(), "documented but not routed"
    assert in_app - operations() == set(), "routed but not documented"


def test_every_reference_in_the_openapi_document_resolves() -> None:
    spec = document()

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for reference in refs(spec):
        section, name = reference.removeprefix("#/components/").split("/")
        assert name in spec["components"][section], reference
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert "default" in op["responses"], (method, path)
            assert op["operationId"]


def test_every_error_code_the_runtime_exports_has_a_status() -> None:
    for name in runtime.__all__:
        value = getattr(runtime, name)
        if isinstance(value, type) and issubclass(
            value, runtime.DomainError | runtime.RuntimeFault
        ):
            if value in (runtime.DomainError, runtime.RuntimeFault):
                continue
            assert value.code in STATUS_BY_CODE, name


# --- in-process


class UnreachableStore(Runtime):
    """A runtime whose store does not answer."""

    def health(self) -> dict[str, Any]:
        return {**super().health(), "status": "unavailable", "store": "unreachable"}


class Exploding(Runtime):
    """A runtime failing in a way nobody planned for."""

    def get(self, session_id: str, **_: Any) -> dict[str, Any]:
        msg = "boom with SECRET-CONTENT"
        raise RuntimeError(msg)


def test_health_answers_503_when_the_store_is_unreachable(tmp_path: Path) -> None:
    with (
        UnreachableStore(Settings(db=str(tmp_path / "db"))) as broken,
        TestClient(create_app(runtime=broken)) as http,
    ):
        response = http.get("/v1/health")
    assert response.status_code == 503
    assert response.json()["store"] == "unreachable"


def test_an_unexpected_error_is_a_bare_500_and_its_message_is_neither_shown_nor_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with (
        Exploding(Settings(db=str(tmp_path / "db"))) as broken,
        TestClient(create_app(runtime=broken), raise_server_exceptions=False) as http,
    ):
        response = http.get("/v1/sessions/some-id")
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert "secret" not in response.text.lower()
    assert "SECRET-CONTENT" not in caplog.text
    assert "RuntimeError" in caplog.text


class PastMaximum(Runtime):
    """A runtime whose sessions have all reached their maximum duration.

    Through the real facade a session past its maximum duration has already
    expired (410 ``session_expired``): its deadline never lies beyond it.
    """

    def renew(self, session_id: str, **_: Any) -> dict[str, Any]:
        raise runtime.RenewalRefusedError(
            f"session {session_id} reached its maximum duration"
        )


def test_a_refused_renewal_answers_422_renewal_refused(tmp_path: Path) -> None:
    with (
        PastMaximum(Settings(db=str(tmp_path / "db"))) as rt,
        TestClient(create_app(runtime=rt)) as http,
    ):
        sid = new_session(http)["id"]
        response = http.post(f"/v1/sessions/{sid}/renew")
    assert response.status_code == 422
    assert response.json()["code"] == "renewal_refused"


def test_renewing_a_session_past_its_deadline_answers_410_with_expires_at(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    settings = Settings(
        db=str(tmp_path / "db"), clock=clock, supervisor_interval=3600.0
    )
    with Runtime(settings) as rt, TestClient(create_app(runtime=rt)) as http:
        session = new_session(
            http, timeout={"timeout_minutes": 10, "max_duration_minutes": 10}
        )
        clock.advance(10 * 60)
        response = http.post(f"/v1/sessions/{session['id']}/renew")
    assert response.status_code == 410
    assert response.json()["code"] == "session_expired"
    assert response.json()["expires_at"] == session["expires_at"]


def test_a_given_runtime_stays_open_after_the_app_shuts_down(tmp_path: Path) -> None:
    with Runtime(Settings(db=str(tmp_path / "db"))) as rt:
        with TestClient(create_app(runtime=rt)) as http:
            sid = new_session(http)["id"]
        assert rt.get(sid)["id"] == sid


def test_an_error_code_the_table_does_not_know_keeps_its_code() -> None:
    class NewRefusal(runtime.DomainError):
        code = "brand_new_refusal"

    class NewFault(runtime.RuntimeFault):
        code = "brand_new_fault"

    refused = problem_of(NewRefusal("no"))
    failed = problem_of(NewFault("broke"))
    assert (refused["status"], refused["code"]) == (400, "brand_new_refusal")
    assert (failed["status"], failed["code"]) == (500, "brand_new_fault")
    conflict = problem_of(runtime.OffsetConflictError(3, 5))
    assert (conflict["status"], conflict["current_offset"]) == (409, 5)


def test_a_method_not_served_answers_405_with_every_method_of_the_path(
    client: httpx.Client,
) -> None:
    """A path served by a route per method lists all their methods in ``Allow``
    (RFC 9110), not only the first route's."""
    sid = client.post("/v1/sessions", json={"agent_id": "echo"}).json()["id"]
    for path, expected in (
        (f"/v1/sessions/{sid}", {"DELETE", "GET", "HEAD", "PATCH"}),
        (f"/v1/sessions/{sid}/messages", {"GET", "HEAD", "POST"}),
        ("/v1/sessions", {"GET", "HEAD", "POST"}),
    ):
        response = client.request("PUT", path)
        assert response.status_code == 405
        assert response.json()["code"] == "method_not_allowed"
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert allowed == expected, path
