"""Request metrics by route template, and the Prometheus text rendering.

Labels are route templates (``/v1/sessions/{id}``), never concrete paths, so the
number of series stays bounded whatever clients send.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"
LATENCY = "sessiond_http_request_duration_seconds"

# Runtime.metrics() keys that only ever grow are exported as counters.
RUNTIME_COUNTERS = frozenset(
    {
        "activations",
        "passivations",
        "appends",
        "commits",
        "committed_writes",
        "conflict_retries",
        "stale_reloads",
    }
)
RUNTIME_HELP = {
    "live_actors": "Session actors alive in this process.",
    "activations": "Session actors started (rehydrated).",
    "passivations": "Idle session actors stopped.",
    "conflict_retries": "Commands re-run after another process wrote first.",
    "stale_reloads": "Answers reloaded because another process had written.",
    "appends": "Events appended to the log.",
    "commits": "Store transactions committed.",
    "committed_writes": "Writes committed (several share a transaction).",
    "projection_lag": "Notifications recorded but not yet in the views.",
    "open_streams": "Open subscriptions to session events (SSE, WebSocket, other).",
}


TURN_SERIES = {
    "tokens": (
        "sessiond_tokens_total",
        "Model tokens by agent and direction (input, output).",
        ("agent", "direction"),
    ),
    "turns": (
        "sessiond_turns_total",
        "Agent turns ended, by agent and status.",
        ("agent", "status"),
    ),
    "tool_calls": (
        "sessiond_tool_calls_total",
        "Tool results recorded, by tool and status.",
        ("tool", "status"),
    ),
}


class HttpMetrics:
    """Counters and latency histograms by method, route template and status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], list[float]] = {}
        self.latency_sum: dict[tuple[str, str], float] = {}
        self.latency_count: dict[tuple[str, str], int] = {}
        self.open_streams: dict[str, int] = {"sse": 0, "websocket": 0}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        with self._lock:
            key = (method, route, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            series = (method, route)
            buckets = self.latency.setdefault(series, [0.0] * len(LATENCY_BUCKETS))
            for index, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    buckets[index] += 1
            self.latency_sum[series] = self.latency_sum.get(series, 0.0) + seconds
            self.latency_count[series] = self.latency_count.get(series, 0) + 1

    def stream_opened(self, kind: str) -> None:
        """Count an SSE or WebSocket stream as open."""
        with self._lock:
            self.open_streams[kind] += 1

    def stream_closed(self, kind: str) -> None:
        """Count an SSE or WebSocket stream as closed."""
        with self._lock:
            self.open_streams[kind] -= 1

    def render(
        self,
        runtime_figures: Mapping[str, Any],
        turn_figures: Mapping[str, list[dict[str, Any]]] | None = None,
    ) -> str:
        """Everything in the Prometheus text exposition format (0.0.4)."""
        lines: list[str] = []
        for key, (name, text, names) in TURN_SERIES.items():
            rows = (turn_figures or {}).get(key, [])
            lines += [f"# HELP {name} {text}", f"# TYPE {name} counter"]
            for row in rows:
                shown = _labels(**{label: str(row[label]) for label in names})
                lines.append(f"{name}{{{shown}}} {int(row['value'])}")
        with self._lock:
            lines += [
                "# HELP sessiond_http_requests_total HTTP requests by route template.",
                "# TYPE sessiond_http_requests_total counter",
            ]
            for (method, route, status), count in sorted(self.requests.items()):
                labels = _labels(method=method, route=route, status=str(status))
                lines.append(f"sessiond_http_requests_total{{{labels}}} {count}")
            lines += [
                f"# HELP {LATENCY} Request latency by route template.",
                f"# TYPE {LATENCY} histogram",
            ]
            for (method, route), buckets in sorted(self.latency.items()):
                base = _labels(method=method, route=route)
                for bound, hits in zip(LATENCY_BUCKETS, buckets, strict=True):
                    lines.append(f'{LATENCY}_bucket{{{base},le="{bound}"}} {hits:g}')
                total = self.latency_count[(method, route)]
                lines.append(f'{LATENCY}_bucket{{{base},le="+Inf"}} {total}')
                lines.append(
                    f"sessiond_http_request_duration_seconds_sum{{{base}}} "
                    f"{self.latency_sum[(method, route)]:.6f}"
                )
                lines.append(
                    f"sessiond_http_request_duration_seconds_count{{{base}}} {total}"
                )
            lines += [
                "# HELP sessiond_http_open_streams Open SSE and WebSocket connections.",
                "# TYPE sessiond_http_open_streams gauge",
            ]
            for kind, count in sorted(self.open_streams.items()):
                lines.append(f'sessiond_http_open_streams{{kind="{kind}"}} {count}')
        for key, value in sorted(runtime_figures.items()):
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            counter = key in RUNTIME_COUNTERS
            name = f"sessiond_{key}_total" if counter else f"sessiond_{key}"
            lines.append(
                f"# HELP {name} {RUNTIME_HELP.get(key, key.replace('_', ' ') + '.')}"
            )
            lines.append(f"# TYPE {name} {'counter' if counter else 'gauge'}")
            lines.append(
                f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"
            )
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items())


class MetricsMiddleware:
    """Times every HTTP request and counts it under its route template."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED)
            self.metrics.observe(
                scope["method"], route, status, time.perf_counter() - started
            )
