"""A real sessiond server in a subprocess, on 127.0.0.1, for contract and fault tests.

``ServerProcess`` starts ``python -m gateway.cli serve --port <free port> --db
<file or DSN>`` (or uvicorn with an app factory), waits until ``/v1/health`` answers,
and can be killed with any signal, restarted on the same port and database, and
stopped. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import httpx

from tests.support.database import SMALL_POOL_ENV, is_postgres

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """One sessiond server process (restartable)."""

    def __init__(
        self,
        db: Path | str,
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        factory: str | None = None,
    ) -> None:
        self.db = db
        self.log = log
        self.factory = factory
        self.port = free_port()
        # the ambient SESSIOND_* / SESSION_* settings of the test run do not leak in
        ambient = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SESSIOND_", "SESSION_"))
        }
        self.env = {
            **ambient,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            # Many servers share one PostgreSQL server's max_connections.
            **(SMALL_POOL_ENV if is_postgres(str(db)) else {}),
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:43121``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        """The command line that starts the server."""
        if self.factory:
            return [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                self.factory,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                "5",
            ]
        return [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db",
            str(self.db),
            "--log-level",
            "warning",
        ]

    def start(self) -> ServerProcess:
        """Start the process and wait until it is healthy."""
        self.launch()
        self.wait_healthy()
        return self

    def launch(self) -> ServerProcess:
        """Start the process without waiting (start several, then wait for each
        with :meth:`wait_healthy`)."""
        assert self.process is None or self.process.poll() is not None
        self._log_file = self.log.open("ab")
        env = dict(self.env)
        if self.factory:
            env["SESSIOND_DB"] = str(self.db)
        self.process = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Poll ``/v1/health`` (bounded) until it answers 200."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    code = self.process.returncode
                    msg = f"the server exited with {code}:\n{self.log_text()}"
                    raise RuntimeError(msg)
                with contextlib.suppress(httpx.TransportError):
                    if client.get(self.url + "/v1/health").status_code == 200:
                        return
                time.sleep(0.05)  # polling a readiness probe, bounded by the deadline
        msg = f"the server did not become healthy in {timeout}s:\n{self.log_text()}"
        raise TimeoutError(msg)

    def log_text(self) -> str:
        """What the server wrote so far."""
        if self._log_file is not None:
            self._log_file.flush()
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        """Send ``sig``; for terminating signals, wait for the exit and return
        its code."""
        assert self.process is not None
        self.process.send_signal(sig)
        if sig in (signal.SIGSTOP, signal.SIGCONT):
            return None
        code = self.process.wait(timeout=STOP_TIMEOUT)
        self._close_log()
        return code

    def stop(self) -> int | None:
        """Stop gracefully (SIGTERM), killing after a bounded wait."""
        if self.process is None or self.process.poll() is not None:
            self._close_log()
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=STOP_TIMEOUT)
        finally:
            self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self, sig: int = signal.SIGTERM) -> ServerProcess:
        """Stop (gracefully, or with ``sig``, e.g. SIGKILL) if running, then start
        again on the same port and database."""
        if self.process is not None and self.process.poll() is None:
            if sig == signal.SIGTERM:
                self.stop()
            else:
                self.kill(sig)
        self.process = None
        return self.start()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_server(
    db: Path | str,
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    factory: str | None = None,
) -> Iterator[ServerProcess]:
    """A started server, stopped on exit."""
    server = ServerProcess(db, log=log, env=env, factory=factory)
    try:
        yield server.start()
    finally:
        server.stop()
