"""The app of ``test_openai_turn_crash``'s server process: ``sessiond``'s app
(settings from the environment: the database, and the config file whose
``openai`` agent talks to the test's loopback model server) with one more tool,
``count``, which counts its executions in a file.

``uvicorn --factory tests.faults.openai_app:create_counting_app``; the tool reads
``COUNT_FILE`` (where it appends ``ran``), and with ``COUNT_BLOCK=1`` tells the
test it runs (it connects to ``127.0.0.1:COUNT_SIGNAL_PORT`` and sends
``running``) and then blocks until the process is killed.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from gateway.app import create_app
from runtime import Runtime, Settings, ToolContext


def count(arguments: dict[str, Any], context: ToolContext) -> str:
    """Count one run; block when told to."""
    with Path(os.environ["COUNT_FILE"]).open("a") as file:
        file.write("ran\n")
        file.flush()
        os.fsync(file.fileno())
    if os.environ.get("COUNT_BLOCK") == "1":
        port = int(os.environ["COUNT_SIGNAL_PORT"])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as signal:
            signal.sendall(b"running")
        threading.Event().wait()  # until SIGKILL
    return "counted"


def create_counting_app() -> Starlette:
    """The app, its runtime holding the ``count`` tool."""
    runtime = Runtime(Settings.from_env())
    runtime.register_tool("count", count, description="Counts its runs.")
    return create_app(runtime=runtime)
