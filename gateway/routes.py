"""The one route table of the native API (see ``reference/native-api.md``).

The OpenAPI document (:mod:`gateway.openapi`) describes exactly these routes; a
test compares the two in both directions.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route, WebSocketRoute

from gateway import branches, hooks, messages, ops, sessions, windows, ws

SESSION = "/v1/sessions/{id}"

ROUTES: list[BaseRoute] = [
    Route("/v1/sessions", sessions.create_session, methods=["POST"]),
    Route("/v1/sessions", sessions.list_sessions, methods=["GET"]),
    Route(SESSION, sessions.get_session, methods=["GET"]),
    Route(SESSION, sessions.update_session, methods=["PATCH"]),
    Route(SESSION, sessions.delete_session, methods=["DELETE"]),
    Route(SESSION + "/messages", messages.send_message, methods=["POST"]),
    Route(SESSION + "/messages", messages.history, methods=["GET"]),
    Route(SESSION + "/events", messages.events, methods=["GET"]),
    Route(SESSION + "/state", branches.state_at, methods=["GET"]),
    Route(SESSION + "/checkpoints", branches.save_checkpoint, methods=["POST"]),
    Route(SESSION + "/checkpoints", branches.list_checkpoints, methods=["GET"]),
    Route(
        SESSION + "/checkpoints/{cid}/restore",
        branches.restore_checkpoint,
        methods=["POST"],
    ),
    Route(
        SESSION + "/checkpoints/{cid}", branches.delete_checkpoint, methods=["DELETE"]
    ),
    Route(SESSION + "/rewind", branches.rewind, methods=["POST"]),
    Route(SESSION + "/fork", branches.fork, methods=["POST"]),
    Route(SESSION + "/branches", branches.branches, methods=["GET"]),
    Route(SESSION + "/clear", sessions.clear, methods=["POST"]),
    Route(SESSION + "/reset", sessions.reset, methods=["POST"]),
    Route(SESSION + "/export", messages.export, methods=["GET"]),
    Route(SESSION + "/heartbeat", sessions.heartbeat, methods=["POST"]),
    Route(SESSION + "/renew", sessions.renew, methods=["POST"]),
    Route(SESSION + "/timeout", sessions.update_timeout, methods=["PATCH"]),
    Route(SESSION + "/webhook", hooks.set_webhook, methods=["PUT"]),
    Route(SESSION + "/webhook/deliveries", hooks.webhook_deliveries, methods=["GET"]),
    Route(SESSION + "/reset-policy", hooks.set_reset_policy, methods=["PATCH"]),
    Route(SESSION + "/context", windows.context, methods=["GET"]),
    Route(SESSION + "/context/summaries", windows.summarize, methods=["POST"]),
    Route(
        SESSION + "/context/summaries/{offset}",
        windows.drop_summary,
        methods=["DELETE"],
    ),
    WebSocketRoute(SESSION + "/ws", ws.session_socket),
    Route("/v1/health", ops.health, methods=["GET"]),
    Route("/metrics", ops.metrics, methods=["GET"]),
    Route("/openapi.json", ops.openapi, methods=["GET"]),
]


def route_table(routes: list[BaseRoute] | None = None) -> set[tuple[str, str]]:
    """``(method, path)`` of every route (a WebSocket counts as ``GET``; the
    ``HEAD`` Starlette adds to ``GET`` routes is left out)."""
    table: set[tuple[str, str]] = set()
    for route in ROUTES if routes is None else routes:
        if isinstance(route, WebSocketRoute):
            table.add(("GET", route.path))
        elif isinstance(route, Route):
            table.update((m, route.path) for m in route.methods or () if m != "HEAD")
    return table
