"""The published ``@elizaos/api-client`` (1.7.x) against a real sessiond server.

Runs ``tests/dialects/eliza_client/e2e.mjs`` with Node. Skipped when ``node`` or
``npm`` is missing, except under ``CI=true``, where it must run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dialects.test_eliza import AGENT, API_KEY, write_config
from tests.support.server import ServerProcess

CLIENT_DIR = Path(__file__).resolve().parent / "eliza_client"
NODE_TIMEOUT = 180


def node_tools() -> tuple[str, str]:
    """The ``node`` and ``npm`` executables, or a skip (a failure under CI)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        reason = "node and npm are needed to run the published @elizaos/api-client"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true: this test must run)")
        pytest.skip(reason)
    return node, npm


@pytest.fixture
def keyed_server(tmp_path: Path, db: str) -> Iterator[ServerProcess]:
    """A server with the agent configured and an API key."""
    process = ServerProcess(
        db,
        log=tmp_path / "server.log",
        env={
            "SESSIOND_CONFIG": str(write_config(tmp_path)),
            "SESSIOND_API_KEYS": f"alice:{API_KEY}",
        },
    )
    yield process.start()
    process.stop()


def test_the_published_client_creates_sends_pages_lists_and_deletes(
    keyed_server: ServerProcess,
) -> None:
    node, npm = node_tools()
    if not (CLIENT_DIR / "node_modules" / "@elizaos" / "api-client").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=CLIENT_DIR,
            check=True,
            timeout=NODE_TIMEOUT,
        )
    result = subprocess.run(
        [node, "e2e.mjs"],
        cwd=CLIENT_DIR,
        env={
            **os.environ,
            "SESSIOND_URL": keyed_server.url,
            "ELIZA_AGENT_ID": AGENT,
            "SESSIOND_API_KEY": API_KEY,
        },
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")
