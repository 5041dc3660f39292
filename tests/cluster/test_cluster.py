"""Three real ``sessiond serve`` processes on one store (issue 7, items 2-5).

- Concurrent appends to the same sessions through every node lose nothing,
  duplicate nothing and never fork: the log has contiguous offsets and every
  acknowledged message is in it exactly once, at the offset acknowledged; a key
  retried on another node answers the first result.
- A node killed with SIGKILL mid-load: the survivors carry on, and what its
  clients could not get answered is retried on a survivor, once.
- A stream opened on one node follows appends made through another, and
  ``Last-Event-ID`` resumes on any node.
- The supervisor lease fails over: the holder is killed, another node expires a
  session that falls due afterwards, within 10 s, exactly once.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import Cluster, ClusterFactory, Node
from tests.support.server import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.fault]

SESSIONS = 3
WRITERS_PER_NODE = 2
WAIT = 30.0


@dataclass
class Ledger:
    """What the clients were told: key -> (session, offset, message id)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[str, tuple[str, int, str]] = field(default_factory=dict)
    replays: int = 0

    def ack(self, key: str, session_id: str, message: dict[str, Any]) -> None:
        with self.lock:
            seen = (session_id, message["offset"], message["id"])
            first = self.acked.setdefault(key, seen)
            assert first == seen, f"{key} answered {seen}, first {first}"


def create(node: Node, **fields: Any) -> dict[str, Any]:
    """A new echo session, created through ``node``."""
    response = node.http.post("/v1/sessions", json={"agent_id": "echo", **fields})
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


def append(node: Node, session_id: str, key: str) -> httpx.Response:
    """Record a user message (its turn runs in the background on that node)."""
    return node.http.post(
        f"/v1/sessions/{session_id}/messages",
        params={"wait": "false"},
        json={"content": f"message {key}"},
        headers={"Idempotency-Key": key},
    )


def append_anywhere(
    cluster: Cluster, nodes: Iterator[Node], session_id: str, key: str
) -> dict[str, Any]:
    """Append through the next live node; on no answer (a killed node) or a
    conflict, retry the same key on the next one."""
    for _ in range(50):
        node = next(nodes)
        if not node.alive:
            continue
        try:
            response = append(node, session_id, key)
        except httpx.TransportError:
            continue
        if response.status_code == 409:
            continue
        assert response.status_code == 202, response.text
        message: dict[str, Any] = response.json()
        return message
    msg = f"{key} found no node to take it"
    raise AssertionError(msg)


def load(
    cluster: Cluster,
    session_ids: list[str],
    per_writer: int,
    ledger: Ledger,
    *,
    midway: threading.Event | None = None,
) -> None:
    """Writers on every node append to every session; every third key is sent
    again through another node and must answer the first result."""
    writers = len(cluster.nodes) * WRITERS_PER_NODE
    barrier = threading.Barrier(writers)

    def write(w: int) -> None:
        home = w % len(cluster.nodes)
        nodes = itertools.cycle(cluster.nodes[home:] + cluster.nodes[:home])
        others = itertools.cycle(cluster.nodes)
        barrier.wait(WAIT)
        for n in range(per_writer):
            session_id = session_ids[(w + n) % len(session_ids)]
            key = f"w{w}-n{n}"
            ledger.ack(
                key, session_id, append_anywhere(cluster, nodes, session_id, key)
            )
            if n % 3 == 0:
                again = append_anywhere(cluster, others, session_id, key)
                ledger.ack(key, session_id, again)
                with ledger.lock:
                    ledger.replays += 1
            if midway is not None and n == per_writer // 2:
                midway.set()

    with ThreadPoolExecutor(writers) as pool:
        for future in [pool.submit(write, w) for w in range(writers)]:
            future.result(WAIT * 2)


def check_logs(cluster: Cluster, session_ids: list[str], ledger: Ledger) -> None:
    """One linear history per session holding every acknowledged key once, at
    the offset acknowledged, read through every live node."""
    for session_id in session_ids:
        # Read one after the other while background turns may still append
        # replies: each node's view extends the one read before it.
        views = [cluster.events(session_id, via=node) for node in cluster.alive()]
        for earlier, later in itertools.pairwise(views):
            assert later[: len(earlier)] == earlier, "nodes disagree"
        events = views[-1]
        assert [e["offset"] for e in events] == list(range(1, len(events) + 1))
        keyed = [
            (e["data"]["idempotency_key"], e["offset"], e["data"]["message_id"])
            for e in events
            if e["type"] == "message_appended" and e["data"].get("idempotency_key")
        ]
        keys = [key for key, _, _ in keyed]
        assert len(keys) == len(set(keys)), "a key was recorded twice"
        expected = {
            key: (offset, mid)
            for key, (sid, offset, mid) in ledger.acked.items()
            if sid == session_id
        }
        assert {key: (o, m) for key, o, m in keyed} == expected


def test_concurrent_appends_through_three_nodes_lose_nothing_and_never_fork(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory()
    session_ids = [create(cluster[i % 3])["id"] for i in range(SESSIONS)]
    ledger = Ledger()
    load(cluster, session_ids, per_writer=12, ledger=ledger)
    assert len(ledger.acked) == 3 * WRITERS_PER_NODE * 12
    assert ledger.replays > 0
    check_logs(cluster, session_ids, ledger)
    # The nodes really contended: some commands were re-run after another
    # process took the offset.
    retries = sum(
        int(line.split()[-1])
        for node in cluster.nodes
        for line in node.http.get("/metrics").text.splitlines()
        if line.startswith("sessiond_conflict_retries_total")
    )
    assert retries > 0


def test_a_node_killed_mid_load_loses_nothing_and_the_survivors_carry_on(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory()
    session_ids = [create(cluster[i % 3])["id"] for i in range(SESSIONS)]
    ledger = Ledger()
    midway = threading.Event()
    killer = threading.Thread(
        target=lambda: midway.wait(WAIT) and cluster[2].kill(signal.SIGKILL)
    )
    killer.start()
    load(cluster, session_ids, per_writer=16, ledger=ledger, midway=midway)
    killer.join(WAIT)
    assert not cluster[2].alive
    assert len(ledger.acked) == 3 * WRITERS_PER_NODE * 16
    check_logs(cluster, session_ids, ledger)
    # And the survivors still take writes to every session.
    for session_id in session_ids:
        assert append(cluster[0], session_id, f"after-{session_id}").status_code == 202


def replay(node: Node, session_id: str) -> list[str]:
    """``sessiond replay``: the session's timeline, one line per event."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "replay",
            session_id,
            "--db",
            node.db_text,
        ],
        cwd=ROOT,
        env=node.env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    return done.stdout.splitlines()


def sse_events(response: httpx.Response) -> Iterator[tuple[int, str]]:
    """(offset, type) of each recorded event on an SSE stream."""
    offset: int | None = None
    kind = ""
    for line in response.iter_lines():
        if line.startswith("id:"):
            offset = int(line[3:].strip())
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line == "" and offset is not None:
            yield offset, kind
            offset = None


def test_a_stream_on_one_node_follows_appends_made_through_another(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory()
    session_id = create(cluster[0])["id"]
    headers = {"accept": "text/event-stream"}
    with cluster[1].http.stream(
        "GET", f"/v1/sessions/{session_id}/events", headers=headers
    ) as response:
        stream = sse_events(response)
        assert next(stream) == (1, "opened")
        for n in range(3):
            started = time.monotonic()
            message = cluster[n % 2 * 2].http.post(
                f"/v1/sessions/{session_id}/messages",
                json={"content": f"m{n}", "role": "assistant"},
            )
            offset = message.json()["user_message"]["offset"]
            assert next(stream) == (offset, "message_appended")
            assert time.monotonic() - started < 5.0
    # Last-Event-ID resumes on any node: a third node picks up after offset 2.
    headers["last-event-id"] = "2"
    with cluster[2].http.stream(
        "GET", f"/v1/sessions/{session_id}/events", headers=headers
    ) as response:
        stream = sse_events(response)
        assert [next(stream)[0] for _ in range(2)] == [3, 4]


def test_the_supervisor_fails_over_and_expires_a_session_exactly_once(
    cluster_factory: ClusterFactory,
) -> None:
    # A minute of session time is a second of real time, on every node alike.
    cluster = cluster_factory(
        SESSIOND_CLOCK_SPEED="60",
        SESSIOND_CLOCK_ORIGIN=str(time.time()),
        SESSION_MIN_TIMEOUT_MINUTES="1",
        SESSIOND_LEASE_SECONDS="2",
        SESSIOND_LEASE_RENEW_SECONDS="0.5",
    )
    holder = cluster.supervisor()
    survivor = next(node for node in cluster.nodes if node is not holder)
    session = create(
        survivor, timeout={"timeout_minutes": 3, "warning_threshold_minutes": 1}
    )
    holder.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    # Wait for the expiry on a survivor's stream (the stream itself never makes
    # the session expire: its health checks come every 15 s).
    with survivor.http.stream(
        "GET",
        f"/v1/sessions/{session['id']}/events",
        headers={"accept": "text/event-stream"},
        timeout=httpx.Timeout(10.0, read=15.0),
    ) as response:
        for _, kind in sse_events(response):
            if kind == "expired":
                break
    expired_after = time.monotonic() - killed_at
    assert expired_after <= 10.0
    new_holder = cluster.supervisor()
    assert new_holder is not holder
    # An expired session's log is for operators: read it with the CLI.
    timeline = replay(new_holder, session["id"])
    assert [line.split()[2] for line in timeline].count("expired") == 1
    assert [line.split()[2] for line in timeline].count("expiry_warned") <= 1
