"""An fsync of the WAL happens before every acknowledgement (reliability.md T02).

The server runs under ``strace -f``; one client sends 50 messages one after
another (echo turns: each is one write). In the trace, between any two
successive 2xx responses to those writes, some thread of the server finished an
``fdatasync``/``fsync`` on the database's ``-wal`` file. LazyFS (losing unsynced
writes) is not available here; this ordering is the evidence that an
acknowledged write had reached the disk. Skipped where ``strace`` is missing or
``ptrace`` is not permitted.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.fault

WRITES = 50
SYSCALLS = "openat,close,fsync,fdatasync,sendto,sendmsg,write,writev"
LINE = re.compile(r"^(\d+)\s+(.*)$")
CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+)")
RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")


@dataclass(frozen=True)
class Mark:
    """A finished syscall that matters: ``sync`` of the WAL or ``ack`` (2xx)."""

    kind: str
    detail: str


def finished_calls(trace: str) -> list[tuple[str, str, int]]:
    """(name, arguments, result) of every finished syscall, in the order they
    finished; a call split by another thread's (``<unfinished ...>`` then
    ``<... resumed>``) is joined and placed where it finished."""
    pending: dict[str, str] = {}
    calls: list[tuple[str, str, int]] = []
    for raw in trace.splitlines():
        line = LINE.match(raw)
        if line is None:
            continue
        pid, text = line.groups()
        if text.endswith("<unfinished ...>"):
            pending[pid] = text[: -len("<unfinished ...>")].rstrip()
            continue
        resumed = RESUMED.match(text)
        if resumed is not None:
            text = pending.pop(pid, resumed.group(1) + "(") + resumed.group(2)
        call = CALL.match(text)
        if call is not None:
            calls.append((call.group(1), call.group(2), int(call.group(3))))
    return calls


def marks(calls: list[tuple[str, str, int]], wal: str) -> list[Mark]:
    """WAL syncs and 2xx responses, in the order they finished."""
    wal_fds: set[int] = set()
    found: list[Mark] = []
    for name, arguments, result in calls:
        first = arguments.split(",", 1)[0].strip()
        if name == "openat" and f'"{wal}"' in arguments and result >= 0:
            wal_fds.add(result)
        elif name == "close" and first.isdigit():
            wal_fds.discard(int(first))
        elif name in ("fsync", "fdatasync") and result == 0 and int(first) in wal_fds:
            found.append(Mark("sync", first))
        elif name in ("sendto", "sendmsg", "write", "writev"):
            status = re.search(r"HTTP/1\.1 (2\d\d)", arguments)
            if status is not None:
                found.append(Mark("ack", status.group(1)))
    return found


class TracedServer(ServerProcess):
    """``sessiond serve`` under ``strace -f``, writing its trace to ``trace``."""

    def __init__(self, db: Path, log: Path, trace: Path) -> None:
        super().__init__(db, log=log)
        self.trace = trace

    def command(self) -> list[str]:
        """The usual command, traced."""
        return [
            "strace",
            "-f",
            "-qq",
            "-s",
            "48",
            "-e",
            f"trace={SYSCALLS}",
            "-e",
            "signal=none",
            "-o",
            str(self.trace),
            *super().command(),
        ]

    def stop(self) -> int | None:
        """SIGTERM the server itself (strace would only detach from it), then
        let strace finish the trace and exit."""
        if self.process is not None:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
            with contextlib.suppress(OSError):
                for pid in children.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGTERM)
        return super().stop()


def can_trace() -> bool:
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(
        ["strace", "-qq", "-e", "trace=none", sys.executable, "-c", "pass"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def test_every_acknowledged_write_follows_an_fsync_of_the_wal(tmp_path: Path) -> None:
    if not can_trace():
        pytest.skip("strace is not installed or ptrace is not permitted here")
    db = (tmp_path / "traced.db").resolve()
    trace = tmp_path / "trace.txt"
    with TracedServer(db, tmp_path / "server.log", trace) as server:
        server.launch()
        server.wait_healthy(timeout=60)  # strace slows the start
        with httpx.Client(base_url=server.url, timeout=30) as client:
            created = client.post("/v1/sessions", json={"agent_id": "echo"})
            assert created.status_code == 201
            sid = created.json()["id"]
            for i in range(WRITES):
                sent = client.post(
                    f"/v1/sessions/{sid}/messages", json={"content": f"m{i}"}
                )
                assert sent.status_code == 200

    found = marks(finished_calls(trace.read_text()), f"{db}-wal")
    acks = [i for i, mark in enumerate(found) if mark.kind == "ack"]
    # the creation's 201 and the 50 messages' 200s are the last acknowledgements
    writes = acks[-(WRITES + 1) :]
    assert [found[i].detail for i in writes] == ["201"] + ["200"] * WRITES
    unsynced = [
        n
        for n, (before, after) in enumerate(itertools.pairwise(writes))
        if not any(mark.kind == "sync" for mark in found[before + 1 : after])
    ]
    assert unsynced == []
    # the creation was synced too, after the last acknowledgement before it
    assert any(
        mark.kind == "sync" for mark in found[acks[-(WRITES + 2)] + 1 : writes[0]]
    )
