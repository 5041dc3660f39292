"""``sessiond serve``: configured by flags or their environment twins, and a
graceful shutdown that ends open streams at once and keeps every acknowledged
write."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import httpx

from gateway.cli import build_parser
from tests.gateway.conftest import ServerFactory
from tests.gateway.helpers import new_session, sse_events
from tests.support.server import ServerProcess, free_port

GRACE_SECONDS = 10


class EnvConfiguredServer(ServerProcess):
    """``sessiond serve`` with no flags at all: everything from SESSIOND_*."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gateway.cli", "serve"]


def test_serve_takes_its_settings_from_the_environment_twins(tmp_path: Path) -> None:
    port = free_port()
    server = EnvConfiguredServer(
        tmp_path / "unused.db",
        log=tmp_path / "server.log",
        env={
            "SESSIOND_HOST": "127.0.0.1",
            "SESSIOND_PORT": str(port),
            "SESSIOND_DB": str(tmp_path / "from-env.db"),
            "SESSIOND_LOG_LEVEL": "warning",
        },
    )
    server.port = port
    with server.start(), httpx.Client(base_url=server.url, timeout=10) as http:
        new_session(http)
    assert (tmp_path / "from-env.db").exists()
    assert not (tmp_path / "unused.db").exists()


def test_the_serve_command_line_has_every_flag() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "9",
            "--db",
            "x.db",
            "--config",
            "c.toml",
            "--log-level",
            "debug",
        ]
    )
    assert (args.host, args.port, args.db, args.config, args.log_level) == (
        "0.0.0.0",
        9,
        "x.db",
        "c.toml",
        "debug",
    )
    assert build_parser().parse_args(["replay", "sid"]).command == "replay"


def test_sigterm_ends_open_streams_at_once_and_keeps_acknowledged_writes(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    with httpx.Client(base_url=server.url, timeout=20) as http:
        sid = new_session(http)["id"]
        acknowledged = http.post(
            f"/v1/sessions/{sid}/messages", json={"content": "kept"}
        ).json()
        with http.stream(
            "GET", f"/v1/sessions/{sid}/events", headers={"Accept": "text/event-stream"}
        ) as response:
            events = sse_events(response)
            while next(events).id != "3":
                pass
            started = time.monotonic()
            code = server.kill(signal.SIGTERM)
            # the stream ends (the server closed it) rather than hanging
            rest = list(events)
        took = time.monotonic() - started
    assert took < GRACE_SECONDS / 2
    assert all(event.event != "error" for event in rest)
    # uvicorn re-raises the signal once it has shut down cleanly
    assert code in (0, -signal.SIGTERM)
    server.restart()
    with httpx.Client(base_url=server.url, timeout=20) as http:
        page = http.get(f"/v1/sessions/{sid}/messages", params={"order": "asc"}).json()
    assert [m["id"] for m in page["messages"]][:1] == [
        acknowledged["user_message"]["id"]
    ]
    assert [m["content"] for m in page["messages"]] == ["kept", "kept"]
