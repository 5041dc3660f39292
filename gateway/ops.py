"""Operations: health (no key needed), Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.codec import query
from gateway.context import gateway_of, json
from gateway.openapi import document

PROMETHEUS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def health(request: Request) -> Response:
    """``GET /v1/health``: 200, or 503 when the store is unreachable."""
    gateway = gateway_of(request)
    figures = await gateway.aruntime.health()
    return json(figures, 200 if figures.get("status") == "ok" else 503)


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text."""
    gateway = gateway_of(request)
    query(request, {})
    figures = await gateway.aruntime.metrics()
    turns = await gateway.aruntime.turn_figures()
    return Response(
        gateway.metrics.render(figures, turns), media_type=PROMETHEUS_MEDIA_TYPE
    )


async def openapi(request: Request) -> Response:
    """``GET /openapi.json``: the contract of these routes."""
    query(request, {})
    gateway = gateway_of(request)
    return json(document(tuple(sorted(gateway.runtime.settings.agents))))
