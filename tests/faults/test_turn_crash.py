"""A process killed (SIGKILL) in the middle of an agent turn, then restarted:
a tool call that was running is reported in doubt and never run again; a call
that had finished keeps its recorded result and is not run again either. The
tool counts its own executions in a file, so "ran once" is a fact, not a log
line (see ``turn_child.py``)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

pytestmark = pytest.mark.fault

CHILD = Path(__file__).with_name("turn_child.py")
WAIT = 30.0


class Child:
    """A child process whose stdout is read line by line with a timeout."""

    def __init__(self, db: Path, counter: Path, mode: str, stderr: Path) -> None:
        self._stderr = stderr.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), str(db), str(counter), mode],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        assert self.process.stdout is not None
        self._stdout = self.process.stdout
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout, selectors.EVENT_READ)
        self._buffer = b""

    def line(self) -> str:
        """The next line the child prints (fails after ``WAIT`` seconds)."""
        fd = self._stdout.fileno()
        os.set_blocking(fd, False)
        while b"\n" not in self._buffer:
            if not self._selector.select(WAIT):
                msg = "the child printed nothing in time"
                raise AssertionError(msg)
            chunk = os.read(fd, 65536)
            if not chunk:
                msg = f"the child exited ({self.process.wait()})"
                raise AssertionError(msg)
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def kill(self) -> None:
        """SIGKILL, and reap."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(WAIT)
        self.close()

    def close(self) -> None:
        self._selector.close()
        self._stdout.close()
        self._stderr.close()


def run_until(tmp_path: Path, mode: str, marker: str) -> str:
    child = Child(tmp_path / "s.db", tmp_path / "count", mode, tmp_path / "err")
    try:
        session = child.line()
        assert session.startswith("session ")
        assert child.line() == marker
    finally:
        child.kill()
    return session.split()[1]


def resume(tmp_path: Path) -> dict[str, Any]:
    child = Child(tmp_path / "s.db", tmp_path / "count", "resume", tmp_path / "err")
    try:
        found: dict[str, Any] = orjson.loads(child.line())
        assert child.process.wait(WAIT) == 0
    finally:
        child.close()
    return found


def runs(tmp_path: Path) -> int:
    return (tmp_path / "count").read_text().count("ran\n")


def test_a_call_killed_while_running_is_in_doubt_and_never_run_again(
    tmp_path: Path,
) -> None:
    sid = run_until(tmp_path, "run-block-tool", "tool-running")
    assert runs(tmp_path) == 1

    found = resume(tmp_path)

    assert runs(tmp_path) == 1  # not run again
    assert [r["session_id"] for r in found["resumed"]] == [sid]
    assert found["resumed"][0]["status"] == "completed"
    messages = found["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    step, result, answer = messages[1:]
    assert result["metadata"] == {
        "tool_call_id": "call-1",
        "name": "count",
        "status": "in_doubt",
    }
    assert result["reply_to"] == step["offset"]
    assert "in doubt" in result["content"]
    assert answer["content"] == "the tool call was in_doubt"  # the turn resumed
    ended = [e for e in found["events"] if e["type"] == "turn_ended"]
    assert [e["data"]["status"] for e in ended] == ["completed"]
    assert ended[0]["data"]["steps"] == 2


def test_a_call_that_finished_before_the_kill_keeps_its_result_and_is_not_rerun(
    tmp_path: Path,
) -> None:
    sid = run_until(tmp_path, "run-block-step", "step-running")
    assert runs(tmp_path) == 1

    found = resume(tmp_path)

    assert runs(tmp_path) == 1
    assert [r["session_id"] for r in found["resumed"]] == [sid]
    messages = found["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    result = messages[2]
    assert (result["content"], result["metadata"]["status"]) == ("counted", "ok")
    assert messages[3]["content"] == "the tool call was ok"
    ended = [e for e in found["events"] if e["type"] == "turn_ended"]
    assert len(ended) == 1
    assert ended[0]["data"]["usage"] == {"input_tokens": 3, "output_tokens": 2}


def test_a_second_restart_finds_nothing_left_to_resume(tmp_path: Path) -> None:
    run_until(tmp_path, "run-block-tool", "tool-running")
    resume(tmp_path)
    again = resume(tmp_path)
    assert again["resumed"] == []
    assert runs(tmp_path) == 1
