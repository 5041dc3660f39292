"""kill -9 while acknowledging writes: nothing acknowledged is lost or doubled.

A real child process (``kill9_child.py``) appends to several sessions with
idempotency keys and prints a line for every acknowledged append. The parent
kills it with SIGKILL at random moments while it works, restarts it (it resumes
with the first key it did not see acknowledged, which may or may not have
landed), and finally lets it finish. Then the file must hold every acknowledged
message exactly once at its acknowledged offset, with gapless offsets, an intact
database and views that agree with the log (reliability.md B.3, T01).
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from projections.documents import session_document
from runtime import FakeClock, Runtime, Settings

pytestmark = pytest.mark.fault

CHILD = Path(__file__).with_name("kill9_child.py")
SESSIONS = 4
CYCLES = 8
SEED = 9
FINAL_EXTRA = 5
DEADLINE = 40.0
"""Seconds the whole test may take."""


class Child:
    """A running child process, read line by line with timeouts."""

    def __init__(self, db: str, starts: list[int], stop: int, stderr: Path) -> None:
        self._stderr = stderr.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(CHILD),
                db,
                str(SESSIONS),
                ",".join(map(str, starts)),
                str(stop),
            ],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        assert self.process.stdout is not None
        self._fd = self.process.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        self._buffer = b""
        self.eof = False

    def _read(self, until: float) -> bool:
        """Read what is there (waiting until ``until``); False on timeout or EOF."""
        remaining = until - time.monotonic()
        if self.eof or remaining <= 0 or not self._selector.select(remaining):
            return False
        chunk = os.read(self._fd, 65536)
        if not chunk:
            self.eof = True
            return False
        self._buffer += chunk
        return True

    def _complete(self) -> list[str]:
        *complete, self._buffer = self._buffer.split(b"\n")
        return [line.decode() for line in complete]

    def lines(self, until: float) -> list[str]:
        """Complete lines that arrive before the monotonic time ``until`` (or EOF)."""
        found = self._complete()
        while self._read(until):
            found.extend(self._complete())
        return found

    def first_line(self, until: float) -> str:
        """The next line, which must arrive before ``until``."""
        while b"\n" not in self._buffer:
            assert self._read(until), "the child went silent"
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def kill(self, until: float) -> list[str]:
        """SIGKILL, then every complete line it wrote before dying."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=max(0.1, until - time.monotonic()))
        rest = self.lines(until)
        assert self.eof, "the killed child's output did not end"
        # A line cut short by the kill is not an acknowledgement.
        self._buffer = b""
        return rest

    def close(self) -> None:
        self._selector.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._stderr.close()


def record_acks(
    lines: list[str], acked: dict[str, tuple[str, int]], next_index: dict[str, int]
) -> int:
    """Fold ``ack`` lines into the acknowledged set; returns how many."""
    count = 0
    for line in lines:
        kind, sid, key, offset = line.split(" ")
        assert kind == "ack", line
        n = int(key.rsplit(":", 1)[1])
        if key in acked:
            assert acked[key] == (sid, int(offset)), (
                f"{key} acknowledged twice, differently"
            )
        acked[key] = (sid, int(offset))
        # One writer per session, in order: the first ack after a restart is
        # the retried key.
        assert n == next_index[sid], f"{key} acknowledged out of order"
        next_index[sid] = n + 1
        count += 1
    return count


def all_events(runtime: Runtime, sid: str) -> list[dict]:
    found: list[dict] = []
    after = 0
    while True:
        page = runtime.events(sid, after=after, limit=1000)
        found.extend(page["events"])
        if not page["has_more"]:
            return found
        after = found[-1]["offset"]


@pytest.mark.slow
def test_acknowledged_appends_survive_kill_9_exactly_once_at_their_offsets(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    deadline = started + DEADLINE
    db = str(tmp_path / "kill9.db")
    stderr = tmp_path / "child-stderr.log"
    rng = random.Random(SEED)
    ids = [f"kill9-{i}" for i in range(SESSIONS)]
    acked: dict[str, tuple[str, int]] = {}
    next_index = dict.fromkeys(ids, 0)
    killed_while_working = 0

    def diagnostics() -> str:
        return stderr.read_text() if stderr.exists() else ""

    for _ in range(CYCLES):
        child = Child(db, [next_index[sid] for sid in ids], -1, stderr)
        try:
            assert child.first_line(deadline) == "ready", diagnostics()
            # Let it work for a random while, reading what it acknowledges.
            work_until = time.monotonic() + rng.uniform(0.2, 1.0)
            seen = record_acks(
                child.lines(min(work_until, deadline)), acked, next_index
            )
            assert child.process.poll() is None, diagnostics()
            seen += record_acks(child.kill(deadline), acked, next_index)
            assert child.process.returncode == -signal.SIGKILL
            killed_while_working += seen > 0
        finally:
            child.close()

    # The last run resumes once more, then finishes and exits cleanly.
    stop = max(next_index.values()) + FINAL_EXTRA
    child = Child(db, [next_index[sid] for sid in ids], stop, stderr)
    try:
        assert child.first_line(deadline) == "ready", diagnostics()
        lines = child.lines(deadline)
        assert child.eof, "the final run did not finish in time"
        assert lines[-1] == "done", diagnostics()
        record_acks(lines[:-1], acked, next_index)
        assert child.process.wait(timeout=5) == 0, diagnostics()
    finally:
        child.close()

    assert killed_while_working >= CYCLES // 2, "the child was rarely killed mid-work"
    assert next_index == dict.fromkeys(ids, stop)
    assert len(acked) == SESSIONS * stop

    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    connection.close()

    with Runtime(Settings(db=db, clock=FakeClock(), supervisor_interval=0)) as runtime:
        recorder = runtime.app.recorder
        assert runtime.views.position() == recorder.max_notification_id()
        for sid in ids:
            events = all_events(runtime, sid)
            offsets = [e["offset"] for e in events]
            assert offsets == list(range(1, len(events) + 1)), f"gap in {sid}"
            keys = [
                e["data"]["idempotency_key"]
                for e in events
                if e["type"] == "message_appended"
            ]
            # Every key once, in the order sent: nothing lost, nothing doubled.
            assert keys == [f"{sid}:{n}" for n in range(stop)]
            at_offset = {
                e["data"]["idempotency_key"]: e["offset"]
                for e in events
                if e["type"] == "message_appended"
            }
            for key, (owner, offset) in acked.items():
                if owner == sid:
                    assert at_offset[key] == offset, key

            messages = runtime.messages(sid)
            contents = [m["content"] for m in messages]
            assert contents == [f"message {n} of {sid}" for n in range(stop)]
            document = runtime.get(sid)
            assert document["message_count"] == len(messages) == stop
            assert document["offset"] == len(events)
            assert document["head"] == messages[-1]["offset"]
            # The view agrees with a replay of the log.
            replayed = session_document(runtime.app.repository.get(sid))
            for field in ("offset", "head", "message_count"):
                assert replayed[field] == document[field], field

    assert time.monotonic() - started < DEADLINE
