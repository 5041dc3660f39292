"""``sessiond serve``: uvicorn running the app, with a graceful shutdown.

On SIGINT/SIGTERM uvicorn stops accepting connections and lets in-flight
requests finish; open SSE/WebSocket streams are told to end at once (they
would otherwise hold the shutdown until the grace period runs out). Then the
lifespan closes the runtime: background turns finish, actors stop, the store
closes.
"""

from __future__ import annotations

import logging
from types import FrameType

import uvicorn

from gateway.app import create_app
from gateway.context import Gateway
from gateway.limits import Limits
from runtime import Settings

GRACE_SECONDS = 10


class DrainingServer(uvicorn.Server):
    """A uvicorn server that ends the app's open streams when asked to exit."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Drain the streams, then exit as uvicorn does."""
        app = self.config.app
        gateway = getattr(getattr(app, "state", None), "gateway", None)
        if isinstance(gateway, Gateway):
            gateway.drain()
        super().handle_exit(sig, frame)


def serve(settings: Settings, limits: Limits | None = None) -> int:
    """Run the native API until interrupted; returns the exit status."""
    limits = limits or Limits()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = uvicorn.Config(
        create_app(settings, limits=limits),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        lifespan="on",
        ws_max_size=limits.max_ws_message_bytes,
        timeout_graceful_shutdown=GRACE_SECONDS,
        server_header=False,
    )
    server = DrainingServer(config)
    server.run()
    return 0 if server.started else 1
