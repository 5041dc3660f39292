"""Webhooks: a durable outbox, delivered at least once to a real loopback receiver."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
import pytest

from runtime import FakeClock, Runtime

RuntimeFactory = Callable[..., Runtime]


@dataclass
class Receiver:
    """A loopback HTTP server that answers with scripted status codes."""

    url: str
    statuses: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def payloads(self) -> list[tuple[int, str, int]]:
        """(status answered, event type, offset) of every request, in order."""
        return [
            (r["status"], r["body"]["event"]["type"], r["body"]["event"]["offset"])
            for r in self.received
        ]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
            status = state.statuses.pop(0) if state.statuses else 200
            state.received.append(
                {"status": status, "body": body, "headers": dict(self.headers)}
            )
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()
            state.arrived.set()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_port}/hook"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def quiet_runtime(runtime_factory: RuntimeFactory) -> Runtime:
    """A runtime whose lifecycle work and deliveries run only when asked."""
    return runtime_factory(supervisor_interval=0, webhook_backoff_seconds=1.0)


def deliver_all(runtime: Runtime, clock: FakeClock, rounds: int = 20) -> None:
    """Delivery rounds, moving the fake clock past every backoff in between."""
    for _ in range(rounds):
        runtime.deliver_webhooks()
        clock.advance(10)


def test_a_sessions_events_reach_its_webhook_with_their_offsets_and_headers(
    quiet_runtime: Runtime, receiver: Receiver, clock: FakeClock
) -> None:
    sid = quiet_runtime.create("echo")["id"]
    quiet_runtime.set_webhook(
        sid, receiver.url, headers={"authorization": "Bearer hook-secret"}
    )
    quiet_runtime.send(sid, "hello")
    deliver_all(quiet_runtime, clock)
    assert receiver.payloads() == [
        (200, "webhook_set", 2),
        (200, "message_appended", 3),
        (200, "message_appended", 4),
        (200, "turn_ended", 5),
    ]
    first = receiver.received[0]
    assert first["headers"]["authorization"] == "Bearer hook-secret"
    assert first["body"]["session_id"] == sid
    assert receiver.received[1]["body"]["event"]["data"]["content"] == "hello"


def test_failed_attempts_are_retried_with_backoff_and_every_attempt_is_recorded(
    quiet_runtime: Runtime, receiver: Receiver, clock: FakeClock
) -> None:
    sid = quiet_runtime.create("echo")["id"]
    receiver.statuses = [500, 429, 408, 200]
    quiet_runtime.set_webhook(sid, receiver.url, events=["webhook_set"])
    quiet_runtime.deliver_webhooks()
    # Not due again until the backoff has passed.
    assert quiet_runtime.deliver_webhooks() in (0, 1)
    deliver_all(quiet_runtime, clock)
    [delivery] = quiet_runtime.webhook_deliveries(sid)
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 429, 408, 200]
    assert all(a["duration_ms"] >= 0 for a in delivery["attempts"])


def test_a_client_error_other_than_408_and_429_is_not_retried(
    quiet_runtime: Runtime, receiver: Receiver, clock: FakeClock
) -> None:
    sid = quiet_runtime.create("echo")["id"]
    receiver.statuses = [400]
    quiet_runtime.set_webhook(sid, receiver.url)
    quiet_runtime.append(sid, "after the refused one")
    deliver_all(quiet_runtime, clock)
    deliveries = {d["offset"]: d for d in quiet_runtime.webhook_deliveries(sid)}
    assert deliveries[2]["status"] == "failed"
    assert [a["status_code"] for a in deliveries[2]["attempts"]] == [400]
    # The next delivery of the session went out after the refusal was final.
    assert deliveries[3]["status"] == "delivered"


def test_an_unreachable_receiver_gives_up_after_the_maximum_attempts(
    runtime_factory: RuntimeFactory, clock: FakeClock
) -> None:
    runtime = runtime_factory(supervisor_interval=0, webhook_max_attempts=3)
    sid = runtime.create("echo")["id"]
    runtime.set_webhook(sid, "http://127.0.0.1:9/unreachable", events=["webhook_set"])
    deliver_all(runtime, clock, rounds=10)
    [delivery] = runtime.webhook_deliveries(sid)
    assert delivery["status"] == "failed"
    assert len(delivery["attempts"]) == 3
    assert all(a["status_code"] is None and a["error"] for a in delivery["attempts"])


def test_deliveries_of_one_session_keep_their_order_while_one_is_retried(
    quiet_runtime: Runtime, receiver: Receiver, clock: FakeClock
) -> None:
    sid = quiet_runtime.create("echo")["id"]
    receiver.statuses = [503, 503]
    quiet_runtime.set_webhook(sid, receiver.url)
    for text in ("one", "two", "three"):
        quiet_runtime.append(sid, text)
    deliver_all(quiet_runtime, clock)
    delivered = [offset for status, _, offset in receiver.payloads() if status == 200]
    assert delivered == [2, 3, 4, 5]
    assert [offset for _, _, offset in receiver.payloads()] == [2, 2, 2, 3, 4, 5]


def test_pending_deliveries_survive_a_restart_and_are_delivered_once(
    runtime_factory: RuntimeFactory, receiver: Receiver, clock: FakeClock
) -> None:
    first = runtime_factory(supervisor_interval=0)
    sid = first.create("echo")["id"]
    first.set_webhook(sid, receiver.url, events=["message_appended"])
    first.append(sid, "written before the restart")
    first.close()
    assert receiver.received == []

    second = runtime_factory(supervisor_interval=0)
    deliver_all(second, clock)
    assert receiver.payloads() == [(200, "message_appended", 3)]
    deliver_all(second, clock)
    assert len(receiver.received) == 1


def test_server_wide_webhooks_receive_the_event_types_they_ask_for(
    runtime_factory: RuntimeFactory, receiver: Receiver, clock: FakeClock
) -> None:
    runtime = runtime_factory(
        supervisor_interval=0,
        webhooks=({"url": receiver.url, "headers": {}, "events": ["opened", "ended"]},),
    )
    sid = runtime.create("echo")["id"]
    runtime.append(sid, "not announced")
    runtime.delete(sid)
    deliver_all(runtime, clock)
    assert receiver.payloads() == [(200, "opened", 1), (200, "ended", 3)]


def test_the_running_service_delivers_without_being_asked(
    runtime_factory: RuntimeFactory, receiver: Receiver
) -> None:
    runtime = runtime_factory(supervisor_interval=0.05)
    sid = runtime.create("echo")["id"]
    runtime.set_webhook(sid, receiver.url, events=["webhook_set"])
    assert receiver.arrived.wait(10)
    assert receiver.payloads() == [(200, "webhook_set", 2)]


def test_webhook_headers_are_shown_by_name_only(
    quiet_runtime: Runtime, receiver: Receiver
) -> None:
    sid = quiet_runtime.create("echo")["id"]
    quiet_runtime.set_webhook(
        sid, receiver.url, headers={"authorization": "Bearer hook-secret"}
    )
    shown = orjson.dumps([quiet_runtime.get(sid), quiet_runtime.events(sid)])
    assert b"hook-secret" not in shown
    assert quiet_runtime.get(sid)["webhook"]["headers"] == {"authorization": "***"}


def test_removing_the_webhook_stops_new_deliveries(
    quiet_runtime: Runtime, receiver: Receiver, clock: FakeClock
) -> None:
    sid = quiet_runtime.create("echo")["id"]
    quiet_runtime.set_webhook(sid, receiver.url, events=["message_appended"])
    quiet_runtime.set_webhook(sid, None)
    quiet_runtime.append(sid, "nobody listens")
    deliver_all(quiet_runtime, clock)
    assert receiver.received == []
    assert quiet_runtime.get(sid)["webhook"] is None


def test_an_invalid_webhook_url_is_refused_and_changes_nothing(
    quiet_runtime: Runtime,
) -> None:
    from runtime import InvalidRequestError

    sid = quiet_runtime.create("echo")["id"]
    offset = quiet_runtime.get(sid)["offset"]
    with pytest.raises(InvalidRequestError):
        quiet_runtime.set_webhook(sid, "ftp://example.invalid/hook")
    assert quiet_runtime.get(sid)["offset"] == offset


def test_purging_a_session_removes_its_outbox(
    quiet_runtime: Runtime, receiver: Receiver, clock: FakeClock
) -> None:
    sid = quiet_runtime.create("echo")["id"]
    receiver.statuses = [500] * 5
    quiet_runtime.set_webhook(sid, receiver.url)
    quiet_runtime.delete(sid)
    clock.advance(timedelta(days=2).total_seconds())
    assert quiet_runtime.cleanup(older_than=timedelta(days=1)) == 1
    assert quiet_runtime.deliver_webhooks() == 0
