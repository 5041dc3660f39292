"""Disk full (reliability.md T13): a write that cannot get space is refused
whole with ``storage_full`` (HTTP 507), reads and streams go on, nothing
acknowledged is lost, and writes succeed again once space is freed.

(a) Portable: ``PRAGMA max_page_count`` set just above the database's size
makes SQLite answer ``SQLITE_FULL`` ("database or disk is full"), in process.
(b) A real ``ENOSPC``: the server runs in its own mount namespace with its
database on a 4 MiB tmpfs that a filler file all but fills; skipped where
mounting is not permitted.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from runtime import (
    Runtime,
    Settings,
    StorageFullError,
    StorageUnavailableError,
)
from runtime.errors import is_out_of_space, storage_error
from tests.support.server import ServerProcess

pytestmark = pytest.mark.fault

MESSAGE = "m" * 2000


def limit_pages(runtime: Runtime, extra_pages: int) -> None:
    """Cap the database at its current size plus ``extra_pages`` pages, on
    every connection the runtime holds (``max_page_count`` is per connection)."""
    pool = runtime.app.recorder.datastore.pool  # type: ignore[attr-defined]
    connections = list(pool._pool)
    assert connections, "the runtime has opened no connection yet"
    for connection in connections:
        raw = connection._sqlite_conn
        pages = raw.execute("PRAGMA page_count").fetchone()[0]
        raw.execute(f"PRAGMA max_page_count = {pages + extra_pages}")


def test_a_full_database_refuses_writes_whole_and_recovers(tmp_path: Path) -> None:
    runtime = Runtime(Settings(db=str(tmp_path / "full.db")))
    try:
        sid = runtime.create()["id"]
        acknowledged = [runtime.append(sid, MESSAGE)["offset"] for _ in range(3)]
        assert runtime.send(sid, "a turn")["reply"]["content"] == "a turn"
        acknowledged += [acknowledged[-1] + 1, acknowledged[-1] + 2]
        limit_pages(runtime, 4)

        refused = None
        for _ in range(200):
            try:
                acknowledged.append(runtime.append(sid, MESSAGE)["offset"])
            except StorageUnavailableError as error:
                refused = error
                break
        assert isinstance(refused, StorageFullError)
        assert refused.code == "storage_full"
        with pytest.raises(StorageFullError):
            runtime.send(sid, MESSAGE)  # a turn is refused whole too

        # reads go on, and show exactly what was acknowledged
        offsets = [m["offset"] for m in runtime.messages(sid)]
        assert offsets == acknowledged

        limit_pages(runtime, 10_000)  # space freed
        acknowledged.append(runtime.append(sid, "after")["offset"])
        assert [m["offset"] for m in runtime.messages(sid)] == acknowledged
        assert acknowledged[-1] == acknowledged[-2] + 1  # nothing half-written
    finally:
        runtime.close()


def test_out_of_space_is_told_from_other_store_failures() -> None:
    import sqlite3

    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
    wrapped = RuntimeError("the recorder's error")
    wrapped.__cause__ = full

    assert is_out_of_space(full)
    assert is_out_of_space(wrapped)
    assert is_out_of_space(psycopg.errors.DiskFull())
    assert is_out_of_space(OSError(28, "No space left on device"))
    assert not is_out_of_space(busy)
    assert not is_out_of_space(psycopg.errors.AdminShutdown())
    assert type(storage_error(wrapped, "x")) is StorageFullError
    assert type(storage_error(busy, "x")) is StorageUnavailableError


# --- (b) a real ENOSPC, over HTTP


def can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {where}"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


class TmpfsServer(ServerProcess):
    """``sessiond serve`` in its own mount namespace, its database on a 4 MiB
    tmpfs mounted at ``disk`` (which the test reaches through /proc)."""

    def __init__(self, disk: Path, log: Path) -> None:
        super().__init__(disk / "sessiond.db", log=log)
        self.disk = disk

    def command(self) -> list[str]:
        """The usual command, run after mounting the tmpfs in a new namespace."""
        mount = f"mount -t tmpfs -o size=4m tmpfs {shlex.quote(str(self.disk))}"
        return [
            "unshare",
            "-m",
            "sh",
            "-c",
            f"{mount} && exec {shlex.join(super().command())}",
        ]

    @property
    def inside(self) -> Path:
        """The tmpfs as the server sees it."""
        return Path(f"/proc/{self.pid}/root") / str(self.disk).lstrip("/")


@pytest.fixture
def tmpfs_server(tmp_path: Path) -> Iterator[TmpfsServer]:
    disk = tmp_path / "disk"
    disk.mkdir()
    if not can_mount_tmpfs(disk):
        pytest.skip("mounting a tmpfs in a new mount namespace is not permitted here")
    server = TmpfsServer(disk, tmp_path / "server.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def fill(directory: Path, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free in ``directory``."""
    filler = directory / "filler"
    stats = shutil.disk_usage(directory)
    with filler.open("wb") as out:
        out.write(b"\0" * max(0, stats.free - leave))
    return filler


def test_a_full_disk_answers_507_serves_reads_and_recovers(
    tmpfs_server: TmpfsServer,
) -> None:
    with httpx.Client(base_url=tmpfs_server.url, timeout=30) as client:
        sid = client.post("/v1/sessions", json={"agent_id": "echo"}).json()["id"]
        acknowledged: list[int] = []
        filler = fill(tmpfs_server.inside, leave=256 * 1024)

        refused = None
        for i in range(400):
            response = client.post(
                f"/v1/sessions/{sid}/messages", json={"content": f"{i} {MESSAGE}"}
            )
            if response.status_code != 200:
                refused = response
                break
            result = response.json()
            acknowledged += [
                result["user_message"]["offset"],
                result["reply"]["offset"],
            ]
        assert refused is not None, "the disk never filled"
        assert refused.status_code == 507
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "storage_full"
        again = client.post(f"/v1/sessions/{sid}/messages", json={"content": "x"})
        assert (again.status_code, again.json()["code"]) == (507, "storage_full")

        # reads and streams still serve
        history = client.get(
            f"/v1/sessions/{sid}/messages", params={"limit": 1000, "order": "asc"}
        )
        assert history.status_code == 200
        assert [m["offset"] for m in history.json()["messages"]] == acknowledged
        with client.stream(
            "GET",
            f"/v1/sessions/{sid}/events",
            headers={"Accept": "text/event-stream"},
            params={"after": acknowledged[-1] - 1},
        ) as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():
                if line.startswith("id:"):
                    assert int(line[3:]) >= acknowledged[-1]
                    break

        filler.unlink()  # space freed
        after = client.post(f"/v1/sessions/{sid}/messages", json={"content": "after"})
        assert after.status_code == 200
        acknowledged += [
            after.json()["user_message"]["offset"],
            after.json()["reply"]["offset"],
        ]
        history = client.get(
            f"/v1/sessions/{sid}/messages", params={"limit": 1000, "order": "asc"}
        )
        assert [m["offset"] for m in history.json()["messages"]] == acknowledged
        assert tmpfs_server.process.poll() is None  # the process stayed up
