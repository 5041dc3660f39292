"""A uvicorn app factory whose runtime clock runs ``SESSIOND_TEST_CLOCK_SPEED``
times faster (timeouts are minutes; tests watch them pass in fractions of a
second). Settings otherwise come from the environment, as the real server's do."""

from __future__ import annotations

import dataclasses
import os

from starlette.applications import Starlette

from gateway.app import create_app as create_gateway_app
from runtime import ScaledClock, Settings


def create_app() -> Starlette:
    """The gateway app on a scaled clock."""
    speed = float(os.environ.get("SESSIOND_TEST_CLOCK_SPEED", "1"))
    settings = dataclasses.replace(Settings.from_env(), clock=ScaledClock(speed))
    return create_gateway_app(settings)
