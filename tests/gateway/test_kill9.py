"""kill -9 of the server during concurrent HTTP appends loses no acknowledged
message (T01 over the native API): every 2xx is in the log exactly once at the
offset it acknowledged; every unanswered request, retried with its
Idempotency-Key after the restart, ends up exactly once; nothing else appears."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from tests.gateway.conftest import ServerFactory
from tests.gateway.helpers import new_session
from tests.support.server import ServerProcess

CLIENTS = 3
CYCLES = 3
ACKS_BEFORE_KILL = 15
CYCLE_TIMEOUT = 30.0


@dataclass
class History:
    """What the clients saw: ok (acknowledged offset), info (unknown outcome)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[str, tuple[str, int]] = field(
        default_factory=dict
    )  # key -> (sid, offset)
    unknown: dict[str, str] = field(default_factory=dict)  # key -> sid
    invoked: set[str] = field(default_factory=set)
    refused: list[str] = field(
        default_factory=list
    )  # definite refusals (none expected)
    acks: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))


def append(http: httpx.Client, sid: str, key: str) -> httpx.Response:
    return http.post(
        f"/v1/sessions/{sid}/messages",
        params={"wait": "false"},
        json={"content": key},
        headers={"Idempotency-Key": key},
    )


def writer(
    server: ServerProcess, sid: str, name: str, history: History, stop: threading.Event
) -> None:
    with httpx.Client(base_url=server.url, timeout=5.0) as http:
        number = 0
        while not stop.is_set():
            key = f"{name}-{number}"
            number += 1
            with history.lock:
                history.invoked.add(key)
            try:
                response = append(http, sid, key)
            except httpx.TransportError:
                with history.lock:
                    history.unknown[key] = sid
                return  # the server is gone; this client stops until the restart
            if response.status_code == 202:
                with history.lock:
                    history.acked[key] = (sid, response.json()["offset"])
                history.acks.release()
            elif response.status_code >= 500:
                with history.lock:
                    history.unknown[key] = sid
            else:
                with history.lock:
                    history.refused.append(response.text)
                return


def user_messages(http: httpx.Client, sid: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    after = 0
    for _ in range(100):
        page = http.get(
            f"/v1/sessions/{sid}/messages",
            params={"order": "asc", "after": after, "limit": 1000},
        ).json()
        found += [
            (m["content"], m["offset"]) for m in page["messages"] if m["role"] == "user"
        ]
        if not page["has_more"]:
            return found
        after = page["messages"][-1]["offset"]
    pytest.fail("history paging did not end")


def log_offsets(http: httpx.Client, sid: str) -> list[int]:
    offsets: list[int] = []
    for _ in range(100):
        page = http.get(
            f"/v1/sessions/{sid}/events",
            params={"after": offsets[-1] if offsets else 0, "limit": 1000},
        ).json()
        offsets += [e["offset"] for e in page["events"]]
        if not page["has_more"]:
            return offsets
    pytest.fail("log paging did not end")


@pytest.mark.fault
def test_kill_9_during_concurrent_appends_loses_no_acknowledged_message(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        sessions = [new_session(http)["id"] for _ in range(CLIENTS)]
    history = History()
    for cycle in range(CYCLES):
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=writer,
                args=(server, sessions[i], f"c{cycle}w{i}", history, stop),
                daemon=True,
            )
            for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + CYCLE_TIMEOUT
        for _ in range(ACKS_BEFORE_KILL):
            assert history.acks.acquire(timeout=max(0.1, deadline - time.monotonic()))
        server.kill(signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(timeout=CYCLE_TIMEOUT)
            assert not thread.is_alive()
        server.restart()
        # retry every unknown outcome with its key until it is acknowledged
        with httpx.Client(base_url=server.url, timeout=10.0) as http:
            for key, sid in sorted(history.unknown.items()):
                response = append(http, sid, key)
                assert response.status_code == 202, response.text
                history.acked.setdefault(key, (sid, response.json()["offset"]))
            history.unknown.clear()

    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        for sid in sessions:
            logged = user_messages(http, sid)
            contents = [content for content, _ in logged]
            assert len(contents) == len(set(contents)), "a message appears twice"
            expected = {
                key: at for key, (owner, at) in history.acked.items() if owner == sid
            }
            assert dict(logged) == expected, "lost, moved or unexpected messages"
            assert set(contents) <= history.invoked
            offsets = log_offsets(http, sid)
            assert offsets == list(range(1, len(offsets) + 1)), "the log has a gap"
    assert history.refused == []
    assert len(history.acked) >= CYCLES * ACKS_BEFORE_KILL
