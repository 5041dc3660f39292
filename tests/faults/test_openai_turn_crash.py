"""A ``sessiond`` server process killed (SIGKILL) in the middle of an
``openai`` agent's tool loop, then restarted on the same database: the loopback
model server (in the test process, so it outlives the kill) sees the resumed
turn's next request carry the recorded result, and the tool (which counts its
runs in a file, see ``openai_app.py``) never runs twice."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.helpers import sse_events
from tests.support.openai_server import (
    OpenAIServer,
    text_reply,
    tool_call,
    tool_reply,
)
from tests.support.server import ServerProcess

pytestmark = pytest.mark.fault

WAIT = 20.0
FACTORY = "tests.faults.openai_app:create_counting_app"


@pytest.fixture
def signals() -> Iterator[socket.socket]:
    """Where the blocking tool says it runs."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(WAIT)
        yield listener


@pytest.fixture
def sessiond(
    tmp_path: Path, openai_server: OpenAIServer, signals: socket.socket
) -> Iterator[ServerProcess]:
    config = tmp_path / "sessiond.toml"
    config.write_text(
        f"""
[agents.model]
provider = "openai"
model = "test-model"
base_url = "{openai_server.base_url}"
tools = ["count"]
max_attempts = 1
"""
    )
    process = ServerProcess(
        tmp_path / "sessiond.db",
        log=tmp_path / "server.log",
        factory=FACTORY,
        env={
            "SESSIOND_CONFIG": str(config),
            "COUNT_FILE": str(tmp_path / "count"),
            "COUNT_SIGNAL_PORT": str(signals.getsockname()[1]),
            "COUNT_BLOCK": "0",
        },
    )
    yield process
    process.stop()


def runs(tmp_path: Path) -> int:
    path = tmp_path / "count"
    return path.read_text().count("ran\n") if path.exists() else 0


def submit(server: ServerProcess, content: str) -> str:
    """Create a session and send ``content`` without waiting (202)."""
    with httpx.Client(base_url=server.url, timeout=WAIT) as http:
        created = http.post("/v1/sessions", json={"agent_id": "model"})
        assert created.status_code == 201, created.text
        sid = str(created.json()["id"])
        sent = http.post(
            f"/v1/sessions/{sid}/messages?wait=false", json={"content": content}
        )
        assert sent.status_code == 202, sent.text
    return sid


def resumed_turn(server: ServerProcess, sid: str) -> dict[str, Any]:
    """Restart the killed server and wait (on the log's tail) for the turn's end;
    returns ``turn_ended`` and the history."""
    server.restart()
    with httpx.Client(base_url=server.url, timeout=WAIT) as http:
        with http.stream(
            "GET",
            f"/v1/sessions/{sid}/events",
            headers={"Accept": "text/event-stream"},
        ) as response:
            ended = next(
                e.data["data"] for e in sse_events(response) if e.event == "turn_ended"
            )
        history = http.get(f"/v1/sessions/{sid}/messages?order=asc").json()
    return {"ended": ended, "messages": history["messages"]}


def test_a_call_killed_while_it_runs_is_in_doubt_and_the_model_is_told(
    tmp_path: Path,
    openai_server: OpenAIServer,
    signals: socket.socket,
    sessiond: ServerProcess,
) -> None:
    openai_server.script(
        tool_reply(tool_call("call_1", "count", "{}"), usage=(5, 2)),
        text_reply("The count is in doubt.", usage=(9, 4)),
    )
    sessiond.env["COUNT_BLOCK"] = "1"
    sessiond.start()
    sid = submit(sessiond, "count once")
    running, _ = signals.accept()
    assert running.recv(16) == b"running"
    running.close()

    sessiond.kill(signal.SIGKILL)
    assert runs(tmp_path) == 1
    sessiond.env["COUNT_BLOCK"] = "0"
    found = resumed_turn(sessiond, sid)

    assert runs(tmp_path) == 1  # never run again
    assert found["ended"]["status"] == "completed"
    assert found["ended"]["steps"] == 2
    assert found["ended"]["usage"] == {"input_tokens": 14, "output_tokens": 6}
    messages = found["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    result = messages[2]
    assert result["metadata"] == {
        "tool_call_id": "call_1",
        "name": "count",
        "status": "in_doubt",
    }
    assert messages[3]["content"] == "The count is in doubt."
    first, resumed = (r.body["messages"] for r in openai_server.wait_for_requests(2))
    assert len(openai_server.requests) == 2
    assert first == [{"role": "user", "content": "count once"}]
    assert resumed[1]["tool_calls"][0]["id"] == "call_1"
    assert resumed[2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": result["content"],
    }
    assert "in doubt" in resumed[2]["content"]


def test_a_call_that_finished_before_the_kill_is_not_run_again(
    tmp_path: Path, openai_server: OpenAIServer, sessiond: ServerProcess
) -> None:
    held = threading.Event()  # the next step's request: never answered
    openai_server.script(
        tool_reply(tool_call("call_1", "count", "{}"), usage=(5, 2)),
        text_reply("never", gate=held),
        text_reply("Counted once.", usage=(9, 4)),
    )
    sessiond.start()
    sid = submit(sessiond, "count once")
    asked = openai_server.wait_for_requests(2)[1]  # the result was recorded before it

    sessiond.kill(signal.SIGKILL)
    assert asked.disconnected.wait(WAIT)
    assert runs(tmp_path) == 1
    found = resumed_turn(sessiond, sid)

    assert runs(tmp_path) == 1
    messages = found["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert (messages[2]["content"], messages[2]["metadata"]["status"]) == (
        "counted",
        "ok",
    )
    assert messages[3]["content"] == "Counted once."
    assert found["ended"]["status"] == "completed"
    resumed = openai_server.wait_for_requests(3)[2].body["messages"]
    assert resumed == asked.body["messages"]  # the same step, asked again
    assert resumed[-1] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "counted",
    }
