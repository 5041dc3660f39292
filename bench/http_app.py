"""The sessiond app for the stream figures of ``bench.http``: the production app
(``gateway.app.create_app`` with settings from the environment, as ``sessiond serve``
builds it), with only the per-principal stream cap raised (default 64) so that one
local principal may hold the 500 / 1,000 streams the figures open.

    SESSIOND_DB=... python -m uvicorn --factory bench.http_app:create --port P
"""

from __future__ import annotations

from starlette.applications import Starlette

from gateway.app import create_app
from gateway.limits import Limits
from runtime import Settings

MAX_STREAMS = 4096


def create() -> Starlette:
    """The app, with the stream cap raised."""
    return create_app(
        Settings.from_env(), limits=Limits(max_streams_per_principal=MAX_STREAMS)
    )
