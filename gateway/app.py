"""``create_app``: the Starlette app of the native API over ``runtime.Runtime``.

Also a uvicorn factory: ``uvicorn --factory gateway.app:create_app`` (settings
from the environment). The lifespan builds the runtime when none is given and
closes it on shutdown, after the server has let in-flight requests finish: open
streams end, background turns finish, actors stop, the store closes. Everything
acknowledged was fsynced before it was acknowledged, so nothing of it is lost.
At start-up it resumes the agent turns a crash left open (``resume_turns``).

Middleware, outermost first: metrics (every request, by route template), the
catch-all 500, authentication, the body limit; then Starlette's exception
middleware with the problem+json handlers, and the router.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware

from gateway.auth import Authenticator, AuthMiddleware, FailureLimiter
from gateway.context import Gateway
from gateway.dialects import ROUTES as DIALECT_ROUTES
from gateway.dialects import WEBHOOK_FORMATS as DIALECT_WEBHOOK_FORMATS
from gateway.errors import EXCEPTION_HANDLERS, CatchAllMiddleware
from gateway.limits import BodyLimitMiddleware, Limits, StreamSlots
from gateway.metrics import HttpMetrics, MetricsMiddleware
from gateway.routes import ROUTES
from runtime import Runtime, Settings

logger = logging.getLogger(__name__)

# Blocking message calls each hold a worker thread until their reply.
WORKER_THREADS = 100


def create_app(
    settings: Settings | None = None,
    runtime: Runtime | None = None,
    *,
    limits: Limits | None = None,
) -> Starlette:
    """The app. Without ``runtime``, the lifespan builds one from ``settings``
    (default ``Settings.from_env()``) and closes it on shutdown; a given runtime
    stays the caller's to close."""
    if settings is None:
        settings = runtime.settings if runtime is not None else Settings.from_env()
    limits = limits or Limits()
    metrics = HttpMetrics()
    authenticator = Authenticator(settings.api_keys)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        owned = runtime is None
        active: Runtime = (
            runtime
            if runtime is not None
            else await anyio.to_thread.run_sync(Runtime, settings)
        )
        gateway = Gateway(
            runtime=active,
            limits=limits,
            metrics=metrics,
            streams=StreamSlots(limits.max_streams_per_principal),
            loop=asyncio.get_running_loop(),
        )
        app.state.gateway = gateway
        for name, render in DIALECT_WEBHOOK_FORMATS.items():
            active.register_webhook_format(name, render)
        # Turns a crash left open carry on (their in-doubt calls are recorded).
        active.resume_turns(background=True)
        logger.info(
            "sessiond gateway started",
            extra={"auth": authenticator.enabled, "db_backend": _backend(settings.db)},
        )
        try:
            yield
        finally:
            gateway.begin_draining()
            if owned:
                await anyio.to_thread.run_sync(active.close)
            logger.info("sessiond gateway stopped")

    app = Starlette(
        routes=[*ROUTES, *DIALECT_ROUTES],
        middleware=[
            Middleware(MetricsMiddleware, metrics=metrics),
            Middleware(CatchAllMiddleware),
            Middleware(
                AuthMiddleware,
                authenticator=authenticator,
                failures=FailureLimiter(limits.auth_failures_per_minute),
            ),
            Middleware(BodyLimitMiddleware, max_body_bytes=limits.max_body_bytes),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.limits = limits
    app.state.settings = settings
    return app


def _backend(db: str) -> str:
    return "postgres" if db.startswith(("postgres://", "postgresql://")) else "sqlite"
