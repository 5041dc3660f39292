"""An app factory for servers whose limits a test sets through the environment
(``uvicorn --factory tests.gateway.app_factory:create_test_app``)."""

from __future__ import annotations

import os

from starlette.applications import Starlette

from gateway.app import create_app
from gateway.limits import Limits


def create_test_app() -> Starlette:
    """The app with test limits: ``TEST_PING_SECONDS``, ``TEST_MAX_STREAMS``."""
    limits = Limits(
        ping_seconds=float(os.environ.get("TEST_PING_SECONDS", "15")),
        max_streams_per_principal=int(os.environ.get("TEST_MAX_STREAMS", "64")),
    )
    return create_app(limits=limits)
